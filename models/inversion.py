"""Invert photos into a generator's latent space: crop or align, then encode, project, or encode and project.

`invert_images` is the library behind the InvertImage node. Per image it prepares the target at the generator's
resolution (`prepare_target`), takes the start latent from an e4e/pSp encoder or the W mean, optimises it with
`models.projector.project`, and reports PSNR (and LPIPS when VGG16 weights are present).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime import host
from .latents import StyleGANLatent
from .perceptual import load_distance
from .projector import NOISE_OPTIONS, ProjectionResult, project, psnr
from .sampling import generate_images

logger = logging.getLogger(__name__)

METHODS = ("projector W", "projector W+", "encoder", "encoder + projector")
ALIGNMENTS = ("ffhq", "center_crop", "none")
MIN_TARGET_SIDE = 8  # smaller inputs hold too little to invert; face alignment needs more (models.alignment)


@dataclass
class InversionResult:
    """Latents, reconstructions and error measures of a batch of inverted images."""

    latent: StyleGANLatent                  # [B, ...] in W or W+ (W+ when any image needed it).
    reconstruction: torch.Tensor            # IMAGE [B, H, W, 3] rendered by `generator` from `latent`.
    targets: torch.Tensor                   # IMAGE [B, H, W, 3]: the aligned or cropped inputs.
    generator: torch.nn.Module              # Renders `latent`; a copy with optimised noise for noise "optimize".
    psnr: list[float]                       # dB per image.
    lpips: list[float] | None               # Per image when the loss is LPIPS, else None.
    loss_name: str
    interrupted: bool = False
    steps_run: list[int] = field(default_factory=list)
    report: list[str] = field(default_factory=list)  # One line per image, for the node's UI text.


# ---------------------------------------------------------------------------------------------------------------------
# Targets.


def _to_rgb_tensor(image: torch.Tensor, prefix: str) -> torch.Tensor:
    """[H, W, C] with C = 1, 3 or 4 -> float [H, W, 3] in 0..1; alpha is composited over white."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{prefix}expected an IMAGE [H, W, C] with 1, 3 or 4 channels, got {list(image.shape)}.")
    image = image.float().clamp(0, 1)
    if image.shape[-1] == 1:
        return image.repeat(1, 1, 3)
    if image.shape[-1] == 4:
        alpha = image[..., 3:]
        return image[..., :3] * alpha + (1 - alpha)
    return image


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [H, W, 3] to [size, size, 3] with antialiased bicubic filtering."""
    if tuple(image.shape[:2]) == (size, size):
        return image
    x = image.permute(2, 0, 1).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).clamp(0, 1).contiguous()


def prepare_target(image: torch.Tensor, resolution: int, align: str = "center_crop", where: str = "") -> torch.Tensor:
    """Turn one input image [H, W, C] into a target [resolution, resolution, 3] in 0..1.

    align "ffhq" aligns the most prominent face as FFHQ was, and models.alignment raises when it finds no face.
    "center_crop" takes the largest centred square. "none" accepts only square images and resizes them.
    Grayscale and RGBA inputs are converted (alpha composited over white).
    """
    prefix = f"{where}: " if where else ""
    if align not in ALIGNMENTS:
        raise ValueError(f"{prefix}align {align!r} is invalid; expected one of {ALIGNMENTS}.")
    if align == "ffhq":
        from .alignment import align_face

        aligned = align_face(image, resolution, landmarks="auto", no_face="error", where=where,
                             fallback_input="align")
        return torch.from_numpy(np.ascontiguousarray(aligned.image)).float()

    rgb = _to_rgb_tensor(image, prefix)
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_TARGET_SIDE:
        raise ValueError(f"{prefix}image is {width}x{height} px; each side must be at least {MIN_TARGET_SIDE} px. "
                         f"Use a larger image.")
    if align == "center_crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        rgb = rgb[top:top + side, left:left + side]
    elif height != width:
        raise ValueError(f"{prefix}image is {width}x{height} px but align 'none' needs a square image. Choose align "
                         f"'center_crop' or 'ffhq', or crop it first.")
    return _resize(rgb, resolution)


# ---------------------------------------------------------------------------------------------------------------------
# Inversion.


def invert_images(generator, images: torch.Tensor, *, method: str = "projector W+", steps: int = 300,
                  align: str = "center_crop", encoder=None, noise: str = "const", loss: str = "auto", seed: int = 0,
                  preview_every: int = 10, where: str = "") -> InversionResult:
    """Invert a batch of images [B, H, W, C] (0..1) into `generator`'s latent space.

    Args:
        generator: StyleGAN2 or StyleGAN3 generator; never modified.
        images: IMAGE batch, any size (prepared by `prepare_target` with `align`).
        method: "projector W", "projector W+", "encoder" (encoder only, no optimisation) or "encoder + projector"
            (the encoder's latent refined by `steps` projector steps in its space).
        steps: projector steps per image (ignored by "encoder").
        align: "ffhq", "center_crop" or "none" (see `prepare_target`).
        encoder: a models.encoders.Encoder; required by the encoder methods, checked against `generator` before
            any work.
        noise: "const", "none" or "optimize" (see models.projector); "optimize" needs a batch of one, because the
            optimised noise is stored in one generator copy.
        loss: "auto", "lpips" or "pixel+ms-ssim" (see models.perceptual.load_distance).
        seed: projector seed.
        preview_every: projector preview interval in steps.
        where: node name for messages.
    """
    # 1. Check inputs before any work.
    prefix = f"{where}: " if where else ""
    if method not in METHODS:
        raise ValueError(f"{prefix}method {method!r} is invalid; expected one of {METHODS}.")
    if noise not in NOISE_OPTIONS:
        raise ValueError(f"{prefix}noise {noise!r} is invalid; expected one of {NOISE_OPTIONS}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"{prefix}expected an IMAGE batch [B, H, W, C], got {list(images.shape)}.")
    batch_size = images.shape[0]
    uses_encoder = method.startswith("encoder")
    if uses_encoder:
        if encoder is None:
            raise ValueError(f"{prefix}method {method!r} needs the encoder input connected (Load StyleGAN Encoder "
                             f"with an e4e or pSp checkpoint). Connect one, or choose 'projector W' or 'projector W+'.")
        encoder.check_generator(generator, where=where)
    if noise == "optimize" and batch_size > 1 and method != "encoder":
        raise ValueError(f"{prefix}noise 'optimize' inverts one image at a time, got a batch of {batch_size}; "
                         f"choose noise 'const' or split the batch.")

    # 2. Prepare targets and the image distance.
    resolution = generator.img_resolution
    targets = torch.stack([prepare_target(images[index], resolution, align, where) for index in range(batch_size)])
    device = generator.mapping.fc0.weight.device
    choice = load_distance(loss, device=device, where=where) if method != "encoder" else None

    # 3. Start latents.
    starts: list[StyleGANLatent | None] = [None] * batch_size
    if uses_encoder:
        from .encoders import encode

        encoded = encode(encoder, generator, targets, where=where)
        starts = [_select(encoded, index) for index in range(batch_size)]

    # 4. Optimise (or render the encoder's latents).
    if method == "encoder":
        return _encoder_only(generator, encoded, targets)
    space = "W" if method == "projector W" else "W+"
    if method == "encoder + projector" and encoded.space == "W":
        space = "W"
    progress = host.ProgressBar(steps * batch_size)
    results: list[ProjectionResult] = []
    interrupted = False
    for index in range(batch_size):
        if interrupted:
            # The user stopped an earlier image: the rest keep their start latent, without optimisation.
            result = project(generator, targets[index], space=space, steps=0, start=starts[index],
                             distance=choice.distance, noise="const" if noise == "optimize" else noise, where=where)
        else:
            result = project(generator, targets[index], space=space, steps=steps, start=starts[index],
                             distance=choice.distance, noise=noise, seed=seed + index, preview_every=preview_every,
                             progress=progress, progress_offset=index * steps, where=where)
            interrupted = result.interrupted
        results.append(result)

    # 5. Collect.
    ws = torch.cat([result.latent.w for result in results])
    meta = {"inversion": {"method": method, "steps": steps, "align": align, "noise": noise, "loss": choice.distance.name,
                          "psnr": [result.psnr for result in results], "interrupted": interrupted}}
    latent = StyleGANLatent(ws, space, generator.num_ws, generator.w_dim, generator.fingerprint, meta)
    report = []
    for index, result in enumerate(results):
        line = f"image {index}: PSNR {result.psnr:.2f} dB"
        if result.lpips is not None:
            line += f", {result.loss_name} {result.lpips:.4f}"
        line += f" ({method}, {result.steps_run}/{steps} steps"
        line += ", interrupted)" if result.interrupted else ")"
        report.append(line)
    if choice.missing:
        report.append(f"loss: {choice.distance.name}; LPIPS unavailable because {choice.missing} is missing.")
    return InversionResult(
        latent=latent, reconstruction=torch.cat([result.reconstruction for result in results]), targets=targets,
        generator=results[0].generator, psnr=[result.psnr for result in results],
        lpips=[result.lpips for result in results] if choice.distance.is_lpips else None,
        loss_name=choice.distance.name, interrupted=interrupted, steps_run=[result.steps_run for result in results],
        report=report)


def _select(latent: StyleGANLatent, index: int) -> StyleGANLatent:
    return StyleGANLatent(latent.w[index:index + 1], latent.space, latent.num_ws, latent.w_dim, latent.fingerprint,
                          latent.meta)


def _encoder_only(generator, encoded: StyleGANLatent, targets: torch.Tensor) -> InversionResult:
    # NOTE: only PSNR is measured here; LPIPS is reported by the projector methods alone.
    reconstruction = generate_images(generator, encoded, noise_mode="const")
    values = [psnr(reconstruction[index], targets[index]) for index in range(targets.shape[0])]
    report = [f"image {index}: PSNR {value:.2f} dB (encoder only)" if math.isfinite(value)
              else f"image {index}: exact reconstruction (encoder only)" for index, value in enumerate(values)]
    return InversionResult(latent=encoded, reconstruction=reconstruction, targets=targets, generator=generator,
                           psnr=values, lpips=None, loss_name="", steps_run=[0] * targets.shape[0], report=report)
