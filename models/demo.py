"""Demo models: small UNTRAINED networks written offline with fixed seeds, so workflows and tests run anywhere.

Their images are noise-like patterns, not faces; they exist to exercise the real loading and sampling code.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .checkpoint_writers import make_generator, make_stylegan3_generator, write_nvidia_pickle, write_rosinality
from .checkpoints import save_safetensors
from .stylegan2 import StyleGAN2Config
from .stylegan3 import StyleGAN3Config

logger = logging.getLogger(__name__)

# The main demo generator, written in all three formats with the same weights (so the same fingerprint).
DEMO_STYLEGAN2 = StyleGAN2Config(z_dim=64, w_dim=64, img_resolution=64, channels=[128, 128, 64, 32, 32],
                                 architecture="skip", conv_clamp=None, num_fp16_res=0, mapping_layers=4)
# A conditional StyleGAN2-ADA-like generator with the resnet architecture and conv_clamp, as an NVIDIA pickle.
DEMO_CONDITIONAL = StyleGAN2Config(z_dim=64, c_dim=4, w_dim=64, img_resolution=32, channels=[64, 64, 32, 32],
                                   architecture="resnet", conv_clamp=256, num_fp16_res=2, mapping_layers=2)
# A StyleGAN3-T generator, as an NVIDIA pickle, for the StyleGAN3 paths (input transform, style space, StyleCLIP).
DEMO_STYLEGAN3 = StyleGAN3Config.for_variant("t", z_dim=64, w_dim=64, img_resolution=64, channel_base=2048,
                                             channel_max=64, num_layers=8, num_critical=2, mapping_layers=2)

DEMO_STYLEGAN_FILES = {
    "demo-untrained-sg2-64.pkl": "nvidia",
    "demo-untrained-sg2-64-rosinality.pt": "rosinality",
    "demo-untrained-sg2-64.safetensors": "safetensors",
    "demo-untrained-sg2-cond-32.pkl": "nvidia-conditional",
    "demo-untrained-sg3-t-64.pkl": "nvidia-stylegan3",
}
DEMO_DIFFUSERS_FOLDER = "demo-untrained-tiny-sd"


def write_demo_stylegan(folder: Path, seed: int = 0) -> list[Path]:
    """Write the demo StyleGAN checkpoints into `folder`; existing files are kept, never overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = make_generator(DEMO_STYLEGAN2, seed=seed)
    conditional = make_generator(DEMO_CONDITIONAL, seed=seed + 1)
    writers = {
        "nvidia": lambda path: write_nvidia_pickle(generator, path),
        "rosinality": lambda path: write_rosinality(generator, path),
        "safetensors": lambda path: save_safetensors(generator, path, extra_metadata={"note": "untrained demo"}),
        "nvidia-conditional": lambda path: write_nvidia_pickle(conditional, path),
        "nvidia-stylegan3": lambda path: write_nvidia_pickle(make_stylegan3_generator(DEMO_STYLEGAN3, seed=seed + 2),
                                                             path),
    }
    written = []
    for name, kind in DEMO_STYLEGAN_FILES.items():
        path = folder / name
        if path.exists():
            logger.info("%s exists; kept as it is.", path)
            continue
        writers[kind](path)
        written.append(path)
    return written


def _write_folder_once(folder: Path, writer) -> list[Path]:
    """Write a model folder with `writer(path)` unless it exists; return [folder] when written, else [].

    The writer fills a temporary folder that is renamed at the end, so an interrupted write leaves no half model
    behind under the final name.
    """
    if folder.exists():
        logger.info("%s exists; kept as it is.", folder)
        return []
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer(partial)
    partial.rename(folder)
    return [folder]


def write_demo_models(seed: int = 0) -> dict[str, list[Path]]:
    """Write every demo model into the model folders (host.model_folders), keeping files that exist."""
    from ..runtime import host
    from .clip_writers import DEMO_CLIP_FOLDER, write_tiny_clip
    from .demo_diffusion import write_tiny_sd_pipeline

    return {
        "stylegan": write_demo_stylegan(host.model_folders("stylegan")[0], seed=seed),
        "diffusers": _write_folder_once(host.model_folders("diffusers")[0] / DEMO_DIFFUSERS_FOLDER,
                                        lambda path: write_tiny_sd_pipeline(path, seed=seed)),
        "clip": _write_folder_once(host.model_folders("clip")[0] / DEMO_CLIP_FOLDER,
                                   lambda path: write_tiny_clip(path, seed=seed)),
    }
