"""Compare StyleBridge's StyleGAN3 (configs T and R) with the official implementation on the same weights.

Needs a local checkout of NVlabs/stylegan3 (not part of this repository):

    python bench/fidelity_stylegan3.py --official /path/to/stylegan3

For each case it builds an official `training.networks_stylegan3.Generator` at 32 or 64 px, with channel_base 256
or 512 and channel_max 32, both doubled for config R as the official training script does. It gives every
parameter, `w_avg` and every `magnitude_ema` random values, pickles the generator with the official persistence
code and loads the pickle with StyleBridge's loader. It then compares `G(z, c, truncation_psi=0.7)` for a batch
of 4 on the CPU in fp32, once with StyleBridge's fast filtered leaky ReLU and once with its reference one, and
compares the W latents of the two mapping networks, the style vectors S (StyleBridge's `ws_to_styles` against the
official affine outputs, recorded with forward hooks) and the image StyleBridge renders from the official S. The
translate/rotate cases set the official input transform as `gen_images.py` does and StyleBridge's with
`set_input_transform`. Nothing the official code writes is kept.
Prints a markdown table of max abs differences and exits with status 1 when one exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import _import_official  # noqa: E402

TOLERANCE = 1e-4
BATCH = 4

# Keyword arguments of check_case. `extra` goes to the official Generator, which passes synthesis arguments on.
# `transform` is (translate_x, translate_y, rotate_degrees), as gen_images.py --translate and --rotate take them.
CASES = [
    dict(config="T"),
    dict(config="R"),
    dict(config="T", c_dim=3),
    dict(config="R", c_dim=3, cutoff=4),
    dict(config="T", resolution=64, channel_base=512),
    dict(config="R", resolution=64, channel_base=512),
    dict(config="T", extra=dict(conv_clamp=0.5)),
    dict(config="T", transform=(0.2, -0.1, 30.0)),
    dict(config="R", transform=(-0.3, 0.25, -75.0)),
    dict(config="T", extra=dict(num_layers=6, num_critical=1, margin_size=4, output_scale=1.0)),
]


def import_official_stylegan3(path: Path):
    """Return the official StyleGAN3 Generator class and gen_images.make_transform from the checkout at `path`."""
    _import_official(path)  # Puts the checkout on sys.path and provides pkg_resources if it is missing.
    from gen_images import make_transform
    from training.networks_stylegan3 import Generator

    return Generator, make_transform


def build_official(generator_class, config: str, resolution: int, c_dim: int, channel_base: int, channel_max: int,
                   extra: dict):
    """Build an official generator and give its parameters, w_avg and magnitude_ema buffers random values."""
    kwargs = dict(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), channel_base=channel_base, channel_max=channel_max,
                  magnitude_ema_beta=0.5 ** (32 / 20e3), num_fp16_res=4, conv_clamp=256)
    if config == "R":
        kwargs.update(conv_kernel=1, channel_base=channel_base * 2, channel_max=channel_max * 2,
                      use_radial_filters=True)
    kwargs.update(extra)

    torch.manual_seed(1)
    official = generator_class(**kwargs).eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, tensor in official.named_parameters():
            value = torch.randn(tensor.shape, generator=rng)
            if name.endswith("input.affine.weight"):
                value = value * 0.3
            elif name.endswith("input.affine.bias"):
                # Around the official initialisation [cos, sin, tx, ty] = [1, 0, 0, 0], the identity transform.
                value = torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.2 * value
            elif name.endswith("affine.bias"):
                value = 1 + 0.1 * value
            elif name.endswith(".bias"):
                value = 0.1 * value
            elif name.startswith("mapping.fc"):
                value = value / 0.01  # The official initialisation divides by the lr_multiplier, 0.01.
            tensor.copy_(value)
        for name, buffer in official.named_buffers():
            if name.endswith("magnitude_ema"):
                buffer.copy_(torch.rand([], generator=rng) * 2 + 0.3)
        official.mapping.w_avg.copy_(torch.randn(official.mapping.w_avg.shape, generator=rng))
    return official


def load_with_stylebridge(official):
    """Pickle `official` as the official training loop does and load the pickle with StyleBridge's loader."""
    from stylebridge.models.checkpoints import read_generator

    stream = io.BytesIO()
    pickle.dump(dict(G=official, D=None, G_ema=official, augment_pipe=None, training_set_kwargs={}), stream)
    with tempfile.NamedTemporaryFile(suffix=".pkl") as file:
        file.write(stream.getvalue())
        file.flush()
        return read_generator(file.name)


def describe_case(config: str, resolution: int, c_dim: int, cutoff: int | None, transform: tuple | None,
                  extra: dict) -> str:
    parts = [config, f"{resolution} px"]
    if c_dim:
        parts.append(f"c_dim {c_dim}")
    if cutoff is not None:
        parts.append(f"truncation cutoff {cutoff}")
    if transform is not None:
        parts.append(f"translate ({transform[0]}, {transform[1]}), rotate {transform[2]} degrees")
    parts += [f"{key} {value}" for key, value in extra.items()]
    return ", ".join(parts)


def check_case(official_classes, config: str, resolution: int = 32, c_dim: int = 0, channel_base: int = 256,
               channel_max: int = 32, cutoff: int | None = None, transform: tuple | None = None,
               extra: dict | None = None) -> dict:
    from stylebridge.models.stylegan3 import set_input_transform

    generator_class, make_transform = official_classes
    extra = extra or {}
    official = build_official(generator_class, config, resolution, c_dim, channel_base, channel_max, extra)
    ours = load_with_stylebridge(official)
    if transform is not None:
        # gen_images.py stores the inverse of the forward transform in the input layer.
        matrix = np.linalg.inv(make_transform(transform[:2], transform[2]))
        official.synthesis.input.transform.copy_(torch.from_numpy(matrix))
        ours = set_input_transform(ours, *transform)

    z = torch.from_numpy(np.random.RandomState(3).randn(BATCH, 32)).float()
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]) % c_dim, c_dim).float() if c_dim else None
    truncation = dict(truncation_psi=0.7, truncation_cutoff=cutoff)
    # The official affine outputs (its style vectors), in the order the official synthesis runs its layers.
    official_styles = []
    affines = [official.synthesis.input.affine] + [getattr(official.synthesis, name).affine
                                                   for name in official.synthesis.layer_names]
    hooks = [affine.register_forward_hook(lambda module, inputs, output: official_styles.append(output))
             for affine in affines]
    with torch.no_grad():
        reference = official(z, c, noise_mode="const", **truncation)
        for hook in hooks:
            hook.remove()
        fast = ours(z, c, noise_mode="const", **truncation)
        reference_filter = ours(z, c, noise_mode="const", filter_impl="reference", **truncation)
        ws = ours.mapping(z, c, **truncation)
        ws_difference = (official.mapping(z, c, **truncation) - ws).abs().max()
        styles = ours.synthesis.ws_to_styles(ws)
        styles_difference = max((a - b).abs().max().item() for a, b in zip(styles, official_styles, strict=True))
        from_styles = ours.synthesis.synthesis_from_styles(official_styles)
    return dict(label=describe_case(config, resolution, c_dim, cutoff, transform, extra),
                fast=(reference - fast).abs().max().item(),
                reference=(reference - reference_filter).abs().max().item(),
                ws=ws_difference.item(), styles=styles_difference,
                from_styles=(reference - from_styles).abs().max().item(), image_max=reference.abs().max().item())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="Path to a local NVlabs/stylegan3 checkout.")
    args = parser.parse_args()
    official_classes = import_official_stylegan3(args.official)

    rows = [check_case(official_classes, **case) for case in CASES]
    print(f"| case (fp32, CPU, batch {BATCH}, truncation_psi 0.7) | max abs difference, fast filter | "
          "max abs difference, reference filter | max abs difference, W | max abs difference, S | "
          "max abs difference, image rendered from the official S | max abs official image |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['fast']:.2e} | {row['reference']:.2e} | {row['ws']:.2e} | "
              f"{row['styles']:.2e} | {row['from_styles']:.2e} | {row['image_max']:.2f} |")
    worst = max(max(row["fast"], row["reference"], row["ws"], row["styles"], row["from_styles"]) for row in rows)
    print(f"\nworst: {worst:.2e} ({'within' if worst <= TOLERANCE else 'OUTSIDE'} the {TOLERANCE:.0e} tolerance)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
