"""Write a tiny, untrained Stable Diffusion pipeline folder that exercises the real diffusers code path offline.

The folder has the Stable Diffusion 1.x layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/) with safetensors weights, so `models.diffusion.load_pipeline` and diffusers'
`StableDiffusionPipeline.from_pretrained` load it like a real checkpoint. Its weights are random, so its
images are noise-like: it exists for demos and tests that must run without downloads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

logger = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# CLIP's context length; Stable Diffusion pads every prompt to this many tokens.
MAX_TOKENS = 77
# Word-final tokens carry this suffix in CLIP's BPE vocabulary ("a</w>" is the word "a").
END_OF_WORD = "</w>"

# Stable Diffusion 1.x noise schedule, as stored in its scheduler/scheduler_config.json. clip_sample=False is kept
# so that schedulers built from this config with from_config (DDIM in particular) do not clip latents.
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}

# Stable Diffusion's latent scaling factor (AutoencoderKL.config.scaling_factor of SD 1.x).
SD_VAE_SCALING_FACTOR = 0.18215

README_TEXT = """# UNTRAINED tiny Stable Diffusion pipeline

Written by `stylebridge.models.demo_diffusion.write_tiny_sd_pipeline(folder, seed={seed})`.

The weights are random (seed {seed}), so every image it makes is noise-like, whatever the prompt. The folder exists
to run the real diffusers code path (loading, text encoding, denoising, VAE decoding, image-to-image) offline,
in demos and tests. For real images, put a Stable Diffusion 1.x or 2.x diffusers folder next to this one.

Layout: Stable Diffusion 1.x (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), weights in
safetensors. The VAE downsamples by 8 like SD's, so widths and heights are multiples of 8. The tokenizer has a
byte-level character vocabulary with no BPE merges, so it tokenizes any text, one token per byte.
"""


def build_clip_vocabulary() -> dict[str, int]:
    """Build a CLIP byte-level vocabulary without merges: 256 byte symbols, their word-final forms, BOS and EOS.

    Returns:
        Token to id mapping with 514 entries; the ids of BOS and EOS are 512 and 513.
    """
    symbols = sorted(ByteLevel.alphabet())  # the 256 printable stand-ins for bytes that byte-level BPE uses
    tokens = symbols + [symbol + END_OF_WORD for symbol in symbols] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def _build_tokenizer(vocabulary: dict[str, int]) -> CLIPTokenizer:
    return CLIPTokenizer(vocab=vocabulary, merges=[], model_max_length=MAX_TOKENS)


def _build_text_encoder(vocabulary: dict[str, int]) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(vocabulary),
        hidden_size=32,                         # SD 1.x: 768.
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=32,
        bos_token_id=vocabulary[BOS_TOKEN],
        eos_token_id=vocabulary[EOS_TOKEN],     # The pooled output is read at the first EOS token.
        pad_token_id=vocabulary[EOS_TOKEN],     # The tokenizer pads with EOS, as SD 1.x's does.
    )
    return CLIPTextModel(config)


def _build_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,                          # Latent side for 64 px images, the pipeline's default size.
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Cross-attention only at the lower resolution keeps attention cheap at 512 px (1024 tokens, not 4096).
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,                   # diffusers reads this as the number of heads.
        norm_num_groups=8,
    )


def _build_vae() -> AutoencoderKL:
    # Four blocks give the pipeline a VAE scale factor of 2 ** 3 = 8, as in Stable Diffusion.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=SD_VAE_SCALING_FACTOR,
    )


def build_tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Build a tiny untrained Stable Diffusion pipeline on the CPU in float32, with weights drawn from `seed`.

    The global torch random state is left as it was.
    """
    vocabulary = build_clip_vocabulary()
    tokenizer = _build_tokenizer(vocabulary)
    scheduler = PNDMScheduler.from_config(SD_SCHEDULER_CONFIG)

    # Weights are initialized from torch's global generator, so seed a forked copy of it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = _build_text_encoder(vocabulary)
        unet = _build_unet(cross_attention_dim=text_encoder.config.hidden_size)
        vae = _build_vae()

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_tiny_sd_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny untrained Stable Diffusion pipeline (5 MB) into `folder` as a diffusers folder.

    Writing twice with the same seed gives byte-identical safetensors files. Files already in `folder` with the
    same names are replaced. Besides the diffusers files, the folder gets README.md, which marks the weights as
    untrained, and tokenizer/vocab.json and tokenizer/merges.txt, which tokenizer loaders that do not read
    tokenizer.json need.

    Args:
        folder: Output folder; created with its parents when missing.
        seed: Seed of the random weights.

    Returns:
        The folder, as an absolute path.
    """
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)

    pipeline = build_tiny_sd_pipeline(seed)
    pipeline.save_pretrained(folder, safe_serialization=True)

    tokenizer_folder = folder / "tokenizer"
    vocabulary = build_clip_vocabulary()
    (tokenizer_folder / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    # A BPE merges file with the version header and no merges: every word splits into byte symbols.
    (tokenizer_folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")

    (folder / "README.md").write_text(README_TEXT.format(seed=seed), encoding="utf-8")
    logger.info("Wrote an untrained tiny Stable Diffusion pipeline (seed %d) to %s", seed, folder)
    return folder
