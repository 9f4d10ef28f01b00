"""Writers of small CLIP models in the real file layouts, for the demo models and tests (nothing is downloaded).

- `write_tiny_clip`: an untrained open_clip model in the Hugging Face open_clip folder layout
  (`open_clip_config.json` + `open_clip_model.safetensors`), with the real 49408-token BPE vocabulary.
- `write_openai_jit`: a TorchScript archive laid out as OpenAI's `ViT-B-32.pt` (traced CLIP module with the
  `input_resolution`, `context_length` and `vocab_size` constants and float16 weights).
- `write_openai_state_dict` and `write_open_clip_checkpoint`: `torch.save` files of a state dict and of an
  open_clip training checkpoint (`{"epoch", "name", "state_dict": {"module.<name>": ...}}`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .clip_models import CONFIG_FILE_NAME

logger = logging.getLogger(__name__)

DEMO_CLIP_FOLDER = "demo-untrained-tiny-clip"
TINY_CLIP_WEIGHTS = "open_clip_model.safetensors"

# A small ViT CLIP with CLIP's real text interface (77-token context, 49408-token vocabulary).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                     "interpolation": "bicubic", "resize_mode": "shortest"}


def make_clip(model_cfg: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """Build an open_clip CLIP with weights drawn from `seed`, leaving the global RNG state as it was."""
    from open_clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**copy.deepcopy(model_cfg))
    return model.eval()


def write_tiny_clip(folder: str | os.PathLike, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    """Write an untrained CLIP (TINY_CLIP_CONFIG unless `config` is given) into `folder` and return its weights.

    Existing files are kept, so calling this again on a finished folder writes nothing.
    """
    from safetensors.torch import save_file

    config = TINY_CLIP_CONFIG if config is None else config
    folder = Path(folder)
    weights = folder / TINY_CLIP_WEIGHTS
    config_path = folder / CONFIG_FILE_NAME
    if weights.exists() and config_path.exists():
        logger.info("%s exists; kept as it is.", folder)
        return weights
    folder.mkdir(parents=True, exist_ok=True)
    model = make_clip(config, seed=seed)
    preprocess = {**OPENAI_PREPROCESS, "size": config["vision_cfg"]["image_size"]}
    document = {"model_cfg": config, "preprocess_cfg": preprocess}
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(weights), metadata={"note": "untrained StyleBridge demo CLIP", "seed": str(seed)})
    config_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return weights


def write_openai_jit(model: torch.nn.Module, path: str | os.PathLike, image_size: int) -> Path:
    """Trace an OpenAI-architecture open_clip CLIP and save it as OpenAI's TorchScript release files are laid out.

    The weights are stored in float16, and the archive's top folder is the file name's stem, as torch.jit.save
    names it.
    """
    path = Path(path)
    clip = copy.deepcopy(model).float().eval()
    context_length, vocab_size = clip.context_length, clip.vocab_size
    # OpenAI's files carry these three integers as tensors; open_clip keeps two of them as plain attributes.
    del clip.context_length, clip.vocab_size
    clip.register_buffer("input_resolution", torch.tensor(image_size))
    clip.register_buffer("context_length", torch.tensor(context_length))
    clip.register_buffer("vocab_size", torch.tensor(vocab_size))
    image = torch.zeros(1, 3, image_size, image_size)
    text = torch.zeros(1, context_length, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns that shape checks become constants and that tracing is deprecated. Both are expected here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace_module(clip, {"forward": (image, text), "encode_image": (image,),
                                               "encode_text": (text,)}, check_trace=False)
    traced = traced.half()  # open_clip's openai.py notes that OpenAI's weights are stored in float16.
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def write_openai_state_dict(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save the model's state dict with torch.save (OpenAI's key layout, as `clip.load(jit=False)` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def write_open_clip_checkpoint(model: torch.nn.Module, path: str | os.PathLike, epoch: int = 1,
                               run_name: str = "stylebridge-test") -> Path:
    """Save an open_clip training checkpoint (`module.` prefixes from DistributedDataParallel, as open_clip has)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"epoch": epoch, "name": run_name, "state_dict": state}, path)
    return path
