"""Sample W latents from seeds and render latents to images, as the official gen_images.py does."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..runtime import host
from .latents import StyleGANLatent

logger = logging.getLogger(__name__)

MAX_SEED = 2 ** 32 - 1  # numpy.random.RandomState accepts seeds up to 2**32 - 1.


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """Return z [1, z_dim] for `seed` exactly as gen_images.py draws it (RandomState(seed).randn, float64)."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range; expected 0..{MAX_SEED}.")
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim))


def class_label(generator, class_index: int, batch_size: int) -> torch.Tensor | None:
    """One-hot labels [B, c_dim] for conditional generators; None for unconditional ones."""
    if generator.c_dim == 0:
        return None
    if not 0 <= class_index < generator.c_dim:
        raise ValueError(f"class_index {class_index} is out of range for this conditional generator; expected "
                         f"0..{generator.c_dim - 1}.")
    labels = torch.zeros([batch_size, generator.c_dim])
    labels[:, class_index] = 1
    return labels


@torch.no_grad()
def sample_w(generator, seed: int, batch_size: int = 1, truncation_psi: float = 1.0,
             truncation_cutoff: int | None = None, class_index: int = 0) -> StyleGANLatent:
    """Map seeds seed..seed+batch_size-1 to latents; seed N equals `gen_images.py --seeds N`.

    Returns a W latent ([B, w_dim]) when every layer is truncated alike, and W+ ([B, num_ws, w_dim]) when
    `truncation_cutoff` truncates only the first layers.
    """
    # 1. Check inputs.
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if seed + batch_size - 1 > MAX_SEED:
        raise ValueError(f"seeds {seed}..{seed + batch_size - 1} exceed the maximum seed {MAX_SEED}.")
    if truncation_cutoff is not None and not 0 < truncation_cutoff <= generator.num_ws:
        raise ValueError(f"truncation_cutoff {truncation_cutoff} is out of range; expected 1..{generator.num_ws} "
                         f"(or None for all layers).")

    # 2. Draw z per seed on the CPU and map one seed at a time, as the official script does: a batched matrix
    # product can round differently from a single row, and seed N must give exactly the official latent.
    device = generator.mapping.fc0.weight.device
    ws_list = []
    for index in range(batch_size):
        z = seed_to_z(seed + index, generator.z_dim).to(device)
        c = class_label(generator, class_index, 1)
        c = c.to(device) if c is not None else None
        ws_list.append(generator.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff))
    ws = torch.cat(ws_list)  # [B, num_ws, w_dim]

    # 3. Keep W when all layers are equal.
    meta = {"seeds": list(range(seed, seed + batch_size)), "truncation_psi": truncation_psi,
            "generator_path": getattr(generator, "source", {}).get("path"),
            "truncation_cutoff": truncation_cutoff, "class_index": class_index if generator.c_dim else None}
    if truncation_cutoff is None or truncation_psi == 1:
        return StyleGANLatent(ws[:, 0].float().cpu(), "W", generator.num_ws, generator.w_dim,
                              generator.fingerprint, meta)
    return StyleGANLatent(ws.float().cpu(), "W+", generator.num_ws, generator.w_dim, generator.fingerprint, meta)


def to_image_layout(images: torch.Tensor) -> torch.Tensor:
    """Convert generator output [B, C, H, W] (about -1..1) to ComfyUI IMAGE [B, H, W, C] float32 0..1 on the CPU.

    Uses the official quantisation (x * 127.5 + 128, clamped), so a PNG saved by SaveImage has the same pixel
    values as gen_images.py writes.
    """
    images = (images.float() * 127.5 + 128).clamp(0, 255) / 255
    images = images.permute(0, 2, 3, 1).cpu()
    if images.shape[-1] == 1:
        images = images.repeat(1, 1, 1, 3)
    return images.contiguous()


@torch.no_grad()
def generate_images(generator, latent: StyleGANLatent, noise_mode: str = "const", noise_seed: int = 0,
                    chunk_size: int = 8, where: str = "", translate: tuple[float, float] = (0.0, 0.0),
                    rotate: float = 0.0) -> torch.Tensor:
    """Render a latent batch to IMAGE [B, H, W, C], `chunk_size` images at a time, with progress.

    `translate` (in image widths) and `rotate` (degrees) move StyleGAN3's input grid as gen_images.py
    --translate/--rotate do; a StyleGAN2 generator has no input grid and accepts only zeros.
    """
    latent.check_generator(generator, where=where)
    if translate != (0.0, 0.0) or rotate != 0.0:
        if getattr(generator, "architecture_name", "") != "stylegan3":
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}translate and rotate apply only to StyleGAN3 generators; this one is "
                             f"{getattr(generator, 'architecture_name', type(generator).__name__)}. Set them to 0.")
        from .stylegan3 import set_input_transform

        generator = set_input_transform(generator, translate[0], translate[1], rotate)
    device = generator.mapping.fc0.weight.device
    ws = latent.ws()
    noise_generator = torch.Generator(device=device).manual_seed(noise_seed) if noise_mode == "random" else None
    progress = host.ProgressBar(ws.shape[0])
    outputs = []
    for start in range(0, ws.shape[0], chunk_size):
        host.check_interrupted()
        chunk = ws[start:start + chunk_size].to(device)
        images = generator.synthesis(chunk, noise_mode=noise_mode, noise_generator=noise_generator)
        outputs.append(to_image_layout(images))
        progress.update(chunk.shape[0])
    return torch.cat(outputs)
