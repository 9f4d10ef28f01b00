"""Compare StyleBridge's TF-era pickle converter with the official legacy.py on the same files (CPU, fp32).

Needs a local checkout of NVlabs/stylegan3 (not part of this repository):

    python bench/fidelity_tf.py --official /path/to/stylegan3

StyleBridge's `write_tf_pickle` writes 64 px StyleGAN2 generators with random weights as TF-era (G, D, Gs)
pickles: flavors stylegan2 and stylegan2-ada, architectures skip, resnet and orig, conditional (c_dim 5) for
stylegan2-ada. The official `legacy.load_network_pkl` and StyleBridge's `read_generator` each convert every file,
and both render `G(z, c)` with noise_mode const at truncation_psi 1.0 and 0.7. A second table repeats one file
with pickle protocols 2 to 5 and both numpy module names (numpy.core from numpy 1.x, numpy._core from 2.x).
The exit status is 1 when a difference in those two tables exceeds 1e-4 or legacy.py fails on one of their files.

A third, informational table shows what legacy.py and StyleBridge do with a minimal file shaped like a StyleGAN2
config B-D generator (G_synthesis_stylegan_revised, a `lod` variable, the last ToRGB layer named ToRGB_lod0);
it does not change the exit status. Nothing the official code writes is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import _import_official  # noqa: E402

TOLERANCE = 1e-4
CHANNELS = [128, 128, 64, 32, 16]  # 4 to 64 px, following TF's rule with fmap_base 512 and fmap_max 128.


def import_legacy(path: Path):
    """Return the official legacy module from the checkout at `path`."""
    _import_official(path)  # Puts the checkout on sys.path and provides pkg_resources if it is missing.
    import legacy

    return legacy


def markdown_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def load_with_legacy(legacy, path: Path):
    """Return (G_ema, None) from legacy.load_network_pkl, or (None, error text) when it raises.

    legacy.py prints the parameter it was filling before it re-raises a failure, so stdout is captured and
    added to the error text.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), open(path, "rb") as file:
            return legacy.load_network_pkl(file)["G_ema"].eval(), None
    except Exception as error:  # Any failure of the official converter is a result to report.
        text = f"{type(error).__name__}: {error}"
        if printed.getvalue().strip():
            text += f" (printed: {printed.getvalue().strip()})"
        return None, text


def check_conversions(legacy, folder: Path) -> list[dict]:
    """Convert each flavor, architecture and c_dim with legacy.py and with StyleBridge, and compare outputs."""
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.checkpoints import read_generator
    from stylebridge.models.stylegan2 import StyleGAN2Config
    from stylebridge.models.tf_pickle import write_tf_pickle

    cases = [("stylegan2", architecture, 0) for architecture in ("skip", "resnet", "orig")]
    cases += [("stylegan2-ada", architecture, c_dim) for architecture in ("skip", "resnet", "orig") for c_dim in (0, 5)]
    rows = []
    for flavor, architecture, c_dim in cases:
        # The original stylegan2 networks have no conv_clamp and no fp16 layers, but stylegan2-ada writes both.
        ada = flavor == "stylegan2-ada"
        config = StyleGAN2Config(z_dim=64, c_dim=c_dim, w_dim=64, img_resolution=64, channels=CHANNELS,
                                 architecture=architecture, conv_clamp=256.0 if ada else None,
                                 num_fp16_res=2 if ada else 0, mapping_layers=4)
        source = make_generator(config, seed=1)
        path = write_tf_pickle(source, folder / f"{flavor}-{architecture}-{c_dim}.pkl", flavor=flavor)
        row = dict(label=f"{flavor}, {architecture}, c_dim {c_dim}", error=None, legacy={}, source=0.0, std=0.0)
        official, row["error"] = load_with_legacy(legacy, path)
        ours = read_generator(path)

        z = torch.randn(4, 64, generator=torch.Generator().manual_seed(123))
        c = torch.nn.functional.one_hot(torch.arange(4) % c_dim, c_dim).float() if c_dim else None
        with torch.no_grad():
            for psi in (1.0, 0.7):
                output = ours(z, c, truncation_psi=psi, noise_mode="const")
                expected = source(z, c, truncation_psi=psi, noise_mode="const")
                row["source"] = max(row["source"], (output - expected).abs().max().item())
                if official is not None:
                    reference = official(z, c, truncation_psi=psi, noise_mode="const", force_fp32=True)
                    row["legacy"][psi] = (reference - output).abs().max().item()
                    row["std"] = reference.std().item()
        rows.append(row)
    return rows


def check_protocols(legacy, folder: Path) -> list[dict]:
    """Write one generator with each pickle protocol and numpy module name, and compare the two conversions."""
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.checkpoints import read_generator
    from stylebridge.models.stylegan2 import StyleGAN2Config
    from stylebridge.models.tf_pickle import write_tf_pickle

    config = StyleGAN2Config(z_dim=64, w_dim=64, img_resolution=64, channels=CHANNELS, architecture="skip",
                             conv_clamp=None, num_fp16_res=0, mapping_layers=4)
    source = make_generator(config, seed=7)
    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(5))
    rows = []
    for protocol in (2, 3, 4, 5):
        for prefix in ("numpy.core", "numpy._core"):
            path = write_tf_pickle(source, folder / f"protocol-{protocol}-{prefix}.pkl", protocol=protocol,
                                   numpy_prefix=prefix)
            row = dict(protocol=protocol, prefix=prefix, difference=None)
            official, row["error"] = load_with_legacy(legacy, path)
            if official is not None:
                with torch.no_grad():
                    reference = official(z, None, noise_mode="const", force_fp32=True)
                    output = read_generator(path)(z, None, noise_mode="const")
                row["difference"] = (reference - output).abs().max().item()
            rows.append(row)
    return rows


def probe_configs_b_to_d(legacy, folder: Path) -> list[tuple[str, str, str]]:
    """Feed legacy.py and StyleBridge minimal config B-D files and return (variant, legacy.py, StyleBridge) rows.

    Each file is an 'orig' generator whose synthesis network is renamed to G_synthesis_stylegan_revised, with a
    `lod` variable and its last ToRGB layer renamed from 64x64/ToRGB to ToRGB_lod0, as at lod 0 of progressive
    growing. A real config B-D file also has ToRGB_lod1 and up for the lower resolutions.
    """
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.checkpoints import read_generator
    from stylebridge.models.stylegan2 import StyleGAN2Config
    from stylebridge.models.tf_pickle import dump_tf_networks, tf_networks

    orig = make_generator(StyleGAN2Config(z_dim=64, w_dim=64, img_resolution=64, channels=CHANNELS,
                                          architecture="orig", conv_clamp=None, num_fp16_res=0, mapping_layers=4),
                          seed=8)
    variants = [
        ("synthesis_func kwarg on G_main, as NVlabs stylegan2's run_training.py sets it for configs A-D", True, False),
        ("without the synthesis_func kwarg", False, False),
        ("without the synthesis_func kwarg, ToRGB_lod0 also on G_main without the synthesis/ prefix "
         "(not a layout TF writes; reaches legacy.py's next step)", False, True),
    ]
    rows = []
    for index, (label, with_synthesis_func, unprefixed_torgb) in enumerate(variants):
        g, d, gs = tf_networks(orig)
        for network in (g, gs):
            synthesis = network.components["synthesis"]
            synthesis.build_func_name = "G_synthesis_stylegan_revised"
            synthesis.variables = [(name.replace("64x64/ToRGB/", "ToRGB_lod0/"), value)
                                   for name, value in synthesis.variables]
            synthesis.variables.insert(0, ("lod", np.float32(0)))
            if with_synthesis_func:
                network.static_kwargs["synthesis_func"] = "G_synthesis_stylegan_revised"
            if unprefixed_torgb:
                network.variables += [(name, value) for name, value in synthesis.variables
                                      if name.startswith("ToRGB_lod")]
        path = folder / f"config-b-to-d-{index}.pkl"
        with open(path, "xb") as file:
            dump_tf_networks((g, d, gs), file)

        official, legacy_error = load_with_legacy(legacy, path)
        legacy_result = "loaded" if official is not None else legacy_error
        try:
            read_generator(path)
            ours_result = "loaded"
        except Exception as error:  # The message is the result to report.
            ours_result = f"{type(error).__name__}: {error}".replace(str(path), path.name)
        rows.append((label, legacy_result, ours_result))
    return rows


def print_report(conversions: list[dict], protocols: list[dict], probes: list[tuple[str, str, str]]) -> float:
    """Print the three markdown tables and return the worst difference of the first two (inf on a failure)."""
    worst = 0.0
    print("TF-era pickles written by StyleBridge (64 px, batch 4, noise const, fp32, CPU)\n")
    print("| flavor, architecture, c_dim | legacy.py vs StyleBridge, psi 1.0 | legacy.py vs StyleBridge, psi 0.7 | "
          "StyleBridge vs the generator written | std of legacy.py output, psi 0.7 |")
    print("|---|---|---|---|---|")
    for row in conversions:
        worst = max(worst, row["source"])
        if row["error"] is not None:
            worst = float("inf")
            print(f"| {row['label']} | legacy.py failed: {markdown_cell(row['error'])} | | {row['source']:.2e} | |")
            continue
        worst = max(worst, *row["legacy"].values())
        print(f"| {row['label']} | {row['legacy'][1.0]:.2e} | {row['legacy'][0.7]:.2e} | {row['source']:.2e} | "
              f"{row['std']:.3f} |")

    print("\nOne stylegan2 skip file per pickle protocol and numpy module name, psi 1.0\n")
    print("| protocol | numpy module | legacy.py vs StyleBridge |")
    print("|---|---|---|")
    for row in protocols:
        if row["error"] is not None:
            worst = float("inf")
            print(f"| {row['protocol']} | {row['prefix']} | legacy.py failed: {markdown_cell(row['error'])} |")
            continue
        worst = max(worst, row["difference"])
        print(f"| {row['protocol']} | {row['prefix']} | {row['difference']:.2e} |")

    print("\nConfig B-D probe (informational, not part of the exit status)\n")
    print("| file | official legacy.py | StyleBridge |")
    print("|---|---|---|")
    for label, legacy_result, ours_result in probes:
        print(f"| {markdown_cell(label)} | {markdown_cell(legacy_result)} | {markdown_cell(ours_result)} |")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="Path to a local NVlabs/stylegan3 checkout.")
    args = parser.parse_args()
    legacy = import_legacy(args.official)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        conversions = check_conversions(legacy, folder)
        protocols = check_protocols(legacy, folder)
        probes = probe_configs_b_to_d(legacy, folder)
    worst = print_report(conversions, protocols, probes)
    print(f"\nworst: {worst:.2e} ({'within' if worst <= TOLERANCE else 'OUTSIDE'} the {TOLERANCE:.0e} tolerance)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
