"""`stylebridge styleclip-fs3`: compute StyleCLIP's fs3 and style statistics for a generator.

Exit codes: 0 success, 2 invalid arguments or model files that could not be loaded (nothing was computed or
written), 130 interrupted (a rerun resumes from the saved progress). Damaged cache files are deleted with a
warning and computed again.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
import time
from pathlib import Path

from . import styleclip_channels as channels

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

# The settings' ranges, the same as the StyleCLIP Compute fs3 node's. Flag: (attribute, min, max).
SETTING_RANGES = {f"--{name.replace('_', '-')}": (name, *bounds) for name, bounds in channels.SETTING_RANGES.items()}
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
INTERRUPTED_MESSAGE = "Interrupted. Run the same command again to resume from the saved progress."


class InvalidInput(Exception):
    """An argument or model file that the command rejects before it computes anything (exit code 2)."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    fs3 = commands.add_parser(
        "styleclip-fs3", help="Compute StyleCLIP's fs3.npy and S_mean_std for a StyleGAN2 or StyleGAN3 generator.",
        description="Measure every convolution style channel's direction in CLIP image space with StyleCLIP's "
                    "procedure (global directions) and write fs3.npy, S_mean_std and fs3.safetensors. Progress is "
                    "cached, so an interrupted run continues where it stopped when started again with the same "
                    "arguments.")
    fs3.add_argument("generator",
                     help="StyleGAN2 or StyleGAN3 checkpoint: a path, or a name in the stylegan model folder.")
    fs3.add_argument("clip", help="CLIP weights: a path, or a name in the clip model folder (e.g. ViT-B-32.pt).")

    fs3.add_argument("-o", "--output", type=Path, required=True,
                     help="Folder for fs3.npy, S_mean_std and fs3.safetensors, created if needed. To load the files "
                          "with the Load StyleCLIP fs3 node, use a folder under $STYLEBRIDGE_HOME/models/styleclip.")
    fs3.add_argument("--clip-model-name", default="auto",
                     help="open_clip architecture of the CLIP file (default auto: OpenAI files and folders with "
                          "open_clip_config.json).")

    fs3.add_argument("--num-images", type=int, default=channels.DEFAULT_NUM_IMAGES,
                     help=f"Images per channel, 1 to 10000 and at most --num-samples (default "
                          f"{channels.DEFAULT_NUM_IMAGES}, as StyleCLIP).")
    fs3.add_argument("--num-samples", type=int, default=channels.DEFAULT_NUM_SAMPLES,
                     help=f"Latents for the style statistics, 2 to 10000000 (default {channels.DEFAULT_NUM_SAMPLES}).")
    fs3.add_argument("--seed", type=int, default=channels.DEFAULT_SEED,
                     help=f"Seed of numpy's RandomState for z, 0 to 2**32-1 (default {channels.DEFAULT_SEED}).")
    fs3.add_argument("--truncation-psi", type=float, default=channels.DEFAULT_TRUNCATION_PSI,
                     help=f"Truncation of the sampled latents, 0 to 1 (default {channels.DEFAULT_TRUNCATION_PSI}).")
    fs3.add_argument("--max-resolution", type=int, default=channels.DEFAULT_MAX_RESOLUTION,
                     help=f"Measure convolution layers of blocks up to this many pixels, up to 4096 (default "
                          f"{channels.DEFAULT_MAX_RESOLUTION}); 0 measures every layer.")
    fs3.add_argument("--batch-size", type=int, default=64, help="Images per synthesis call, 2 to 4096 (default 64).")
    fs3.add_argument("--mean-reset", choices=channels.MEAN_RESET_MODES, default="channel",
                     help="channel (default): reset only the measured channel to its mean; cumulative: keep earlier "
                          "channels at their mean too, as StyleCLIP's script does.")

    fs3.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N (N: GPU index).")
    fs3.add_argument("--overwrite", action="store_true", help="Replace fs3 files that exist in the output folder.")
    fs3.set_defaults(handler=_styleclip_fs3)


def _fail(message: str, exit_code: int = EXIT_INVALID) -> int:
    print(f"error: {message}", file=sys.stderr)
    return exit_code


def _check_arguments(args) -> None:
    """Raise InvalidInput for the first argument out of range, without loading anything."""
    for flag, (attribute, minimum, maximum) in SETTING_RANGES.items():
        value = getattr(args, attribute)
        if not minimum <= value <= maximum:
            raise InvalidInput(f"{flag} must be between {minimum} and {maximum}, got {value}.")
    if args.num_images > args.num_samples:
        raise InvalidInput(f"--num-images {args.num_images} is larger than --num-samples {args.num_samples}. The "
                           f"measured images are the first --num-images sampled latents, so raise --num-samples or "
                           f"lower --num-images.")
    if not DEVICE_PATTERN.fullmatch(args.device):
        raise InvalidInput(f"--device {args.device!r} is invalid. Expected auto, cpu, cuda or cuda:N, where N is a "
                           f"GPU index such as cuda:0.")


def _check_output(args) -> None:
    """Raise InvalidInput when --output cannot be a folder or already contains fs3 files (without --overwrite)."""
    output = args.output
    if output.exists() and not output.is_dir():
        raise InvalidInput(f"--output {output} is a file, but the output must be a folder: fs3.npy, S_mean_std and "
                           f"fs3.safetensors are written into it. Pass a folder path.")
    existing_ancestor = next(parent for parent in output.absolute().parents if parent.exists())
    if not existing_ancestor.is_dir():
        raise InvalidInput(f"--output {output} cannot be created because {existing_ancestor} is a file. The output "
                           f"must be a folder.")

    targets = [output / channels.FS3_FILE_NAME, output / channels.STATISTICS_FILE_NAME,
               output / "fs3.safetensors"]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.overwrite:
        raise InvalidInput(f"{', '.join(existing)} already exist. Choose another --output folder or pass "
                           f"--overwrite.")


def _resolve_device(name: str):
    """Return the torch device for a --device value that passed DEVICE_PATTERN, checking that it exists."""
    import torch

    from ..runtime import host

    try:
        device = host.resolve_device(name)
    except ValueError as error:
        raise InvalidInput(f"--device {name}: {error}") from error
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise InvalidInput(f"--device {name} does not exist because this machine has {count} CUDA devices "
                           f"(cuda:0 to cuda:{count - 1}).")
    return device


def _resolve(kind: str, name: str) -> Path:
    from ..runtime import host

    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    return host.resolve_model(kind, name)


def _load_models(args, device):
    """Load the generator and CLIP.

    Raises InvalidInput for unreadable model files and for a --max-resolution that selects no layer of the generator.
    """
    from .checkpoints import CheckpointError, load_stylegan
    from .clip_models import CLIPLoadError, load_clip

    try:
        generator = load_stylegan(_resolve("stylegan", args.generator), device=device)
        channels.style_layers(generator)  # Raises ValueError for a generator without style space.
    except (CheckpointError, FileNotFoundError, ValueError, pickle.UnpicklingError) as error:
        # UnpicklingError: the restricted unpickler rejected a pickle that references code (UnsafePickleError).
        raise InvalidInput(str(error)) from error
    if args.max_resolution:
        try:
            channels.check_max_resolution(generator, args.max_resolution, "--max-resolution", where=args.generator)
        except ValueError as error:
            raise InvalidInput(str(error)) from None

    try:
        clip = load_clip(_resolve("clip", args.clip), model_name=args.clip_model_name, device=device)
    except (CLIPLoadError, FileNotFoundError, ValueError) as error:
        raise InvalidInput(str(error)) from error
    return generator, clip


class ProgressPrinter:
    """Prints fs3 progress at most every 2 s, with the time left estimated from this run's speed.

    The estimate uses the channels measured since the first report of this run. So it counts neither the channels
    resumed from the cache nor the time spent on the style statistics, which come before the first chunk.
    """

    def __init__(self):
        self.started = time.monotonic()
        self.first_report: tuple[float, int] | None = None
        self.last_print: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first_report is None:
            self.first_report = (now, done)
        if done < total and self.last_print is not None and now - self.last_print < 2:
            return
        self.last_print = now

        line = (f"fs3: {done}/{total} channels ({100 * done / total:.1f}%), "
                f"{(now - self.started) / 60:.1f} min elapsed")
        first_time, first_done = self.first_report
        if first_done < done < total:
            remaining = (now - first_time) / (done - first_done) * (total - done)
            line += f", about {remaining / 60:.1f} min left"
        print(line, flush=True)


def _compute_and_save(args, generator, clip) -> int:
    progress = ProgressPrinter()
    try:
        data = channels.compute_channel_data(
            generator, clip, num_images=args.num_images, num_samples=args.num_samples, seed=args.seed,
            truncation_psi=args.truncation_psi, max_resolution=args.max_resolution or None,
            batch_size=args.batch_size, mean_reset=args.mean_reset, progress=progress, where="styleclip-fs3")
    except ValueError as error:  # ChannelDataError included.
        return _fail(str(error))

    fs3_path, statistics_path = channels.save_official(data, args.output)
    bundle = channels.save_channel_data(data, args.output / "fs3.safetensors")
    print(f"Wrote {fs3_path} ({data.rows} channels x {data.clip_dim}), {statistics_path} and {bundle} in "
          f"{(time.monotonic() - progress.started) / 60:.1f} min.")
    return EXIT_OK


def _styleclip_fs3(args) -> int:
    try:
        _check_arguments(args)
        _check_output(args)
        device = _resolve_device(args.device)
        generator, clip = _load_models(args, device)
    except InvalidInput as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print("Interrupted before the fs3 computation started.", file=sys.stderr)
        return EXIT_INTERRUPTED

    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _fail(f"creating the --output folder {args.output} failed: {error}")

    try:
        return _compute_and_save(args, generator, clip)
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED
