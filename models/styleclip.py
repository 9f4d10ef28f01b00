"""StyleCLIP text-driven edits of StyleGAN2 and StyleGAN3 latents: global directions, latent optimisation, mappers.

StyleCLIP is Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery", ICCV 2021, with code in
orpatashnik/StyleCLIP. The three methods here follow that code:

- Global directions (`global_direction`): the CLIP text direction from a neutral to a target prompt, each
  averaged over 79 ImageNet prompt templates, is projected on every style channel's image-space direction (fs3,
  see models.styleclip_channels). Channels with |relevance| < beta are dropped, the rest are scaled so the largest
  is 1, multiplied by the channel's standard deviation and by alpha, and added to S.
- Latent optimisation (`optimize_latent`): Adam on W+ or on the convolution layers of S, minimising the CLIP
  loss + l2_lambda * |latent - start|^2 (+ id_lambda * ArcFace identity loss), with StyleCLIP's learning-rate
  ramp. Defaults are StyleCLIP's: 300 steps, learning rate 0.1, l2_lambda 0.008.
- Latent mappers (models.styleclip_mappers): trained networks that add 0.1 * mapper(w).

Every method produces a `StyleCLIPDirection`, which `apply_direction` adds to any latent of the same generator
with a strength (and for a sweep, several strengths). Edits in S have no exact W+ form, because a ToRGB layer and
the next block's first convolution read the same W+ entry. The W+ latent returned with them is therefore a
least-squares fit (`project_styles_to_wplus`), and the exact result is the S output.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass, field, replace

import torch

from ..runtime import host
from .clip_models import CLIPModel
from .latents import LatentMismatchError, StyleGANLatent, describe_generator
from .style_space import StyleGANStyles, require_style_space
from .styleclip_channels import StyleCLIPChannelData, style_layers
from .styleclip_mappers import MAPPER_SCALE, StyleCLIPMapper

logger = logging.getLogger(__name__)

METHODS = ("global directions", "latent optimization", "latent mapper")
OPTIMIZATION_SPACES = ("W+", "S")
SWEEP_MODES = ("off", "0 to strength", "-strength to strength")
DIRECTION_KINDS = ("S", "W+", "mapper")
# Maximum number of latents one edit may produce (latents x sweep frames). Each becomes an image downstream.
MAX_EDIT_OUTPUTS = 4096

# StyleCLIP's defaults: the global-directions notebook (alpha 4.1, beta 0.15), optimization/run_optimization.py
# (300 steps, lr 0.1, l2_lambda 0.008) and the optimisation notebook (id_lambda 0.005).
DEFAULT_ALPHA = 4.1
DEFAULT_BETA = 0.15
DEFAULT_STEPS = 300
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_L2_LAMBDA = 0.008
DEFAULT_ID_LAMBDA = 0.005

# CLIP's 80 ImageNet prompt templates without "a photo of many {}.", in StyleCLIP's order (global_torch/StyleCLIP.py).
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)


@dataclass(frozen=True, eq=False)
class StyleCLIPDirection:
    """A StyleCLIP edit that can be added to latents of one generator (the STYLECLIP_DIRECTION socket's value).

    `kind` "S": `style_deltas` contains one [K, channels] tensor per style layer. "W+": `w_delta` is
    [K, num_ws, w_dim]. K is 1 (the same edit for every latent) or the batch size the edit was found for.
    "mapper": `mapper` computes the offset from each latent.
    """

    kind: str
    fingerprint: str
    num_ws: int
    w_dim: int
    style_deltas: tuple[torch.Tensor, ...] | None = None
    w_delta: torch.Tensor | None = None
    mapper: StyleCLIPMapper | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        required = {"S": ("style_deltas", self.style_deltas), "W+": ("w_delta", self.w_delta),
                    "mapper": ("mapper", self.mapper)}
        if self.kind not in required:
            raise ValueError(f"Direction kind {self.kind!r} is invalid; expected one of {DIRECTION_KINDS}.")
        name, value = required[self.kind]
        if value is None:
            raise ValueError(f"A {self.kind} direction needs {name}.")

    @property
    def count(self) -> int:
        """Number of edits K (1 for mappers, which compute one per latent)."""
        if self.kind == "S":
            return self.style_deltas[0].shape[0]
        if self.kind == "W+":
            return self.w_delta.shape[0]
        return 1

    @property
    def is_zero(self) -> bool:
        """True when the edit changes nothing (for example a global direction with alpha 0)."""
        if self.kind == "S":
            return all(not delta.any() for delta in self.style_deltas)
        if self.kind == "W+":
            return not self.w_delta.any()
        return False

    def check(self, generator, latent: StyleGANLatent, where: str = "") -> None:
        """Raise LatentMismatchError unless the direction and the latent both belong to `generator`."""
        prefix = f"{where}: " if where else ""
        latent.check_generator(generator, where)
        if self.fingerprint != generator.fingerprint:
            found_with = ", ".join(f"{key} {self.meta[key]!r}" for key in ("method", "target") if key in self.meta)
            description = f" ({found_with})" if found_with else ""
            raise LatentMismatchError(
                f"{prefix}the StyleCLIP direction{description} was found for generator {self.fingerprint[:12]} but "
                f"the connected generator is {describe_generator(generator)}. Connect the generator the direction "
                f"came from.")
        if self.count not in (1, latent.batch_size):
            raise ValueError(f"{prefix}the direction contains {self.count} edits, one per latent it was found for, but "
                             f"the latent batch has {latent.batch_size}. Use a batch of {self.count} latents, or a "
                             f"direction with one edit (global directions have one).")
        if self.kind == "mapper":
            self.mapper.check_generator(generator, where)


@dataclass(frozen=True)
class StyleCLIPResult:
    """Edited latents: `styles` is exact; `latent` is W+, fitted by least squares for S edits."""

    latent: StyleGANLatent
    styles: StyleGANStyles
    projection_error: float  # Relative error of the W+ fit in S (0 for W+ edits).


def _device(generator) -> torch.device:
    return generator.mapping.fc0.weight.device


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


# ---------------------------------------------------------------------------------------------------------------------
# Text.


def prompt_features(clip: CLIPModel, prompt: str, templates: tuple[str, ...] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Unit text feature [clip_dim] of `prompt`: the mean of the unit features of every template filled with it.

    Cached on `clip`, so changing alpha or beta does not encode the 79 templates again.
    """
    key = ("styleclip-prompt", prompt, templates)
    if key not in clip.text_cache:
        features = clip.encode_text([template.format(prompt) for template in templates])
        features = features / features.norm(dim=-1, keepdim=True)
        mean = features.mean(dim=0)
        if len(clip.text_cache) >= 256:
            clip.text_cache.pop(next(iter(clip.text_cache)))
        clip.text_cache[key] = (mean / mean.norm()).cpu()
    return clip.text_cache[key]


def text_direction(clip: CLIPModel, neutral: str, target: str, where: str = "",
                   templates: tuple[str, ...] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """StyleCLIP's delta t: the unit vector from the neutral to the target prompt's feature [clip_dim].

    Raises:
        PromptError: for an empty prompt or one that does not fit the context inside every template.
        ValueError: when both prompts give the same feature, so there is no direction.
    """
    clip.check_prompt(neutral, "neutral_prompt", where, templates)
    clip.check_prompt(target, "target_prompt", where, templates)
    difference = prompt_features(clip, target, templates) - prompt_features(clip, neutral, templates)
    norm = difference.norm()
    if norm == 0:
        raise ValueError(f"{_prefix(where)}neutral_prompt and target_prompt give the same CLIP feature "
                         f"({neutral!r}, {target!r}), so they define no edit. Describe the change in target_prompt.")
    return difference / norm


# ---------------------------------------------------------------------------------------------------------------------
# Global directions.


def channel_relevance(data: StyleCLIPChannelData, direction: torch.Tensor) -> torch.Tensor:
    """Relevance of every measured channel to a text direction: fs3 @ delta t, [rows]."""
    return data.fs3.float() @ direction.float().to(data.fs3.device)


def global_direction(generator, clip: CLIPModel, data: StyleCLIPChannelData, neutral: str, target: str,
                     alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA, where: str = "") -> StyleCLIPDirection:
    """StyleCLIP's global direction in S for a prompt pair.

    Args:
        generator: StyleGAN2 or StyleGAN3 generator the fs3 data belongs to.
        clip: CLIP model the fs3 rows were measured with.
        data: fs3 and style statistics (load_channel_data or compute_channel_data).
        neutral, target: the prompts, e.g. "face" and "smiling face".
        alpha: edit strength, in standard deviations of the most relevant channel; negative values edit
            towards the neutral prompt.
        beta: disentanglement threshold; channels with |relevance| below beta are left alone.
        where: node or command name for messages.
    """
    # 1. Check inputs.
    prefix = _prefix(where)
    require_style_space(generator, where)
    data.check(generator, clip, where)
    if data.clip_name and data.clip_name != clip.name:
        logger.warning("%sthe fs3 data was measured with CLIP %s, but the connected CLIP is %s. Its channel "
                       "relevances only mean something in the image space they were measured in; connect that CLIP "
                       "model, or compute fs3 with this one.", prefix, data.clip_name, clip.name)
    if not 0 <= beta <= 1:
        raise ValueError(f"{prefix}beta {beta} is out of range; relevances are cosines, so use 0..1 (StyleCLIP "
                         f"suggests 0.08-0.3).")

    # 2. Relevance of each channel to the text direction, thresholded by beta.
    direction = text_direction(clip, neutral, target, where)
    relevance = channel_relevance(data, direction)
    kept = relevance.abs() >= beta
    largest = float(relevance.abs().max())
    if largest < 1e-6:  # Cosines this small are rounding noise: no channel moves the image along the text direction.
        raise ValueError(f"{prefix}no channel responds to {neutral!r} -> {target!r}: every fs3 row is orthogonal to "
                         f"the text direction. Check that fs3 was measured with this CLIP model, or try other "
                         f"prompts.")
    if not kept.any():
        raise ValueError(f"{prefix}beta {beta} keeps no channel: the largest |relevance| for {neutral!r} -> "
                         f"{target!r} is {largest:.4f}. Set beta below that.")
    scaled = torch.where(kept, relevance, torch.zeros_like(relevance))
    scaled = scaled / scaled.abs().max()

    # 3. Split into style layers, in units of each channel's standard deviation, times alpha.
    layers = style_layers(generator)
    by_name = {layer.name: layer for layer in layers}
    deltas = [torch.zeros(1, layer.channels) for layer in layers]
    row = 0
    for name in data.measured:
        layer = by_name[name]
        deltas[layer.index] = (alpha * scaled[row:row + layer.channels] * data.style_std[layer.index]).unsqueeze(0)
        row += layer.channels
    meta = {"method": "global directions", "neutral": neutral, "target": target, "alpha": alpha, "beta": beta,
            "channels": int(kept.sum()), "max_relevance": round(largest, 6)}
    logger.info("StyleCLIP global direction %r -> %r: %d channels with |relevance| >= %.3f.", neutral, target,
                int(kept.sum()), beta)
    return StyleCLIPDirection("S", generator.fingerprint, generator.num_ws, generator.w_dim,
                              style_deltas=tuple(deltas), meta=meta)


# ---------------------------------------------------------------------------------------------------------------------
# Latent optimisation.


def learning_rate(progress: float, initial: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleCLIP's schedule (from StyleGAN2's projector): linear ramp-up, cosine ramp-down, at `progress` in 0..1."""
    ramp = min(1.0, (1 - progress) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, progress / rampup)
    return initial * ramp


def clip_loss(clip: CLIPModel, images: torch.Tensor, text_feature: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity between each image [N, C, H, W] (-1..1) and a text feature: [N].

    StyleCLIP computes 1 - logits / 100, which equals this for OpenAI's CLIP, whose logit scale is 100.
    """
    features = clip.encode_generator_images(images)
    features = features / features.norm(dim=-1, keepdim=True)
    return 1 - features @ text_feature.to(features.device)


@dataclass(frozen=True)
class OptimizationReport:
    clip_loss_start: list[float]   # Per latent, before the first step.
    clip_loss_end: list[float]     # Per latent, after the last step.
    steps: int


def _without_inference_tensors(module: torch.nn.Module) -> torch.nn.Module:
    """Return `module`, or a copy of it when its weights are inference tensors, which autograd cannot save.

    ComfyUI and the standalone runner run every node inside torch.inference_mode(), so a model loaded by a node
    has inference-tensor weights. Call inside torch.inference_mode(False), where the copy gets normal tensors.
    """
    if any(t.is_inference() for t in itertools.chain(module.parameters(), module.buffers())):
        return copy.deepcopy(module)
    return module


def optimize_latent(generator, clip: CLIPModel, latent: StyleGANLatent, target: str, space: str = "W+",
                    steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LEARNING_RATE,
                    l2_lambda: float = DEFAULT_L2_LAMBDA, id_lambda: float = 0.0, identity_network=None,
                    where: str = "") -> tuple[StyleCLIPDirection, OptimizationReport]:
    """StyleCLIP latent optimisation towards `target`, for every latent of the batch independently.

    Args:
        space: "W+" optimises the whole W+ latent; "S" optimises the convolution layers of S.
        steps, lr, l2_lambda: StyleCLIP's --step, --lr and --l2_lambda.
        id_lambda: weight of the ArcFace identity loss; used only with `identity_network` (models.arcface).
        where: node or command name for messages.

    Returns:
        The edit as a direction (one edit per latent; strength 1 gives the optimised latents) and the CLIP loss
        before and after.
    """
    # 1. Check inputs.
    prefix = _prefix(where)
    latent.check_generator(generator, where)
    if space not in OPTIMIZATION_SPACES:
        raise ValueError(f"{prefix}space {space!r} is invalid; expected one of {OPTIMIZATION_SPACES}.")
    if space == "S":
        require_style_space(generator, where)
    if steps < 1:
        raise ValueError(f"{prefix}steps must be at least 1, got {steps}.")
    clip.check_prompt(target, "target_prompt", where)
    if identity_network is None or id_lambda <= 0:
        identity_network, id_lambda = None, 0.0

    with torch.inference_mode(False):
        return _optimize(generator, clip, latent, target, space, steps, lr, l2_lambda, id_lambda, identity_network)


def _optimize(generator, clip: CLIPModel, latent: StyleGANLatent, target: str, space: str, steps: int, lr: float,
              l2_lambda: float, id_lambda: float, identity_network) -> tuple[StyleCLIPDirection, OptimizationReport]:
    """The optimisation loop of `optimize_latent`, run outside inference mode."""
    from .arcface import identity_loss

    use_identity = identity_network is not None

    # 2. Models whose weights autograd can use, start values and the variables to optimise.
    generator = _without_inference_tensors(generator)
    clip = replace(clip, model=_without_inference_tensors(clip.model))
    if use_identity:
        identity_network = _without_inference_tensors(identity_network)
    device = _device(generator)
    synthesis = generator.synthesis
    text_feature = clip.encode_text([target])[0].clone()
    text_feature = text_feature / text_feature.norm()
    start_ws = latent.ws().to(device).clone()
    with torch.no_grad():
        original = synthesis(start_ws, noise_mode="const") if use_identity else None
        start = [start_ws] if space == "W+" else [s.detach() for s in synthesis.ws_to_styles(start_ws)]
    variables = [value.detach().clone() for value in start]
    if space == "W+":
        trainable = variables
    else:
        # StyleCLIP optimises the convolution styles only, so the ToRGB (and StyleGAN3 input) styles stay fixed.
        layers = style_layers(generator)
        trainable = [value for value, layer in zip(variables, layers, strict=True) if layer.is_conv]
    for value in trainable:
        value.requires_grad_(True)
    optimizer = torch.optim.Adam(trainable, lr=lr)

    def render() -> torch.Tensor:
        if space == "W+":
            return synthesis(variables[0], noise_mode="const")
        return synthesis.synthesis_from_styles(variables, noise_mode="const")

    # 3. Optimise: one Adam step per iteration on the summed per-latent losses (Adam works per element, so the
    # latents do not influence each other).
    bar = host.ProgressBar(steps)
    with torch.no_grad():
        loss_start = clip_loss(clip, render(), text_feature).cpu().tolist()
    with torch.enable_grad():
        for step in range(steps):
            host.check_interrupted()
            optimizer.param_groups[0]["lr"] = learning_rate(step / steps, lr)
            images = render()
            loss = clip_loss(clip, images, text_feature)
            distance = sum(((value - first) ** 2).flatten(1).sum(dim=1)
                           for value, first in zip(variables, start, strict=True))
            loss = loss + l2_lambda * distance
            if use_identity:
                loss = loss + id_lambda * identity_loss(identity_network, images, original)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            bar.update_absolute(step + 1, steps)
    with torch.no_grad():
        loss_end = clip_loss(clip, render(), text_feature).cpu().tolist()

    # 4. The edit as a direction with one entry per latent.
    meta = {"method": "latent optimization", "space": space, "target": target, "steps": steps, "lr": lr,
            "l2_lambda": l2_lambda, "id_lambda": id_lambda,
            "clip_loss_start": [round(v, 6) for v in loss_start], "clip_loss_end": [round(v, 6) for v in loss_end]}
    if space == "W+":
        direction = StyleCLIPDirection("W+", generator.fingerprint, generator.num_ws, generator.w_dim,
                                       w_delta=(variables[0] - start[0]).detach().cpu(), meta=meta)
    else:
        deltas = tuple((value - first).detach().cpu() for value, first in zip(variables, start, strict=True))
        direction = StyleCLIPDirection("S", generator.fingerprint, generator.num_ws, generator.w_dim,
                                       style_deltas=deltas, meta=meta)
    return direction, OptimizationReport(loss_start, loss_end, steps)


# ---------------------------------------------------------------------------------------------------------------------
# Latent mappers.


def mapper_direction(generator, mapper: StyleCLIPMapper, where: str = "") -> StyleCLIPDirection:
    """Wrap a loaded mapper as a direction for `generator`, after checking it was trained with that generator."""
    if mapper.kind == "stylespace":
        require_style_space(generator, where)
    mapper.check_generator(generator, where)
    meta = {"method": "latent mapper", "mapper": mapper.source, "target": mapper.description, "space": mapper.space}
    return StyleCLIPDirection("mapper", generator.fingerprint, generator.num_ws, generator.w_dim, mapper=mapper,
                              meta=meta)


# ---------------------------------------------------------------------------------------------------------------------
# Applying directions.


def sweep_strengths(strength: float, mode: str = "off", frames: int = 1, where: str = "") -> list[float]:
    """Strengths of an edit: [strength] when mode is "off", else `frames` evenly spaced values, both ends included."""
    if mode not in SWEEP_MODES:
        raise ValueError(f"{_prefix(where)}sweep {mode!r} is invalid; expected one of {SWEEP_MODES}.")
    if mode == "off":
        return [float(strength)]
    if frames < 2:
        raise ValueError(f"{_prefix(where)}a sweep needs at least 2 frames, got {frames}.")
    low = 0.0 if mode == "0 to strength" else -float(strength)
    return [float(value) for value in torch.linspace(low, float(strength), frames)]


@torch.no_grad()
def project_styles_to_wplus(generator, ws: torch.Tensor, target: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Fit W+ [B, num_ws, w_dim] to target styles by least squares, starting from `ws`.

    Each W+ entry feeds one convolution layer and at most one ToRGB layer. Its change solves
    min |A dw - ds|^2 over the rows of those layers (float64, gelsd), where A is their affine weight. Weighting
    the convolution rows higher would match them better but move the shared ToRGB styles, and with them the
    image, further. Entries whose layers do not change keep their value exactly. Returns the new W+ and the
    relative error |S(w') - target| / |target - S(ws)| over all layers (0 when nothing changes).
    """
    layers = style_layers(generator)
    modules = generator.synthesis.style_modules()
    base = generator.synthesis.ws_to_styles(ws)
    deltas = [(goal.to(ws.device).double() - current.double()) for goal, current in zip(target, base, strict=True)]
    fitted = ws.detach().double().clone()
    for w_index in range(generator.num_ws):
        group = [layer for layer in layers if layer.w_index == w_index]
        if not any(deltas[layer.index].abs().max() > 0 for layer in group):
            continue
        matrices, right = [], []
        for layer in group:
            affine = modules[layer.index].affine
            matrices.append(affine.weight.detach().double().cpu() * affine.weight_gain)  # s = A @ w + bias
            right.append(deltas[layer.index].t().cpu())  # [channels, B]
        solution = torch.linalg.lstsq(torch.cat(matrices), torch.cat(right), driver="gelsd").solution  # [w_dim, B]
        fitted[:, w_index] += solution.t().to(fitted.device)
    fitted = fitted.to(ws.dtype)
    total_change = math.sqrt(sum(float(delta.square().sum()) for delta in deltas))
    if total_change == 0:
        return fitted, 0.0
    result = generator.synthesis.ws_to_styles(fitted)
    residual = math.sqrt(sum(float((r.double() - goal.to(r.device).double()).square().sum())
                             for r, goal in zip(result, target, strict=True)))
    return fitted, residual / total_change


def _per_row(values: torch.Tensor, count: int, frames: int) -> torch.Tensor:
    """Expand [K, ...] edits (K = 1 or the latent batch) to one row per (latent, frame)."""
    if values.shape[0] == 1:
        return values.expand(count * frames, *values.shape[1:])
    return values.repeat_interleave(frames, dim=0)


@torch.no_grad()
def apply_direction(generator, latent: StyleGANLatent, direction: StyleCLIPDirection,
                    strengths: float | list[float] = 1.0, where: str = "") -> StyleCLIPResult:
    """Add `strength` x the edit to every latent; with several strengths each latent gives one row per strength.

    The output batch is latent-major: latent 0 at every strength, then latent 1, ... A strength of 0 leaves a
    latent exactly as it was. With a single strength of 0, or an edit that changes nothing, the input latent
    itself is returned.
    """
    # 1. Check inputs.
    require_style_space(generator, where)
    direction.check(generator, latent, where)
    strengths = [float(strengths)] if isinstance(strengths, (int, float)) else [float(s) for s in strengths]
    if not strengths:
        raise ValueError(f"{_prefix(where)}no strength given.")
    outputs = latent.batch_size * len(strengths)
    if outputs > MAX_EDIT_OUTPUTS:
        raise ValueError(f"{_prefix(where)}the edit would make {outputs} latents ({latent.batch_size} latents x "
                         f"{len(strengths)} frames), more than the limit of {MAX_EDIT_OUTPUTS}. Use fewer frames or "
                         f"a smaller latent batch.")
    device = _device(generator)
    synthesis = generator.synthesis
    layer_names = tuple(synthesis.style_layer_names())
    frames = len(strengths)
    count = latent.batch_size
    meta = {"operation": "styleclip", **direction.meta, "strengths": [round(s, 6) for s in strengths]}

    # 2. An unchanged latent needs no computation, and keeps its space.
    if frames == 1 and (strengths[0] == 0 or direction.is_zero):
        styles = synthesis.ws_to_styles(latent.ws().to(device))
        return StyleCLIPResult(latent, StyleGANStyles(tuple(s.float().cpu() for s in styles), layer_names,
                                                      generator.fingerprint, meta), 0.0)

    # 3. Latents repeated per frame, and the strength of every row.
    ws = latent.ws().to(device).repeat_interleave(frames, dim=0)  # [B * F, num_ws, w_dim]
    scale = torch.tensor(strengths, device=device).repeat(count)  # [B * F]
    error = 0.0
    if direction.kind == "W+":
        delta = _per_row(direction.w_delta.to(device), count, frames)
        edited_ws = ws + scale.view(-1, 1, 1) * delta
        styles = synthesis.ws_to_styles(edited_ws)
    elif direction.kind == "mapper" and direction.mapper.space == "W+":
        offset = direction.mapper.network.to(device)(ws)
        edited_ws = ws + (MAPPER_SCALE * scale).view(-1, 1, 1) * offset
        styles = synthesis.ws_to_styles(edited_ws)
    else:
        base = synthesis.ws_to_styles(ws)
        if direction.kind == "S":
            offsets = [_per_row(delta.to(device), count, frames) for delta in direction.style_deltas]
            styles = [style + scale.view(-1, 1) * offset for style, offset in zip(base, offsets, strict=True)]
        else:
            offsets = direction.mapper.network.to(device)(base)
            factor = (MAPPER_SCALE * scale).view(-1, 1)
            styles = [style + factor * offset for style, offset in zip(base, offsets, strict=True)]
        edited_ws, error = project_styles_to_wplus(generator, ws, styles)
        if error > 0.01:
            logger.info("%sthe W+ latent fits the S edit with relative error %.3f. The styles output is exact.",
                        _prefix(where), error)
    meta["projection_error"] = round(error, 6)
    result_latent = StyleGANLatent(edited_ws.float().cpu(), "W+", latent.num_ws, latent.w_dim, latent.fingerprint,
                                   meta)
    result_styles = StyleGANStyles(tuple(s.float().cpu() for s in styles), layer_names, generator.fingerprint, meta)
    return StyleCLIPResult(result_latent, result_styles, error)


# ---------------------------------------------------------------------------------------------------------------------
# One call for the StyleCLIPEdit node.


def edit_latent(generator, latent: StyleGANLatent, method: str, *, clip: CLIPModel | None = None,
                channel_data: StyleCLIPChannelData | None = None, mapper: StyleCLIPMapper | None = None,
                neutral_prompt: str = "face", target_prompt: str = "smiling face", alpha: float = DEFAULT_ALPHA,
                beta: float = DEFAULT_BETA, strength: float = 1.0, sweep: str = "off", frames: int = 1,
                space: str = "W+", steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LEARNING_RATE,
                l2_lambda: float = DEFAULT_L2_LAMBDA, id_lambda: float = 0.0, identity_network=None,
                where: str = "") -> tuple[StyleCLIPResult, StyleCLIPDirection]:
    """Find a StyleCLIP edit with `method` (one of METHODS) and apply it with `strength` or a sweep.

    Returns the edited latents and the edit as a reusable direction. See `global_direction`, `optimize_latent`
    and `mapper_direction` for the method parameters.
    """
    # 1. Check inputs.
    prefix = _prefix(where)
    if method not in METHODS:
        raise ValueError(f"{prefix}method {method!r} is invalid; expected one of {METHODS}.")
    latent.check_generator(generator, where)
    strengths = sweep_strengths(strength, sweep, frames, where)
    if method in ("global directions", "latent optimization") and clip is None:
        raise ValueError(f"{prefix}method {method!r} needs a CLIP model; connect the clip input (Load CLIP).")

    # 2. Find the edit.
    if method == "global directions":
        if channel_data is None:
            raise ValueError(f"{prefix}method 'global directions' needs fs3 data; connect the fs3 input to Load "
                             f"StyleCLIP fs3 (StyleCLIP's fs3.npy) or StyleCLIP Compute fs3.")
        direction = global_direction(generator, clip, channel_data, neutral_prompt, target_prompt, alpha, beta,
                                     where)
    elif method == "latent optimization":
        direction, _ = optimize_latent(generator, clip, latent, target_prompt, space, steps, lr, l2_lambda,
                                       id_lambda, identity_network, where)
    else:
        if mapper is None:
            raise ValueError(f"{prefix}method 'latent mapper' needs a mapper; connect the mapper input to Load "
                             f"StyleCLIP Mapper.")
        direction = mapper_direction(generator, mapper, where)

    # 3. Apply it.
    return apply_direction(generator, latent, direction, strengths, where), direction
