"""Helpers shared by the model tests."""

import hashlib

import pytest
import torch

from stylebridge.models.stylegan2 import StyleGAN2Config


def state_hash(module: torch.nn.Module) -> str:
    """Return a SHA-256 digest of a module's state dict, to show that a call left the module unchanged."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# A StyleGAN2 generator small enough for StyleCLIP tests: 5 convolution style layers with 16 + 16 + 16 + 16 + 8 =
# 72 channels, and 8 style layers in all, ToRGB included.
SMALL_STYLEGAN2 = StyleGAN2Config(z_dim=16, w_dim=16, img_resolution=16, channels=[16, 16, 8], architecture="skip",
                                  conv_clamp=None, num_fp16_res=0, mapping_layers=2)

# An open_clip configuration small enough for tests: 32-dimensional embeddings, one layer per tower.
SMALL_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}

# fs3 settings small enough for tests: 2 images per channel, statistics from 256 latents.
SMALL_FS3_SETTINGS = {"num_images": 2, "num_samples": 256, "batch_size": 64}


def small_clip(folder):
    """Write and load an untrained CLIP model with SMALL_CLIP_CONFIG in `folder`."""
    from stylebridge.models.clip_models import load_clip
    from stylebridge.models.clip_writers import write_tiny_clip

    return load_clip(write_tiny_clip(folder, seed=0, config=SMALL_CLIP_CONFIG))


def computed_channel_data(generator, clip, cache_folder):
    """Compute fs3 with SMALL_FS3_SETTINGS, caching in `cache_folder` instead of the user's cache."""
    from stylebridge.models.styleclip_channels import compute_channel_data

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLEBRIDGE_CACHE_DIR", str(cache_folder))
        return compute_channel_data(generator, clip, **SMALL_FS3_SETTINGS)
