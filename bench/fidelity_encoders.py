"""Compare StyleBridge's pSp / e4e encoder networks with the official classes on the same weights (CPU, fp32).

Needs local checkouts of eladrich/pixel2style2pixel and omertov/encoder4editing (not part of this repository):

    python bench/fidelity_encoders.py --psp /path/to/pixel2style2pixel --e4e /path/to/encoder4editing

For every encoder_type of each repository it builds the official encoder (IR-SE50) with random weights and
non-default BatchNorm statistics, loads its state dict into ours with strict=True, and compares outputs on random
input. It also checks `prepare_input` against the repositories' torchvision inference transform, and the decoder
keys our checkpoint writer emits against the official rosinality Generator. Prints a markdown table and the
state-dict layout digests that tests/test_encoders.py pins.

The official stylegan2 package compiles CUDA extensions when imported. The script replaces that one module with
placeholders, which neither the encoders nor the Generator constructor call.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

# (repository option, official class name, our encoder_type)
CASES = [
    ("e4e", "Encoder4Editing", "Encoder4Editing"),
    ("e4e", "GradualStyleEncoder", "GradualStyleEncoder"),
    ("e4e", "BackboneEncoderUsingLastLayerIntoW", "SingleStyleCodeEncoder"),
    ("psp", "GradualStyleEncoder", "GradualStyleEncoder"),
    ("psp", "BackboneEncoderUsingLastLayerIntoW", "BackboneEncoderUsingLastLayerIntoW"),
    ("psp", "BackboneEncoderUsingLastLayerIntoWPlus", "BackboneEncoderUsingLastLayerIntoWPlus"),
]


class _PlaceholderFusedLeakyReLU(nn.Module):
    """Placeholder for the compiled op's module, whose `bias` parameter is all the state-dict keys need."""

    def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))


def _not_compiled(*args, **kwargs):
    raise RuntimeError("The official compiled op is not available in this comparison.")


def _import_official(checkout: Path):
    """Import models.encoders.psp_encoders and models.stylegan2.model from `checkout`, fresh each time."""
    for name in list(sys.modules):
        if name == "models" or name.startswith(("models.", "configs")):
            del sys.modules[name]
    op = types.ModuleType("models.stylegan2.op")
    op.FusedLeakyReLU = _PlaceholderFusedLeakyReLU
    op.fused_leaky_relu = _not_compiled
    op.upfirdn2d = _not_compiled
    sys.path.insert(0, str(checkout))
    try:
        sys.modules["models.stylegan2.op"] = op
        encoders = importlib.import_module("models.encoders.psp_encoders")
        model = importlib.import_module("models.stylegan2.model")
    finally:
        sys.path.remove(str(checkout))
    return encoders, model


def layout_digest(state: dict) -> str:
    lines = "\n".join(f"{name}:{list(tensor.shape)}" for name, tensor in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def compare_networks(checkouts: dict[str, Path], size: int) -> list[tuple[str, str, bool, int, str, float]]:
    from stylebridge.models.encoder_networks import IR_SE_50, build_encoder_network

    num_styles = 2 * int(np.log2(size)) - 2
    opts = argparse.Namespace(stylegan_size=size, input_nc=3, n_styles=num_styles)
    x = torch.randn([2, 3, 256, 256], generator=torch.Generator().manual_seed(0))
    rows = []
    for repository, class_name, encoder_type in CASES:
        official_encoders, _ = _import_official(checkouts[repository])
        torch.manual_seed(1)
        official = getattr(official_encoders, class_name)(50, "ir_se", opts).eval()
        statistics = torch.Generator().manual_seed(2)
        for module in official.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=statistics))
                module.running_var.copy_(1 + 0.2 * torch.rand(module.num_features, generator=statistics))
        with torch.device("meta"):
            ours = build_encoder_network(encoder_type, IR_SE_50, num_styles, 512)
        same_layout = layout_digest(official.state_dict()) == layout_digest(ours.state_dict())
        ours.load_state_dict(official.state_dict(), strict=True, assign=True)
        ours.eval()
        with torch.no_grad():
            expected, actual = official(x), ours(x)
        if actual.ndim == 2 and expected.ndim == 3:
            actual = actual.unsqueeze(1).expand_as(expected)  # e4e repeats the single code over the layers.
        difference = float((expected - actual).abs().max())
        rows.append((repository, encoder_type, same_layout, len(ours.state_dict()),
                     layout_digest(ours.state_dict()), difference))
    return rows


def compare_preprocessing() -> float:
    import torchvision.transforms as transforms
    from PIL import Image

    from stylebridge.models.encoders import prepare_input

    worst = 0.0
    rng = np.random.default_rng(0)
    for height, width in [(1024, 1024), (300, 517), (64, 64), (256, 256)]:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        images = torch.from_numpy(pixels.astype(np.float32) / 255)[None]
        for shape in [(256, 256), (192, 256)]:
            reference = transforms.Compose([transforms.Resize(shape), transforms.ToTensor(),
                                            transforms.Normalize([0.5] * 3, [0.5] * 3)])
            difference = (reference(Image.fromarray(pixels)) - prepare_input(images, shape)[0]).abs().max()
            worst = max(worst, float(difference))
    return worst


def compare_decoder_keys(checkout: Path) -> bool:
    from stylebridge.models.checkpoint_writers import make_generator, rosinality_state_dict
    from stylebridge.models.encoders import _rosinality_kernel_buffers
    from stylebridge.models.stylegan2 import StyleGAN2Config

    _, official_model = _import_official(checkout)
    official = official_model.Generator(32, 32, 3, channel_multiplier=2).state_dict()
    # rosinality's channel table gives 512 channels up to 32 px.
    config = StyleGAN2Config(z_dim=32, w_dim=32, img_resolution=32, channels=[512] * 4, architecture="skip",
                             conv_clamp=None, num_fp16_res=0, mapping_layers=3)
    generator = make_generator(config, seed=0)
    ours = {**rosinality_state_dict(generator), **_rosinality_kernel_buffers(generator)}
    same_keys = set(official) == set(ours)
    same_shapes = same_keys and all(tuple(official[k].shape) == tuple(ours[k].shape) for k in official)
    same_kernels = same_keys and all(torch.equal(official[k], ours[k]) for k in official if k.endswith("kernel"))
    return same_keys and same_shapes and same_kernels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--psp", type=Path, required=True, help="Checkout of eladrich/pixel2style2pixel.")
    parser.add_argument("--e4e", type=Path, required=True, help="Checkout of omertov/encoder4editing.")
    parser.add_argument("--size", type=int, default=1024, help="Generator resolution in pixels (default 1024).")
    args = parser.parse_args()

    rows = compare_networks({"psp": args.psp, "e4e": args.e4e}, args.size)
    print(f"| repository | encoder_type | same names and shapes | tensors | max abs difference ({args.size} px) |")
    print("|---|---|---|---|---|")
    for repository, encoder_type, same_layout, count, _, difference in rows:
        print(f"| {repository} | {encoder_type} | {same_layout} | {count} | {difference:.2e} |")
    print("\nLayout digests (sha256 of sorted 'name:[shape]' lines):")
    for _, encoder_type, _, count, digest, _ in rows:
        print(f"  {encoder_type}: {count} tensors, {digest}")
    print(f"\nprepare_input vs torchvision Resize/ToTensor/Normalize: max abs difference {compare_preprocessing():.2e}")
    print(f"decoder keys, shapes and blur kernels equal the official rosinality Generator: "
          f"{compare_decoder_keys(args.psp)}")
    worst = max(row[5] for row in rows)
    return 0 if worst == 0 and all(row[2] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
