"""Pivotal tuning inversion (PTI, Roich et al. 2022): fine-tune a copy of the generator around pivot latents.

After an inversion, the latent (the pivot) renders an image close to the photo but missing detail. PTI tunes the
synthesis network so the pivot renders the photo itself. The mapping network stays frozen, so the tuned copy has
the same W space and fingerprint, and the pivot and every edit of it stay valid for the tuned generator. The input
generator is never modified.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..runtime import host
from .latents import StyleGANLatent
from .perceptual import ImageDistance, PixelMSSSIMDistance
from .projector import (
    autograd_copy_if_needed,
    clamp_to_image_range,
    image_to_generator_range,
    interrupt_requested,
    preview_image,
    psnr,
)
from .sampling import to_image_layout

logger = logging.getLogger(__name__)

MAX_STEPS = 10_000
MAX_LEARNING_RATE = 0.1


@dataclass
class TuningResult:
    """Outcome of `pivotal_tuning`; `generator` is the tuned copy (the input generator is unchanged)."""

    generator: torch.nn.Module
    reconstruction: torch.Tensor            # IMAGE [B, H, W, 3] of the pivots rendered by the tuned generator.
    psnr_before: list[float]                # dB per image, pivots rendered by the input generator.
    psnr_after: list[float]                 # dB per image, pivots rendered by the tuned generator.
    steps_run: int
    steps: int
    interrupted: bool
    seconds: float
    loss_name: str


def _check_images(generator, latent: StyleGANLatent, images: torch.Tensor, prefix: str) -> torch.Tensor:
    if images.ndim == 3:
        images = images.unsqueeze(0)
    size = generator.img_resolution
    if images.ndim != 4 or tuple(images.shape[1:]) != (size, size, generator.img_channels):
        raise ValueError(f"{prefix}images must be [B, {size}, {size}, {generator.img_channels}] at the generator's "
                         f"resolution, got {list(images.shape)}. Pass the aligned target that the latent was "
                         f"inverted from (InvertImage's target, or its reconstruction size).")
    if images.shape[0] != latent.batch_size:
        raise ValueError(f"{prefix}the latent contains {latent.batch_size} latents but {images.shape[0]} images were "
                         f"given; pass one image per latent.")
    return images.float()


def pivotal_tuning(generator, latent: StyleGANLatent, images: torch.Tensor, *, steps: int = 350,
                   learning_rate: float = 3e-4, distance: ImageDistance | None = None, l2_weight: float = 1.0,
                   perceptual_weight: float = 1.0, locality_weight: float = 0.0, locality_alpha: float = 30.0,
                   noise_mode: str = "const", seed: int = 0, preview_every: int = 10,
                   progress: host.ProgressBar | None = None, where: str = "") -> TuningResult:
    """Fine-tune a deep copy of `generator`'s synthesis network so the pivots in `latent` render `images`.

    Args:
        generator: StyleGAN generator; not modified.
        latent: pivots of this generator, one per image (W or W+).
        images: IMAGE [B, H, W, 3] in 0..1 at the generator's resolution.
        steps: Adam steps over the whole batch.
        learning_rate: Adam learning rate (3e-4 in the PTI paper).
        distance: perceptual distance (models.perceptual); default pixel L1 + MS-SSIM.
        l2_weight: weight of the mean squared error in generator units (-1..1).
        perceptual_weight: weight of `distance`.
        locality_weight: weight of the locality regulariser (0 = off). It renders a latent `locality_alpha` away
            from each pivot, towards a random mapped sample, with both generators and penalises the difference,
            so the tuning changes the generator less away from the pivots.
        locality_alpha: distance in W of the regulariser's latents from the pivots.
        noise_mode: noise of the synthesis network during tuning and rendering ("const" or "none").
        seed: seed of the regulariser's samples.
        preview_every: send a preview to the progress bar every this many steps (0 = never).
        progress: progress bar; default a new one with `steps` steps.
        where: prefix for error messages.

    Returns:
        A TuningResult. When the user interrupts, the copy tuned so far is returned with `interrupted` set.
    """
    # Node functions run under inference mode (see autograd_copy_if_needed); the tuning needs autograd.
    with torch.inference_mode(False), torch.enable_grad():
        return _pivotal_tuning(generator, latent, images, steps=steps, learning_rate=learning_rate,
                               distance=distance, l2_weight=l2_weight, perceptual_weight=perceptual_weight,
                               locality_weight=locality_weight, locality_alpha=locality_alpha, noise_mode=noise_mode,
                               seed=seed, preview_every=preview_every, progress=progress, where=where)


def _pivotal_tuning(generator, latent, images, *, steps, learning_rate, distance, l2_weight, perceptual_weight,
                    locality_weight, locality_alpha, noise_mode, seed, preview_every, progress,
                    where) -> TuningResult:
    # 1. Check inputs.
    prefix = f"{where}: " if where else ""
    latent.check_generator(generator, where=where)
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"{prefix}steps {steps} is out of range; expected 0..{MAX_STEPS}.")
    if not 0 < learning_rate <= MAX_LEARNING_RATE:
        raise ValueError(f"{prefix}learning_rate {learning_rate} is out of range; expected above 0 and at most "
                         f"{MAX_LEARNING_RATE} (PTI uses 3e-4).")
    if noise_mode not in ("const", "none"):
        raise ValueError(f"{prefix}noise_mode {noise_mode!r} is invalid for tuning; expected 'const' or 'none'.")
    for name, value in (("l2_weight", l2_weight), ("perceptual_weight", perceptual_weight),
                        ("locality_weight", locality_weight)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{prefix}{name} must be a finite number >= 0, got {value}.")
    images = _check_images(generator, latent, images, prefix).clone()
    started = time.perf_counter()

    # 2. Copy the generator and freeze everything but the synthesis network.
    device = generator.mapping.fc0.weight.device
    tuned = autograd_copy_if_needed(generator, force_copy=True)
    # The regulariser renders with the original too, which must not hold inference tensors either.
    reference = autograd_copy_if_needed(generator) if locality_weight > 0 else generator
    tuned.synthesis.requires_grad_(True)
    parameters = [parameter for parameter in tuned.synthesis.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    if distance is None:
        distance = PixelMSSSIMDistance()
    distance = distance.to(device)

    pivots = latent.ws().to(device).clone()  # [B, num_ws, w_dim]
    targets = image_to_generator_range(images, device)  # [B, C, H, W]
    prepared_targets = distance.prepare(targets).clone()
    rng = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        before = to_image_layout(generator.synthesis(pivots, noise_mode=noise_mode))
    psnr_before = [psnr(before[index], images[index]) for index in range(images.shape[0])]
    if progress is None:
        progress = host.ProgressBar(steps)

    # 3. Tune.
    interrupted = False
    steps_run = 0
    for step in range(steps):
        if interrupt_requested():
            interrupted = True
            logger.info("%spivotal tuning interrupted at step %d of %d; returning the copy tuned so far.", prefix,
                        step, steps)
            break
        rendered = tuned.synthesis(pivots, noise_mode=noise_mode)
        clamped = clamp_to_image_range(rendered)
        loss = l2_weight * F.mse_loss(clamped, targets) + perceptual_weight * distance(clamped, prepared_targets).mean()
        if locality_weight > 0:
            loss = loss + locality_weight * _locality_loss(reference, tuned, pivots, distance, locality_alpha,
                                                           noise_mode, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps_run = step + 1
        preview = preview_image(rendered) if preview_every and steps_run % preview_every == 0 else None
        progress.update_absolute(steps_run, None, preview)

    # 4. Freeze the copy, record where it came from and measure it.
    tuned.requires_grad_(False)
    for parameter in tuned.parameters():
        parameter.grad = None
    tuned.source = {**getattr(generator, "source", {}),
                    "tuned": {"method": "pivotal tuning", "steps": steps_run, "learning_rate": learning_rate,
                              "images": int(images.shape[0]), "base_source": dict(getattr(generator, "source", {}))}}
    with torch.no_grad():
        reconstruction = to_image_layout(tuned.synthesis(pivots, noise_mode=noise_mode))
    psnr_after = [psnr(reconstruction[index], images[index]) for index in range(images.shape[0])]
    seconds = time.perf_counter() - started
    logger.info("%spivotal tuning: %d of %d steps in %.1f s; PSNR %s -> %s dB.", prefix, steps_run, steps, seconds,
                [round(value, 2) for value in psnr_before], [round(value, 2) for value in psnr_after])
    return TuningResult(generator=tuned, reconstruction=reconstruction, psnr_before=psnr_before,
                        psnr_after=psnr_after, steps_run=steps_run, steps=steps, interrupted=interrupted,
                        seconds=seconds, loss_name=distance.name)


def _locality_loss(original, tuned, pivots: torch.Tensor, distance: ImageDistance, alpha: float, noise_mode: str,
                   rng: torch.Generator) -> torch.Tensor:
    """Difference between the tuned and the original generator at latents `alpha` away from the pivots."""
    device = pivots.device
    with torch.no_grad():
        z = torch.randn([pivots.shape[0], original.z_dim], generator=rng, device=device)
        c = None
        if original.c_dim:
            c = torch.zeros([pivots.shape[0], original.c_dim], device=device)
            c[:, 0] = 1
        w_random = original.mapping(z, c)  # [B, num_ws, w_dim]
        direction = w_random - pivots
        direction = direction / direction.norm(dim=2, keepdim=True).clamp(min=1e-8)
        ws = pivots + alpha * direction
        reference = clamp_to_image_range(original.synthesis(ws, noise_mode=noise_mode))
    rendered = clamp_to_image_range(tuned.synthesis(ws, noise_mode=noise_mode))
    return F.mse_loss(rendered, reference) + distance(rendered, distance.prepare(reference)).mean()
