"""Load StyleGAN2 and StyleGAN3 checkpoints in every supported format, detected from the file content.

Formats:
- NVIDIA network pickles (stylegan2-ada-pytorch, stylegan3 repository): `G_ema` is read through
  `safe_pickle.RestrictedUnpickler`, which never runs the source code embedded in the file.
- TensorFlow-era StyleGAN2 pickles (NVlabs stylegan2, TF stylegan2-ada), recognised by their reference to
  `dnnlib.tflib` and converted without TensorFlow by `tf_pickle.read_tf_pickle`.
- rosinality stylegan2-pytorch `.pt` files (`g_ema`, optional `latent_avg`), read with `torch.load(weights_only=True)`.
- StyleBridge safetensors: the generator's state dict with its architecture as JSON in the metadata
  (written by `save_safetensors` and `stylebridge convert`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import re
import threading
from pathlib import Path

import torch

from . import stylegan3
from .safe_pickle import (
    PersistentRecord,
    RestrictedUnpickler,
    TorchFileError,
    UnsafePickleError,
    load_torch_data,
)
from .stylegan2 import Generator, StyleGAN2Config, weights_loaded_later

logger = logging.getLogger(__name__)

SAFETENSORS_FORMAT = "stylebridge"
SUPPORTED_FORMATS = (
    "NVIDIA network pickle (.pkl from stylegan2-ada-pytorch or stylegan3)",
    "TensorFlow-era StyleGAN2 pickle (.pkl from NVlabs stylegan2 or TF stylegan2-ada, config E/F)",
    "rosinality stylegan2-pytorch checkpoint (.pt with g_ema)",
    "StyleBridge safetensors (.safetensors written by `stylebridge convert`)",
)
# Legacy (pre-zip) torch.save files start with a pickled magic number right after the protocol header.
_TORCH_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class CheckpointError(ValueError):
    """Raised when a checkpoint file is missing, damaged, unsafe or of an unsupported format."""


def _formats_hint() -> str:
    return "Supported formats: " + "; ".join(SUPPORTED_FORMATS) + "."


# ---------------------------------------------------------------------------------------------------------------------
# Format detection.


def detect_format(path: str | os.PathLike) -> str:
    """Return 'pickle', 'torch-zip', 'torch-legacy' or 'safetensors' from the first bytes of the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path}. Put it in the stylegan model folder or pass an "
                              f"absolute path.")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; a StyleGAN checkpoint is a single file. {_formats_hint()}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); download or copy it again.")
    with open(path, "rb") as file:
        head = file.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80" and head[2:2 + len(_TORCH_LEGACY_MAGIC)] == _TORCH_LEGACY_MAGIC:
        return "torch-legacy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9:
        header_length = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 0 < header_length <= size - 8:
            return "safetensors"
    raise CheckpointError(f"{path} is not a recognised checkpoint (first bytes {head[:8].hex()}). {_formats_hint()}")


# ---------------------------------------------------------------------------------------------------------------------
# NVIDIA pickles.


class _TensorFlowPickleFound(Exception):
    """Raised by _CheckpointUnpickler at the first dnnlib.tflib global, so read_generator can switch readers."""


class _CheckpointUnpickler(RestrictedUnpickler):
    """Stops at TF-era pickles, which `tf_pickle` reads with its own allowlist entry for their Network class."""

    def find_class(self, module: str, name: str):
        if module.startswith("dnnlib.tflib"):
            raise _TensorFlowPickleFound(f"{module}.{name}")
        return super().find_class(module, name)


def _filter_taps(buffer: torch.Tensor) -> list[float]:
    """Recover 1-D taps from an official resample_filter buffer (2-D outer product, or 1-D when separable)."""
    taps = buffer if buffer.ndim == 1 else buffer.sum(dim=1)
    # Filters are stored normalised; scale back to the small integers they are usually given as ([1, 3, 3, 1]).
    smallest = taps[taps != 0].abs().min()
    scaled = taps / smallest
    if torch.allclose(scaled, scaled.round(), atol=1e-4):
        taps = scaled.round()
    return [float(v) for v in taps]


def _config_from_nvidia(g: PersistentRecord, source: str) -> StyleGAN2Config:
    mapping = g.modules.get("mapping")
    synthesis = g.modules.get("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(f"{source}: G_ema has no mapping/synthesis submodules; not a StyleGAN generator.")

    kwargs = g.init_kwargs
    img_resolution = int(g.attr("img_resolution", kwargs.get("img_resolution")))
    resolutions = [2 ** i for i in range(2, img_resolution.bit_length())]
    blocks = {res: synthesis.modules.get(f"b{res}") for res in resolutions}
    missing = [res for res, block in blocks.items() if block is None]
    if missing:
        raise CheckpointError(f"{source}: synthesis blocks {missing} are missing for resolution {img_resolution}.")

    fc0 = mapping.modules["fc0"]
    embed = mapping.modules.get("embed")
    first = blocks[4]
    first_layer = first.modules["conv1"]
    filter_buffer = first.buffers.get("resample_filter")
    num_layers = int(mapping.attr("num_layers", len([k for k in mapping.modules if re.fullmatch(r"fc\d+", k)])))
    w_dim = int(g.attr("w_dim", kwargs.get("w_dim")))
    layer_features = int(fc0.parameters["weight"].shape[0]) if num_layers > 1 else None

    return StyleGAN2Config(
        z_dim=int(g.attr("z_dim", kwargs.get("z_dim"))),
        c_dim=int(g.attr("c_dim", kwargs.get("c_dim", 0))),
        w_dim=w_dim,
        img_resolution=img_resolution,
        img_channels=int(g.attr("img_channels", kwargs.get("img_channels", 3))),
        channels=[int(blocks[res].modules["conv1"].parameters["weight"].shape[0]) for res in resolutions],
        architecture=str(first.attr("architecture", "skip")),
        conv_clamp=first_layer.attr("conv_clamp"),
        num_fp16_res=int(synthesis.attr("num_fp16_res", 0)),
        resample_filter=_filter_taps(filter_buffer) if filter_buffer is not None else [1, 3, 3, 1],
        use_noise=bool(first_layer.attr("use_noise", True)),
        mapping_layers=num_layers,
        mapping_embed_features=int(embed.parameters["weight"].shape[0]) if embed is not None else None,
        mapping_layer_features=layer_features if layer_features != w_dim else None,
        mapping_activation=str(fc0.attr("activation", "lrelu")),
        mapping_lr_multiplier=float(fc0.attr("bias_gain", 0.01)),
        has_w_avg="w_avg" in mapping.buffers,
    )


def _load_nvidia_pickle(path: Path) -> Generator:
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = _CheckpointUnpickler(file, source=source).load()
    except (CheckpointError, UnsafePickleError):
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{source} could not be read as a pickle ({type(error).__name__}: {error}); the file "
                              f"is probably truncated or damaged. Download or copy it again.") from error

    if not isinstance(data, dict) or "G_ema" not in data:
        keys = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{source} is a pickle but has no 'G_ema' network (found {keys}). {_formats_hint()}")
    g = data["G_ema"]
    if not isinstance(g, PersistentRecord):
        raise CheckpointError(f"{source}: G_ema is a {type(g).__name__}, not a persistent network object.")

    # StyleGAN3 synthesis networks start from Fourier features (synthesis.input) instead of a constant.
    synthesis = g.modules.get("synthesis")
    if isinstance(synthesis, PersistentRecord) and "input" in synthesis.modules:
        return stylegan3.from_nvidia_record(g, source)

    config = _config_from_nvidia(g, source)
    state = {k: v for k, v in g.tensors().items() if not k.endswith("resample_filter")}
    generator = _build(config, state, source)
    generator.source = {"path": source, "format": "nvidia-pickle", "class_name": g.class_name}
    return generator


# ---------------------------------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch.


def _rosinality_to_official(state: dict[str, torch.Tensor], source: str) -> tuple[StyleGAN2Config, dict]:
    """Rename a rosinality `g_ema` state dict to the official layout and infer the architecture from shapes."""
    style_layers = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    num_rgb = len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")})
    if not style_layers or "input.input" not in state or "conv1.conv.weight" not in state:
        raise CheckpointError(f"{source}: g_ema lacks style.*, input.input or conv1.* keys; not a rosinality "
                              f"StyleGAN2 generator. {_formats_hint()}")
    img_resolution = 2 ** (num_rgb + 2)
    resolutions = [2 ** i for i in range(2, num_rgb + 3)]
    out: dict[str, torch.Tensor] = {}

    def styled_conv(src: str, dst: str, noise_index: int) -> None:
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
        out[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"].reshape([])
        out[f"{dst}.bias"] = state[f"{src}.activate.bias"]
        out[f"{dst}.noise_const"] = state[f"noises.noise_{noise_index}"][0, 0]

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = state[f"{src}.bias"].reshape(-1)

    try:
        style_dim = int(state[f"style.{style_layers[0]}.weight"].shape[0])
        for index, layer in enumerate(style_layers):
            out[f"mapping.fc{index}.weight"] = state[f"style.{layer}.weight"]
            out[f"mapping.fc{index}.bias"] = state[f"style.{layer}.bias"]
        out["synthesis.b4.const"] = state["input.input"][0]
        styled_conv("conv1", "synthesis.b4.conv1", 0)
        to_rgb("to_rgb1", "synthesis.b4.torgb")
        for index, res in enumerate(resolutions[1:]):
            styled_conv(f"convs.{2 * index}", f"synthesis.b{res}.conv0", 2 * index + 1)
            styled_conv(f"convs.{2 * index + 1}", f"synthesis.b{res}.conv1", 2 * index + 2)
            to_rgb(f"to_rgbs.{index}", f"synthesis.b{res}.torgb")
    except KeyError as error:
        missing = CheckpointError(f"{source}: rosinality generator is missing tensor {error.args[0]!r}; the file is "
                                  f"incomplete or from another model.")
        missing.missing_key = error.args[0]  # For callers that describe the file in their own words.
        raise missing from None
    except (IndexError, RuntimeError) as error:
        # A tensor with too few dimensions for the [0] / reshape above.
        raise CheckpointError(f"{source}: a rosinality generator tensor has an unexpected shape "
                              f"({type(error).__name__}: {error}); the file is damaged or from another model.") from None

    config = StyleGAN2Config(
        z_dim=style_dim, c_dim=0, w_dim=style_dim, img_resolution=img_resolution,
        img_channels=int(state["to_rgb1.conv.weight"].shape[1]),
        channels=[int(out[f"synthesis.b{res}.conv1.weight"].shape[0]) for res in resolutions],
        architecture="skip", conv_clamp=None, num_fp16_res=0, mapping_layers=len(style_layers),
        mapping_lr_multiplier=0.01, has_w_avg=True)
    return config, out


def _load_torch_file(path: Path):
    # Training checkpoints store their command-line arguments as an argparse.Namespace: allow just that class.
    try:
        return load_torch_data(path, allowed_globals=(argparse.Namespace,))
    except TorchFileError as error:
        raise CheckpointError(f"{error}.") from None


def _mean_w(generator: Generator, samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Mean of mapping(z) over `samples` normal z, for checkpoints that store no w_avg."""
    z = torch.randn([samples, generator.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return generator.mapping(z, None)[:, 0].mean(dim=0)


def _load_rosinality(path: Path, data: dict) -> Generator:
    source = str(path)
    state = data.get("g_ema")
    if not isinstance(state, dict):
        keys = sorted(map(str, data))[:10]
        raise CheckpointError(f"{source} is a torch checkpoint without a 'g_ema' state dict (keys {keys}). "
                              f"{_formats_hint()}")
    config, official_state = _rosinality_to_official(state, source)
    latent_avg = data.get("latent_avg")
    if latent_avg is not None:
        official_state["mapping.w_avg"] = torch.as_tensor(latent_avg).reshape(-1).float()
    generator = _build(config, official_state, source, allow_missing={"mapping.w_avg"})
    if latent_avg is None:
        logger.info("%s stores no latent_avg; estimating w_avg from 10,000 samples (seed 0) for truncation.", source)
        generator.mapping.w_avg.copy_(_mean_w(generator))
    generator.source = {"path": source, "format": "rosinality", "w_avg_estimated": latent_avg is None}
    return generator


def generator_from_rosinality(state: dict[str, torch.Tensor], source: str,
                              w_avg: torch.Tensor | None = None) -> Generator:
    """Build a CPU fp32 Generator from a rosinality `g_ema` state dict, such as the `decoder.*` part of pSp/e4e files.

    `w_avg` [w_dim] becomes `mapping.w_avg`; when it is None, w_avg is estimated from 10,000 samples (seed 0).
    Raises CheckpointError naming `source` when tensors are missing or have shapes of another architecture.
    """
    config, official_state = _rosinality_to_official(state, source)
    if w_avg is not None:
        official_state["mapping.w_avg"] = torch.as_tensor(w_avg).reshape(-1).float()
    generator = _build(config, official_state, source, allow_missing={"mapping.w_avg"})
    if w_avg is None:
        generator.mapping.w_avg.copy_(_mean_w(generator))
    return generator


# ---------------------------------------------------------------------------------------------------------------------
# Safetensors.


def save_safetensors(generator: Generator, path: str | os.PathLike, overwrite: bool = False,
                     extra_metadata: dict[str, str] | None = None) -> Path:
    """Write `generator` as safetensors with its architecture in the metadata. Refuses to overwrite by default."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output path or delete it first.")
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "architecture": generator.architecture_name,
        "config": generator.config.to_json(),
        **(extra_metadata or {}),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # safetensors creates files readable by the owner only.
    os.replace(temporary, path)
    return path


def _load_safetensors(path: Path) -> Generator:
    from safetensors import SafetensorError, safe_open

    source = str(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{source} could not be read as safetensors ({error}); the file is probably "
                              f"truncated or damaged.") from error
    if metadata.get("format") != SAFETENSORS_FORMAT or "config" not in metadata:
        raise CheckpointError(f"{source} is a safetensors file without StyleBridge architecture metadata "
                              f"(metadata keys {sorted(metadata)}). Convert the original checkpoint with "
                              f"`stylebridge convert IN OUT.safetensors`.")
    architecture = metadata.get("architecture", "stylegan2")
    supported = {Generator.architecture_name: StyleGAN2Config, stylegan3.Generator.architecture_name:
                 stylegan3.StyleGAN3Config}
    if architecture not in supported:
        raise CheckpointError(f"{source}: architecture {architecture!r} is not supported by this version; "
                              f"supported: {sorted(supported)}.")
    try:
        config = supported[architecture].from_dict(json.loads(metadata["config"]))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{source}: invalid architecture metadata: {error}") from error
    if architecture == stylegan3.Generator.architecture_name:
        generator = stylegan3.from_state_dict(config, state, source)
    else:
        generator = _build(config, state, source)
    generator.source = {"path": source, "format": "safetensors"}
    return generator


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


def _build(config: StyleGAN2Config, state: dict[str, torch.Tensor], source: str,
           allow_missing: set[str] = frozenset()) -> Generator:
    with weights_loaded_later():
        generator = Generator(config)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state) - set(allow_missing))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match the inferred architecture; missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}.")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{source}: tensor {key} has shape {list(tensor.shape)}, expected "
                                  f"{list(expected[key].shape)} for the inferred architecture.")
    generator.load_state_dict({k: v.float() for k, v in state.items()}, strict=not allow_missing)
    return generator.eval().requires_grad_(False)


def read_generator(path: str | os.PathLike) -> Generator:
    """Read a StyleGAN checkpoint of any supported format into a CPU fp32 Generator (no cache)."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "pickle":
        try:
            return _load_nvidia_pickle(path)
        except _TensorFlowPickleFound:
            from .tf_pickle import read_tf_pickle  # Imported here because tf_pickle imports this module.

            return read_tf_pickle(path)
    if kind == "safetensors":
        return _load_safetensors(path)
    data = _load_torch_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} contains a {type(data).__name__}, not a checkpoint dict. {_formats_hint()}")
    if "g_ema" in data:
        return _load_rosinality(path, data)
    if "style.1.weight" in data:
        return _load_rosinality(path, {"g_ema": data})
    raise CheckpointError(f"{path} is a torch checkpoint of an unknown layout (keys {sorted(map(str, data))[:10]}). "
                          f"{_formats_hint()}")


_cache: dict[tuple, Generator] = {}
_cache_lock = threading.Lock()


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 24) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cached_safetensors_path(path: str | os.PathLike, cache_folder: str | os.PathLike | None = None) -> Path:
    """Return the path of the safetensors copy of checkpoint `path`, named by the SHA-256 of its content."""
    from ..runtime import host

    folder = Path(cache_folder) if cache_folder is not None else host.cache_dir() / "stylegan"
    return folder / f"{file_sha256(path)}.safetensors"


def read_generator_cached(path: str | os.PathLike, cache_folder: str | os.PathLike | None = None) -> Generator:
    """Read a checkpoint, converting pickles once into a safetensors copy in the cache folder.

    The copy is keyed by the SHA-256 of the source file's content, so an edited or replaced source gets a new copy
    and a copy can never be stale. The source is only read. Safetensors and rosinality files are read directly,
    since converting them would save no time.
    """
    path = Path(path)
    if detect_format(path) != "pickle":
        return read_generator(path)
    cached = cached_safetensors_path(path, cache_folder)
    if cached.exists():
        try:
            generator = _load_safetensors(cached)
        except CheckpointError as error:
            logger.warning("Ignoring damaged cache file %s (%s); reading %s again.", cached, error, path)
        else:
            generator.source = {"path": str(path), "format": "safetensors-cache", "cache": str(cached)}
            return generator

    generator = read_generator(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(generator, cached, overwrite=True,
                         extra_metadata={"converted_from": path.name, "source_format": generator.source["format"]})
        logger.info("Cached %s as %s.", path.name, cached)
    except OSError as error:
        logger.warning("Could not write the safetensors cache %s: %s. Loading continues without it.", cached, error)
    return generator


def load_stylegan(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str = "fp32",
                  use_cache: bool = True, cache_folder: str | os.PathLike | None = None) -> Generator:
    """Load a StyleGAN generator from any supported checkpoint format.

    Args:
        path: checkpoint file; its format is detected from its content.
        device: torch device to place the generator on.
        dtype: 'fp32', or 'fp16' to run the highest `num_fp16_res` resolutions in fp16 on CUDA as the official
            code does (on CPU the generator always runs in fp32).
        use_cache: reuse the generator already loaded in this process for the same file, device and dtype, and
            read pickles through their safetensors copy in the cache folder (written on first load). Callers
            that modify the generator must copy it first.
        cache_folder: folder of the safetensors copies; default `host.cache_dir() / "stylegan"`.

    Returns:
        A Generator in eval mode with gradients disabled.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is invalid; expected one of {sorted(_DTYPES)}.")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {str(device)!r} requested but CUDA is not available; use device='cpu'.")
    path = Path(path).expanduser()
    if not path.exists() and not path.is_absolute():
        # A bare name such as "ffhq.pkl" is looked up in the stylegan model folder.
        from ..runtime import host

        try:
            path = host.resolve_model("stylegan", str(path))
        except FileNotFoundError as error:
            raise CheckpointError(f"Checkpoint {str(path)!r} is neither a file nor a model in the stylegan "
                                  f"folder: {error}") from None
    path = path.resolve()
    key = None
    if path.exists():
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, str(device), dtype)
    if use_cache and key is not None:
        with _cache_lock:
            if key in _cache:
                return _cache[key]

    generator = read_generator_cached(path, cache_folder) if use_cache else read_generator(path)
    if dtype == "fp16" and device.type != "cuda":
        logger.warning("fp16 requested for %s on %s; StyleGAN runs fp16 only on CUDA, so it stays fp32.", path, device)
    generator.synthesis.force_fp32_default = dtype == "fp32"
    generator = generator.to(device)
    logger.info("Loaded %s (%s, %d px, %d W+ layers) on %s.", path.name, generator.source.get("format"),
                generator.img_resolution, generator.num_ws, device)
    if use_cache and key is not None:
        with _cache_lock:
            _cache[key] = generator
    return generator


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()

