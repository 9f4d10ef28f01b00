"""Time for StyleBridge's projector to reach the loss NVIDIA's projector ends with, on the same generator and targets.

Needs a local checkout of NVlabs/stylegan2-ada-pytorch, whose `projector.py` is the official projector (the
stylegan3 repository has none):

    python bench/bench_projector.py --official /path/to/stylegan2-ada-pytorch [--official-steps 1000]

Setup, identical for both projectors:
- generator: the demo StyleGAN2 config (64 px, untrained, `models.demo.DEMO_STYLEGAN2`, seed 0), or
  `--resolution 32` for the conftest-sized one. Both projectors call the same StyleBridge generator object, so
  the comparison measures the projectors, not the networks.
- perceptual network: VGG16 with random weights (torchvision's layout, seed 0; no pretrained weights are
  available offline), wrapped in the interface of NVIDIA's `vgg16.pt` (`vgg16(img_0_255, resize_images=False,
  return_lpips=True)`) for the official code, and loaded by our `models.perceptual` from the same tensors. The
  official code's download (`dnnlib.util.open_url`) and `torch.jit.load` are replaced for the run, so nothing is
  fetched.
- targets: an image the generator made (seed 1, truncation 0.5) and the astronaut photo from scikit-image,
  centre-cropped and resized.

Both results are measured the same way: the distance of the final latent, rendered with that projector's
optimised noise and clamped to the image range, to the target. Our projector runs with the official schedule at
several step counts. The table gives the fewest of them, and its wall time, at which our distance matches or
beats the official one after `--official-steps` steps. Wall times include the W statistics (10,000 mapped samples).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch


def _vgg_reference(folder: Path):
    """Random VGG16 features in torchvision's layout, saved as vgg16-397923af.pth in `folder`."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features.eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({f"features.{name}": value for name, value in features.state_dict().items()},
               folder / "vgg16-397923af.pth")


class NvidiaVGG16Interface(torch.nn.Module):
    """Our LPIPS features behind the call signature of NVIDIA's vgg16.pt, for the official projector."""

    def __init__(self, distance):
        super().__init__()
        self.distance = distance

    def forward(self, images, resize_images: bool = False, return_lpips: bool = False):
        assert not resize_images, "the official projector calls resize_images=False"
        assert return_lpips, "the official projector calls return_lpips=True"
        return self.distance.features_of(images / 127.5 - 1)


def _targets(generator) -> dict[str, torch.Tensor]:
    """Targets as IMAGE [H, W, 3] in 0..1 at the generator's resolution."""
    from skimage import data

    from stylebridge.models.inversion import prepare_target
    from stylebridge.models.sampling import generate_images, sample_w

    own = generate_images(generator, sample_w(generator, 1, truncation_psi=0.5))[0]
    photo = torch.from_numpy(data.astronaut().astype(np.float32) / 255)
    return {"generated (seed 1, psi 0.5)": own,
            "astronaut photo": prepare_target(photo, generator.img_resolution, "center_crop")}


def _final_distance(distance, generator, ws: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Distance and PSNR of `ws` [1, num_ws, w_dim] rendered by `generator` (const noise) against `target`."""
    from stylebridge.models.projector import clamp_to_image_range, image_to_generator_range, psnr
    from stylebridge.models.sampling import to_image_layout

    with torch.no_grad():
        images = generator.synthesis(ws, noise_mode="const")
        prepared = distance.prepare(image_to_generator_range(target, ws.device))
        value = float(distance(clamp_to_image_range(images), prepared).sum())
        return value, psnr(to_image_layout(images)[0], target)


def run_official(official_module, generator, target, distance, steps: int, seed: int):
    """Run the official `project`, returning (seconds, final distance, PSNR)."""
    copies = []
    real_deepcopy = copy.deepcopy

    def recording_deepcopy(value, memo=None):
        result = real_deepcopy(value, memo)
        if value is generator:
            copies.append(result)  # the official function's private copy, whose noise buffers it optimises
        return result

    wrapper = NvidiaVGG16Interface(distance)
    target_uint8 = (target * 255).round().clamp(0, 255).to(torch.uint8).permute(2, 0, 1)
    np.random.seed(seed)
    torch.manual_seed(seed)
    with mock.patch.object(official_module.dnnlib.util, "open_url", lambda url: contextlib.nullcontext(url)), \
            mock.patch.object(torch.jit, "load", lambda file: wrapper), \
            mock.patch.object(official_module.copy, "deepcopy", recording_deepcopy), \
            contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        ws_steps = official_module.project(generator, target_uint8, num_steps=steps, device=torch.device("cpu"))
        seconds = time.perf_counter() - started
    value, psnr = _final_distance(distance, copies[-1], ws_steps[-1:], target)
    return seconds, value, psnr


def run_ours(generator, target, distance, steps: int, seed: int):
    """Run our projector with the official schedule (W, noise optimised): (seconds, final distance, PSNR)."""
    from stylebridge.models import projector

    projector._w_stats_cache.clear()  # count the W statistics in every run, as the official function does
    started = time.perf_counter()
    result = projector.project(generator, target, space="W", steps=steps, distance=distance, noise="optimize",
                               seed=seed, preview_every=0)
    seconds = time.perf_counter() - started
    value, psnr = _final_distance(distance, result.generator, result.latent.ws(), target)
    return seconds, value, psnr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True,
                        help="Path to a local NVlabs/stylegan2-ada-pytorch checkout (contains projector.py).")
    parser.add_argument("--official-steps", type=int, default=1000, help="Steps of the official run (default 1000).")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 300, 500, 1000],
                        help="Step counts tried for our projector, ascending (default 100 200 300 500 1000).")
    parser.add_argument("--resolution", type=int, choices=[32, 64], default=64,
                        help="64: the demo generator; 32: the conftest-sized tiny generator (default 64).")
    parser.add_argument("--seed", type=int, default=303, help="Seed of both runs (official default 303).")
    args = parser.parse_args()

    sys.path.insert(0, str(args.official.resolve()))
    import projector as official_module  # the official projector.py

    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.demo import DEMO_STYLEGAN2
    from stylebridge.models.perceptual import load_distance
    from stylebridge.models.stylegan2 import StyleGAN2Config

    home = Path(tempfile.mkdtemp(prefix="bench_projector_"))
    os.environ["STYLEBRIDGE_HOME"] = str(home)
    os.environ.setdefault("STYLEBRIDGE_STANDALONE", "1")
    _vgg_reference(home / "models" / "lpips")
    distance = load_distance("lpips").distance

    if args.resolution == 64:
        config = DEMO_STYLEGAN2
    else:
        config = StyleGAN2Config(z_dim=32, w_dim=32, img_resolution=32, channels=[64, 64, 32, 16],
                                 architecture="skip", conv_clamp=None, num_fp16_res=0, mapping_layers=3)
    generator = make_generator(config, seed=0)

    print(f"generator: {config.img_resolution} px, {generator.num_ws} x {generator.w_dim} W+; torch threads "
          f"{torch.get_num_threads()}; distance {distance.name} (random VGG16 weights)\n")
    print("| target | official steps | official s | official s/step | official distance | official PSNR | "
          "our steps to match | our s | our s/step | our distance | our PSNR | time ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, target in _targets(generator).items():
        official_seconds, official_value, official_psnr = run_official(
            official_module, generator, target, distance, args.official_steps, args.seed)
        match = None
        for steps in args.steps:
            seconds, value, psnr = run_ours(generator, target, distance, steps, args.seed)
            print(f"<!-- ours {name}: {steps} steps, {seconds:.1f} s, distance {value:.4f}, PSNR {psnr:.2f} -->",
                  flush=True)
            if value <= official_value:
                match = (steps, seconds, value, psnr)
                break
        official_row = (f"| {name} | {args.official_steps} | {official_seconds:.1f} | "
                        f"{official_seconds / args.official_steps:.3f} | {official_value:.4f} | {official_psnr:.2f} |")
        if match is None:
            print(f"{official_row} not reached in {args.steps[-1]} | | | | | |", flush=True)
            continue
        steps, seconds, value, psnr = match
        ratio = seconds / official_seconds
        print(f"{official_row} {steps} | {seconds:.1f} | {seconds / steps:.3f} | {value:.4f} | {psnr:.2f} | "
              f"{ratio:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
