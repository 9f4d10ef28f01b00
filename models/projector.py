"""Optimisation-based inversion of one image into W or W+ (the StyleGAN2-ADA projector, reimplemented).

The schedule is the one of NVIDIA's stylegan2-ada-pytorch `projector.py`:
- start from the mean of 10,000 mapped samples (z from `RandomState(123)`);
- Adam with betas (0.9, 0.999) and a learning rate of 0.1, ramped up over the first 5 % of the steps and down
  along a cosine over the last 25 %;
- Gaussian jitter on the latent of 0.05 x the W standard deviation, fading out quadratically by 75 % of the steps;
- optionally the per-pixel noise inputs optimised too, with the multi-scale autocorrelation penalty (weight 1e5)
  and renormalisation to zero mean and unit variance after each step.
The step count is the caller's, and the ramps scale with it.

Differences from the official function:
- W+ is supported. Its layers move together for the first half of the steps (`w_plus_tied_length`) and the
  latent jitter is shared by all layers, so W+ starts as a W projection and then refines each layer.
- Generator output is clamped to the range an IMAGE can hold before the distance, like the target.
- The result is the latent with the lowest distance seen (measured with that step's jitter), not the last one.
- The generator's stored noise can be kept fixed ("const") or left out ("none") instead of optimised.
- Interruption returns the best latent so far, and the image distance comes from `models.perceptual`.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime import host
from .latents import StyleGANLatent
from .perceptual import ImageDistance, PixelMSSSIMDistance
from .sampling import class_label, to_image_layout

logger = logging.getLogger(__name__)

SPACES = ("W", "W+")
# Treatments of the per-pixel noise inputs: optimised (official), the generator's stored noise, or no noise.
NOISE_OPTIONS = ("optimize", "const", "none")
MAX_STEPS = 100_000
W_STATS_SEED = 123  # The official projector draws its W statistics samples from RandomState(123).
PREVIEW_MAX_SIDE = 512  # ComfyUI's default preview size.
# Generator output values that to_image_layout maps to 0 and 255.
IMAGE_RANGE = (-128 / 127.5, 127 / 127.5)


@dataclass(frozen=True)
class ProjectorSchedule:
    """Learning-rate and latent-noise ramps as fractions of the step count; defaults are the official ones."""

    initial_learning_rate: float = 0.1      # Adam learning rate between the ramps.
    lr_rampup_length: float = 0.05          # Fraction of the steps over which the rate rises linearly from 0.
    lr_rampdown_length: float = 0.25        # Fraction of the steps at the end over which it falls along a cosine.
    initial_noise_factor: float = 0.05      # Latent jitter at step 0, in units of the W standard deviation.
    noise_ramp_length: float = 0.75         # Fraction of the steps after which the jitter is zero.
    regularize_noise_weight: float = 1e5    # Weight of the noise autocorrelation penalty.
    w_plus_tied_length: float = 0.5        # W+ only: fraction of the steps in which all layers move together.

    def learning_rate(self, step: int, num_steps: int) -> float:
        t = step / num_steps
        ramp = min(1.0, (1.0 - t) / self.lr_rampdown_length)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp *= min(1.0, t / self.lr_rampup_length) if self.lr_rampup_length > 0 else 1.0
        return self.initial_learning_rate * ramp

    def latent_noise_factor(self, step: int, num_steps: int) -> float:
        """Jitter standard deviation at `step`, in units of the W standard deviation."""
        t = step / num_steps
        return self.initial_noise_factor * max(0.0, 1.0 - t / self.noise_ramp_length) ** 2


@dataclass
class ProjectionResult:
    """Outcome of `project` for one image.

    `generator` renders `latent` as `reconstruction`: the input generator, or with noise "optimize" a copy whose
    noise buffers hold the optimised noise (same fingerprint, since the mapping network is unchanged).
    """

    latent: StyleGANLatent                  # [1, w_dim] in W or [1, num_ws, w_dim] in W+.
    reconstruction: torch.Tensor            # IMAGE [1, H, W, 3], 0..1, as StyleGANGenerate renders it.
    generator: torch.nn.Module
    psnr: float                             # dB, reconstruction against the target at the generator's resolution.
    lpips: float | None                     # LPIPS (or uncalibrated VGG16 distance) when the distance is LPIPS.
    loss: float                             # Best image distance seen.
    loss_name: str
    best_step: int                          # Step whose latent is returned; equal to `steps_run` for the final one.
    steps_run: int
    steps: int
    interrupted: bool
    seconds: float
    history: list[float] = field(default_factory=list)  # Image distance at each step, with that step's jitter.


# ---------------------------------------------------------------------------------------------------------------------
# W statistics.

_w_stats_cache: dict[tuple, tuple[torch.Tensor, float]] = {}
_w_stats_lock = threading.Lock()


@torch.no_grad()
def w_statistics(generator, num_samples: int = 10_000, class_index: int = 0,
                 chunk_size: int = 1000) -> tuple[torch.Tensor, float]:
    """Mean W [w_dim] and the scalar standard deviation of W over `num_samples` mapped samples.

    The samples are z = RandomState(123).randn(num_samples, z_dim), as in the official projector, so the values
    match it up to float rounding. The standard deviation is sqrt(sum of squared deviations / num_samples) over all
    W dimensions, which is the official definition. Results are cached per generator fingerprint and device.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 to estimate a standard deviation, got {num_samples}.")
    device = generator.mapping.fc0.weight.device
    key = (generator.fingerprint, str(device), num_samples, class_index if generator.c_dim else None)
    with _w_stats_lock:
        cached = _w_stats_cache.get(key)
    if cached is not None:
        return cached

    z_all = np.random.RandomState(W_STATS_SEED).randn(num_samples, generator.z_dim)
    ws = []
    for start in range(0, num_samples, chunk_size):
        z = torch.from_numpy(z_all[start:start + chunk_size]).to(device)
        c = class_label(generator, class_index, z.shape[0])
        ws.append(generator.mapping(z, None if c is None else c.to(device))[:, 0].float())
    w = torch.cat(ws)  # [num_samples, w_dim]
    w_avg = w.mean(dim=0)
    w_std = float(((w - w_avg).square().sum() / num_samples).sqrt())
    with _w_stats_lock:
        _w_stats_cache[key] = (w_avg, w_std)
    return w_avg, w_std


# ---------------------------------------------------------------------------------------------------------------------
# Helpers.


def interrupt_requested() -> bool:
    """Return True, consuming the request, when the user asked to stop (standalone runner or ComfyUI)."""
    try:
        host.check_interrupted()
    except host.InterruptedByUser:
        return True
    except Exception as error:
        # Inside ComfyUI, comfy.model_management raises its own InterruptProcessingException.
        if type(error).__name__ == "InterruptProcessingException":
            return True
        raise
    return False


def noise_regularization(noise_buffers: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared autocorrelations of each noise map with its one-pixel shifts, over a pyramid down to 8 px."""
    total = None
    for buffer in noise_buffers:
        noise = buffer[None, None]  # [1, 1, H, W]
        while True:
            term = (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            term = term + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            total = term if total is None else total + term
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total if total is not None else torch.zeros([])


def image_to_generator_range(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """IMAGE [H, W, C] or [N, H, W, C] in 0..1 -> [N, C, H, W] in generator units, the inverse of
    `to_image_layout` (x * 127.5 + 128 in 0..255), so a rendered image maps back to the generator's output."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    image = image.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
    return ((image * 255 - 128) / 127.5).contiguous()


def clamp_to_image_range(images: torch.Tensor) -> torch.Tensor:
    """Clamp generator output to the values an IMAGE can hold (0..255 after x * 127.5 + 128).

    Targets are IMAGEs, so their pixels are clamped. Without the clamp, pixels that the generator drives past the
    range would be pulled back into it, away from the latent that made the target.
    """
    return images.clamp(IMAGE_RANGE[0], IMAGE_RANGE[1])


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in 0..1 (inf when they are equal)."""
    mse = float((reconstruction.float().cpu() - target.float().cpu()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def preview_image(images: torch.Tensor):
    """ComfyUI's preview value ("JPEG", PIL image, max side) for the first image of generator output."""
    from PIL import Image

    array = (to_image_layout(images[:1].detach())[0].numpy() * 255).round().astype(np.uint8)
    return ("JPEG", Image.fromarray(array), PREVIEW_MAX_SIDE)


def autograd_copy_if_needed(generator: torch.nn.Module, force_copy: bool = False) -> torch.nn.Module:
    """Return `generator`, or a deep copy when `force_copy` is set or it contains inference tensors.

    ComfyUI and the standalone runner execute nodes under `torch.inference_mode()`, so a generator loaded by a
    node has inference tensors, which autograd cannot save for backward. A copy made outside inference mode has
    ordinary tensors. Call this outside inference mode.
    """
    tensors = [*generator.parameters(), *generator.buffers()]
    if force_copy or any(tensor.is_inference() for tensor in tensors):
        return copy.deepcopy(generator).eval().requires_grad_(False)
    return generator


def _noise_buffers(synthesis: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer for name, buffer in synthesis.named_buffers() if name.endswith("noise_const")}


def check_target(generator, target: torch.Tensor, where: str = "") -> torch.Tensor:
    """Return `target` as [H, W, 3] float; it must be an IMAGE of the generator's resolution."""
    prefix = f"{where}: " if where else ""
    if target.ndim == 4 and target.shape[0] == 1:
        target = target[0]
    size = generator.img_resolution
    if target.ndim != 3 or tuple(target.shape) != (size, size, generator.img_channels):
        raise ValueError(f"{prefix}the target must be one image [{size}, {size}, {generator.img_channels}] at the "
                         f"generator's resolution, got {list(target.shape)}. Align or crop and resize it first.")
    return target.float()


# ---------------------------------------------------------------------------------------------------------------------
# Projection.


def project(generator, target: torch.Tensor, *, space: str = "W", steps: int = 1000,
            start: StyleGANLatent | torch.Tensor | None = None, distance: ImageDistance | None = None,
            noise: str = "optimize", schedule: ProjectorSchedule | None = None, w_avg_samples: int = 10_000,
            class_index: int = 0, seed: int = 0, preview_every: int = 10, progress: host.ProgressBar | None = None,
            progress_offset: int = 0, where: str = "") -> ProjectionResult:
    """Find the latent whose image is closest to `target`.

    Args:
        generator: StyleGAN2 or StyleGAN3 generator; never modified (with noise "optimize" a copy is tuned).
        target: IMAGE [H, W, 3] (or [1, H, W, 3]) in 0..1 at the generator's resolution.
        space: "W" (one latent for every layer) or "W+" (one per layer).
        steps: optimisation steps; the schedule's ramps are fractions of it.
        start: initial latent (a StyleGANLatent of this generator, or a tensor [w_dim], [1, w_dim] or
            [1, num_ws, w_dim]); default the W mean. A W+ start needs space "W+".
        distance: image distance (models.perceptual); default pixel L1 + MS-SSIM.
        noise: "optimize" (official), "const" (the generator's stored noise, fixed) or "none".
        schedule: learning-rate and jitter schedule; default the official one.
        w_avg_samples: samples for the W mean and standard deviation.
        class_index: label used for the W statistics of a conditional generator.
        seed: seed of the latent jitter and of the initial noise maps.
        preview_every: send a preview image to the progress bar every this many steps (0 = never).
        progress: progress bar to report to; default a new one with `steps` steps.
        progress_offset: value added to the step count reported to `progress` (for batches).
        where: prefix for error messages, such as the node name.

    Returns:
        A ProjectionResult. `interrupted` is True when the user stopped the run, and the result then contains the
        best latent found before the stop.
    """
    # Node functions run under inference mode (see autograd_copy_if_needed); the optimisation needs autograd.
    with torch.inference_mode(False), torch.enable_grad():
        return _project(generator, target, space=space, steps=steps, start=start, distance=distance, noise=noise,
                        schedule=schedule, w_avg_samples=w_avg_samples, class_index=class_index, seed=seed,
                        preview_every=preview_every, progress=progress, progress_offset=progress_offset, where=where)


def _project(generator, target, *, space, steps, start, distance, noise, schedule, w_avg_samples, class_index, seed,
             preview_every, progress, progress_offset, where) -> ProjectionResult:
    # 1. Check inputs.
    prefix = f"{where}: " if where else ""
    if space not in SPACES:
        raise ValueError(f"{prefix}space {space!r} is invalid; expected one of {SPACES}.")
    if noise not in NOISE_OPTIONS:
        raise ValueError(f"{prefix}noise {noise!r} is invalid; expected one of {NOISE_OPTIONS}.")
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"{prefix}steps {steps} is out of range; expected 0..{MAX_STEPS}.")
    target = check_target(generator, target, where).clone()
    schedule = schedule or ProjectorSchedule()
    started = time.perf_counter()

    # 2. Define the starting point, the image distance and the noise maps.
    device = generator.mapping.fc0.weight.device
    w_avg, w_std = w_statistics(generator, w_avg_samples, class_index)
    w_start = _start_latent(generator, start, space, w_avg, prefix).to(device).clone()  # [1, 1 or num_ws, w_dim]
    if distance is None:
        distance = PixelMSSSIMDistance()
    distance = distance.to(device)
    target_images = image_to_generator_range(target, device)  # [1, C, H, W]
    prepared_target = distance.prepare(target_images).clone()

    rng = torch.Generator(device=device).manual_seed(seed)
    render = autograd_copy_if_needed(generator, force_copy=noise == "optimize")
    noise_buffers: dict[str, torch.Tensor] = {}
    if noise == "optimize":
        noise_buffers = _noise_buffers(render.synthesis)
        with torch.no_grad():
            for buffer in noise_buffers.values():
                buffer.copy_(torch.randn(buffer.shape, generator=rng, device=device))
                buffer.requires_grad_(True)
    noise_mode = "none" if noise == "none" else "const"

    w_opt = w_start.clone().requires_grad_(True)
    parameters = [w_opt, *noise_buffers.values()]
    optimizer = torch.optim.Adam(parameters, betas=(0.9, 0.999), lr=schedule.initial_learning_rate)
    own_progress = progress is None
    if own_progress:
        progress = host.ProgressBar(steps)

    # 3. Optimise, remembering the latent (and noise) with the lowest distance.
    best_loss = math.inf
    best_w = w_start.clone()
    best_noise = {name: buffer.detach().clone() for name, buffer in noise_buffers.items()}
    best_step = 0
    history: list[float] = []
    interrupted = False
    steps_run = 0
    for step in range(steps):
        if interrupt_requested():
            interrupted = True
            logger.info("%sprojection interrupted at step %d of %d; returning the best latent so far.", prefix,
                        step, steps)
            break
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(step, steps)
        jitter = w_std * schedule.latent_noise_factor(step, steps)
        w_noise = torch.randn([1, 1, generator.w_dim], generator=rng, device=device) * jitter
        ws = (w_opt + w_noise).expand(1, generator.num_ws, -1)  # [1, num_ws, w_dim]
        images = render.synthesis(ws, noise_mode=noise_mode)  # [1, C, H, W]
        dist = distance(clamp_to_image_range(images), prepared_target).sum()
        loss = dist
        if noise_buffers:
            loss = dist + noise_regularization(list(noise_buffers.values())) * schedule.regularize_noise_weight

        value = float(dist.detach())
        history.append(value)
        if value < best_loss:
            best_loss, best_step = value, step
            best_w = w_opt.detach().clone()
            best_noise = {name: buffer.detach().clone() for name, buffer in noise_buffers.items()}

        gradients = list(torch.autograd.grad(loss, parameters))
        if space == "W+" and step < schedule.w_plus_tied_length * steps:
            # Tied phase: every layer gets the mean gradient, so W+ moves as W until the layers are released.
            gradients[0] = gradients[0].mean(dim=1, keepdim=True).expand_as(gradients[0]).contiguous()
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient
        optimizer.step()
        with torch.no_grad():
            for buffer in noise_buffers.values():
                buffer -= buffer.mean()
                buffer *= buffer.square().mean().rsqrt()
        steps_run = step + 1

        preview = None
        if preview_every and (steps_run % preview_every == 0 or steps_run == steps):
            preview = preview_image(images)
        progress.update_absolute(progress_offset + steps_run, None, preview)

    # 4. The last update was never evaluated: compare it, without jitter, with the best step.
    with torch.no_grad():
        if steps_run > 0 and not interrupted:
            images = render.synthesis(w_opt.expand(1, generator.num_ws, -1), noise_mode=noise_mode)
            value = float(distance(clamp_to_image_range(images), prepared_target).sum())
            if value <= best_loss:
                best_loss, best_step = value, steps_run
                best_w = w_opt.detach().clone()
                best_noise = {name: buffer.detach().clone() for name, buffer in noise_buffers.items()}

        # 5. Install the best noise, render the reconstruction and measure it.
        for name, buffer in noise_buffers.items():
            buffer.requires_grad_(False)
            buffer.copy_(best_noise[name])
        if noise_buffers:
            render.source = {**getattr(generator, "source", {}), "noise": "optimised by the projector"}
        images = render.synthesis(best_w.expand(1, generator.num_ws, -1), noise_mode=noise_mode)
        reconstruction = to_image_layout(images)
        if math.isinf(best_loss):
            best_loss = float(distance(clamp_to_image_range(images), prepared_target).sum())
        lpips = float(distance(clamp_to_image_range(images), prepared_target).sum()) if distance.is_lpips else None

    seconds = time.perf_counter() - started
    w = best_w[:, 0] if space == "W" else best_w  # [1, w_dim] or [1, num_ws, w_dim]
    result_psnr = psnr(reconstruction[0], target)
    meta = {"inversion": {"method": f"projector {space}", "steps": steps, "steps_run": steps_run,
                          "interrupted": interrupted, "noise": noise, "loss": distance.name,
                          "psnr": result_psnr, "lpips": lpips}}
    latent = StyleGANLatent(w.detach().float().cpu(), space, generator.num_ws, generator.w_dim,
                            generator.fingerprint, meta)
    logger.info("%sprojected in %s: %d of %d steps in %.1f s, %s %.4f, PSNR %.2f dB.", prefix, space, steps_run,
                steps, seconds, distance.name, best_loss, result_psnr)
    return ProjectionResult(latent=latent, reconstruction=reconstruction, generator=render, psnr=result_psnr,
                            lpips=lpips, loss=best_loss, loss_name=distance.name, best_step=best_step,
                            steps_run=steps_run, steps=steps, interrupted=interrupted, seconds=seconds,
                            history=history)


def _start_latent(generator, start, space: str, w_avg: torch.Tensor, prefix: str) -> torch.Tensor:
    """Initial latent [1, 1, w_dim] for W or [1, num_ws, w_dim] for W+."""
    if start is None:
        w = w_avg.reshape(1, 1, -1)
    else:
        if isinstance(start, StyleGANLatent):
            start.check_generator(generator, where=prefix.rstrip(": "))
            if start.batch_size != 1:
                raise ValueError(f"{prefix}the start latent must hold one latent, got a batch of {start.batch_size}.")
            w = start.w.reshape(1, 1, -1) if start.space == "W" else start.w
        else:
            w = torch.as_tensor(start, dtype=torch.float32)
            if w.ndim == 1:
                w = w.reshape(1, 1, -1)
            elif w.ndim == 2:
                w = w.unsqueeze(1)
        valid = w.ndim == 3 and w.shape[0] == 1 and w.shape[1] in (1, generator.num_ws) and \
            w.shape[2] == generator.w_dim
        if not valid:
            raise ValueError(f"{prefix}the start latent has shape {list(w.shape)}; expected [1, {generator.w_dim}] "
                             f"(W) or [1, {generator.num_ws}, {generator.w_dim}] (W+).")
        if w.shape[1] > 1 and space == "W":
            raise ValueError(f"{prefix}a W+ start latent needs space 'W+'; choose 'projector W+' or "
                             f"'encoder + projector' with a W+ encoder.")
    w = w.detach().to(torch.float32)
    if space == "W+" and w.shape[1] == 1:
        w = w.repeat(1, generator.num_ws, 1)
    return w
