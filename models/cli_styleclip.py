"""`stylebridge styleclip-fs3`: compute StyleCLIP's fs3 and style statistics for a generator."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import styleclip_channels as channels


def add_commands(commands: argparse._SubParsersAction) -> None:
    fs3 = commands.add_parser(
        "styleclip-fs3", help="Compute StyleCLIP's fs3.npy and S_mean_std for a StyleGAN2 generator.",
        description="Measure every convolution style channel's direction in CLIP image space with StyleCLIP's "
                    "procedure (global directions) and write fs3.npy, S_mean_std and fs3.safetensors. Progress is "
                    "cached, so an interrupted run continues where it stopped when started again with the same "
                    "arguments.")
    fs3.add_argument("generator", help="StyleGAN2 checkpoint: a path, or a name in the stylegan model folder.")
    fs3.add_argument("clip", help="CLIP weights: a path, or a name in the clip model folder (e.g. ViT-B-32.pt).")

    fs3.add_argument("-o", "--output", type=Path, required=True,
                     help="Folder for fs3.npy, S_mean_std and fs3.safetensors; created if needed.")
    fs3.add_argument("--clip-model-name", default="auto",
                     help="open_clip architecture of the CLIP file (default auto: OpenAI files and folders with "
                          "open_clip_config.json).")

    fs3.add_argument("--num-images", type=int, default=channels.DEFAULT_NUM_IMAGES,
                     help=f"Images per channel (default {channels.DEFAULT_NUM_IMAGES}, as StyleCLIP).")
    fs3.add_argument("--num-samples", type=int, default=channels.DEFAULT_NUM_SAMPLES,
                     help=f"Latents for the style statistics (default {channels.DEFAULT_NUM_SAMPLES}).")
    fs3.add_argument("--seed", type=int, default=channels.DEFAULT_SEED,
                     help=f"Seed of numpy's RandomState for z (default {channels.DEFAULT_SEED}).")
    fs3.add_argument("--truncation-psi", type=float, default=channels.DEFAULT_TRUNCATION_PSI,
                     help=f"Truncation of the sampled latents (default {channels.DEFAULT_TRUNCATION_PSI}).")
    fs3.add_argument("--max-resolution", type=int, default=channels.DEFAULT_MAX_RESOLUTION,
                     help=f"Measure convolution layers of blocks up to this many pixels (default "
                          f"{channels.DEFAULT_MAX_RESOLUTION}); 0 measures every layer.")
    fs3.add_argument("--batch-size", type=int, default=64, help="Images per synthesis call (default 64).")
    fs3.add_argument("--mean-reset", choices=channels.MEAN_RESET_MODES, default="channel",
                     help="channel (default): reset only the measured channel to its mean; cumulative: keep earlier "
                          "channels at their mean too, as StyleCLIP's script does.")

    fs3.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N.")
    fs3.add_argument("--overwrite", action="store_true", help="Replace fs3 files that exist in the output folder.")
    fs3.set_defaults(handler=_styleclip_fs3)


def _resolve(kind: str, name: str) -> Path:
    from ..runtime import host

    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    return host.resolve_model(kind, name)


def _print_progress(started: float):
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 2:
            return
        last[0] = now
        elapsed = now - started
        remaining = elapsed / done * (total - done) if done else float("nan")
        print(f"fs3: {done}/{total} channels ({100 * done / total:.1f}%), {elapsed / 60:.1f} min elapsed, "
              f"about {remaining / 60:.1f} min left", flush=True)

    return report


def _styleclip_fs3(args) -> int:
    from ..runtime import host
    from .checkpoints import CheckpointError, load_stylegan
    from .clip_models import CLIPLoadError, load_clip

    targets = [args.output / channels.FS3_FILE_NAME, args.output / channels.STATISTICS_FILE_NAME,
               args.output / "fs3.safetensors"]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.overwrite:
        print(f"error: {', '.join(existing)} already exist; choose another --output folder or pass --overwrite.")
        return 2
    try:
        device = host.resolve_device(args.device)
        generator = load_stylegan(_resolve("stylegan", args.generator), device=device)
        clip = load_clip(_resolve("clip", args.clip), model_name=args.clip_model_name, device=device)
    except (CheckpointError, CLIPLoadError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    started = time.monotonic()
    try:
        data = channels.compute_channel_data(
            generator, clip, num_images=args.num_images, num_samples=args.num_samples, seed=args.seed,
            truncation_psi=args.truncation_psi, max_resolution=args.max_resolution or None,
            batch_size=args.batch_size, mean_reset=args.mean_reset, progress=_print_progress(started),
            where="styleclip-fs3")
    except ValueError as error:
        print(f"error: {error}")
        return 2
    fs3_path, statistics_path = channels.save_official(data, args.output)
    bundle = channels.save_channel_data(data, args.output / "fs3.safetensors")
    print(f"Wrote {fs3_path} ({data.rows} channels x {data.clip_dim}), {statistics_path} and {bundle} in "
          f"{(time.monotonic() - started) / 60:.1f} min.")
    return 0
