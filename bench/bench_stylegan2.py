"""StyleGANGenerate's synthesis on CPU versus the official StyleGAN2 reference path, on the same weights.

Needs a local checkout of NVlabs/stylegan3 (not part of this repository):

    python bench/bench_stylegan2.py --official /path/to/stylegan3 [--resolution 256] [--repeats 5]

Both networks get identical random weights for a config-f-like 256 px generator (channel_base 32768,
channel_max 512). Each measurement is the median of `--repeats` synthesis calls after one warm-up, in one
process, with torch's default thread count. The two implementations run alternately. CPU time (all threads of the
process) is reported beside wall time because it is less sensitive to other load on the machine. Prints a markdown
table, where a speed-up above 1 means StyleBridge is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import _import_official  # noqa: E402


def compare(first, second, repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of two functions, called alternately so that load changes hit both alike."""
    first()
    second()
    samples: dict[str, list[float]] = {"first_wall": [], "first_cpu": [], "second_wall": [], "second_cpu": []}
    for _ in range(repeats):
        for name, func in (("first", first), ("second", second)):
            wall, cpu = time.perf_counter(), time.process_time()
            func()
            samples[f"{name}_wall"].append(time.perf_counter() - wall)
            samples[f"{name}_cpu"].append(time.process_time() - cpu)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="Path to a local NVlabs/stylegan3 checkout.")
    parser.add_argument("--resolution", type=int, default=256, help="Output resolution in px (default 256).")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="Batch sizes (default 1 8).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per measurement (default 5).")
    args = parser.parse_args()

    official_class = _import_official(args.official)
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.stylegan2 import StyleGAN2Config, channels_for

    config = StyleGAN2Config(img_resolution=args.resolution, channels=channels_for(args.resolution),
                             conv_clamp=256, num_fp16_res=4)
    ours = make_generator(config, seed=0)
    official = official_class(z_dim=512, c_dim=0, w_dim=512, img_resolution=args.resolution, img_channels=3,
                              channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256).eval()
    official.requires_grad_(False)
    official.load_state_dict(ours.state_dict(), strict=False)

    print(f"StyleGAN2 synthesis, {args.resolution} px config-f-like, CPU fp32, noise const, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print("| batch | official wall (s) | StyleBridge wall (s) | speed-up (wall) | official CPU (s) | "
          "StyleBridge CPU (s) | speed-up (CPU) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batches:
        ws = ours.mapping(torch.randn(batch, 512, generator=torch.Generator().manual_seed(batch)), None)
        with torch.no_grad():
            difference = (official.synthesis(ws, noise_mode="const") - ours.synthesis(ws, noise_mode="const"))
            times = compare(lambda ws=ws: official.synthesis(ws, noise_mode="const"),
                            lambda ws=ws: ours.synthesis(ws, noise_mode="const"), args.repeats)
        print(f"| {batch} | {times['first_wall']:.3f} | {times['second_wall']:.3f} | "
              f"{times['first_wall'] / times['second_wall']:.2f}x | {times['first_cpu']:.3f} | "
              f"{times['second_cpu']:.3f} | {times['first_cpu'] / times['second_cpu']:.2f}x | "
              f"{difference.abs().max().item():.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
