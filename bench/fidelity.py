"""Compare StyleBridge's StyleGAN2 with the official implementation on the same weights (CPU, fp32).

Needs a local checkout of NVlabs/stylegan3 (not part of this repository):

    python bench/fidelity.py --official /path/to/stylegan3

It (1) renders the committed test fixture with the official Generator and compares with our loader and with the
golden images in tests/fixtures, and (2) builds official generators of several configurations with random weights,
pickles them with the official persistence code, loads the pickles with our loader, and compares outputs.
Nothing the official code writes is kept. Prints a markdown table of max abs differences.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_official(path: Path):
    sys.path.insert(0, str(path))
    try:
        import pkg_resources  # noqa: F401  # The official conv2d_gradfix imports it.
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    from training.networks_stylegan2 import Generator

    return Generator


def _official_kwargs(config) -> dict:
    return dict(z_dim=config.z_dim, c_dim=config.c_dim, w_dim=config.w_dim, img_resolution=config.img_resolution,
                img_channels=config.img_channels,
                mapping_kwargs=dict(num_layers=config.mapping_layers, lr_multiplier=config.mapping_lr_multiplier),
                channel_base=config.channels[-1] * config.img_resolution, channel_max=max(config.channels),
                num_fp16_res=config.num_fp16_res, conv_clamp=config.conv_clamp, architecture=config.architecture)


def check_fixture(official_generator_class) -> list[tuple[str, float]]:
    from stylebridge.models.checkpoints import read_generator

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import make_golden

    ours = read_generator(ROOT / "tests" / "fixtures" / "sg2_fixture.safetensors")
    official = official_generator_class(**_official_kwargs(ours.config)).eval().requires_grad_(False)
    missing, unexpected = official.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("resample_filter") for k in missing), (missing, unexpected)
    z = torch.cat([torch.from_numpy(np.random.RandomState(s).randn(1, ours.z_dim)) for s in make_golden.SEEDS])
    with torch.no_grad():
        reference = official(z, None, truncation_psi=make_golden.PSI, noise_mode="const").numpy()
    golden = np.load(ROOT / "tests" / "fixtures" / "sg2_fixture_images.npz")["images"]
    return [("fixture: golden images vs official", float(np.abs(golden - reference).max())),
            ("fixture: our loader vs official", float(np.abs(make_golden.render(ours) - reference).max()))]


def check_pickles(official_generator_class) -> list[tuple[str, float]]:
    from stylebridge.models.checkpoints import read_generator

    rows = []
    cases = [
        dict(architecture="skip"), dict(architecture="resnet"), dict(architecture="orig"),
        dict(architecture="skip", c_dim=3), dict(architecture="skip", conv_clamp=None, cutoff=3),
        dict(architecture="resnet", img_resolution=128),
    ]
    for case in cases:
        c_dim = case.get("c_dim", 0)
        kwargs = dict(z_dim=64, c_dim=c_dim, w_dim=64, img_resolution=case.get("img_resolution", 64), img_channels=3,
                      mapping_kwargs=dict(num_layers=4), channel_base=2048, channel_max=128, num_fp16_res=2,
                      conv_clamp=case.get("conv_clamp", 256), architecture=case["architecture"])
        torch.manual_seed(1)
        official = official_generator_class(**kwargs).eval().requires_grad_(False)
        rng = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, tensor in official.named_parameters():
                scale = 0.1 if ("bias" in name or "noise_strength" in name) else 1.0
                tensor.copy_(torch.randn(tensor.shape, generator=rng) * scale + (1 if name.endswith("affine.bias") else 0))
            official.mapping.w_avg.copy_(torch.randn(official.mapping.w_avg.shape, generator=rng))
        stream = io.BytesIO()
        pickle.dump(dict(G=official, D=None, G_ema=official, augment_pipe=None, training_set_kwargs={}), stream)
        with tempfile.NamedTemporaryFile(suffix=".pkl") as file:
            file.write(stream.getvalue())
            file.flush()
            ours = read_generator(file.name)
        z = torch.from_numpy(np.random.RandomState(3).randn(4, 64)).float()
        c = torch.nn.functional.one_hot(torch.arange(4) % c_dim, c_dim).float() if c_dim else None
        worst = 0.0
        for noise_mode in ("const", "none"):
            with torch.no_grad():
                reference = official(z, c, truncation_psi=0.7, truncation_cutoff=case.get("cutoff"),
                                     noise_mode=noise_mode)
                output = ours(z, c, truncation_psi=0.7, truncation_cutoff=case.get("cutoff"), noise_mode=noise_mode)
            worst = max(worst, (reference - output).abs().max().item())
        label = ", ".join(f"{k}={v}" for k, v in case.items())
        rows.append((f"official pickle: {label}", worst))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="Path to a local NVlabs/stylegan3 checkout.")
    args = parser.parse_args()
    official_generator_class = _import_official(args.official)
    rows = check_fixture(official_generator_class) + check_pickles(official_generator_class)
    print("| comparison (fp32, CPU, noise const and none) | max abs difference |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:.2e} |")
    worst = max(value for _, value in rows)
    print(f"\nworst: {worst:.2e} ({'within' if worst <= 1e-4 else 'OUTSIDE'} the 1e-4 tolerance)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
