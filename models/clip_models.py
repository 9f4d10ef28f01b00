"""CLIP models for StyleCLIP: load OpenAI and open_clip weights into open_clip's model classes, tokenize, encode.

Files are read from the "clip" model folder and never downloaded. Accepted layouts:

- OpenAI's original release, such as `ViT-B-32.pt`: a TorchScript archive. Its tensors are read as data
  (models.torchscript_archive), never with `torch.jit.load`, and the architecture is inferred from the tensor
  shapes as OpenAI's `build_model` does (QuickGELU activations).
- A state dict in OpenAI's key layout (`visual.conv1.weight`, `token_embedding.weight`, ...), in a `.pt`/`.pth`/
  `.bin` file read with `torch.load(weights_only=True)` or in a `.safetensors` file.
- An open_clip checkpoint: a state dict, or a training checkpoint `{"state_dict": {"module.<name>": ...}}`, plus
  the architecture, either as an open_clip model name (`model_name`, e.g. "ViT-B-32") or as the
  `open_clip_config.json` that Hugging Face open_clip repositories keep beside the weights.

Text towers that need a Hugging Face tokenizer (SigLIP, XLM-RoBERTa, ...) are rejected, because their tokenizers
would have to be downloaded. open_clip's own BPE tokenizer ships its vocabulary inside the package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .messages import error_reason
from .safe_pickle import TorchFileError, load_torch_data
from .torchscript_archive import is_torchscript_archive, read_torchscript_state_dict

logger = logging.getLogger(__name__)

CLIP_FOLDER = "clip"
CONFIG_FILE_NAME = "open_clip_config.json"
AUTO_MODEL_NAME = "auto"
# Weight files looked for, in this order, inside a folder that contains open_clip_config.json (open_clip's names).
FOLDER_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                       "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                       "pytorch_model.bin")
# Entries of OpenAI's TorchScript files that are constants, not weights (OpenAI's build_model drops them too).
_OPENAI_CONSTANT_KEYS = ("input_resolution", "context_length", "vocab_size")


class CLIPLoadError(ValueError):
    """Raised when a CLIP file cannot be read or does not match the requested architecture."""


class PromptError(ValueError):
    """Raised for an empty prompt or one longer than the CLIP model's context length."""


def open_clip_model_names() -> list[str]:
    """open_clip's built-in architecture names, read from its model_configs folder without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return sorted(path.stem for path in folder.glob("*.json"))


@functools.lru_cache(maxsize=4)
def simple_tokenizer(context_length: int, clean: str = "lower"):
    """open_clip's BPE tokenizer (the vocabulary ships inside the open_clip package), cached per context length."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length, clean=clean)


@dataclass(eq=False)
class CLIPModel:
    """A CLIP model with its tokenizer and image preprocessing (the OPEN_CLIP socket's value)."""

    model: torch.nn.Module                  # open_clip CLIP (or CustomTextCLIP), eval mode, no gradients.
    context_length: int                     # Text tokens per prompt, including the start and end tokens.
    image_size: int                         # Side of the square image the vision tower takes, in pixels.
    mean: tuple[float, float, float]        # Per-channel normalisation of 0..1 RGB images.
    std: tuple[float, float, float]
    name: str                               # Architecture description for messages ("ViT-B-32 (OpenAI)").
    source: dict[str, Any] = field(default_factory=dict)  # path and format of the weights file.
    tokenizer_clean: str = "lower"          # open_clip's text cleaning mode.
    _fingerprint: str | None = None
    # Results of callers that encode fixed texts repeatedly (StyleCLIP's 79 templates per prompt), by their key.
    text_cache: dict = field(default_factory=dict, repr=False)

    @property
    def tokenizer(self):
        return simple_tokenizer(self.context_length, self.tokenizer_clean)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        projection = self.model.text_projection
        if isinstance(projection, torch.nn.Linear):
            return projection.out_features
        return projection.shape[1]

    @property
    def fingerprint(self) -> str:
        """Hex digest of the weights, used to key caches of results that depend on this model."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    # Text.

    def token_count(self, text: str) -> int:
        """Number of tokens `text` takes, including the start and end tokens."""
        return len(self.tokenizer.encode(text)) + 2

    def check_prompt(self, text: str, input_name: str, where: str = "", templates: tuple[str, ...] = ("{}",)) -> None:
        """Raise PromptError unless `text` is non-empty and every template filled with it fits the context.

        Args:
            text: the prompt.
            input_name: the input's name for the message ("target_prompt").
            where: node or command name for the message.
            templates: format strings the prompt is put into, such as StyleCLIP's ImageNet templates.
        """
        prefix = f"{where}: " if where else ""
        if not text or not text.strip():
            raise PromptError(f"{prefix}{input_name} is empty. Describe the image in words, for example 'a face' or "
                              f"'a smiling face'.")
        own = len(self.tokenizer.encode(text))
        longest_template = max(templates, key=lambda template: self.token_count(template.format(text)))
        longest = self.token_count(longest_template.format(text))
        if longest > self.context_length:
            allowed = self.context_length - (longest - own)
            template_text = "" if longest_template == "{}" else f" in the prompt template {longest_template!r}"
            raise PromptError(f"{prefix}{input_name} is too long: it gives {longest} tokens{template_text}, counting "
                              f"CLIP's start and end tokens, but {self.name} reads at most {self.context_length}. "
                              f"Shorten the prompt from {own} to at most {allowed} tokens; CLIP would otherwise "
                              f"cut off its end.")

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids [N, context_length] on the model's device. Call check_prompt first, because this truncates."""
        return self.tokenizer(texts, context_length=self.context_length).to(self.device)

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Text features [N, embed_dim] (not normalised), in float32."""
        features = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenize(texts[start:start + batch_size])
                features.append(self.model.encode_text(tokens).float())
        return torch.cat(features)

    # Images.

    def preprocess_generator_images(self, images: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        """Turn generator output [N, C, H, W] (about -1..1) into the vision tower's input, differentiably.

        Maps to 0..1, center-crops to a square, resizes with antialiased bicubic interpolation (as open_clip's
        PIL preprocessing does) and normalises by the model's mean and std. `clamp` clips to 0..1 as a uint8
        conversion would; leave it off when gradients must flow through saturated pixels.
        """
        assert images.ndim == 4, f"images must be [N, C, H, W], got {list(images.shape)}"
        x = (images.float() + 1) / 2
        if clamp:
            x = x.clamp(0, 1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        height, width = x.shape[2:]
        if height != width:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            x = x[:, :, top:top + side, left:left + side]
        if x.shape[2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_generator_images(self, images: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        """Image features [N, embed_dim] (not normalised) of generator output in -1..1; keeps gradients."""
        pixels = self.preprocess_generator_images(images.to(self.device), clamp=clamp)
        return self.model.encode_image(pixels).float()


# ---------------------------------------------------------------------------------------------------------------------
# Reading weights.


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Return (state dict, format name) of a weights file, reading everything as data."""
    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path), "openai-jit"
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except SafetensorError as exc:
            raise CLIPLoadError(f"Could not read CLIP weights: {path} is not a valid safetensors file ({exc}). "
                                f"Download the weights again.") from None
    try:
        data = load_torch_data(path)
    except TorchFileError as error:
        raise CLIPLoadError(f"Could not read CLIP weights: {error}. Expected "
                            f"OpenAI's TorchScript .pt, a state dict saved with torch.save, an open_clip checkpoint "
                            f"or .safetensors; download the weights again.") from None
    file_format = "state-dict"
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
        file_format = "open_clip-checkpoint"
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CLIPLoadError(f"{path} does not contain a CLIP state dict (found {type(data).__name__}); expected a "
                            f"dict of tensors or {{'state_dict': ...}}.")
    if all(key.startswith("module.") for key in data):
        data = {key[len("module."):]: value for key, value in data.items()}
    return data, file_format


def is_openai_layout(state: dict[str, torch.Tensor]) -> bool:
    """True for OpenAI's key layout, which open_clip's CLIP class shares (ViT or ModifiedResNet vision tower)."""
    has_vision = "visual.proj" in state or "visual.attnpool.positional_embedding" in state
    return has_vision and "token_embedding.weight" in state and "text_projection" in state


def openai_model_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer an open_clip model config from an OpenAI-layout state dict, by the rules of OpenAI's build_model."""
    if "visual.proj" in state:
        width = state["visual.conv1.weight"].shape[0]
        layers = len([key for key in state if key.startswith("visual.") and key.endswith(".attn.in_proj_weight")])
        patch_size = state["visual.conv1.weight"].shape[-1]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {"layers": layers, "width": width, "patch_size": patch_size, "image_size": patch_size * grid}
    else:
        counts = [len({key.split(".")[2] for key in state if key.startswith(f"visual.layer{block}")})
                  for block in (1, 2, 3, 4)]
        output_width = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {"layers": counts, "width": state["visual.layer1.0.conv1.weight"].shape[0],
                  "image_size": output_width * 32}
    text_width = state["ln_final.weight"].shape[0]
    text = {
        "context_length": state["positional_embedding"].shape[0],
        "vocab_size": state["token_embedding.weight"].shape[0],
        "width": text_width,
        "heads": text_width // 64,
        "layers": len({key.split(".")[2] for key in state if key.startswith("transformer.resblocks")}),
    }
    return {"embed_dim": state["text_projection"].shape[1], "vision_cfg": vision, "text_cfg": text,
            "quick_gelu": True}


def _check_tokenizer_is_local(model_cfg: dict[str, Any], description: str) -> None:
    text_cfg = model_cfg.get("text_cfg", {})
    for key in ("hf_tokenizer_name", "hf_model_name"):
        if text_cfg.get(key):
            raise CLIPLoadError(f"{description} uses the Hugging Face text model {text_cfg[key]!r}, whose tokenizer "
                                f"would have to be downloaded. StyleBridge supports CLIP text towers with open_clip's "
                                f"built-in tokenizer (the OpenAI and LAION ViT and ResNet models).")


def _registry_config(model_name: str) -> dict[str, Any]:
    import open_clip

    config = open_clip.get_model_config(model_name)
    if config is None:
        known = open_clip.list_models()
        raise CLIPLoadError(f"Unknown open_clip model_name {model_name!r}; use 'auto' or one of open_clip's "
                            f"{len(known)} model names, such as {', '.join(known[:6])}, ... (open_clip.list_models()).")
    return config


def _build_model(model_cfg: dict[str, Any], description: str) -> torch.nn.Module:
    """Build an open_clip model from a config dict, with random weights (nothing is downloaded)."""
    from open_clip.model import CLIP, CustomTextCLIP

    _check_tokenizer_is_local(model_cfg, description)
    config = dict(model_cfg)
    unsupported = sorted(set(config) & {"multimodal_cfg"})
    if unsupported:
        raise CLIPLoadError(f"{description} is a CoCa-style model ({unsupported}). StyleBridge supports contrastive "
                            f"CLIP models only.")
    custom_text = config.pop("custom_text", False)
    for key in ("hf_hub_id", "pretrained_cfg"):
        config.pop(key, None)
    model_class = CustomTextCLIP if custom_text else CLIP
    try:
        return model_class(**config)
    except (TypeError, ValueError, KeyError) as exc:
        raise CLIPLoadError(f"Could not build {description} from its config: {type(exc).__name__}: "
                            f"{error_reason(exc)}.") from exc


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    from open_clip.model import CustomTextCLIP, convert_to_custom_text_state_dict

    state = {key: value for key, value in state.items() if key not in _OPENAI_CONSTANT_KEYS}
    if isinstance(model, CustomTextCLIP) and "positional_embedding" in state:
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    expected = model.state_dict()
    # TorchScript archives list non-persistent buffers such as open_clip's `attn_mask` with the real buffers.
    non_persistent = {name for name, _ in model.named_buffers()} - set(expected)
    state = {key: value for key, value in state.items() if key not in non_persistent}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (first: {', '.join(missing[:4])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:4])})")
        if wrong_shape:
            key = wrong_shape[0]
            details.append(f"{len(wrong_shape)} with another shape (first: {key} is {list(state[key].shape)} in "
                           f"the file, {list(expected[key].shape)} in {name})")
        raise CLIPLoadError(f"The weights in {path} do not fit {name}: {'; '.join(details)}. Choose the matching "
                            f"model_name, or 'auto' for OpenAI files and folders with {CONFIG_FILE_NAME}.")
    model.load_state_dict(state, strict=True)


def _json_type(value: Any) -> str:
    """JSON's name for the type of a parsed value ("array" for a list)."""
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(type(value), "null")


def _read_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read open_clip_config.json: the model config (`model_cfg`, or the whole document) and `preprocess_cfg`."""
    fix = (f"Restore {CONFIG_FILE_NAME} from the model's repository, or delete it and pass model_name (an "
           f"open_clip name such as ViT-B-32).")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CLIPLoadError(f"{path} is not valid JSON ({exc}). {fix}") from None
    if not isinstance(document, dict):
        raise CLIPLoadError(f"{path} contains a JSON {_json_type(document)}; expected an object with "
                            f"model_cfg. {fix}")

    # open_clip's Hugging Face folders nest the model config under model_cfg; its own model configs are the bare
    # model config.
    if "model_cfg" in document:
        model_cfg = document["model_cfg"]
    else:
        model_cfg = {key: value for key, value in document.items() if key != "preprocess_cfg"}
    preprocess = document.get("preprocess_cfg", {})
    for key, value in (("model_cfg", model_cfg), ("preprocess_cfg", preprocess)):
        if not isinstance(value, dict):
            raise CLIPLoadError(f"{path}: {key} is a JSON {_json_type(value)}; expected an object. {fix}")

    # The fields open_clip's CLIP constructor needs; anything else wrong surfaces when the model is built.
    if "embed_dim" not in model_cfg:
        raise CLIPLoadError(f"{path} has no model_cfg with embed_dim, vision_cfg and text_cfg. {fix}")
    if not isinstance(model_cfg["embed_dim"], int) or isinstance(model_cfg["embed_dim"], bool):
        raise CLIPLoadError(f"{path}: embed_dim is {model_cfg['embed_dim']!r}; expected a whole number such as 512. "
                            f"{fix}")
    for key in ("vision_cfg", "text_cfg"):
        if not isinstance(model_cfg.get(key), dict):
            found = "missing" if key not in model_cfg else f"a JSON {_json_type(model_cfg[key])}"
            raise CLIPLoadError(f"{path}: model_cfg.{key} is {found}; expected an object. {fix}")
    return model_cfg, dict(preprocess)


def _config_beside(path: Path) -> Path | None:
    candidate = (path if path.is_dir() else path.parent) / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def _weights_in_folder(folder: Path) -> Path:
    for name in FOLDER_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise CLIPLoadError(f"{folder} has {CONFIG_FILE_NAME} but no weights file; expected one of "
                        f"{', '.join(FOLDER_WEIGHT_NAMES)}.")


def load_clip(path: str | os.PathLike, model_name: str = AUTO_MODEL_NAME,
              device: str | torch.device = "cpu") -> CLIPModel:
    """Load CLIP weights into an open_clip model in float32, eval mode, without gradients.

    Args:
        path: weights file, or a folder with open_clip_config.json and weights (Hugging Face open_clip layout).
        model_name: "auto" (OpenAI layout inferred from the tensors, or open_clip_config.json beside the file),
            or an open_clip architecture name such as "ViT-B-32" for bare open_clip state dicts.
        device: where the model runs.

    Raises:
        FileNotFoundError: when `path` does not exist.
        CLIPLoadError: when the file is not CLIP weights or does not fit the architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CLIP weights not found: {path}. Put OpenAI's ViT-B-32.pt or an open_clip "
                                f"checkpoint in the {CLIP_FOLDER} model folder.")
    weights_path = _weights_in_folder(path) if path.is_dir() else path

    # 1. Read the tensors.
    state, file_format = _read_weights(weights_path)

    # 2. Decide the architecture and preprocessing.
    preprocess: dict[str, Any] = {}
    config_path = _config_beside(path)
    if model_name != AUTO_MODEL_NAME:
        model_cfg = _registry_config(model_name)
        name = model_name
    elif config_path is not None:
        model_cfg, preprocess = _read_config(config_path)
        name = f"{weights_path.parent.name} ({CONFIG_FILE_NAME})"
    elif is_openai_layout(state):
        model_cfg = openai_model_config(state)
        name = f"OpenAI-layout CLIP from {weights_path.name}"
        if file_format != "openai-jit":
            logger.warning("%s has no %s and no model_name was given, so its architecture was inferred as an "
                           "OpenAI CLIP with QuickGELU. LAION open_clip weights use GELU: pass model_name (for "
                           "example ViT-B-32) for those.", weights_path, CONFIG_FILE_NAME)
    else:
        raise CLIPLoadError(f"Cannot tell the architecture of {weights_path}: it is not in OpenAI's layout and has "
                            f"no {CONFIG_FILE_NAME} beside it. Pass model_name (an open_clip name such as "
                            f"ViT-B-32).")

    # 3. Build and load.
    model = _build_model(model_cfg, name)
    _load_state(model, state, weights_path, name)
    model = model.float().eval().requires_grad_(False).to(device)

    image_size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if image_size[0] != image_size[1]:
            raise CLIPLoadError(f"{name} takes {image_size[0]} x {image_size[1]} images; only square inputs are "
                                f"supported.")
        image_size = image_size[0]
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    text_cfg = model_cfg.get("text_cfg", {})
    clip = CLIPModel(
        model=model,
        context_length=int(text_cfg.get("context_length", 77)),
        image_size=int(image_size),
        mean=tuple(float(v) for v in preprocess.get("mean", OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in preprocess.get("std", OPENAI_DATASET_STD)),
        name=name,
        source={"path": str(weights_path), "format": file_format},
        tokenizer_clean=text_cfg.get("tokenizer_kwargs", {}).get("clean", "lower"),
    )
    logger.info("Loaded CLIP %s from %s (%s, %d px, %d-dim features).", name, weights_path, file_format,
                clip.image_size, clip.embed_dim)
    return clip
