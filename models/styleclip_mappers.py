"""StyleCLIP latent mappers: load the trained checkpoints of orpatashnik/StyleCLIP's `mapper/` and apply them.

A checkpoint is `torch.save({"state_dict": net.state_dict(), "opts": vars(opts)})` of StyleCLIPMapper, so its
tensors are `mapper.*` (the mapper) and `decoder.*` (the rosinality StyleGAN2 generator it was trained with).
Three mapper layouts exist, with these module names:

- LevelsMapper (the default, `mapper_type="LevelsMapper"`): `course_mapping` (sic), `medium_mapping` and
  `fine_mapping` act on W+ layers 0-3, 4-7 and 8 onward; `no_<level>_mapper` options drop a level.
- SingleMapper: one `mapping` for all W+ layers.
- WithoutToRGBStyleSpaceMapper (`work_in_stylespace=True`): `mapper_<c>` for every style layer c that is not a
  ToRGB layer, acting on S.

Each mapper is PixelNorm followed by four equalised-lr linear layers (lr multiplier 0.01, leaky ReLU 0.2 times
sqrt 2), stored as `mapping.1` .. `mapping.4`. PixelNorm normalises dimension 1: for W+ input [B, layers, 512]
that is the layer dimension, not the features. This is what the trained weights expect, so it is kept.
The edit is `w + 0.1 * mapper(w)` (StyleCLIP's inference script), and `strength` multiplies the 0.1.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .safe_pickle import TorchFileError, load_torch_data

logger = logging.getLogger(__name__)

MAPPER_FOLDER = "styleclip_mappers"
MAPPER_KINDS = ("levels", "single", "stylespace")
LEVELS = ("course", "medium", "fine")         # Module name prefixes; "course" is the repository's spelling.
LEVEL_STARTS = (0, 4, 8)                       # First W+ layer of each level.
MAPPER_SCALE = 0.1                             # StyleCLIP adds 0.1 x the mapper output.
_LINEAR_LAYERS = 4
_LR_MULTIPLIER = 0.01
_MAPPER_FIX = "Replace it with an intact copy of the mapper."
# Tensors that every decoder (a rosinality StyleGAN2 generator) contains.
_DECODER_REQUIRED = ("style.1.weight", "style.1.bias", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")
# Number of dimensions of decoder tensors, by key pattern, as the conversion to the official layout indexes them.
_DECODER_NDIMS = (
    (r"style\.\d+\.weight", 2), (r"style\.\d+\.bias", 1), (r"input\.input", 4), (r"noises\.noise_\d+", 4),
    (r".+\.conv\.weight", 5), (r".+\.conv\.modulation\.weight", 2), (r".+\.conv\.modulation\.bias", 1),
    (r".+\.activate\.bias", 1),
)


class MapperCheckpointError(ValueError):
    """Raised when a file is not a StyleCLIP mapper checkpoint or does not fit the connected generator."""


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2 over dimension 1) + 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinearLReLU(nn.Module):
    """rosinality's EqualLinear with the fused leaky ReLU: weights stored / lr_mul, scaled by lr_mul / sqrt(in)."""

    def __init__(self, features: int, lr_multiplier: float = _LR_MULTIPLIER):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, features) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(features))
        self.scale = lr_multiplier / math.sqrt(features)
        self.lr_multiplier = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale) + self.bias * self.lr_multiplier  # bias on the last dimension
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class Mapper(nn.Module):
    """PixelNorm and four EqualLinearLReLU layers, as `mapping.0` .. `mapping.4`."""

    def __init__(self, features: int):
        super().__init__()
        self.mapping = nn.Sequential(PixelNorm(), *[EqualLinearLReLU(features) for _ in range(_LINEAR_LAYERS)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mapping(x)


class LevelsMapper(nn.Module):
    """Separate mappers for the coarse (0-3), medium (4-7) and fine (8+) W+ layers. A missing level adds 0."""

    def __init__(self, features: int, levels: tuple[str, ...] = LEVELS):
        super().__init__()
        self.levels = tuple(levels)
        for level in self.levels:
            setattr(self, f"{level}_mapping", Mapper(features))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        count = ws.shape[1]
        bounds = [min(start, count) for start in LEVEL_STARTS] + [count]
        parts = []
        for level, start, end in zip(LEVELS, bounds, bounds[1:], strict=False):
            part = ws[:, start:end]
            if level in self.levels and part.shape[1] > 0:
                parts.append(getattr(self, f"{level}_mapping")(part))
            else:
                parts.append(torch.zeros_like(part))
        return torch.cat(parts, dim=1)


class SingleMapper(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.mapping = Mapper(features)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.mapping(ws)


class StyleSpaceMapper(nn.Module):
    """One mapper per non-ToRGB style layer (`mapper_<index in S>`). ToRGB layers get a zero offset."""

    def __init__(self, widths: dict[int, int]):
        super().__init__()
        self.widths = dict(widths)
        for index, width in widths.items():
            setattr(self, f"mapper_{index}", Mapper(width))

    def forward(self, styles: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for index, style in enumerate(styles):
            if index in self.widths:
                out.append(getattr(self, f"mapper_{index}")(style.reshape(style.shape[0], -1)).view(style.shape))
            else:
                out.append(torch.zeros_like(style))
        return out


@dataclass(eq=False)
class StyleCLIPMapper:
    """A loaded mapper with what is known about it (the STYLECLIP_MAPPER socket's value)."""

    kind: str                                   # "levels", "single" or "stylespace".
    network: nn.Module                          # LevelsMapper, SingleMapper or StyleSpaceMapper, eval mode.
    features: int                               # W width (levels, single) or number of S layers (stylespace).
    description: str                            # The text prompt it was trained for, from opts.
    decoder_mapping: dict[str, torch.Tensor] | None = None  # Mapping weights of its decoder, official names.
    source: str = ""
    opts: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> str:
        return "S" if self.kind == "stylespace" else "W+"

    def check_generator(self, generator, where: str = "") -> None:
        """Raise MapperCheckpointError unless the mapper was trained with (a copy of) `generator`."""
        from .styleclip_channels import style_layers

        prefix = f"{where}: " if where else ""
        if self.kind == "stylespace":
            layers = style_layers(generator)
            expected = {layer.index: layer.channels for layer in layers if layer.is_conv}
            if self.network.widths != expected:
                raise MapperCheckpointError(
                    f"{prefix}the S-space mapper {self.source} has layers {sorted(self.network.widths.items())[:6]}"
                    f"... but the generator's convolution style layers are {sorted(expected.items())[:6]}...; it "
                    f"was trained for another generator.")
        elif self.features != generator.w_dim:
            raise MapperCheckpointError(f"{prefix}the mapper {self.source} maps {self.features}-wide W but the "
                                        f"generator's w_dim is {generator.w_dim}; it was trained for another "
                                        f"generator.")
        if self.decoder_mapping is None:
            return
        current = {name: tensor for name, tensor in generator.mapping.state_dict().items() if name != "w_avg"}
        stored = {name: tensor for name, tensor in self.decoder_mapping.items() if name != "w_avg"}
        agree = current.keys() == stored.keys() and all(_same_weights(current[name], stored[name])
                                                        for name in current)
        if not agree:
            raise MapperCheckpointError(f"{prefix}the mapper {self.source} was trained with a generator whose "
                                        f"mapping network differs from the connected generator's, so its W+ offsets "
                                        f"would not mean the same. Connect the generator the mapper was trained "
                                        f"with (its decoder.* weights are inside the checkpoint).")


def _same_weights(current: torch.Tensor, stored: torch.Tensor) -> bool:
    """Return True when a generator weight equals the checkpoint's copy up to the rounding of the checkpoint's dtype.

    The generator's weight is cast to the stored dtype first, so a float16 or bfloat16 copy of the mapper matches
    the float32 generator it was trained with.
    """
    if current.shape != stored.shape:
        return False
    rtol = max(1e-4, 2 * torch.finfo(stored.dtype).eps) if stored.is_floating_point() else 1e-4
    current = current.detach().cpu().to(stored.dtype).float()
    return torch.allclose(current, stored.float(), rtol=rtol, atol=1e-5)


def _split(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def _mapper_features(state: dict[str, torch.Tensor], prefix: str, source: str) -> int:
    key = f"{prefix}mapping.1.weight"
    if key not in state:
        raise MapperCheckpointError(f"{source}: {key} is missing; the mapper layout is not StyleCLIP's.")
    if state[key].ndim != 2:
        raise MapperCheckpointError(f"{source}: mapper.{key} has shape {list(state[key].shape)}, expected a "
                                    f"[features, features] weight. {_MAPPER_FIX}")
    return int(state[key].shape[1])


def _checkpoint_parts(data: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the state dict and opts of a loaded checkpoint after checking their types and values."""
    if not isinstance(data, dict):
        raise MapperCheckpointError(f"{source} contains a {type(data).__name__}; expected a StyleCLIP mapper "
                                    f"checkpoint dict with state_dict and opts. {_MAPPER_FIX}")
    state = data.get("state_dict", data)
    if not isinstance(state, dict):
        raise MapperCheckpointError(f"{source} is not a valid StyleCLIP mapper checkpoint: its state_dict has type "
                                    f"{type(state).__name__}, expected a dict of tensors. {_MAPPER_FIX}")
    opts = data.get("opts")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise MapperCheckpointError(f"{source} is not a valid StyleCLIP mapper checkpoint: its opts entry has type "
                                    f"{type(opts).__name__}, expected a dict of training options. {_MAPPER_FIX}")
    for key, value in state.items():
        if not isinstance(key, str) or not key.startswith(("mapper.", "decoder.")):
            continue
        if not isinstance(value, torch.Tensor):
            raise MapperCheckpointError(f"{source} is not a valid StyleCLIP mapper checkpoint: {key} has type "
                                        f"{type(value).__name__}, expected a tensor. {_MAPPER_FIX}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            raise MapperCheckpointError(f"{source} is not a valid StyleCLIP mapper checkpoint: tensor {key} "
                                        f"contains {count} NaN or infinite values out of {value.numel()}. "
                                        f"{_MAPPER_FIX}")
    state = {key: value for key, value in state.items() if isinstance(key, str)}
    return state, dict(opts)


def _decoder_mapping(decoder_state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Mapping-network weights (official names) of the rosinality generator stored as `decoder.*`."""
    from .checkpoints import CheckpointError, _rosinality_to_official

    def malformed(detail: str) -> MapperCheckpointError:
        return MapperCheckpointError(f"{source}: the mapper's embedded generator (decoder.*) is incomplete or "
                                     f"malformed: {detail}. {_MAPPER_FIX}")

    for key, value in decoder_state.items():
        for pattern, ndim in _DECODER_NDIMS:
            if re.fullmatch(pattern, key) and value.ndim != ndim:
                raise malformed(f"decoder.{key} has shape {list(value.shape)}, expected {ndim} dimensions")
        if key.endswith(".noise.weight") and value.numel() != 1:
            raise malformed(f"decoder.{key} has shape {list(value.shape)}, expected one noise strength")
    for key in _DECODER_REQUIRED:
        if key not in decoder_state:
            raise malformed(f"tensor decoder.{key} is missing")
    try:
        _, official = _rosinality_to_official(decoder_state, f"{source} (decoder.*)")
    except CheckpointError as error:
        missing = getattr(error, "missing_key", None)
        raise malformed(f"tensor decoder.{missing} is missing" if missing else str(error)) from None
    except ValueError as error:
        raise malformed(f"its tensor shapes do not fit a StyleGAN2 generator ({type(error).__name__}: "
                        f"{error})") from None
    return _split(official, "mapping.")


def load_mapper(path: str | os.PathLike, device: str | torch.device = "cpu") -> StyleCLIPMapper:
    """Load a StyleCLIP mapper checkpoint with `torch.load(weights_only=True)`.

    Raises:
        FileNotFoundError: when `path` does not exist.
        MapperCheckpointError: when the file is not a StyleCLIP mapper checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Mapper checkpoint not found: {path}. Put StyleCLIP mapper .pt files in the "
                                f"{MAPPER_FOLDER} model folder.")
    source = str(path)
    try:
        data = load_torch_data(path)
    except TorchFileError as error:
        raise MapperCheckpointError(f"{error}. Expected a StyleCLIP mapper "
                                    f"checkpoint (.pt). {_MAPPER_FIX}") from None
    state, opts = _checkpoint_parts(data, source)
    mapper_state = _split(state, "mapper.")
    if not mapper_state:
        raise MapperCheckpointError(f"{source} has no mapper.* tensors; it is not a StyleCLIP mapper checkpoint "
                                    f"(found keys such as {list(state)[:4]}).")

    # 1. Recognise the layout from the module names.
    stylespace_indices = sorted({int(m.group(1)) for key in mapper_state
                                 if (m := re.match(r"mapper_(\d+)\.", key))})
    levels = tuple(level for level in LEVELS if any(key.startswith(f"{level}_mapping.") for key in mapper_state))
    if stylespace_indices:
        widths = {index: _mapper_features(mapper_state, f"mapper_{index}.", source) for index in stylespace_indices}
        network: nn.Module = StyleSpaceMapper(widths)
        kind, features = "stylespace", len(widths)
    elif levels:
        features = _mapper_features(mapper_state, f"{levels[0]}_mapping.", source)
        network, kind = LevelsMapper(features, levels), "levels"
    elif any(key.startswith("mapping.mapping.") for key in mapper_state):
        features = _mapper_features(mapper_state, "mapping.", source)
        network, kind = SingleMapper(features), "single"
    else:
        raise MapperCheckpointError(f"{source}: mapper.* tensors {list(mapper_state)[:4]} match none of "
                                    f"StyleCLIP's LevelsMapper, SingleMapper or style-space mapper layouts.")

    # 2. Load the weights.
    try:
        network.load_state_dict(mapper_state, strict=True)
    except RuntimeError as exc:
        raise MapperCheckpointError(f"{source}: the mapper tensors do not fit a {kind} mapper: {exc}") from exc

    # 3. Keep the decoder's mapping network, to check the generator it is used with.
    decoder_mapping = None
    decoder_state = _split(state, "decoder.")
    if decoder_state:
        decoder_mapping = _decoder_mapping(decoder_state, source)
    description = str(opts.get("description", "") or "")
    logger.info("Loaded StyleCLIP %s mapper %s (%s).", kind, source, description or "no description")
    return StyleCLIPMapper(kind, network.float().eval().requires_grad_(False).to(device), features, description,
                           decoder_mapping, source, opts)


def write_mapper_checkpoint(path: str | os.PathLike, generator, kind: str = "levels", seed: int = 0,
                            description: str = "a smiling face", levels: tuple[str, ...] = LEVELS,
                            include_decoder: bool = True) -> Path:
    """Write a randomly initialised mapper in StyleCLIP's checkpoint layout, for tests and demos.

    The decoder is `generator` in rosinality's layout, as StyleCLIP's training saves it.
    """
    from .checkpoint_writers import rosinality_state_dict
    from .styleclip_channels import style_layers

    if kind not in MAPPER_KINDS:
        raise ValueError(f"kind {kind!r} is invalid; expected one of {MAPPER_KINDS}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "levels":
            network: nn.Module = LevelsMapper(generator.w_dim, levels)
        elif kind == "single":
            network = SingleMapper(generator.w_dim)
        else:
            layers = style_layers(generator)
            network = StyleSpaceMapper({layer.index: layer.channels for layer in layers if layer.is_conv})
        for module in network.modules():
            if isinstance(module, EqualLinearLReLU):
                module.bias.data.normal_(0, 1)
    state = {f"mapper.{key}": value for key, value in network.state_dict().items()}
    if include_decoder:
        state.update({f"decoder.{key}": value for key, value in rosinality_state_dict(generator).items()})
    opts = {
        "exp_dir": "results", "mapper_type": "SingleMapper" if kind == "single" else "LevelsMapper",
        "no_coarse_mapper": "course" not in levels, "no_medium_mapper": "medium" not in levels,
        "no_fine_mapper": "fine" not in levels, "work_in_stylespace": kind == "stylespace",
        "description": description, "stylegan_size": generator.img_resolution, "learning_rate": 0.5,
        "id_lambda": 0.1, "clip_lambda": 1.0, "latent_l2_lambda": 0.8, "checkpoint_path": None,
        "device": "cuda:0",
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "opts": opts}, path)
    return path
