"""Operations on STYLEGAN_LATENT values: interpolation, style mixing by layer range, direction edits and means.

Everything here works on the latents alone (no generator call), so it applies to any generator with a W space:
StyleGAN2 and StyleGAN3 alike. Results are CPU float32 latents like their inputs.

Layer ranges ("layers" specs) name W+ indices: "all", a preset ("coarse", "middle", "fine"), one index ("4"),
a range ("0-3", both ends included) or a comma-separated list of these ("0-3,8,10-17").
"""

from __future__ import annotations

import logging

import torch

from .directions import StyleGANDirection
from .latents import LatentMismatchError, StyleGANLatent

logger = logging.getLogger(__name__)

INTERPOLATIONS = ("lerp", "slerp")
LAYER_PRESETS = ("coarse", "middle", "fine")
# Block resolutions (px) of each preset, the style-mixing split of the StyleGAN paper (Karras et al., "A Style-Based
# Generator Architecture for GANs", 2019): coarse styles come from the 4-8 px blocks, middle from 16-32 px and fine
# from 64 px up to the output resolution.
PRESET_RESOLUTIONS = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, None)}
# Below this angle (radians) slerp falls back to lerp: sin(angle) is too small to divide by.
SLERP_MIN_ANGLE = 1e-4


# ---------------------------------------------------------------------------------------------------------------------
# Layer ranges.


def layer_resolution(index: int, num_ws: int) -> int:
    """Resolution (px) of the lowest synthesis block that reads W+ index `index` of a StyleGAN2 generator.

    In StyleGAN2, index i drives convolution i, which sits in the block of 4 * 2**((i + 1) // 2) px. An odd index
    also drives the ToRGB layer of the block below, so the lowest block that reads index i is 4 * 2**(i // 2) px.
    With 18 layers this gives indices 0-3 for 4-8 px, 4-7 for 16-32 px and 8-17 for 64-1024 px.

    NOTE: StyleGAN3 layers are not tied to block resolutions; for its generators this is only a position rule.
    """
    max_resolution = 2 ** ((num_ws + 2) // 2)  # num_ws = 2 * log2(resolution) - 2 for StyleGAN2
    return min(4 * 2 ** (index // 2), max_resolution)


def preset_layers(preset: str, num_ws: int) -> list[int]:
    """W+ indices of a layer preset ("coarse", "middle" or "fine") for a generator with `num_ws` layers."""
    if preset not in PRESET_RESOLUTIONS:
        raise ValueError(f"Layer preset {preset!r} is invalid; expected one of {LAYER_PRESETS}.")
    low, high = PRESET_RESOLUTIONS[preset]
    return [index for index in range(num_ws)
            if layer_resolution(index, num_ws) >= low and (high is None or layer_resolution(index, num_ws) <= high)]


def describe_presets(num_ws: int) -> str:
    """Human-readable preset ranges for messages, e.g. "coarse = 0-3, middle = 4-7, fine = 8-9"."""
    parts = []
    for preset in LAYER_PRESETS:
        indices = preset_layers(preset, num_ws)
        parts.append(f"{preset} = {indices[0]}-{indices[-1]}" if indices else f"{preset} = none")
    return ", ".join(parts)


def parse_layers(spec: str, num_ws: int, where: str = "") -> torch.Tensor:
    """Parse a layer spec into a boolean mask [num_ws] over W+ indices.

    Raises:
        ValueError: for unparsable text, indices outside 0..num_ws-1, reversed ranges, or a preset that has no
            layers for this generator. The message names the allowed range and the presets.
    """
    prefix = f"{where}: " if where else ""
    allowed = (f"use 'all', a preset ({describe_presets(num_ws)}), an index or range within 0-{num_ws - 1} "
               f"such as '0-3', or a comma-separated list such as '0-3,8'")
    text = (spec or "").strip().lower()
    mask = torch.zeros(num_ws, dtype=torch.bool)
    if text in ("", "all"):
        mask[:] = True
        return mask

    for part in text.split(","):
        part = part.strip()
        if part in PRESET_RESOLUTIONS:
            indices = preset_layers(part, num_ws)
            if not indices:
                raise ValueError(f"{prefix}layer preset '{part}' selects no layers of this {num_ws}-layer generator "
                                 f"({layer_resolution(num_ws - 1, num_ws)} px output); {allowed}.")
            mask[indices] = True
            continue
        bounds = part.split("-")
        try:
            numbers = [int(bound) for bound in bounds]
        except ValueError:
            raise ValueError(f"{prefix}layers {spec!r} is invalid at {part!r}; {allowed}.") from None
        if len(numbers) not in (1, 2):
            raise ValueError(f"{prefix}layers {spec!r} is invalid at {part!r}; {allowed}.")
        start, end = numbers[0], numbers[-1]
        if start > end:
            raise ValueError(f"{prefix}layer range {part!r} is reversed; write it as '{end}-{start}'.")
        if start < 0 or end >= num_ws:
            raise ValueError(f"{prefix}layer range {part!r} is outside this generator's W+ layers 0-{num_ws - 1}; "
                             f"{allowed}.")
        mask[start:end + 1] = True
    return mask


def format_layers(mask: torch.Tensor) -> str:
    """Inverse of `parse_layers` for metadata: "0-3,8" (or "all")."""
    if bool(mask.all()):
        return "all"
    parts = []
    indices = [int(index) for index in torch.nonzero(mask).flatten()]
    start = previous = None
    for index in indices + [None]:
        if start is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return ",".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# Pairs of latents.


def check_same_generator(first: StyleGANLatent, second: StyleGANLatent, where: str = "") -> None:
    """Raise LatentMismatchError unless both latents belong to the same generator's W space."""
    prefix = f"{where}: " if where else ""
    if first.fingerprint != second.fingerprint or first.num_ws != second.num_ws or first.w_dim != second.w_dim:
        raise LatentMismatchError(
            f"{prefix}the two latents come from different generators: {first.fingerprint[:12]} "
            f"({first.num_ws} layers x {first.w_dim}) and {second.fingerprint[:12]} "
            f"({second.num_ws} layers x {second.w_dim}). Sample both latents from the same generator.")


def _broadcast_batches(first: torch.Tensor, second: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat a batch of 1 to the other's batch size; other unequal sizes are an error."""
    size_a, size_b = first.shape[0], second.shape[0]
    if size_a == size_b:
        return first, second
    if size_a == 1:
        return first.expand(size_b, *first.shape[1:]), second
    if size_b == 1:
        return first, second.expand(size_a, *second.shape[1:])
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}latent batch sizes {size_a} and {size_b} differ; connect latents with equal batch "
                     f"sizes, or a batch of 1 to pair with every latent of the other.")


def _pair_tensors(first: StyleGANLatent, second: StyleGANLatent,
                  where: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Both latents in a common space: W when both are W, else W+ (W broadcast to every layer)."""
    check_same_generator(first, second, where)
    if first.space == second.space == "W":
        a, b = first.w, second.w
        space = "W"
    else:
        a, b = first.ws(), second.ws()
        space = "W+"
    a, b = _broadcast_batches(a.float(), b.float(), where)
    return a, b, space


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last dimension, treating each vector's norm separately.

    The direction moves along the great circle between a and b while the norm goes linearly from |a| to |b|,
    so vectors of equal norm keep that norm, which lerp does not. `t` broadcasts against a[..., :1].
    """
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    unit_a = a / norm_a.clamp_min(1e-12)
    unit_b = b / norm_b.clamp_min(1e-12)
    cosine = (unit_a * unit_b).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    angle = torch.arccos(cosine)
    sine = torch.sin(angle)
    small = angle < SLERP_MIN_ANGLE
    safe_sine = torch.where(small, torch.ones_like(sine), sine)
    weight_a = torch.where(small, 1 - t, torch.sin((1 - t) * angle) / safe_sine)
    weight_b = torch.where(small, t, torch.sin(t * angle) / safe_sine)
    direction = weight_a * unit_a + weight_b * unit_b
    norm = (1 - t) * norm_a + t * norm_b
    return direction * norm


def interpolate(first: StyleGANLatent, second: StyleGANLatent, frames: int, method: str = "lerp",
                where: str = "") -> StyleGANLatent:
    """Interpolate from `first` to `second` in `frames` steps, as one batch.

    Each pair (first[i], second[i]) gives `frames` consecutive latents, pair after pair, so the output batch is
    [B * frames]. A batch of 1 pairs with every latent of the other input. Frame 0 equals `first` and the last
    frame equals `second` exactly. W+ latents are interpolated per layer; W with W+ broadcasts W to all layers.
    """
    prefix = f"{where}: " if where else ""
    if method not in INTERPOLATIONS:
        raise ValueError(f"{prefix}interpolation {method!r} is invalid; expected one of {INTERPOLATIONS}.")
    if frames < 2:
        raise ValueError(f"{prefix}frames must be at least 2 (the two end points), got {frames}.")
    a, b, space = _pair_tensors(first, second, where)

    t = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)  # [T]
    t_shape = [1, frames] + [1] * (a.ndim - 1)  # broadcast against [B, T, ..., w_dim]
    a64, b64 = a.double().unsqueeze(1), b.double().unsqueeze(1)
    t_grid = t.reshape(t_shape)
    if method == "lerp":
        path = a64 + (b64 - a64) * t_grid
    else:
        path = slerp(a64, b64, t_grid)
    path = path.float()
    # Set the end points from the inputs so they are bit-equal, whatever the rounding of the formula.
    path[:, 0] = a
    path[:, -1] = b
    path = path.reshape(-1, *a.shape[1:])  # [B * T, ...]
    meta = {"operation": f"interpolate-{method}", "frames": frames}
    return StyleGANLatent(path.contiguous(), space, first.num_ws, first.w_dim, first.fingerprint, meta)


def mix_layers(base: StyleGANLatent, other: StyleGANLatent, layers: torch.Tensor, strength: float = 1.0,
               where: str = "") -> StyleGANLatent:
    """Style mixing: take the layers in `layers` (mask [num_ws]) from `other` and the rest from `base`.

    `strength` below 1 blends instead of copying: selected layers become base + strength * (other - base).
    The result is always W+.
    """
    prefix = f"{where}: " if where else ""
    check_same_generator(base, other, where)
    if layers.shape != (base.num_ws,):
        raise ValueError(f"{prefix}layer mask must have {base.num_ws} entries, got {list(layers.shape)}.")
    if not bool(layers.any()):
        raise ValueError(f"{prefix}the layer selection is empty; select at least one of the layers "
                         f"0-{base.num_ws - 1}.")
    a, b = _broadcast_batches(base.ws().float(), other.ws().float(), where)
    mask = layers.reshape(1, -1, 1)
    if strength == 1:
        mixed = torch.where(mask, b, a)  # an exact copy of the selected layers
    else:
        mixed = torch.where(mask, a + (b - a) * strength, a)
    meta = {"operation": "style-mix", "layers": format_layers(layers), "strength": strength}
    return StyleGANLatent(mixed.contiguous(), "W+", base.num_ws, base.w_dim, base.fingerprint, meta)


# ---------------------------------------------------------------------------------------------------------------------
# Directions and batch statistics.


def _direction_offsets(latent: StyleGANLatent, direction: StyleGANDirection, index: int,
                       strengths: torch.Tensor, layers: torch.Tensor | None, where: str) -> tuple[torch.Tensor, str]:
    """Offsets [S, ...] = strengths[s] * direction[index], masked to `layers`, and the space of the result."""
    direction.check_latent(latent, where)
    vector = direction.vector(index, where).float()  # [w_dim] or [num_ws, w_dim]
    all_layers = layers is None or bool(layers.all())
    if vector.ndim == 1 and all_layers and latent.space == "W":
        return strengths.reshape(-1, 1) * vector, "W"
    if vector.ndim == 1:
        vector = vector.unsqueeze(0).expand(latent.num_ws, -1)
    if layers is not None:
        vector = vector * layers.to(vector.dtype).unsqueeze(1)
    return strengths.reshape(-1, 1, 1) * vector, "W+"


def _latent_tensor(latent: StyleGANLatent, space: str) -> torch.Tensor:
    return (latent.w if space == latent.space else latent.ws()).float()


def add_direction(latent: StyleGANLatent, direction: StyleGANDirection, strength: float, index: int = 0,
                  layers: torch.Tensor | None = None, where: str = "") -> StyleGANLatent:
    """Move every latent of the batch by `strength` times direction `index`, on the W+ layers in `layers`.

    The result stays in W when the latent and the direction are W and all layers are edited; otherwise it is W+.
    Strength 0 returns the input latents unchanged (W+ when a layer mask was given).
    """
    offsets, space = _direction_offsets(latent, direction, index, torch.tensor([float(strength)]), layers, where)
    edited = _latent_tensor(latent, space) + offsets  # offsets [1, ...] broadcast over the batch
    meta = {"operation": "add-direction", "direction": direction.name, "index": index, "strength": strength,
            "layers": "all" if layers is None else format_layers(layers)}
    return StyleGANLatent(edited.contiguous(), space, latent.num_ws, latent.w_dim, latent.fingerprint, meta)


def sweep_direction(latent: StyleGANLatent, direction: StyleGANDirection, max_strength: float, steps: int,
                    index: int = 0, layers: torch.Tensor | None = None, where: str = "") -> StyleGANLatent:
    """Render-ready batch of each latent moved from -max_strength to +max_strength along a direction.

    Each input latent gives `steps` consecutive outputs (strengths evenly spaced, both ends included), so the
    output batch is [B * steps]; an odd `steps` puts the unedited latent in the middle.
    """
    prefix = f"{where}: " if where else ""
    if steps < 2:
        raise ValueError(f"{prefix}steps must be at least 2 (the two ends of the sweep), got {steps}.")
    strengths = torch.linspace(-float(max_strength), float(max_strength), steps)
    offsets, space = _direction_offsets(latent, direction, index, strengths, layers, where)  # [S, ...]
    base = _latent_tensor(latent, space)  # [B, ...]
    swept = (base.unsqueeze(1) + offsets.unsqueeze(0)).reshape(-1, *base.shape[1:])  # [B * S, ...]
    meta = {"operation": "direction-sweep", "direction": direction.name, "index": index,
            "strengths": [round(float(value), 6) for value in strengths],
            "layers": "all" if layers is None else format_layers(layers)}
    return StyleGANLatent(swept.contiguous(), space, latent.num_ws, latent.w_dim, latent.fingerprint, meta)


def mean_latent(latent: StyleGANLatent) -> StyleGANLatent:
    """Mean of the batch, as a batch of 1 in the same space."""
    mean = latent.w.double().mean(dim=0, keepdim=True).float()
    meta = {"operation": "mean", "count": latent.batch_size}
    return StyleGANLatent(mean, latent.space, latent.num_ws, latent.w_dim, latent.fingerprint, meta)

