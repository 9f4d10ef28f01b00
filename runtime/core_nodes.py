"""Standalone versions of ComfyUI's core LoadImage, SaveImage, PreviewImage, SaveAnimatedWEBP and SaveAnimatedPNG.

They keep ComfyUI's class names, input names, socket types and outputs (comfyanonymous/ComfyUI, nodes.py,
comfy_extras/nodes_images.py and folder_paths.py), so one workflow file runs in ComfyUI and in StyleBridge's
runner. They are registered only in the standalone runner and never exported to ComfyUI, which has its own.

Differences from ComfyUI, all on the safe side:
- The save nodes open each file with exclusive create, so an existing file is never overwritten:
  the counter moves on instead.
- A filename_prefix that leads outside the output folder, also through a symbolic link, is rejected before the
  run starts.
- LoadImage scales 16-bit grayscale PNGs by 1/65535. ComfyUI's converts them to 8-bit RGB, which clips most
  values to white.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import random
import re
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from . import host

logger = logging.getLogger(__name__)

# Formats whose extra frames are not a sequence (in MPO the second frame is a stereo or depth view). ComfyUI
# loads only their first frame too.
SINGLE_FRAME_FORMATS = ("MPO",)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"})
# Pillow modes with 16-bit (or wider) integer samples.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<folder>input|output|temp)\]$")
_MISSING_ALPHA_MASK_SIZE = 64  # ComfyUI returns a 64x64 zero mask for images without alpha


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


def list_input_images() -> list[str]:
    """Image file names directly inside host.input_dir(), sorted (ComfyUI lists top-level files only)."""
    folder = host.input_dir()
    if not folder.is_dir():
        return []
    names = []
    for entry in folder.iterdir():
        if not entry.is_file():
            continue
        mime = mimetypes.guess_type(entry.name)[0] or ""
        if entry.suffix.lower() in IMAGE_SUFFIXES or mime.startswith("image/"):
            names.append(entry.name)
    return sorted(names)


def resolve_input_file(name: str, file_kind: str = "file") -> Path:
    """Return the path of a file named relative to the input folder ("name [output]" or "name [temp]": that folder).

    The annotations are ComfyUI's. `file_kind` names the file in messages ("image file", "latent file").

    Raises:
        ValueError: for an empty or absolute name, or one that leads outside its folder.
        FileNotFoundError: when the file does not exist.
    """
    folders = {"input": host.input_dir, "output": host.output_dir, "temp": host.temp_dir}
    folder = host.input_dir()
    match = _ANNOTATION.match(name or "")
    if match:
        name, folder = match.group("name"), folders[match.group("folder")]()
    if not name or not name.strip():
        raise ValueError(f"The {file_kind} name is empty; choose a file in {folder}.")
    if Path(name).is_absolute():
        raise ValueError(f"The {file_kind} name {name!r} is an absolute path; files are read relative to {folder}. Copy "
                         f"the file there and pass its name.")
    base = folder.resolve()
    path = (base / name).resolve()
    if base not in path.parents:
        raise ValueError(f"The {file_kind} name {name!r} points outside the folder {folder}.")
    if not path.is_file():
        raise FileNotFoundError(f"{file_kind.capitalize()} not found: {path}. Put it in {folder} and pass its name.")
    return path


def resolve_image_path(name: str) -> Path:
    """Return the file for a LoadImage value (see resolve_input_file); raise ValueError for a value that is no name."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Invalid image name {name!r}: expected a file name inside {host.input_dir()}.")
    return resolve_input_file(name, "image file")


def _frame_to_rgb(frame: Image.Image) -> np.ndarray:
    """Convert one frame to float32 RGB [H, W, 3] in 0..1."""
    if frame.mode in SIXTEEN_BIT_MODES:
        # NOTE: mode "I" is assumed to contain 16-bit samples (what Pillow gives for 16-bit PNGs), so 32-bit
        # TIFF values above 65535 clip to 1.
        gray = np.asarray(frame, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
    if frame.mode == "F":
        gray = np.clip(np.asarray(frame, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0


def _frame_alpha(frame: Image.Image) -> np.ndarray | None:
    """Alpha channel [H, W] in 0..1, or None when the frame has no transparency."""
    if "A" in frame.getbands():
        return np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
    if frame.mode == "P" and "transparency" in frame.info:
        return np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    return None


def load_image_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an image file as ComfyUI does: (IMAGE [B, H, W, 3] float32 0..1, MASK [B, H, W] float32 0..1).

    EXIF orientation is applied. Each frame of an animated file is one batch entry, and frames whose size
    differs from the first are skipped. MASK is 1 - alpha. Without alpha it is zeros of shape [B, 64, 64], as
    in ComfyUI.
    """
    rgb_frames: list[np.ndarray] = []
    alphas: list[np.ndarray | None] = []
    with Image.open(path) as image:
        image_format = image.format
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            frame = ImageOps.exif_transpose(frame)
            rgb = _frame_to_rgb(frame)
            if rgb_frames and rgb.shape != rgb_frames[0].shape:
                logger.warning("%s: frame %d is %dx%d, unlike the first frame (%dx%d); it is skipped.", path,
                               index, rgb.shape[1], rgb.shape[0], rgb_frames[0].shape[1], rgb_frames[0].shape[0])
                continue
            rgb_frames.append(rgb)
            alphas.append(_frame_alpha(frame))
            if image_format in SINGLE_FRAME_FORMATS:
                break

    images = torch.from_numpy(np.stack(rgb_frames))  # [B, H, W, 3]
    if all(alpha is None for alpha in alphas):
        masks = torch.zeros((len(rgb_frames), _MISSING_ALPHA_MASK_SIZE, _MISSING_ALPHA_MASK_SIZE),
                            dtype=torch.float32)
    else:
        height, width = rgb_frames[0].shape[:2]
        opaque = np.ones((height, width), dtype=np.float32)
        masks = 1.0 - torch.from_numpy(np.stack([opaque if alpha is None else alpha for alpha in alphas]))
    return images, masks


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LoadImage:
    """Load an image from the input folder, with its alpha channel as a mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (list_input_images(), {
            "image_upload": True,
            "tooltip": "Image file in the input folder (STYLEBRIDGE_HOME/input when run standalone).",
        })}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    DESCRIPTION = "Loads an image file; MASK is 1 - alpha (zeros when the image has no alpha)."

    def load_image(self, image: str):
        return load_image_file(resolve_image_path(image))

    @classmethod
    def IS_CHANGED(cls, image: str):
        return file_sha256(resolve_image_path(image))

    @classmethod
    def VALIDATE_INPUTS(cls, image: str):
        # Declaring `image` here also skips the COMBO list check, so files in subfolders and annotated names
        # ("x.png [output]") are accepted, as in ComfyUI.
        try:
            resolve_image_path(image)
        except (ValueError, FileNotFoundError) as exc:
            return f"Invalid image file: {exc}"
        return True


# ---------------------------------------------------------------------------------------------------------------------
# Saving.


def expand_prefix_variables(prefix: str, width: int, height: int) -> str:
    """Replace %width%, %height%, %year%, %month%, %day%, %hour%, %minute% and %second% (ComfyUI's set)."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    replacements = {
        "%width%": str(width), "%height%": str(height), "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}", "%day%": f"{now.tm_mday:02}", "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}", "%second%": f"{now.tm_sec:02}",
    }
    for token, value in replacements.items():
        prefix = prefix.replace(token, value)
    return prefix


def split_filename_prefix(prefix: str, folder: Path) -> tuple[str, str]:
    """Split a filename_prefix into (subfolder, file name prefix), checking it stays inside `folder`.

    Raises:
        ValueError: when the prefix is empty, absolute, or leads outside `folder` (through ".." or a symbolic
            link), naming the prefix and the folder.
    """
    normalized = Path(prefix.replace("\\", "/"))
    if not prefix.strip() or normalized.name in ("", ".", ".."):
        raise ValueError(f"filename_prefix {prefix!r} has no file name part; use a prefix such as 'ComfyUI' or "
                         f"'portraits/face'.")
    if normalized.is_absolute():
        raise ValueError(f"filename_prefix {prefix!r} is an absolute path; it must be relative to the output "
                         f"folder {folder}, such as 'ComfyUI' or 'portraits/face'.")
    base = folder.resolve()
    parent = (base / normalized.parent).resolve()
    if parent != base and base not in parent.parents:
        raise ValueError(f"filename_prefix {prefix!r} points outside the output folder {folder}; use a relative "
                         f"prefix without '..', such as 'ComfyUI' or 'portraits/face'.")
    subfolder = parent.relative_to(base).as_posix()
    return ("" if subfolder == "." else subfolder), normalized.name


def _next_counter(folder: Path, name: str) -> int:
    """1 + the highest counter of existing `{name}_NNNNN_` files, as ComfyUI's get_save_image_path computes it."""
    pattern = re.compile(re.escape(name).replace(re.escape("%batch_num%"), r"\d+") + r"_(\d+)_", re.IGNORECASE)
    highest = 0
    if folder.is_dir():
        for entry in folder.iterdir():
            match = pattern.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest + 1


def _png_metadata(prompt: Any, extra_pnginfo: Any) -> PngInfo:
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", json.dumps(prompt, default=repr))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            metadata.add_text(key, json.dumps(value, default=repr))
    return metadata


def _to_pil(image: torch.Tensor) -> Image.Image:
    # Truncation (not rounding) to 8 bits matches ComfyUI's SaveImage byte for byte.
    array = np.clip(255.0 * image.detach().to("cpu", torch.float32).numpy(), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def _write_exclusive(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a new file with `write`, raising FileExistsError instead of overwriting an existing one."""
    with open(path, "xb") as handle:
        try:
            write(handle)
        except BaseException:
            handle.close()
            path.unlink(missing_ok=True)  # remove only the file this call created
            raise


def _write_numbered(folder: Path, base: str, extension: str, counter: int,
                    write: Callable[[BinaryIO], None]) -> tuple[str, int]:
    """Write `{base}_{counter:05}_.{extension}` in `folder`, moving the counter past names already taken.

    Returns the file name and the counter that was used.
    """
    while True:
        file_name = f"{base}_{counter:05}_.{extension}"
        try:
            _write_exclusive(folder / file_name, write)
        except FileExistsError:
            counter += 1
            continue
        logger.debug("Saved %s", folder / file_name)
        return file_name, counter


def _check_image_batch(images: Any) -> torch.Tensor:
    """Return `images` as [B, H, W, C] with C = 1, 3 or 4, or raise naming the shape received."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be an IMAGE tensor [B, H, W, C], got {type(images).__name__}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise ValueError(f"images must have shape [B, H, W, C] with B >= 1 and C in (1, 3, 4), got "
                         f"{list(images.shape)}.")
    return images


def _output_target(images: torch.Tensor, filename_prefix: str, folder: Path) -> tuple[Path, str, str, int]:
    """Resolve a filename_prefix for a batch: (folder to write in, subfolder, name, first free counter)."""
    prefix = expand_prefix_variables(filename_prefix, images.shape[2], images.shape[1])
    subfolder, name = split_filename_prefix(prefix, folder)
    target = folder / subfolder if subfolder else folder
    target.mkdir(parents=True, exist_ok=True)
    return target, subfolder, name, _next_counter(target, name)


def save_png_batch(images: torch.Tensor, filename_prefix: str, folder: Path, folder_type: str, *,
                   compress_level: int, prompt: Any = None, extra_pnginfo: Any = None) -> list[dict]:
    """Write each image of a batch as `{prefix}_{counter:05}_.png` and return ComfyUI's UI entries.

    The counter starts after the highest one already in the folder, and every file is opened with exclusive
    create: if a name is taken (by another process, say), the counter moves on, so no file is overwritten.

    Args:
        images: IMAGE tensor [B, H, W, C] (or [H, W, C]) in 0..1 with C = 1, 3 or 4.
        filename_prefix: relative prefix, may contain subfolders and %width%/%height%/%date% variables and
            %batch_num%.
        folder: the output (or temp) folder.
        folder_type: "output" or "temp", reported in the UI entries.

    Returns:
        [{"filename", "subfolder", "type"}], one per image.
    """
    images = _check_image_batch(images)
    target, subfolder, name, counter = _output_target(images, filename_prefix, folder)
    metadata = _png_metadata(prompt, extra_pnginfo)

    results = []
    for batch_number, image in enumerate(images):
        picture = _to_pil(image)
        base = name.replace("%batch_num%", str(batch_number))
        file_name, counter = _write_numbered(
            target, base, "png", counter,
            lambda handle, picture=picture: picture.save(handle, format="PNG", pnginfo=metadata,
                                                         compress_level=compress_level))
        results.append({"filename": file_name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return results


class SaveImage:
    """Save images as PNG files in the output folder, with the prompt and workflow embedded."""

    FOLDER_TYPE = "output"
    COMPRESS_LEVEL = 4
    PREFIX_TOOLTIP = ("File name prefix, relative to the output folder; may contain subfolders and %width%, "
                      "%height%, %year%, %month%, %day%, %hour%, %minute%, %second%.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": cls.PREFIX_TOOLTIP}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to the output folder."

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix: str | None = None):
        if filename_prefix is None:  # linked from another node: checked when the node runs
            return True
        try:
            split_filename_prefix(expand_prefix_variables(filename_prefix, 0, 0), host.output_dir())
        except ValueError as exc:
            return str(exc)
        return True

    def folder(self) -> Path:
        # Read at call time, not in __init__, so the runner's per-run output folder applies.
        return host.output_dir()

    def save_images(self, images, filename_prefix: str = "ComfyUI", prompt=None, extra_pnginfo=None):
        results = save_png_batch(images, filename_prefix, self.folder(), self.FOLDER_TYPE,
                                 compress_level=self.COMPRESS_LEVEL, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """Save images into the temp folder for preview."""

    FOLDER_TYPE = "temp"
    COMPRESS_LEVEL = 1

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"images": ("IMAGE", {"tooltip": "The images to preview."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    DESCRIPTION = "Saves the input images to the temp folder for preview."

    def __init__(self):
        # ComfyUI appends "_temp_" and five random letters so that previews of different nodes never collide.
        self.prefix_append = "_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))

    def folder(self) -> Path:
        return host.temp_dir()

    def save_images(self, images, filename_prefix: str = "ComfyUI", prompt=None, extra_pnginfo=None):
        return super().save_images(images, filename_prefix + self.prefix_append, prompt, extra_pnginfo)


# Animations: a batch of frames in one file, as ComfyUI's SaveAnimatedWEBP and SaveAnimatedPNG write them. The
# prompt and workflow go where ComfyUI's editor looks for them. A StyleCLIP sweep or a latent walk thus saves as a
# video in both places.

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}  # libwebp's effort levels, as ComfyUI names them.


def _frame_duration(fps: float) -> int:
    """Return the display time of one frame in whole milliseconds, as ComfyUI computes it."""
    if not 0 < fps <= 1000:
        raise ValueError(f"fps {fps} is out of range; use 0.01 to 1000 frames per second.")
    return int(1000.0 / fps)


def _webp_exif(prompt: Any, extra_pnginfo: Any) -> Image.Exif:
    """Build EXIF with the prompt in tag 0x0110 and each extra entry in tags 0x010f, 0x010e, ... ("key:json")."""
    exif = Image.Exif()
    if prompt is not None:
        exif[0x0110] = "prompt:" + json.dumps(prompt, default=repr)
    if isinstance(extra_pnginfo, dict):
        for offset, (key, value) in enumerate(extra_pnginfo.items()):
            exif[0x010F - offset] = f"{key}:{json.dumps(value, default=repr)}"
    return exif


def _apng_metadata(prompt: Any, extra_pnginfo: Any) -> PngInfo:
    """Return 'comf' chunks after the image data, one per entry (key, a zero byte, JSON), as ComfyUI reads APNGs."""
    metadata = PngInfo()
    entries = {"prompt": prompt} if prompt is not None else {}
    if isinstance(extra_pnginfo, dict):
        entries.update(extra_pnginfo)
    for key, value in entries.items():
        metadata.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value, default=repr).encode("latin-1"),
                     after_idat=True)
    return metadata


class _SaveAnimation:
    """Shared part of the animated save nodes: inputs, checks, naming and the UI entry."""

    EXTENSION = ""
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image/animation"
    VALIDATE_INPUTS = SaveImage.VALIDATE_INPUTS

    @classmethod
    def _input_types(cls, **format_inputs) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, in order."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": SaveImage.PREFIX_TOOLTIP}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                                  "tooltip": "Frames per second; each frame shows for 1000 / fps ms, rounded down."}),
                **format_inputs,
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def _save(self, images, fps: float, filename_prefix: str,
              write: Callable[[BinaryIO, list[Image.Image], int], None]) -> dict:
        images = _check_image_batch(images)
        frames = [_to_pil(image) for image in images]
        duration = _frame_duration(fps)
        target, subfolder, name, counter = _output_target(images, filename_prefix, host.output_dir())
        file_name, _ = _write_numbered(target, name, self.EXTENSION, counter,
                                       lambda handle: write(handle, frames, duration))
        return {"ui": {"images": [{"filename": file_name, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,)}}


class SaveAnimatedWEBP(_SaveAnimation):
    """Save a batch of images as one animated WebP file in the output folder."""

    EXTENSION = "webp"
    DESCRIPTION = "Saves the input images as the frames of one animated WebP file in the output folder."

    @classmethod
    def INPUT_TYPES(cls):
        return cls._input_types(
            lossless=("BOOLEAN", {"default": True, "tooltip": "Lossless frames; quality is then ignored."}),
            quality=("INT", {"default": 80, "min": 0, "max": 100, "tooltip": "Lossy quality, 0 (smallest) to 100."}),
            method=(list(WEBP_METHODS), {"tooltip": "Compression effort: fastest, default or slowest (smallest)."}))

    def save_images(self, images, fps: float, filename_prefix: str = "ComfyUI", lossless: bool = True,
                    quality: int = 80, method: str = "default", prompt=None, extra_pnginfo=None):
        if method not in WEBP_METHODS:
            raise ValueError(f"method {method!r} is invalid; expected one of {list(WEBP_METHODS)}.")
        exif = _webp_exif(prompt, extra_pnginfo)

        def write(handle, frames, duration):
            frames[0].save(handle, format="WEBP", save_all=True, append_images=frames[1:], duration=duration,
                           exif=exif, lossless=bool(lossless), quality=int(quality), method=WEBP_METHODS[method])

        return self._save(images, fps, filename_prefix, write)


class SaveAnimatedPNG(_SaveAnimation):
    """Save a batch of images as one animated PNG (APNG) file in the output folder."""

    EXTENSION = "png"
    DESCRIPTION = "Saves the input images as the frames of one animated PNG file in the output folder."

    @classmethod
    def INPUT_TYPES(cls):
        return cls._input_types(
            compress_level=("INT", {"default": 4, "min": 0, "max": 9,
                                    "tooltip": "zlib compression level, 0 (none) to 9 (smallest)."}))

    def save_images(self, images, fps: float, compress_level: int = 4, filename_prefix: str = "ComfyUI",
                    prompt=None, extra_pnginfo=None):
        metadata = _apng_metadata(prompt, extra_pnginfo)

        def write(handle, frames, duration):
            frames[0].save(handle, format="PNG", save_all=True, append_images=frames[1:], duration=duration,
                           pnginfo=metadata, compress_level=int(compress_level))

        return self._save(images, fps, filename_prefix, write)


NODE_CLASS_MAPPINGS = {
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "SaveAnimatedWEBP": SaveAnimatedWEBP,
    "SaveAnimatedPNG": SaveAnimatedPNG,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "SaveAnimatedWEBP": "Save Animated WEBP",
    "SaveAnimatedPNG": "Save Animated PNG",
}
