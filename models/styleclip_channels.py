"""Channel relevance data of StyleCLIP's global directions: `fs3` and the style-channel statistics.

StyleCLIP's global directions (Patashnik et al., ICCV 2021; repository orpatashnik/StyleCLIP) need, for every
channel c of the convolution style layers, the direction in CLIP image space that an edit of c causes. That is
`delta_i_c`, saved as `fs3.npy` with one unit row per channel. Its procedure, which `compute_channel_data`
follows:

1. Style statistics: map `num_samples` z drawn with `numpy.random.RandomState(seed)` (100,000 and seed 5) to W
   with truncation psi 0.7 on every layer (as global_directions/GetCode.py does), compute S, and take each
   channel's mean and population std. They are saved as `S_mean_std`, a pickle of [means, stds] with one array
   per style layer, ToRGB layers included.
2. For each convolution style layer up to 128 px (fs3 rows follow synthesis order; ToRGB layers and StyleGAN3's
   input transform are left out), each channel c and each of the first `num_images` samples: set c to its mean,
   render with c at mean - 5 std and at mean + 5 std (const noise), and encode both images with CLIP.
3. Per channel: normalise the features, subtract (- from +), normalise, average over images, normalise.

The official scripts render one image per call. Here one batch contains many (channel, image, sign) rows, and the
synthesis stages before the edited layer run once per layer instead of once per image, which is where the speed-up
comes from (bench/bench_styleclip.py). Progress is saved to a cache file after every chunk, so an interrupted run
resumes where it stopped and a finished one is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..runtime import host
from .clip_models import CLIPModel
from .latents import describe_generator
from .safe_pickle import NumpyFileError, RestrictedUnpickler, UnsafePickleError, load_numpy_file
from .style_space import require_style_space
from .stylegan2 import StyleLayer

logger = logging.getLogger(__name__)

STYLECLIP_FOLDER = "styleclip"
FS3_FILE_NAME = "fs3.npy"
STATISTICS_FILE_NAME = "S_mean_std"
CHANNEL_DATA_FORMAT = "stylebridge-styleclip-channels"
MEAN_RESET_MODES = ("channel", "cumulative")

# StyleCLIP's settings in global_directions/GetCode.py and SingleChannel.py.
DEFAULT_NUM_IMAGES = 100
DEFAULT_NUM_SAMPLES = 100_000
DEFAULT_SEED = 5
DEFAULT_TRUNCATION_PSI = 0.7
DEFAULT_DELTA_STD = 5.0
DEFAULT_MAX_RESOLUTION = 128
# Allowed (min, max) of the settings, shared by the StyleCLIP Compute fs3 node and `stylebridge styleclip-fs3`.
SETTING_RANGES = {
    "num_images": (1, 10_000),
    "num_samples": (2, 10_000_000),
    "seed": (0, 2 ** 32 - 1),
    "truncation_psi": (0.0, 1.0),
    "max_resolution": (0, 4096),
    "batch_size": (2, 4096),
}


# Row norms of a valid fs3 lie within this distance of 1. StyleCLIP's SingleChannel.py normalises the rows in the
# dtype of its CLIP features, which is float16 when CLIP runs on a GPU, so the tolerance covers float16 rounding.
FS3_NORM_TOLERANCE = 1e-2
_FS3_FIX = "recompute it with `stylebridge styleclip-fs3` or the StyleCLIP Compute fs3 node, or replace it"


class ChannelDataError(ValueError):
    """Raised when fs3 or style statistics do not fit the generator or the CLIP model, or a file is malformed."""


class UnsafeStatisticsError(ChannelDataError, UnsafePickleError):
    """Raised when an S_mean_std pickle references a global outside the safe unpickler's allowlist."""


def _invalid(path: Path, kind: str, reason: str) -> ChannelDataError:
    return ChannelDataError(f"{path} is not a valid {kind}: {reason}; {_FS3_FIX}.")


def _indices(noun: str, indices: np.ndarray, limit: int = 8) -> str:
    """Format indices for messages: "row 3", or "rows 3, 7, 9" with "..." after `limit` of them."""
    listed = ", ".join(str(int(index)) for index in indices[:limit])
    return f"{noun}{'s' if len(indices) > 1 else ''} {listed}{', ...' if len(indices) > limit else ''}"


def style_layers(generator) -> list[StyleLayer]:
    """Describe every style layer of `generator` in S order (StyleGAN2 or StyleGAN3)."""
    require_style_space(generator)
    return generator.synthesis.style_layout()


def measured_layers(generator, max_resolution: int | None = DEFAULT_MAX_RESOLUTION) -> list[StyleLayer]:
    """Convolution style layers of at most `max_resolution` px (None = all), in fs3 row order.

    A StyleGAN2 layer's resolution is its block's; a StyleGAN3 layer's is its output sampling rate.
    """
    return [layer for layer in style_layers(generator)
            if layer.is_conv and (max_resolution is None or layer.resolution <= max_resolution)]


def check_max_resolution(generator, max_resolution: int | None, input_name: str = "max_resolution",
                         where: str = "") -> list[StyleLayer]:
    """Return measured_layers(generator, max_resolution), or raise ValueError naming `input_name` when it is empty."""
    targets = measured_layers(generator, max_resolution)
    if not targets:
        prefix = f"{where}: " if where else ""
        lowest = min(layer.resolution for layer in style_layers(generator) if layer.is_conv)
        raise ValueError(f"{prefix}{input_name} {max_resolution} selects no layer: the generator's lowest "
                         f"convolution layer is {lowest} px. Set {input_name} to at least {lowest}, or 0 to measure "
                         f"every layer.")
    return targets


def allowed_row_counts(generator) -> list[int]:
    """fs3 row counts that fit `generator`: the channel totals of the first 1, 2, ... convolution style layers."""
    counts = np.cumsum([layer.channels for layer in style_layers(generator) if layer.is_conv])
    return [int(count) for count in counts]


@dataclass(frozen=True, eq=False)
class StyleCLIPChannelData:
    """fs3 and style statistics for one generator (the STYLECLIP_FS3 socket's value).

    Row r of `fs3` belongs to the r-th channel of the convolution style layers in synthesis order. The rows cover
    the first `len(measured)` of those layers.
    """

    fs3: torch.Tensor                       # [rows, clip_dim] float32, unit rows.
    style_mean: tuple[torch.Tensor, ...]    # Per style layer (ToRGB included) [channels] float32.
    style_std: tuple[torch.Tensor, ...]
    layer_names: tuple[str, ...]            # Names of the style layers the statistics describe.
    measured: tuple[str, ...]               # Names of the convolution layers fs3 covers, in row order.
    fingerprint: str | None = None          # Generator W-space fingerprint; None for official files.
    clip_name: str | None = None            # CLIP model the rows were measured with; None when unknown.
    meta: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.fs3.shape[0]

    @property
    def clip_dim(self) -> int:
        return self.fs3.shape[1]

    def check(self, generator, clip: CLIPModel | None = None, where: str = "") -> None:
        """Raise ChannelDataError unless the rows and statistics fit `generator` (and `clip`, when given)."""
        prefix = f"{where}: " if where else ""
        source = self.meta.get("source", "the fs3 data")
        if self.fingerprint is not None and self.fingerprint != generator.fingerprint:
            raise ChannelDataError(f"{prefix}{source} was computed for generator {self.fingerprint[:12]} but the "
                                   f"connected generator is {describe_generator(generator)}. Connect that generator "
                                   f"or compute fs3 for this one (the StyleCLIP Compute fs3 node or `stylebridge "
                                   f"styleclip-fs3`).")
        allowed = allowed_row_counts(generator)
        if self.rows not in allowed:
            raise ChannelDataError(
                f"{prefix}{source} has {self.rows} channel rows, but the connected generator's convolution style "
                f"layers have {allowed[-1]} channels (fs3 may also cover only the first layers: "
                f"{', '.join(map(str, allowed[:12]))}{', ...' if len(allowed) > 12 else ''}). The file was "
                f"computed for another generator; compute fs3 for this one with the StyleCLIP Compute fs3 node or "
                f"`stylebridge styleclip-fs3`.")
        self._check_statistics_layers(generator, prefix)
        if clip is not None and clip.embed_dim != self.clip_dim:
            raise ChannelDataError(f"{prefix}{source} contains {self.clip_dim}-dimensional CLIP features but "
                                   f"{clip.name} embeds into {clip.embed_dim} dimensions. Use the CLIP model the "
                                   f"fs3 was computed with (OpenAI ViT-B/32 for StyleCLIP's files).")

    def _check_statistics_layers(self, generator, prefix: str) -> None:
        """Raise ChannelDataError, naming the first differing layer, unless the statistics fit the style layers."""
        layers = style_layers(generator)
        file_widths = [len(std) for std in self.style_std]
        generator_widths = [layer.channels for layer in layers]
        if file_widths == generator_widths:
            return
        index = next(i for i in range(max(len(file_widths), len(generator_widths)))
                     if i >= len(file_widths) or i >= len(generator_widths) or file_widths[i] != generator_widths[i])
        name = f" ({layers[index].name})" if index < len(layers) else ""
        in_file = f"{file_widths[index]} channels" if index < len(file_widths) else "missing"
        in_generator = f"{generator_widths[index]} channels" if index < len(layers) else "missing"
        statistics = self.meta.get("statistics", self.meta.get("source", "the fs3 data"))
        # StyleCLIP's files come in pairs, so statistics for another layer layout mean the fs3.npy beside them was
        # measured on another generator too, even when its row count happens to fit this one.
        fix = ("These files were computed for another generator; compute fs3 for this one with `stylebridge "
               "styleclip-fs3` or the StyleCLIP Compute fs3 node.")
        raise ChannelDataError(
            f"{prefix}the style statistics in {statistics} do not fit the connected generator: they describe "
            f"{len(file_widths)} style layers and the generator has {len(layers)}. The first difference is layer "
            f"{index}{name}: {in_file} in the file, {in_generator} in the generator. {fix}")


# ---------------------------------------------------------------------------------------------------------------------
# Files: StyleCLIP's fs3.npy + S_mean_std, and StyleBridge's single safetensors file.


class _StatisticsUnpickler(RestrictedUnpickler):
    """The safe unpickler with messages that describe an S_mean_std file instead of a network pickle."""

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except UnsafePickleError:
            raise UnsafeStatisticsError(
                f"{self.source} is not a valid {STATISTICS_FILE_NAME} file: its pickle references {module}.{name}, "
                f"which StyleBridge never loads because loading it could run code. Nothing from the file was run. "
                f"A StyleCLIP {STATISTICS_FILE_NAME} contains only lists of numpy float arrays; {_FS3_FIX}.") from None

    def persistent_load(self, pid):
        raise UnsafeStatisticsError(f"{self.source} is not a valid {STATISTICS_FILE_NAME} file: its pickle uses "
                                    f"persistent ids, which plain lists of numpy arrays never need; {_FS3_FIX}.")


def _describe_value(value) -> str:
    """Describe a value for messages: "a list of 3", "a list of 2 containing dict, int", "a value of type int"."""
    if isinstance(value, (list, tuple)):
        content = ""
        if not all(isinstance(item, (list, tuple)) for item in value):
            content = f" containing {', '.join(sorted({type(item).__name__ for item in value}))}"
        return f"a {type(value).__name__} of {len(value)}{content}"
    return f"a value of type {type(value).__name__}"


def read_statistics(path: str | os.PathLike) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read StyleCLIP's `S_mean_std` pickle ([means, stds], one array per style layer) with the safe unpickler.

    Raises ChannelDataError naming `path` when the file is not such a pickle or contains non-finite values or
    negative standard deviations. A pickle that references code raises UnsafeStatisticsError, which is also a
    pickle.UnpicklingError.
    """
    path = Path(path)
    kind = f"{STATISTICS_FILE_NAME} file"
    with open(path, "rb") as file:
        try:
            data = _StatisticsUnpickler(file, source=str(path)).load()
        except UnsafeStatisticsError:
            raise
        except Exception as exc:  # Damaged pickles raise UnpicklingError, EOFError, KeyError, ValueError, ...
            reason = "the file is empty" if path.stat().st_size == 0 else \
                f"it is not a readable pickle ({type(exc).__name__}: {exc})"
            raise _invalid(path, kind, reason) from None
    if not (isinstance(data, (list, tuple)) and len(data) == 2 and all(isinstance(part, (list, tuple))
                                                                       for part in data)):
        raise _invalid(path, kind, f"expected a pickled [means, stds] pair of lists with one array per style "
                                   f"layer, found {_describe_value(data)}")
    means, stds = [], []
    for part, values, arrays in (("means", data[0], means), ("stds", data[1], stds)):
        for index, value in enumerate(values):
            try:
                arrays.append(np.asarray(value, dtype=np.float32).reshape(-1))
            except (TypeError, ValueError):
                raise _invalid(path, kind, f"{part}[{index}] is {_describe_value(value)}, not an array of "
                                           f"numbers") from None
    if len(means) != len(stds):
        raise _invalid(path, kind, f"it has {len(means)} mean arrays but {len(stds)} std arrays")
    _check_statistics_values(means, stds, path, kind)
    return means, stds


def _check_statistics_values(means: list[np.ndarray], stds: list[np.ndarray], path: Path, kind: str) -> None:
    """Raise ChannelDataError unless every layer has finite means and finite, non-negative stds of equal length."""
    for index, (mean, std) in enumerate(zip(means, stds, strict=True)):
        if len(mean) != len(std):
            raise _invalid(path, kind, f"layer {index} has {len(mean)} means but {len(std)} stds")
        for part, values in (("mean", mean), ("std", std)):
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                raise _invalid(path, kind, f"the {part} of layer {index} has NaN or infinite values in "
                                           f"{_indices('channel', bad)}")
        negative = np.flatnonzero(std < 0)
        if len(negative):
            raise _invalid(path, kind, f"the std of layer {index} is negative in {_indices('channel', negative)} "
                                       f"(first value {float(std[negative[0]]):.4g}), but a standard deviation "
                                       f"is never negative")


def _check_fs3_rows(fs3: np.ndarray, path: Path, kind: str) -> None:
    """Raise ChannelDataError unless `fs3` is [rows, clip_dim] with finite unit rows (FS3_NORM_TOLERANCE)."""
    if fs3.ndim != 2:
        raise _invalid(path, kind, f"it contains an array of shape {list(fs3.shape)}, but fs3 must be "
                                   f"[channels, clip_dim]")
    non_finite = np.flatnonzero(~np.isfinite(fs3).all(axis=1))
    if len(non_finite):
        raise _invalid(path, kind, f"it has NaN or infinite values in {_indices('row', non_finite)} "
                                   f"({len(non_finite)} of {fs3.shape[0]})")
    norms = np.linalg.norm(fs3.astype(np.float64), axis=1)
    if fs3.shape[0] and not norms.any():
        raise _invalid(path, kind, f"all {fs3.shape[0]} rows are zero, but StyleCLIP's fs3 rows are unit vectors")
    not_unit = np.flatnonzero(np.abs(norms - 1) > FS3_NORM_TOLERANCE)
    if len(not_unit):
        listed_norms = ", ".join(f"{norms[row]:.4g}" for row in not_unit[:4])
        raise _invalid(path, kind, f"the norms of {_indices('row', not_unit)} ({len(not_unit)} of {fs3.shape[0]}) "
                                   f"are {listed_norms}{', ...' if len(not_unit) > 4 else ''}, but StyleCLIP's fs3 rows are unit "
                                   f"vectors (norm 1 within {FS3_NORM_TOLERANCE})")


def _read_fs3_npy(path: Path) -> np.ndarray:
    """Read StyleCLIP's fs3.npy without pickle, and check its shape and values."""
    kind = FS3_FILE_NAME
    try:
        fs3 = load_numpy_file(path)
    except NumpyFileError as error:
        raise _invalid(path, kind, error.reason) from None
    if not np.issubdtype(fs3.dtype, np.floating):
        raise _invalid(path, kind, f"it contains {fs3.dtype} values, but fs3 is an array of floats")
    _check_fs3_rows(fs3, path, kind)
    return fs3


def write_statistics(path: str | os.PathLike, means: list[np.ndarray], stds: list[np.ndarray]) -> Path:
    """Write `S_mean_std` as StyleCLIP's GetCode.py does: pickle protocol 3 of [means, stds] float32 arrays."""
    path = Path(path)
    payload = [[np.asarray(m, dtype=np.float32) for m in means], [np.asarray(s, dtype=np.float32) for s in stds]]
    with open(path, "wb") as file:
        pickle.dump(payload, file, protocol=3)
    return path


def save_official(data: StyleCLIPChannelData, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write `fs3.npy` and `S_mean_std` into `folder` in StyleCLIP's layout and return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fs3_path = folder / FS3_FILE_NAME
    np.save(fs3_path, data.fs3.numpy().astype(np.float32))
    statistics_path = write_statistics(folder / STATISTICS_FILE_NAME, [m.numpy() for m in data.style_mean],
                                       [s.numpy() for s in data.style_std])
    return fs3_path, statistics_path


def save_numbered_folder(data: StyleCLIPChannelData, folder: Path, filename_prefix: str) -> Path:
    """Write fs3.npy, S_mean_std and fs3.safetensors into a new folder `{prefix}_{counter:05}_` under `folder`.

    The counter follows the highest one in use; an existing folder is never written into. When the newest folder
    with this prefix already contains these very files (a rerun of the same computation, answered from the
    cache), that folder is returned and nothing is written.
    """
    from ..runtime.core_nodes import expand_prefix_variables, split_filename_prefix

    # As SaveImage does: %year%, %month%, ... (no image, so %width% and %height% are 0).
    subfolder, name = split_filename_prefix(expand_prefix_variables(filename_prefix, 0, 0), folder)
    parent = folder / subfolder if subfolder else folder
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(name) + r"_(\d+)_$", re.IGNORECASE)
    counters = {int(m.group(1)): entry for entry in parent.iterdir() if (m := pattern.match(entry.name))}
    if counters and _holds_channel_data(counters[max(counters)], data):
        logger.info("StyleCLIP fs3 (%d channels) is already saved in %s.", data.rows, counters[max(counters)])
        return counters[max(counters)]
    counter = 1 + max(counters, default=0)
    while True:
        target = parent / f"{name}_{counter:05}_"
        try:
            target.mkdir()
            break
        except FileExistsError:
            counter += 1
    save_official(data, target)
    save_channel_data(data, target / "fs3.safetensors")
    logger.info("Saved StyleCLIP fs3 (%d channels) to %s.", data.rows, target)
    return target


def _holds_channel_data(folder: Path, data: StyleCLIPChannelData) -> bool:
    """Return True when `folder` has all three files of a save_numbered_folder call and its fs3 equals `data`'s."""
    if not all((folder / file_name).is_file() for file_name in (FS3_FILE_NAME, STATISTICS_FILE_NAME,
                                                                 "fs3.safetensors")):
        return False
    try:
        saved = _read_safetensors(folder / "fs3.safetensors")
    except ChannelDataError:
        return False
    if len(saved.style_std) != len(data.style_std):
        return False
    return (saved.fingerprint == data.fingerprint and saved.clip_name == data.clip_name
            and saved.fs3.shape == data.fs3.shape and torch.equal(saved.fs3, data.fs3)
            and all(torch.equal(a, b) for a, b in zip(saved.style_std, data.style_std, strict=True)))


def save_channel_data(data: StyleCLIPChannelData, path: str | os.PathLike) -> Path:
    """Write fs3, statistics and the generator / CLIP identity into one safetensors file."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"fs3": data.fs3.contiguous()}
    for index, (mean, std) in enumerate(zip(data.style_mean, data.style_std, strict=True)):
        tensors[f"style_mean.{index}"] = mean.contiguous()
        tensors[f"style_std.{index}"] = std.contiguous()
    metadata = {
        "format": CHANNEL_DATA_FORMAT,
        "version": "1",
        "layer_names": json.dumps(list(data.layer_names)),
        "measured": json.dumps(list(data.measured)),
        "fingerprint": data.fingerprint or "",
        "clip_name": data.clip_name or "",
        "settings": json.dumps(data.meta.get("settings", {})),
    }
    payload = save(tensors, metadata=metadata)

    def write(target: Path) -> None:
        # safetensors' save_file creates files readable by the owner only (0600). open() applies the umask, as
        # np.save and pickle do for fs3.npy and S_mean_std. A file left by an earlier run would keep its mode.
        target.unlink(missing_ok=True)
        target.write_bytes(payload)

    _atomic_save(write, path)
    return path


def _read_safetensors(path: Path) -> StyleCLIPChannelData:
    from safetensors import SafetensorError, safe_open

    kind = "StyleBridge fs3 .safetensors file"
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            if metadata.get("format") != CHANNEL_DATA_FORMAT:
                raise ChannelDataError(f"{path} is a safetensors file but not StyleBridge StyleCLIP channel data "
                                       f"(format {metadata.get('format')!r}); expected fs3.npy or a file written by "
                                       f"the StyleCLIP Compute fs3 node.")
            layer_names = _metadata_value(metadata, "layer_names", list, path, kind)
            measured = _metadata_value(metadata, "measured", list, path, kind)
            settings = _metadata_value(metadata, "settings", dict, path, kind) if "settings" in metadata else {}
            names = set(file.keys())

            def tensor(name: str) -> torch.Tensor:
                if name not in names:
                    raise _invalid(path, kind, f"tensor {name} is missing")
                return file.get_tensor(name).float()

            fs3 = tensor("fs3")
            means = tuple(tensor(f"style_mean.{i}").reshape(-1) for i in range(len(layer_names)))
            stds = tuple(tensor(f"style_std.{i}").reshape(-1) for i in range(len(layer_names)))
    except SafetensorError as exc:
        raise _invalid(path, kind, f"it is not a readable safetensors file ({exc})") from None
    _check_fs3_rows(fs3.numpy(), path, kind)
    _check_statistics_values([m.numpy() for m in means], [s.numpy() for s in stds], path, kind)
    return StyleCLIPChannelData(fs3, means, stds, tuple(layer_names), tuple(measured),
                                metadata.get("fingerprint") or None, metadata.get("clip_name") or None,
                                {"source": str(path), "settings": settings})


def _metadata_value(metadata: dict[str, str], key: str, expected: type, path: Path, kind: str):
    """Parse the JSON metadata entry `key`, which must decode to `expected` (list entries must be strings)."""
    if key not in metadata:
        raise _invalid(path, kind, f"its metadata has no {key!r} entry")
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise _invalid(path, kind, f"its metadata entry {key!r} is not valid JSON ({exc})") from None
    if not isinstance(value, expected) or (expected is list and not all(isinstance(v, str) for v in value)):
        description = "a list of layer names" if expected is list else "a JSON object"
        raise _invalid(path, kind, f"its metadata entry {key!r} is not {description}")
    return value


def load_channel_data(path: str | os.PathLike, generator, statistics_path: str | os.PathLike | None = None,
                      where: str = "") -> StyleCLIPChannelData:
    """Load fs3 data for `generator` and check that it fits.

    Args:
        path: StyleCLIP's `fs3.npy`, or a StyleBridge `.safetensors` file from StyleCLIPComputeFS3.
        generator: the generator the data must describe.
        statistics_path: StyleCLIP's `S_mean_std`; by default the file of that name beside `path`. Without one,
            the statistics are computed from the generator with StyleCLIP's settings (and cached).
        where: node or command name for messages.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        data = _read_safetensors(path)
        data.check(generator, where=where)
        return data

    fs3 = _read_fs3_npy(path)
    layers = style_layers(generator)
    conv_layers = [layer for layer in layers if layer.is_conv]
    allowed = allowed_row_counts(generator)
    measured = tuple(layer.name for layer in conv_layers[:allowed.index(fs3.shape[0]) + 1]) \
        if fs3.shape[0] in allowed else ()

    statistics_path = Path(statistics_path) if statistics_path else path.parent / STATISTICS_FILE_NAME
    if statistics_path.is_file():
        means, stds = read_statistics(statistics_path)
        statistics_source = str(statistics_path)
    else:
        logger.warning("%s not found beside %s; computing the style statistics from the generator with "
                       "StyleCLIP's settings (%d samples, seed %d, psi %.1f).", STATISTICS_FILE_NAME, path,
                       DEFAULT_NUM_SAMPLES, DEFAULT_SEED, DEFAULT_TRUNCATION_PSI)
        statistics = cached_style_statistics(generator)
        means, stds = [m.numpy() for m in statistics.mean], [s.numpy() for s in statistics.std]
        statistics_source = "computed"
    data = StyleCLIPChannelData(
        torch.from_numpy(np.ascontiguousarray(fs3, dtype=np.float32)),
        tuple(torch.from_numpy(m) for m in means), tuple(torch.from_numpy(s) for s in stds),
        tuple(layer.name for layer in layers), measured, None, None,
        {"source": str(path), "statistics": statistics_source})
    data.check(generator, where=where)
    return data


# ---------------------------------------------------------------------------------------------------------------------
# Style statistics.


@dataclass(frozen=True)
class StyleStatistics:
    mean: tuple[torch.Tensor, ...]        # Per style layer [channels] float32.
    std: tuple[torch.Tensor, ...]         # Population standard deviation, as numpy's std.
    first: tuple[torch.Tensor, ...]       # S of the first `num_first` samples, per layer [num_first, channels].


def _device(generator) -> torch.device:
    return generator.mapping.fc0.weight.device


@torch.no_grad()
def style_statistics(generator, num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = DEFAULT_SEED,
                     truncation_psi: float = DEFAULT_TRUNCATION_PSI, num_first: int = 0, class_index: int = 0,
                     chunk_size: int = 2000) -> StyleStatistics:
    """Per-channel mean and std of S over `num_samples` W latents, as StyleCLIP's GetCode.py computes them.

    z is drawn as `RandomState(seed).randn(num_samples, z_dim)` and truncated with `truncation_psi` on every
    layer. The moments are merged per chunk in float64 (Chan et al.'s parallel update), so the result does not
    depend on `chunk_size` beyond float64 rounding.
    """
    from .sampling import class_label

    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 to estimate a standard deviation, got {num_samples}.")
    if not 0 <= num_first <= num_samples:
        raise ValueError(f"num_first {num_first} must be between 0 and num_samples {num_samples}.")
    device = _device(generator)
    rng = np.random.RandomState(seed)
    count = 0
    means: list[torch.Tensor] | None = None
    m2s: list[torch.Tensor] | None = None
    first: list[list[torch.Tensor]] = []
    for start in range(0, num_samples, chunk_size):
        host.check_interrupted()
        size = min(chunk_size, num_samples - start)
        z = torch.from_numpy(rng.randn(size, generator.z_dim)).to(device)
        c = class_label(generator, class_index, size)
        ws = generator.mapping(z, c.to(device) if c is not None else None, truncation_psi=truncation_psi)
        styles = [style.double() for style in generator.synthesis.ws_to_styles(ws)]
        if start < num_first:
            first.append([style[:num_first - start].float().cpu() for style in styles])
        chunk_means = [style.mean(dim=0) for style in styles]
        chunk_m2s = [((style - mean) ** 2).sum(dim=0) for style, mean in zip(styles, chunk_means, strict=True)]
        if means is None:
            means, m2s = chunk_means, chunk_m2s
        else:
            total = count + size
            for index in range(len(means)):
                delta = chunk_means[index] - means[index]
                means[index] = means[index] + delta * (size / total)
                m2s[index] = m2s[index] + chunk_m2s[index] + delta ** 2 * (count * size / total)
        count += size
    mean = tuple(m.float().cpu() for m in means)
    std = tuple((m2 / count).sqrt().float().cpu() for m2 in m2s)
    first_styles = tuple(torch.cat([chunk[i] for chunk in first]) if first else torch.empty(0, len(m))
                         for i, m in enumerate(mean))
    return StyleStatistics(mean, std, first_styles)


def cached_style_statistics(generator, num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = DEFAULT_SEED,
                            truncation_psi: float = DEFAULT_TRUNCATION_PSI) -> StyleStatistics:
    """`style_statistics` (without first samples), cached in host.cache_dir() per generator and settings."""
    from safetensors.torch import load_file, save_file

    settings = {"num_samples": num_samples, "seed": seed, "truncation_psi": truncation_psi}
    key = _cache_key(generator, None, settings)
    path = host.cache_dir() / "styleclip" / f"statistics-{key}.safetensors"
    if path.is_file():
        tensors = load_file(str(path))
        count = len([name for name in tensors if name.startswith("mean.")])
        return StyleStatistics(tuple(tensors[f"mean.{i}"] for i in range(count)),
                               tuple(tensors[f"std.{i}"] for i in range(count)), ())
    statistics = style_statistics(generator, num_samples, seed, truncation_psi)
    tensors = {f"mean.{i}": m for i, m in enumerate(statistics.mean)}
    tensors.update({f"std.{i}": s for i, s in enumerate(statistics.std)})
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(lambda target: save_file(tensors, str(target)), path)
    return statistics


# ---------------------------------------------------------------------------------------------------------------------
# Computing fs3.


def generator_weights_digest(generator) -> str:
    """Hex digest of every weight of the generator (the W fingerprint covers only the mapping network)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cache_key(generator, clip: CLIPModel | None, settings: dict) -> str:
    digest = hashlib.sha256()
    digest.update(generator_weights_digest(generator).encode())
    digest.update((clip.fingerprint if clip is not None else "").encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def _atomic_save(write: Callable[[Path], None], path: Path) -> None:
    """Write through a temporary file and rename it, so a crash never leaves a half-written cache file."""
    partial = path.with_name(path.name + ".tmp")
    write(partial)
    os.replace(partial, path)


@dataclass
class _Progress:
    """Rows finished so far, saved to the cache after every chunk."""

    rows: list[torch.Tensor]
    path: Path
    settings: dict
    last_save: float = 0.0

    @property
    def done(self) -> int:
        return sum(row.shape[0] for row in self.rows)

    def save(self) -> None:
        from safetensors.torch import save_file

        tensors = {"rows": torch.cat(self.rows) if self.rows else torch.empty(0, 0)}
        metadata = {"settings": json.dumps(self.settings, sort_keys=True), "done": str(self.done)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(lambda target: save_file(tensors, str(target), metadata=metadata), self.path)
        self.last_save = time.monotonic()

    @classmethod
    def resume(cls, path: Path, settings: dict) -> _Progress:
        """Continue from the rows saved in `path` for the same settings; a damaged file is deleted, with a warning."""
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            return cls([], path, settings)
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                if json.loads(metadata.get("settings", "{}")) == json.loads(json.dumps(settings, sort_keys=True)):
                    rows = file.get_tensor("rows")
                    if rows.numel():
                        logger.info("Resuming fs3 from %s: %d channels done.", path, rows.shape[0])
                        return cls([rows], path, settings)
        except (SafetensorError, json.JSONDecodeError, OSError) as error:
            logger.warning("The fs3 progress file %s is damaged (%s); starting the computation over.", path, error)
            path.unlink(missing_ok=True)
        return cls([], path, settings)


def _chunk_plan(layers: list[StyleLayer], channels_per_chunk: int) -> list[tuple[StyleLayer, int, int]]:
    """Split every layer's channels into chunks of `channels_per_chunk`: (layer, first channel, end channel)."""
    plan = []
    for layer in layers:
        for start in range(0, layer.channels, channels_per_chunk):
            plan.append((layer, start, min(layer.channels, start + channels_per_chunk)))
    return plan


def _rows_of(state, index: torch.Tensor):
    """Select batch rows `index` from a synthesis state: a tensor, None, or a tuple of those."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state[index]
    return tuple(_rows_of(part, index) for part in state)


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's GetFs on features [channels, images, 2, dim] (- then +): unit rows [channels, dim]."""
    features = features / features.norm(dim=-1, keepdim=True)
    difference = features[:, :, 1] - features[:, :, 0]
    difference = difference / difference.norm(dim=-1, keepdim=True)
    rows = difference.mean(dim=1)
    return rows / rows.norm(dim=-1, keepdim=True)


@torch.no_grad()
def _measure_chunk(generator, clip: CLIPModel, layer: StyleLayer, first: int, end: int,
                   base: list[torch.Tensor], prefix_state: tuple | torch.Tensor | None,
                   statistics: StyleStatistics, delta_std: float, mean_reset: str, batch_size: int) -> torch.Tensor:
    """fs3 rows [end - first, clip_dim] for channels first..end-1 of `layer`."""
    synthesis = generator.synthesis
    device = _device(generator)
    num_images = base[0].shape[0]
    channels = end - first
    total_rows = channels * num_images * 2
    mean = statistics.mean[layer.index].to(device)
    std = statistics.std[layer.index].to(device)
    features = torch.empty(total_rows, clip.embed_dim)

    # Rows are ordered (channel, image, sign) with sign 0 = mean - delta_std * std, as StyleCLIP's alpha [-5, 5].
    # Batches of about equal size keep the last one from being tiny.
    num_batches = math.ceil(total_rows / batch_size)
    rows_per_batch = math.ceil(total_rows / num_batches)
    for row_start in range(0, total_rows, rows_per_batch):
        host.check_interrupted()
        rows = torch.arange(row_start, min(total_rows, row_start + rows_per_batch), device=device)
        channel = first + rows // (2 * num_images)
        image = (rows // 2) % num_images
        sign = (rows % 2) * 2 - 1

        styles = [style[image] for style in base]
        edited = styles[layer.index].clone()
        if mean_reset == "cumulative":
            # StyleCLIP's SingleChannel.py assigns the mean in place, so channels before c also stay at their mean.
            below = torch.arange(layer.channels, device=device).unsqueeze(0) < channel.unsqueeze(1)
            edited = torch.where(below, mean.unsqueeze(0).expand_as(edited), edited)
        edited[torch.arange(len(rows), device=device), channel] = mean[channel] + sign * delta_std * std[channel]
        styles[layer.index] = edited

        _, images = synthesis.run_style_stages(styles, layer.stage, state=_rows_of(prefix_state, image),
                                               noise_mode="const")
        features[row_start:row_start + len(rows)] = clip.encode_generator_images(images, clamp=True).cpu()
    return _unit_rows(features.view(channels, num_images, 2, -1))


@torch.no_grad()
def reference_channel_rows(generator, clip: CLIPModel, statistics: StyleStatistics, layer: StyleLayer,
                           channels: range, delta_std: float = DEFAULT_DELTA_STD) -> torch.Tensor:
    """StyleCLIP's per-image procedure for some channels of one layer: one synthesis call per image.

    The plain reference that the batched `compute_channel_data` ("channel" mean reset) is tested against, and the
    baseline of bench/bench_styleclip.py. Uses the images in `statistics.first`.
    """
    mean, std = statistics.mean[layer.index], statistics.std[layer.index]
    device = _device(generator)
    rows = []
    for channel in channels:
        features = []
        for image in range(statistics.first[0].shape[0]):
            for sign in (-1, 1):
                styles = [style[image:image + 1].clone().to(device) for style in statistics.first]
                styles[layer.index][0, channel] = mean[channel] + sign * delta_std * std[channel]
                rendered = generator.synthesis.synthesis_from_styles(styles, noise_mode="const")
                features.append(clip.encode_generator_images(rendered, clamp=True).cpu())
        rows.append(torch.cat(features).view(1, -1, 2, clip.embed_dim))
    return _unit_rows(torch.cat(rows))


def compute_channel_data(generator, clip: CLIPModel, num_images: int = DEFAULT_NUM_IMAGES,
                         num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = DEFAULT_SEED,
                         truncation_psi: float = DEFAULT_TRUNCATION_PSI, delta_std: float = DEFAULT_DELTA_STD,
                         max_resolution: int | None = DEFAULT_MAX_RESOLUTION, batch_size: int = 64,
                         mean_reset: str = "channel", class_index: int = 0,
                         progress: Callable[[int, int], None] | None = None,
                         where: str = "") -> StyleCLIPChannelData:
    """Compute fs3 and the style statistics for `generator` with StyleCLIP's procedure (see the module docstring).

    Args:
        generator: StyleGAN2 or StyleGAN3 generator.
        clip: the CLIP model whose image space the rows live in (StyleCLIP uses OpenAI ViT-B/32).
        num_images: images per channel (100 in StyleCLIP).
        num_samples: latents for the style statistics (100,000 in StyleCLIP).
        seed: seed of numpy's RandomState for z (5 in StyleCLIP).
        truncation_psi: truncation of the sampled W (0.7 in StyleCLIP).
        delta_std: edit size in standard deviations on each side of the mean (5 in StyleCLIP).
        max_resolution: measure convolution layers up to this resolution (128 in StyleCLIP); None = all.
        batch_size: images rendered per synthesis call.
        mean_reset: "channel" resets only the measured channel to its mean, as StyleCLIP's code intends.
            "cumulative" reproduces what its SingleChannel.py does through an in-place assignment: every channel
            measured earlier also stays at its mean.
        class_index: class label for conditional generators.
        progress: called with (channels done, channels total) after every chunk.
        where: node or command name for messages.

    Results are cached in host.cache_dir()/styleclip per generator weights, CLIP weights and settings. An
    interrupted run resumes from its last finished chunk and uses the same batches, so the result is the same.
    """
    # 1. Check inputs.
    prefix = f"{where}: " if where else ""
    require_style_space(generator, where)
    if num_images < 1 or num_images > num_samples:
        raise ValueError(f"{prefix}num_images must be between 1 and num_samples ({num_samples}), got {num_images}.")
    if batch_size < 2:
        raise ValueError(f"{prefix}batch_size must be at least 2 (one image on each side of the mean), got "
                         f"{batch_size}.")
    if mean_reset not in MEAN_RESET_MODES:
        raise ValueError(f"{prefix}mean_reset {mean_reset!r} is invalid; expected one of {MEAN_RESET_MODES}.")
    if delta_std <= 0:
        raise ValueError(f"{prefix}delta_std must be positive, got {delta_std}.")
    layers = style_layers(generator)
    targets = check_max_resolution(generator, max_resolution, where=where)
    total = sum(layer.channels for layer in targets)

    # 2. Reuse a finished result or resume an interrupted one.
    settings = {"num_images": num_images, "num_samples": num_samples, "seed": seed, "truncation_psi": truncation_psi,
                "delta_std": delta_std, "max_resolution": max_resolution, "batch_size": batch_size,
                "mean_reset": mean_reset, "class_index": class_index}
    key = _cache_key(generator, clip, settings)
    cache = host.cache_dir() / "styleclip"
    final_path = cache / f"fs3-{key}.safetensors"
    if final_path.is_file():
        try:
            data = _read_safetensors(final_path)
        except ChannelDataError as error:
            logger.warning("The cached fs3 %s is damaged (%s); computing it again.", final_path, error)
            final_path.unlink(missing_ok=True)
        else:
            logger.info("Using the cached fs3 %s.", final_path)
            if progress is not None:
                progress(total, total)
            return data

    # 3. Style statistics and the base styles of the measured images.
    statistics = style_statistics(generator, num_samples, seed, truncation_psi, num_first=num_images,
                                  class_index=class_index)
    state = _Progress.resume(cache / f"fs3-{key}.partial.safetensors", settings)
    device = _device(generator)
    base = [style.to(device) for style in statistics.first]
    mean_device = [m.to(device) for m in statistics.mean]

    # 4. Measure chunk by chunk. A chunk contains whole channels, and with 2 * num_images rows per channel it spans
    # about one batch. Chunks never straddle layers, so the stages before the layer run once per layer.
    channels_per_chunk = max(1, batch_size // (2 * num_images))
    plan = _chunk_plan(targets, channels_per_chunk)
    bar = host.ProgressBar(total)
    done = state.done
    bar.update_absolute(done, total)
    current_layer, prefix_cache = None, None
    position = 0
    for layer, first, end in plan:
        if position + (end - first) <= done:
            position += end - first
            continue
        if mean_reset == "cumulative":
            for earlier in targets:
                if earlier.index < layer.index:
                    base[earlier.index] = mean_device[earlier.index].unsqueeze(0).expand_as(base[earlier.index])
        if current_layer != layer.index:
            prefix_cache = generator.synthesis.run_style_stages(base, 0, layer.stage, noise_mode="const")[0] \
                if layer.stage > 0 else None
            current_layer = layer.index
        rows = _measure_chunk(generator, clip, layer, first, end, base, prefix_cache, statistics,
                              delta_std, mean_reset, batch_size)
        state.rows.append(rows)
        position += end - first
        state.save()
        bar.update_absolute(position, total)
        if progress is not None:
            progress(position, total)

    # 5. Keep the finished result and drop the partial file.
    fs3 = torch.cat(state.rows)
    data = StyleCLIPChannelData(fs3, statistics.mean, statistics.std, tuple(layer.name for layer in layers),
                                tuple(layer.name for layer in targets), generator.fingerprint, clip.name,
                                {"source": "computed", "settings": settings})
    save_channel_data(data, final_path)
    state.path.unlink(missing_ok=True)
    return data
