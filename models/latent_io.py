"""Saving and loading STYLEGAN_LATENT values: latent files, and latents embedded in saved PNG images.

File formats (chosen by suffix):
- `.safetensors`: tensor "w" with format, space, num_ws, w_dim, fingerprint and meta (JSON) in the metadata.
- `.pt` / `.pth`: a dict {"w", "space", "num_ws", "w_dim", "fingerprint", "meta"} of a tensor and plain values,
  loaded with weights_only=True; a plain tensor is read as a raw array.
- `.npy`: the raw array, without a fingerprint.
- `.npz` (read only): an array "w", as the official StyleGAN2-ADA / StyleGAN3 projector writes
  (projected_w.npz, [1, num_ws, w_dim]).
Raw arrays are [B, w_dim] (W), [B, num_ws, w_dim] (W+) or [w_dim] (one W latent). Latents without a recorded
fingerprint need a generator when loaded: it provides num_ws and its fingerprint after the shapes are checked.

PNG images saved by `save_images_with_latent` carry the latent of each image in a text chunk named
`stylebridge_latent`: JSON {"format", "version", "encoding": "safetensors+base64", "data"}, where data is the
base64 of the safetensors file above for that one image.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .latents import SPACES, LatentMismatchError, StyleGANLatent
from .safe_pickle import NumpyFileError, TorchFileError, load_numpy_file, load_torch_data

logger = logging.getLogger(__name__)

LATENT_SUFFIXES = (".safetensors", ".pt", ".pth", ".npy", ".npz")
SAVE_FORMATS = ("safetensors", "pt", "npy")
FORMAT_NAME = "stylebridge-latent"
FORMAT_VERSION = "1"
PNG_LATENT_KEY = "stylebridge_latent"
PNG_ENCODING = "safetensors+base64"


class LatentFileError(ValueError):
    """Raised when a file cannot be read as a latent: wrong type, damaged, or missing its latent."""


# ---------------------------------------------------------------------------------------------------------------------
# Building latents from stored fields.


def _meta_text(meta: dict) -> str:
    return json.dumps(meta, default=str, sort_keys=True)


def latent_from_array(array: np.ndarray | torch.Tensor, generator, source: str, where: str = "") -> StyleGANLatent:
    """Wrap a raw array (no fingerprint) as a latent of `generator`, after checking its shape.

    Raises:
        LatentFileError: without a generator, or when the shape fits neither [B, w_dim] nor [B, num_ws, w_dim].
    """
    prefix = f"{where}: " if where else ""
    tensor = torch.as_tensor(np.asarray(array) if isinstance(array, np.ndarray) else array).detach().float().cpu()
    if generator is None:
        raise LatentFileError(f"{prefix}{source} contains a raw array {list(tensor.shape)} without a generator "
                              f"fingerprint; connect the generator the latent belongs to.")
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    w_dim, num_ws = generator.w_dim, generator.num_ws
    if tensor.ndim == 2 and tensor.shape[1] == w_dim:
        space = "W"
    elif tensor.ndim == 3 and tuple(tensor.shape[1:]) == (num_ws, w_dim):
        space = "W+"
    else:
        raise LatentFileError(f"{prefix}{source} contains an array of shape {list(tensor.shape)}, but the connected "
                              f"generator takes [B, {w_dim}] (W) or [B, {num_ws}, {w_dim}] (W+). Connect the "
                              f"generator the latent was made with.")
    return StyleGANLatent(tensor.contiguous(), space, num_ws, w_dim, generator.fingerprint, {"file": source})


def _latent_from_fields(w: torch.Tensor, fields: dict[str, Any], generator, source: str,
                        where: str) -> StyleGANLatent:
    """Build a latent from a tensor and recorded fields; adopt the generator's fingerprint when none is recorded."""
    prefix = f"{where}: " if where else ""
    space = fields.get("space")
    if space not in SPACES:
        raise LatentFileError(f"{prefix}{source} records latent space {space!r}; expected one of {SPACES}. The file "
                              f"is damaged or was not written by StyleBridge.")
    try:
        num_ws, w_dim = int(fields["num_ws"]), int(fields["w_dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LatentFileError(f"{prefix}{source} lacks a valid num_ws or w_dim ({exc}); the file is damaged.") from exc
    meta = fields.get("meta") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    fingerprint = fields.get("fingerprint") or None
    if fingerprint is None:
        if generator is None:
            raise LatentFileError(f"{prefix}{source} records no generator fingerprint; connect the generator the "
                                  f"latent belongs to.")
        if (generator.num_ws, generator.w_dim) != (num_ws, w_dim):
            raise LatentMismatchError(f"{prefix}{source} contains a latent for {num_ws} layers x {w_dim} but the "
                                      f"connected generator has {generator.num_ws} x {generator.w_dim}. Connect "
                                      f"the generator the latent was made with.")
        fingerprint = generator.fingerprint
    try:
        latent = StyleGANLatent(w.detach().float().cpu().contiguous(), space, num_ws, w_dim, fingerprint,
                                {**meta, "file": source})
    except ValueError as exc:
        raise LatentFileError(f"{prefix}{source}: {exc}") from exc
    if generator is not None:
        latent.check_generator(generator, where)
    return latent


# ---------------------------------------------------------------------------------------------------------------------
# Bytes and files.


def latent_to_safetensors_bytes(latent: StyleGANLatent) -> bytes:
    from safetensors.torch import save

    metadata = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "space": latent.space,
                "num_ws": str(latent.num_ws), "w_dim": str(latent.w_dim), "fingerprint": latent.fingerprint,
                "meta": _meta_text(latent.meta)}
    return save({"w": latent.w.detach().float().cpu().contiguous()}, metadata=metadata)


def latent_from_safetensors_bytes(data: bytes, generator=None, source: str = "the data",
                                  where: str = "") -> StyleGANLatent:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise LatentFileError(f"{source} is not a valid safetensors latent ({exc}).") from exc
    metadata = _safetensors_metadata(data)
    if metadata.get("format") != FORMAT_NAME or "w" not in tensors:
        if len(tensors) == 1 and metadata.get("format") != FORMAT_NAME:
            return latent_from_array(next(iter(tensors.values())), generator, source, where)
        raise LatentFileError(f"{source} is not a StyleBridge latent: it has the tensors {sorted(tensors)} and "
                              f"format {metadata.get('format')!r}.")
    return _latent_from_fields(tensors["w"], metadata, generator, source, where)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    # The safetensors header: 8 bytes little-endian length, then a JSON object with an optional __metadata__.
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    return header.get("__metadata__") or {}


def _write_exclusive(path: Path, write) -> None:
    """Create `path` and fill it with `write(handle)`; raises FileExistsError if it exists (never overwrites)."""
    with open(path, "xb") as handle:
        try:
            write(handle)
        except BaseException:
            handle.close()
            path.unlink(missing_ok=True)  # remove only the file this call created
            raise


def save_latent(latent: StyleGANLatent, path: str | os.PathLike) -> Path:
    """Write a latent to a new file; the format follows the suffix (.safetensors, .pt, .pth or .npy).

    Raises:
        FileExistsError: when `path` exists; nothing is overwritten.
        ValueError: for another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        payload = latent_to_safetensors_bytes(latent)
        _write_exclusive(path, lambda handle: handle.write(payload))
    elif suffix in (".pt", ".pth"):
        record = {"w": latent.w.detach().float().cpu().contiguous(), "space": latent.space, "num_ws": latent.num_ws,
                  "w_dim": latent.w_dim, "fingerprint": latent.fingerprint, "meta": _meta_text(latent.meta)}
        _write_exclusive(path, lambda handle: torch.save(record, handle))
    elif suffix == ".npy":
        array = latent.w.detach().float().cpu().numpy()
        _write_exclusive(path, lambda handle: np.save(handle, array, allow_pickle=False))
    else:
        raise ValueError(f"{path}: latents are saved as {', '.join(f'.{f}' for f in SAVE_FORMATS)} (or .pth); "
                         f"change the file name's suffix.")
    logger.info("Saved %s latent %s to %s", latent.space, list(latent.w.shape), path)
    return path


def write_numbered(folder: Path, filename_prefix: str, suffix: str, write: Callable[[Path], Path]) -> Path:
    """Call `write(path)` for `{prefix}_{counter:05}_.{suffix}` in `folder` with the next free counter.

    The counter starts after the highest one in use, as SaveImage numbers PNGs. The prefix may contain subfolders
    but must stay inside `folder`. `write` must create the file exclusively and raise FileExistsError when it
    exists; the counter then moves on, so no file is overwritten.
    """
    from ..runtime.core_nodes import split_filename_prefix

    subfolder, name = split_filename_prefix(filename_prefix, folder)
    target = folder / subfolder if subfolder else folder
    target.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(name) + r"_(\d+)_\.", re.IGNORECASE)
    numbers = [int(match.group(1)) for entry in target.iterdir() if (match := pattern.match(entry.name))]
    counter = 1 + max(numbers, default=0)
    while True:
        path = target / f"{name}_{counter:05}_.{suffix}"
        try:
            return write(path)
        except FileExistsError:
            counter += 1


def output_ui_entry(path: Path, folder: Path) -> dict[str, str]:
    """ComfyUI's UI entry {"filename", "subfolder", "type": "output"} for a file saved under `folder`."""
    subfolder = path.resolve().parent.relative_to(folder.resolve()).as_posix()
    return {"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}


def save_latent_numbered(latent: StyleGANLatent, folder: Path, filename_prefix: str, file_format: str) -> Path:
    """Save as `{prefix}_{counter:05}_.{format}` in `folder` with the next free counter (see `write_numbered`)."""
    if file_format not in SAVE_FORMATS:
        raise ValueError(f"Latent format {file_format!r} is invalid; expected one of {SAVE_FORMATS}.")
    return write_numbered(folder, filename_prefix, file_format, lambda path: save_latent(latent, path))


def load_latent(path: str | os.PathLike, generator=None, where: str = "") -> StyleGANLatent:
    """Read a latent file (see the module docstring for the formats).

    With `generator`, the latent is checked against it; a file without a fingerprint takes the generator's.

    Raises:
        LatentFileError: for unknown suffixes, damaged files, non-finite values, or raw arrays without a generator.
        LatentMismatchError: when the latent belongs to another generator.
    """
    latent = _read_latent_file(Path(path), generator, where)
    values = latent.w
    if not torch.isfinite(values).all():
        prefix = f"{where}: " if where else ""
        count = int((~torch.isfinite(values)).sum())
        raise LatentFileError(f"{prefix}{path} contains {count} NaN or infinite values out of {values.numel()}; "
                              f"they would render as black images. Save the latent again from its source.")
    return latent


def _read_latent_file(path: Path, generator, where: str) -> StyleGANLatent:
    """Read a latent file without the finiteness check of `load_latent`."""
    suffix = path.suffix.lower()
    source = str(path)
    if suffix == ".safetensors":
        return latent_from_safetensors_bytes(path.read_bytes(), generator, source, where)
    if suffix in (".pt", ".pth"):
        try:
            data = load_torch_data(path)
        except TorchFileError as error:
            raise LatentFileError(f"{error}. Latent .pt files must hold only tensors and plain values.") from None
        if isinstance(data, torch.Tensor):
            return latent_from_array(data, generator, source, where)
        if isinstance(data, dict) and isinstance(data.get("w"), torch.Tensor):
            return _latent_from_fields(data["w"], data, generator, source, where)
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise LatentFileError(f"{path} is not a latent file: expected a tensor or a dict with 'w', got {keys}.")
    if suffix in (".npy", ".npz"):
        try:
            data = load_numpy_file(path)
        except NumpyFileError as error:
            raise LatentFileError(f"{path} is not a valid latent file: {error.reason}.") from None
        if isinstance(data, dict):
            if "w" not in data:
                raise LatentFileError(f"{path} has the arrays {sorted(data)} but no 'w'; latent .npz files hold the "
                                      f"latent in 'w', as the official projector writes it.")
            data = data["w"]
        return latent_from_array(data, generator, source, where)
    raise LatentFileError(f"{path}: unknown latent file type {path.suffix!r}; expected one of "
                          f"{', '.join(LATENT_SUFFIXES)}.")


def list_latent_files(folder: Path) -> list[str]:
    """Latent files under `folder` (relative POSIX paths), sorted."""
    if not folder.is_dir():
        return []
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.is_file() and path.suffix.lower() in LATENT_SUFFIXES)


# ---------------------------------------------------------------------------------------------------------------------
# Latents in PNG files.


def png_latent_record(latent: StyleGANLatent) -> dict[str, str]:
    """Build the JSON record stored in a PNG's `stylebridge_latent` text chunk."""
    data = base64.b64encode(latent_to_safetensors_bytes(latent)).decode("ascii")
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "encoding": PNG_ENCODING, "data": data}


def latent_from_png_record(text: str, generator=None, source: str = "the PNG", where: str = "") -> StyleGANLatent:
    prefix = f"{where}: " if where else ""
    try:
        record = json.loads(text)
        if isinstance(record, str):  # a JSON string holding the record, as SaveImage-style writers store it
            record = json.loads(record)
    except json.JSONDecodeError as exc:
        raise LatentFileError(f"{prefix}the {PNG_LATENT_KEY} text chunk of {source} is not valid JSON ({exc.msg})."
                              ) from exc
    if not isinstance(record, dict) or record.get("encoding") != PNG_ENCODING or "data" not in record:
        raise LatentFileError(f"{prefix}the {PNG_LATENT_KEY} text chunk of {source} has an unknown layout; expected "
                              f"encoding {PNG_ENCODING!r} with 'data'.")
    try:
        payload = base64.b64decode(record["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LatentFileError(f"{prefix}the latent in {source} is not valid base64 ({exc}).") from exc
    return latent_from_safetensors_bytes(payload, generator, source, where)


def read_png_latent(path: str | os.PathLike, generator=None, where: str = "") -> StyleGANLatent:
    """Read the latent that `save_images_with_latent` stored in a PNG.

    Raises:
        LatentFileError: when the image has no StyleBridge latent, naming the node that writes one.
    """
    from PIL import Image

    prefix = f"{where}: " if where else ""
    path = Path(path)
    with Image.open(path) as image:
        chunks = dict(getattr(image, "text", {}) or {})
    if PNG_LATENT_KEY not in chunks:
        raise LatentFileError(f"{prefix}{path.name} carries no StyleBridge latent (no '{PNG_LATENT_KEY}' text "
                              f"chunk). Only PNGs written by SaveStyleGANImage hold their latent; the editor's "
                              f"SaveImage stores only the workflow.")
    return latent_from_png_record(chunks[PNG_LATENT_KEY], generator, path.name, where)


def save_images_with_latent(images: torch.Tensor, latent: StyleGANLatent, filename_prefix: str, folder: Path, *,
                            prompt: Any = None, extra_pnginfo: Any = None, where: str = "",
                            compress_level: int = 4) -> list[dict]:
    """Save IMAGE [B, H, W, C] as `{prefix}_{counter:05}_.png` files, each with its latent in a text chunk.

    Image i stores latent i; a latent batch of 1 is stored with every image. The prompt and workflow are
    embedded as SaveImage does, and every file is created exclusively (no overwrite).

    Returns:
        ComfyUI's UI entries [{"filename", "subfolder", "type": "output"}], one per image.
    """
    from ..runtime.core_nodes import save_png_batch

    prefix = f"{where}: " if where else ""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if latent.batch_size not in (1, images.shape[0]):
        raise ValueError(f"{prefix}{images.shape[0]} images but {latent.batch_size} latents; connect the latent "
                         f"that rendered these images (equal batch sizes), or a single latent for all of them.")
    results = []
    base_info = dict(extra_pnginfo) if isinstance(extra_pnginfo, dict) else {}
    for index in range(images.shape[0]):
        row = latent.w[index if latent.batch_size > 1 else 0].unsqueeze(0)
        one = StyleGANLatent(row, latent.space, latent.num_ws, latent.w_dim, latent.fingerprint, latent.meta)
        info = {**base_info, PNG_LATENT_KEY: png_latent_record(one)}
        results.extend(save_png_batch(images[index:index + 1], filename_prefix, folder, "output",
                                      compress_level=compress_level, prompt=prompt, extra_pnginfo=info))
    return results
