"""Time StyleBridge's StyleGAN3-T synthesis against the official reference path on CPU, on the same weights.

Needs a local checkout of NVlabs/stylegan3 (not part of this repository):

    python bench/bench_stylegan3.py --official /path/to/stylegan3

For each configuration it builds the official Generator with random weights and non-trivial magnitude_ema,
pickles it with the official persistence code and loads the pickle with StyleBridge's loader. It then times
`synthesis(ws)` of each, alternating between them, keeps the fastest of `--repeats` runs and records the max
abs difference of the images. On CPU the official filtered_lrelu, upfirdn2d and bias_act ops use their
reference PyTorch paths, so this compares two plain-PyTorch implementations. Nothing the official code writes
is kept. The output is a markdown table, where the ratio is the official time divided by ours.
"""

from __future__ import annotations

import argparse
import io
import pickle
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

# (label, official Generator keyword arguments). The 1024 px case uses a quarter of the official channel counts,
# so that the official reference path finishes in minutes on a 2-core machine. Its layer sizes are the official ones.
CONFIGS = [
    ("T 256 px, official channels (channel_base 32768, channel_max 512)",
     {"img_resolution": 256, "channel_base": 32768, "channel_max": 512}),
    ("T 1024 px, 1/4 channels (channel_base 8192, channel_max 128)",
     {"img_resolution": 1024, "channel_base": 8192, "channel_max": 128}),
]


def _import_official(path: Path):
    sys.path.insert(0, str(path))
    try:
        import pkg_resources  # noqa: F401  # The official conv2d_gradfix imports it.
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    from training.networks_stylegan3 import Generator

    return Generator


def _official_generator(generator_class, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    generator = generator_class(z_dim=512, c_dim=0, w_dim=512, img_channels=3, **kwargs)
    generator = generator.eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in generator.named_buffers():
            if name.endswith("magnitude_ema"):
                buffer.copy_(0.5 + torch.rand([], generator=rng))
    return generator


def _load_ours(official_generator):
    from stylebridge.models.checkpoints import read_generator

    stream = io.BytesIO()
    pickle.dump({"G_ema": official_generator}, stream)
    with tempfile.NamedTemporaryFile(suffix=".pkl") as file:
        file.write(stream.getvalue())
        file.flush()
        return read_generator(file.name)


def _time(function, *args, **kwargs) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.no_grad():
        output = function(*args, **kwargs)
    return time.perf_counter() - start, output


def run_config(generator_class, label: str, kwargs: dict, repeats: int, batch: int) -> dict:
    official = _official_generator(generator_class, **kwargs)
    ours = _load_ours(official)
    z = torch.randn([batch, 512], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = official.mapping(z, None, truncation_psi=0.7)

    times = {"official": [], "ours": [], "ours_reference": []}
    difference = 0.0
    for _ in range(repeats):
        seconds, reference = _time(official.synthesis, ws)
        times["official"].append(seconds)
        seconds, output = _time(ours.synthesis, ws)
        times["ours"].append(seconds)
        seconds, _ = _time(ours.synthesis, ws, filter_impl="reference")
        times["ours_reference"].append(seconds)
        difference = max(difference, (reference - output).abs().max().item())
    best = {name: min(values) for name, values in times.items()}
    return dict(label=label, difference=difference, **best)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="Path to a local NVlabs/stylegan3 checkout.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per implementation; the fastest counts.")
    parser.add_argument("--batch", type=int, default=1, help="Images per synthesis call.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, usually the number of cores).")
    parser.add_argument("--only", choices=["256", "1024"], default=None, help="Run only the 256 or 1024 px case.")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    generator_class = _import_official(args.official)

    rows = []
    for label, kwargs in CONFIGS:
        if args.only is not None and kwargs["img_resolution"] != int(args.only):
            continue
        rows.append(run_config(generator_class, label, kwargs, args.repeats, args.batch))

    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, fastest of {args.repeats} runs, fp32.\n")
    print("| configuration | official reference path | ours (fast) | ratio official / ours "
          "| ours (reference filter) | max abs difference |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['official']:.2f} s | {row['ours']:.2f} s | "
              f"{row['official'] / row['ours']:.2f}x | {row['ours_reference']:.2f} s | {row['difference']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
