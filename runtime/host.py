"""Services that come from ComfyUI when StyleBridge runs inside it, and from small equivalents when it runs alone.

Nothing here imports ComfyUI at module level: `in_comfyui()` decides once, and each service imports the ComfyUI
module it wraps only when called inside ComfyUI.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Model folder kinds and the file name endings each accepts; an empty set means the entries are folders
# (a diffusers pipeline is a folder with model_index.json).
MODEL_FOLDERS: dict[str, set[str]] = {
    "stylegan": {".pkl", ".pt", ".pth", ".safetensors"},
    "directions": {".npy", ".npz", ".pt", ".pth", ".safetensors"},  # edit directions in W (models/directions.py)
    "diffusers": set(),
    "lpips": {".pth", ".pt", ".safetensors"},  # VGG16 weights for the projector's LPIPS loss (models/perceptual.py)
    "landmarks": {".dat"},  # dlib shape predictors for face alignment (models/alignment.py)
    "encoders": {".pt", ".pth"},  # pSp and e4e encoder checkpoints (models/encoders.py)
    "clip": {".pt", ".pth", ".bin", ".safetensors"},  # OpenAI / open_clip CLIP weights (models/clip_models.py)
    "styleclip": {".npy", ".safetensors"},  # StyleCLIP fs3 files (models/styleclip_channels.py)
    "styleclip_mappers": {".pt", ".pth"},  # StyleCLIP latent mapper checkpoints (models/styleclip_mappers.py)
    "arcface": {".pth", ".pt"},  # ArcFace IR-SE50 weights for the identity loss (models/arcface.py)
}

_comfy_detected: bool | None = None


def in_comfyui() -> bool:
    """Return True when running inside a ComfyUI process (its `folder_paths` and `comfy` modules import)."""
    global _comfy_detected
    if _comfy_detected is None:
        forced = os.environ.get("STYLEBRIDGE_STANDALONE")
        if forced:
            _comfy_detected = False
        else:
            _comfy_detected = (
                importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None
            )
    return _comfy_detected


# ---------------------------------------------------------------------------------------------------------------------
# Folders.


def home_dir() -> Path:
    """Standalone data folder: models/, input/ and output/ live under it. Set by STYLEBRIDGE_HOME."""
    return Path(os.environ.get("STYLEBRIDGE_HOME", Path.home() / "stylebridge")).expanduser().resolve()


def register_model_folders() -> None:
    """Add StyleBridge's model folder kinds to ComfyUI's folder registry (inside ComfyUI only)."""
    if not in_comfyui():
        return
    import folder_paths  # ComfyUI module, present only inside ComfyUI.

    for kind, extensions in MODEL_FOLDERS.items():
        if kind in folder_paths.folder_names_and_paths:
            continue
        folder = os.path.join(folder_paths.models_dir, kind)
        folder_paths.folder_names_and_paths[kind] = ([folder], set(extensions))


def model_folders(kind: str) -> list[Path]:
    """Folders searched for models of `kind`, in priority order."""
    if kind not in MODEL_FOLDERS:
        raise ValueError(f"Unknown model folder kind {kind!r}; expected one of {sorted(MODEL_FOLDERS)}.")
    if in_comfyui():
        import folder_paths

        register_model_folders()
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    return [home_dir() / "models" / kind]


def list_models(kind: str) -> list[str]:
    """Names (relative paths) of the models of `kind`, sorted; folders for diffusers pipelines."""
    extensions = MODEL_FOLDERS[kind]
    names: set[str] = set()
    for folder in model_folders(kind):
        if not folder.is_dir():
            continue
        if not extensions:
            for entry in folder.iterdir():
                if entry.is_dir() and (entry / "model_index.json").is_file():
                    names.add(entry.name)
            continue
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix.lower() in extensions:
                names.add(path.relative_to(folder).as_posix())
    return sorted(names)


def resolve_model(kind: str, name: str) -> Path:
    """Return the path of model `name` of `kind`: an absolute path as given, else looked up in the model folders.

    Raises:
        FileNotFoundError: naming the folders searched and what to do.
    """
    candidate = Path(name).expanduser()
    if candidate.is_absolute():
        if candidate.exists():
            return candidate
        raise FileNotFoundError(f"Model file not found: {candidate}. Check the path, or put the file in "
                                f"{model_folders(kind)[0]} and pass its name.")
    folders = model_folders(kind)
    if ".." in candidate.parts:
        raise ValueError(f"Model name {name!r} points outside the {kind} model folder; use a name relative to "
                         f"{folders[0]} without '..'.")
    for folder in folders:
        # Symlinks inside the folder are followed, as ComfyUI does, so models may live on shared storage.
        path = folder / candidate
        if path.exists():
            return path
    searched = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"{kind} model {name!r} not found in {searched}. Put the file there or pass an "
                            f"absolute path.")


def cache_dir() -> Path:
    """Folder for derived files, such as safetensors copies of pickles. Set by STYLEBRIDGE_CACHE_DIR.

    Inside ComfyUI it is under ComfyUI's user directory (kept across restarts, unlike its temp directory);
    standalone it is $STYLEBRIDGE_HOME/cache.
    """
    configured = os.environ.get("STYLEBRIDGE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    if in_comfyui():
        import folder_paths

        return Path(folder_paths.get_user_directory()) / "stylebridge" / "cache"
    return home_dir() / "cache"


def input_dir() -> Path:
    """Folder that LoadImage reads from."""
    if in_comfyui():
        import folder_paths

        return Path(folder_paths.get_input_directory())
    return home_dir() / "input"


def output_dir() -> Path:
    """Folder that SaveImage writes to."""
    if in_comfyui():
        import folder_paths

        return Path(folder_paths.get_output_directory())
    return home_dir() / "output"


def temp_dir() -> Path:
    """Folder that PreviewImage writes to."""
    if in_comfyui():
        import folder_paths

        return Path(folder_paths.get_temp_directory())
    return home_dir() / "temp"


# ---------------------------------------------------------------------------------------------------------------------
# Devices and interruption.


def default_device() -> torch.device:
    """ComfyUI's torch device inside ComfyUI; otherwise CUDA when available, else CPU."""
    if in_comfyui():
        import comfy.model_management

        return comfy.model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str) -> torch.device:
    """Map a node's device option ('auto', 'cpu', 'cuda', 'cuda:N') to a torch device, checking it exists."""
    if name == "auto":
        return default_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {name!r} requested but CUDA is not available. Choose 'cpu' or 'auto'.")
    return device


class InterruptedByUser(Exception):
    """Raised when the user interrupts a run (ComfyUI's cancel button or the runner's interrupt())."""


_interrupt_flag = threading.Event()


def interrupt() -> None:
    """Ask the running standalone job to stop at its next check."""
    _interrupt_flag.set()


def clear_interrupt() -> None:
    _interrupt_flag.clear()


def check_interrupted() -> None:
    """Raise when the user asked to stop; long loops call this between steps."""
    if in_comfyui():
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        return
    if _interrupt_flag.is_set():
        _interrupt_flag.clear()
        raise InterruptedByUser("Interrupted by the user.")


# ---------------------------------------------------------------------------------------------------------------------
# Progress.


@dataclass
class ProgressEvent:
    node_id: str | None
    value: int
    total: int
    preview: object | None = None


# Callback that receives progress events from the standalone runner; None when no runner is listening.
progress_listener: Callable[[ProgressEvent], None] | None = None
# Node id being executed by the standalone runner, attached to progress events.
current_node_id: str | None = None


class ProgressBar:
    """Per-node progress, reported to ComfyUI's progress bar or to the standalone runner's listener."""

    def __init__(self, total: int):
        self.total = total
        self.current = 0
        self._comfy_bar = None
        if in_comfyui():
            import comfy.utils

            self._comfy_bar = comfy.utils.ProgressBar(total)

    def update_absolute(self, value: int, total: int | None = None, preview: object | None = None) -> None:
        if total is not None:
            self.total = total
        self.current = value
        if self._comfy_bar is not None:
            self._comfy_bar.update_absolute(value, total, preview)
        elif progress_listener is not None:
            progress_listener(ProgressEvent(current_node_id, value, self.total, preview))

    def update(self, value: int = 1) -> None:
        self.update_absolute(self.current + value)
