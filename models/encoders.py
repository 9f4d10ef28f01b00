"""Load pSp and e4e encoder checkpoints and encode images to W+ latents of a connected StyleGAN2 generator.

File layout, as written by the training code of eladrich/pixel2style2pixel and omertov/encoder4editing (a dict
saved with torch.save):
- `state_dict`: `encoder.*` (the encoder network, see `encoder_networks`) and `decoder.*` (a rosinality
  stylegan2-pytorch generator, the StyleGAN2 the encoder was trained against);
- `latent_avg`: the average W, [num_ws, w_dim] or [1, w_dim] (absent when training did not use it);
- `opts`: the training options, a dict (or an argparse.Namespace in some files).

Files are read with `torch.load(weights_only=True)`, allowing argparse.Namespace only, so nothing in them runs.
The decoder is converted to a `stylegan2.Generator` and compared with the generator connected at encode time:
latents are only valid when the generator's mapping or synthesis weights equal the decoder's.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..runtime import host
from .checkpoint_writers import rosinality_state_dict
from .checkpoints import CheckpointError, detect_format, generator_from_rosinality
from .encoder_networks import (
    E4E_ENCODER_TYPES,
    IR_SE_50,
    PSP_ENCODER_TYPES,
    BackboneConfig,
    build_encoder_network,
)
from .latents import StyleGANLatent
from .safe_pickle import TorchFileError, load_torch_data
from .stylegan2 import Generator

logger = logging.getLogger(__name__)

KINDS = ("e4e", "psp")
# The repositories resize every input to 256 x 256, except e4e's car encoders, which take 192 x 256 (H x W).
INPUT_SIZE = 256
CARS_INPUT_SHAPE = (192, 256)
# Key in `opts` recording a backbone other than IR-SE50 (written by `write_encoder_checkpoint` for small test models).
BACKBONE_OPTION = "stylebridge_backbone"
# Relative tolerance for "the same weights": loose enough for fp16 copies, far below any retraining difference.
WEIGHT_TOLERANCE = 1e-3
# Default training choices of each repository, used when `opts` omits them.
_DEFAULT_ENCODER_TYPE = {"e4e": "Encoder4Editing", "psp": "GradualStyleEncoder"}
_SIZE_OPTION = {"e4e": "stylegan_size", "psp": "output_size"}


class EncoderCheckpointError(CheckpointError):
    """Raised when an encoder checkpoint is missing, damaged, unsafe or not a pSp / e4e file."""


class EncoderMismatchError(ValueError):
    """Raised when an encoder's decoder is not the connected generator, so its latents would mean nothing there."""


# ---------------------------------------------------------------------------------------------------------------------
# The encoder.


@dataclass
class Encoder:
    """A loaded pSp or e4e encoder: the network, its decoder generator and how to turn its output into W+.

    `decoder` stays on the CPU in fp32 and is the reference the connected generator is checked against.
    """

    kind: str                          # 'e4e' or 'psp': the repository whose training code wrote the file.
    encoder_type: str                  # The `encoder_type` option, e.g. 'Encoder4Editing' or 'GradualStyleEncoder'.
    network: torch.nn.Module           # Encoder network in eval mode on `device`.
    decoder: Generator                 # The StyleGAN2 generator the encoder was trained against.
    latent_avg: torch.Tensor | None    # Average W, [1 or num_ws, w_dim], on the CPU.
    start_from_latent_avg: bool        # Whether latent_avg is added to the network output.
    input_shape: tuple[int, int]       # (height, width) the image is resized to.
    source: str = ""                   # Checkpoint path.
    opts: dict[str, Any] = field(default_factory=dict)  # Training options stored in the file.
    _accepted_fingerprints: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def input_size(self) -> int:
        """Side of the encoder input in pixels (256). For the non-square car encoders it is the width."""
        return self.input_shape[1]

    @property
    def num_ws(self) -> int:
        return self.decoder.num_ws

    @property
    def w_dim(self) -> int:
        return self.decoder.w_dim

    @property
    def decoder_fingerprint(self) -> str:
        return self.decoder.fingerprint

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def name(self) -> str:
        return Path(self.source).name if self.source else f"({self.kind} encoder)"

    def describe(self) -> str:
        """Summary for messages: file, kind, and the decoder's resolution, W+ layout and fingerprint."""
        return (f"encoder {self.name} ({self.kind} {self.encoder_type}; decoder {self.decoder.img_resolution} px, "
                f"{self.num_ws} x {self.w_dim} W+, fingerprint {self.decoder_fingerprint[:12]})")

    def check_generator(self, generator, where: str = "") -> None:
        """Raise EncoderMismatchError unless `generator` is the encoder's decoder, or shares its W+ space.

        Accepted: the same architecture, resolution and W+ layout, and either the same mapping weights (same W
        space, e.g. a copy of the decoder in another file format or fine-tuned with a frozen mapping) or the same
        synthesis weights (W+ codes render the same images even though the mapping differs).
        """
        prefix = f"{where}: " if where else ""
        fingerprint = getattr(generator, "fingerprint", None)
        if fingerprint is not None and fingerprint in self._accepted_fingerprints:
            return
        problem = _compare_with_decoder(self.decoder, generator)
        if problem is not None:
            raise EncoderMismatchError(
                f"{prefix}{self.describe()} does not match the connected generator {_describe_generator(generator)}: "
                f"{problem}. Connect the generator the encoder was trained with (its decoder is a rosinality copy "
                f"of it), or load an encoder trained for this generator.")
        # A fingerprint covers the mapping weights only, so only a mapping match may skip later comparisons.
        if fingerprint is not None and _mapping_agrees(self.decoder, generator):
            self._accepted_fingerprints.add(fingerprint)


def _describe_generator(generator) -> str:
    source = getattr(generator, "source", None) or {}
    name = Path(source["path"]).name if source.get("path") else "(unnamed)"
    architecture = getattr(generator, "architecture_name", type(generator).__name__)
    fingerprint = getattr(generator, "fingerprint", "")
    return (f"{name} ({architecture}, {getattr(generator, 'img_resolution', '?')} px, "
            f"{getattr(generator, 'num_ws', '?')} x {getattr(generator, 'w_dim', '?')} W+, "
            f"fingerprint {fingerprint[:12]})")


def _weights_agree(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
    if reference.keys() != other.keys():
        return False
    for key, tensor in reference.items():
        candidate = other[key]
        if tuple(candidate.shape) != tuple(tensor.shape):
            return False
        expected = tensor.detach().to("cpu", torch.float32)
        difference = (candidate.detach().to("cpu", torch.float32) - expected).abs().max()
        if difference > WEIGHT_TOLERANCE * expected.abs().max() + 1e-6:
            return False
    return True


def _mapping_agrees(decoder: Generator, generator) -> bool:
    # w_avg is left out because the decoder's comes from latent_avg, which the training code may have estimated.
    def weights(module):
        return {k: v for k, v in module.mapping.state_dict().items() if k != "w_avg"}

    return _weights_agree(weights(decoder), weights(generator))


def _synthesis_agrees(decoder: Generator, generator) -> bool:
    # The stored noise images and filters are fixed constants, so they do not change what a W+ code means.
    def weights(module):
        return {k: v for k, v in module.synthesis.state_dict().items()
                if not k.endswith(("noise_const", "resample_filter"))}

    return _weights_agree(weights(decoder), weights(generator))


def _compare_with_decoder(decoder: Generator, generator) -> str | None:
    """Return why `generator` cannot render the encoder's latents, or None when it can."""
    architecture = getattr(generator, "architecture_name", type(generator).__name__)
    if architecture != decoder.architecture_name:
        return f"the decoder is a StyleGAN2 generator but the connected one is {architecture}"
    if generator.img_resolution != decoder.img_resolution:
        return f"resolution {generator.img_resolution} px differs from the decoder's {decoder.img_resolution} px"
    if (generator.num_ws, generator.w_dim) != (decoder.num_ws, decoder.w_dim):
        return (f"W+ layout {generator.num_ws} x {generator.w_dim} differs from the decoder's "
                f"{decoder.num_ws} x {decoder.w_dim}")
    if _mapping_agrees(decoder, generator) or _synthesis_agrees(decoder, generator):
        return None
    return "neither its mapping nor its synthesis weights equal the decoder's"


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


def _read_file(path: Path) -> dict:
    kind = detect_format(path)
    if kind not in ("torch-zip", "torch-legacy"):
        raise EncoderCheckpointError(f"{path} is a {kind} file, but pSp and e4e checkpoints are torch files (.pt) "
                                     f"with state_dict, latent_avg and opts. Put StyleGAN checkpoints in the "
                                     f"stylegan model folder.")
    # Some files store their options as an argparse.Namespace: allow just that class.
    try:
        data = load_torch_data(path, allowed_globals=(argparse.Namespace,))
    except TorchFileError as error:
        raise EncoderCheckpointError(f"{error}. Expected a pSp or e4e checkpoint (.pt with state_dict, latent_avg "
                                     f"and opts).") from None
    if not isinstance(data, dict):
        raise EncoderCheckpointError(f"{path} contains a {type(data).__name__}, not the dict of a pSp / e4e "
                                     f"checkpoint.")
    if "g_ema" in data:
        raise EncoderCheckpointError(f"{path} is a rosinality StyleGAN generator checkpoint, not an encoder. Put it "
                                     f"in the stylegan model folder and load it with LoadStyleGAN.")
    if not isinstance(data.get("state_dict"), dict) or "opts" not in data:
        raise EncoderCheckpointError(f"{path} is not a pSp / e4e checkpoint: expected the keys state_dict and opts, "
                                     f"found {sorted(map(str, data))[:10]}.")
    return data


def _options(opts, source: str) -> dict[str, Any]:
    if isinstance(opts, argparse.Namespace):
        return dict(vars(opts))
    if isinstance(opts, dict):
        return dict(opts)
    raise EncoderCheckpointError(f"{source}: opts is a {type(opts).__name__}; expected a dict or argparse.Namespace "
                                 f"of training options.")


def _kind_and_type(opts: dict[str, Any], source: str) -> tuple[str, str]:
    """Tell e4e from pSp files by the options only each repository has, and check the encoder type."""
    encoder_type = opts.get("encoder_type")
    if "stylegan_size" in opts or encoder_type in ("Encoder4Editing", "SingleStyleCodeEncoder"):
        kind = "e4e"
    else:
        kind = "psp"
    encoder_type = encoder_type or _DEFAULT_ENCODER_TYPE[kind]
    supported = E4E_ENCODER_TYPES if kind == "e4e" else PSP_ENCODER_TYPES
    if encoder_type not in supported:
        raise EncoderCheckpointError(f"{source}: encoder_type {encoder_type!r} is not supported for {kind} "
                                     f"checkpoints; supported: {list(supported)}.")
    return kind, encoder_type


def _check_image_task(opts: dict[str, Any], source: str) -> None:
    # pSp's sketch and segmentation encoders take one-channel sketches or one-hot label maps, not photos.
    input_nc = int(opts.get("input_nc", 3))
    label_nc = int(opts.get("label_nc", 0) or 0)
    if input_nc != 3 or label_nc != 0:
        raise EncoderCheckpointError(
            f"{source}: this pSp encoder takes {input_nc}-channel input with {label_nc} label classes "
            f"(dataset_type {opts.get('dataset_type')!r}), not RGB photos. Only encoders of RGB images "
            f"(input_nc 3, label_nc 0, e.g. ffhq_encode, toonify, super-resolution) are supported.")


def _split_state(state: dict, source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    encoder_state, decoder_state, other = {}, {}, []
    for key, tensor in state.items():
        if key.startswith("encoder."):
            encoder_state[key[len("encoder."):]] = tensor
        elif key.startswith("decoder."):
            decoder_state[key[len("decoder."):]] = tensor
        else:
            other.append(key)
    if not encoder_state or not decoder_state:
        raise EncoderCheckpointError(f"{source}: state_dict must contain encoder.* and decoder.* tensors, but it "
                                     f"has {len(encoder_state)} encoder and {len(decoder_state)} decoder tensors.")
    if other:
        logger.warning("%s: ignoring %d state_dict entries outside encoder.* and decoder.* (e.g. %s).", source,
                       len(other), other[:3])
    return encoder_state, decoder_state


def _normalise_latent_avg(latent_avg, num_ws: int, w_dim: int, source: str) -> torch.Tensor | None:
    """Return latent_avg as [1, w_dim] or [num_ws, w_dim]. Files store [w_dim], [1, w_dim] or [num_ws, w_dim]."""
    if latent_avg is None:
        return None
    latent_avg = torch.as_tensor(latent_avg).detach().float().cpu()
    if latent_avg.ndim == 1:
        latent_avg = latent_avg.unsqueeze(0)
    if latent_avg.ndim != 2 or latent_avg.shape[1] != w_dim or latent_avg.shape[0] not in (1, num_ws):
        raise EncoderCheckpointError(f"{source}: latent_avg has shape {list(latent_avg.shape)}, expected [{w_dim}], "
                                     f"[1, {w_dim}] or [{num_ws}, {w_dim}] for the decoder's W+ layout.")
    return latent_avg


def _decoder_kernel_keys(state: dict[str, torch.Tensor]) -> set[str]:
    # rosinality's upsampling layers register their fixed [1, 3, 3, 1] blur filter as a buffer, so files contain it.
    return {k for k in state if k.endswith((".blur.kernel", ".upsample.kernel"))}


def _load_decoder(decoder_state: dict[str, torch.Tensor], latent_avg, source: str) -> Generator:
    w_avg = None
    if latent_avg is not None:
        latent_avg = torch.as_tensor(latent_avg).detach().float()
        w_avg = latent_avg.reshape(-1, latent_avg.shape[-1])[0]  # The stored rows repeat one vector.
    decoder = generator_from_rosinality(decoder_state, f"{source} (decoder.*)", w_avg=w_avg)
    expected = set(rosinality_state_dict(decoder))
    unexpected = sorted(set(decoder_state) - expected - _decoder_kernel_keys(decoder_state))
    if unexpected:
        raise EncoderCheckpointError(f"{source}: decoder.* has tensors a rosinality StyleGAN2 generator does not "
                                     f"have: {unexpected[:8]}; the file is not a pSp / e4e checkpoint.")
    decoder.source = {"path": source, "format": "encoder-decoder"}
    return decoder


def _backbone(opts: dict[str, Any], source: str) -> BackboneConfig:
    recorded = opts.get(BACKBONE_OPTION)
    if recorded is None:
        return IR_SE_50
    try:
        return BackboneConfig.from_dict(dict(recorded))
    except (TypeError, ValueError) as error:
        raise EncoderCheckpointError(f"{source}: invalid {BACKBONE_OPTION} option {recorded!r}: {error}") from error


def _load_network(encoder_type: str, backbone: BackboneConfig, decoder: Generator,
                  encoder_state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    # Build on the meta device and assign the checkpoint's tensors, so no random initialisation is computed.
    with torch.device("meta"):
        network = build_encoder_network(encoder_type, backbone, decoder.num_ws, decoder.w_dim)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(encoder_state))
    unexpected = sorted(set(encoder_state) - set(expected))
    wrong_shapes = [f"{k} {list(encoder_state[k].shape)} (expected {list(expected[k].shape)})"
                    for k in sorted(set(expected) & set(encoder_state))
                    if tuple(encoder_state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shapes:
        raise EncoderCheckpointError(
            f"{source}: encoder.* does not match {encoder_type} on {_backbone_name(backbone)} for "
            f"{decoder.num_ws} x {decoder.w_dim} W+ (missing {missing[:6]}, unexpected {unexpected[:6]}, "
            f"wrong shapes {wrong_shapes[:4]}). The file is damaged or from a variant this loader does not know.")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in encoder_state.items()}
    network.load_state_dict(state, strict=True, assign=True)
    return network.eval().requires_grad_(False)


def _backbone_name(backbone: BackboneConfig) -> str:
    return "IR-SE50" if backbone == IR_SE_50 else f"backbone {backbone.to_dict()}"


def _input_shape(kind: str, opts: dict[str, Any]) -> tuple[int, int]:
    if kind == "e4e" and "cars" in str(opts.get("dataset_type", "")):
        return CARS_INPUT_SHAPE
    return (INPUT_SIZE, INPUT_SIZE)


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """Load a pSp or e4e checkpoint.

    Args:
        path: checkpoint written by the pSp or e4e training code (or by `write_encoder_checkpoint`).
        device: where the encoder network runs. Its decoder stays on the CPU.

    Returns:
        An Encoder; check it against a generator with `check_generator` and run it with `encode`.

    Raises:
        CheckpointError: the file is missing, empty or a folder (from `checkpoints.detect_format`).
        EncoderCheckpointError: a CheckpointError for files that are damaged, reference code, are not pSp / e4e
            checkpoints, or whose tensors do not fit the architecture their options describe.
        ValueError: `device` is CUDA but CUDA is not available.
    """
    # 1. Read the file and its options.
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {str(device)!r} requested but CUDA is not available; use device='cpu'.")
    path = Path(path)
    source = str(path)
    data = _read_file(path)
    opts = _options(data["opts"], source)
    kind, encoder_type = _kind_and_type(opts, source)
    if kind == "psp":
        _check_image_task(opts, source)
    encoder_state, decoder_state = _split_state(data["state_dict"], source)

    # 2. The decoder fixes the W+ layout; the options must agree with it.
    decoder = _load_decoder(decoder_state, data.get("latent_avg"), source)
    size_option = _SIZE_OPTION[kind]
    if size_option in opts and int(opts[size_option]) != decoder.img_resolution:
        raise EncoderCheckpointError(f"{source}: opts {size_option}={opts[size_option]} but the decoder is "
                                     f"{decoder.img_resolution} px. The file contradicts itself, so it was probably "
                                     f"edited or damaged.")
    if kind == "psp" and "n_styles" in opts and int(opts["n_styles"]) != decoder.num_ws:
        raise EncoderCheckpointError(f"{source}: opts n_styles={opts['n_styles']} but the decoder has "
                                     f"{decoder.num_ws} W+ layers. The file contradicts itself, so it was probably "
                                     f"edited or damaged.")

    # 3. The average latent, as the repositories add it (start_from_latent_avg).
    start_from_latent_avg = bool(opts.get("start_from_latent_avg", False))
    latent_avg = _normalise_latent_avg(data.get("latent_avg"), decoder.num_ws, decoder.w_dim, source)
    if latent_avg is None and start_from_latent_avg:
        # e4e does the same when the file has no latent_avg. pSp's trainer always stores one.
        logger.info("%s stores no latent_avg; using the decoder's mean W over 10,000 samples.", source)
        latent_avg = decoder.mapping.w_avg.detach().float().cpu().unsqueeze(0)

    # 4. The encoder network, loaded strictly.
    network = _load_network(encoder_type, _backbone(opts, source), decoder, encoder_state, source)
    network = network.to(device)
    encoder = Encoder(kind=kind, encoder_type=encoder_type, network=network, decoder=decoder, latent_avg=latent_avg,
                      start_from_latent_avg=start_from_latent_avg, input_shape=_input_shape(kind, opts),
                      source=source, opts=opts)
    logger.info("Loaded %s on %s.", encoder.describe(), encoder.device)
    return encoder


# ---------------------------------------------------------------------------------------------------------------------
# Encoding.


def _rgb_images(image, where: str) -> torch.Tensor:
    prefix = f"{where}: " if where else ""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{prefix}image must be an IMAGE tensor [B, H, W, C], got {shape}.")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{prefix}image is empty (shape {list(image.shape)}).")
    channels = image.shape[-1]
    if channels == 1:
        return image.repeat(1, 1, 1, 3)
    if channels == 4:
        logger.warning("%simage has an alpha channel; the encoder reads only RGB, so alpha is dropped.", prefix)
        return image[..., :3]
    if channels != 3:
        raise ValueError(f"{prefix}image has {channels} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA).")
    return image


def prepare_input(images: torch.Tensor, input_shape: tuple[int, int]) -> torch.Tensor:
    """Turn IMAGE [B, H, W, 3] (0..1) into encoder input [B, 3, height, width] in -1..1, on the CPU.

    Follows the repositories' inference transform on an 8-bit RGB image: PIL bilinear resize (torchvision's
    Resize on a PIL image), then ToTensor and Normalize(0.5, 0.5). Float inputs are rounded to 8 bits first, so
    an image read from a PNG or JPEG gives exactly the repositories' input.
    """
    height, width = input_shape
    pixels = (torch.nan_to_num(images.detach().float().cpu()).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    batch = []
    for array in pixels:
        resized = Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR)
        batch.append(torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255))
    x = torch.stack(batch).permute(0, 3, 1, 2)  # [B, 3, height, width] in 0..1
    return (x - 0.5) / 0.5


@torch.no_grad()
def encode(encoder: Encoder, generator, image: torch.Tensor, where: str = "", chunk_size: int = 4) -> StyleGANLatent:
    """Encode images to latents of `generator`, as the pSp / e4e inference scripts do.

    Args:
        encoder: from `load_encoder`.
        generator: the generator the latents are for; it must match the encoder's decoder (see
            `Encoder.check_generator`), which is checked before any image is processed.
        image: IMAGE [B, H, W, C] in 0..1, any size; gray and RGBA are converted to RGB.
        where: node name for error messages.
        chunk_size: images per forward pass.

    Returns:
        W+ latents [B, num_ws, w_dim], or W [B, w_dim] from single-code encoders, with the generator's fingerprint.
    """
    # 1. Check inputs before any work.
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    encoder.check_generator(generator, where)
    images = _rgb_images(image, where)

    # 2. Run the network chunk by chunk, with progress and interruption between chunks.
    batch_size = images.shape[0]
    progress = host.ProgressBar(batch_size)
    outputs = []
    for start in range(0, batch_size, chunk_size):
        host.check_interrupted()
        x = prepare_input(images[start:start + chunk_size], encoder.input_shape).to(encoder.device)
        outputs.append(encoder.network(x).float().cpu())
        progress.update(x.shape[0])
    codes = torch.cat(outputs)  # [B, num_ws, w_dim], or [B, w_dim] for single-code encoders

    # 3. Add the average latent. Single-code encoders give W unless latent_avg differs between layers.
    if encoder.start_from_latent_avg and encoder.latent_avg is not None:
        codes = (codes.unsqueeze(1) if codes.ndim == 2 else codes) + encoder.latent_avg
    if codes.ndim == 3 and encoder.encoder_type in ("SingleStyleCodeEncoder", "BackboneEncoderUsingLastLayerIntoW"):
        if torch.equal(codes, codes[:, :1].expand_as(codes)):
            codes = codes[:, 0]
    space = "W" if codes.ndim == 2 else "W+"

    # 4. Tie the latents to the connected generator, whose W+ space the check in step 1 confirmed.
    meta = {"encoder": encoder.kind, "encoder_type": encoder.encoder_type, "encoder_file": encoder.name}
    return StyleGANLatent(codes.contiguous(), space, generator.num_ws, generator.w_dim, generator.fingerprint, meta)


# ---------------------------------------------------------------------------------------------------------------------
# Writing checkpoints in the official layout, for tests and demos.


def _rosinality_kernel_buffers(generator: Generator) -> dict[str, torch.Tensor]:
    """Return the blur filter buffers that a rosinality generator's state dict contains next to the weights."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps)
    kernel = kernel / kernel.sum() * 4  # Normalised, times factor**2 for 2x upsampling.
    buffers = {}
    for index in range(len(generator.config.block_resolutions) - 1):
        buffers[f"convs.{2 * index}.conv.blur.kernel"] = kernel.clone()
        buffers[f"to_rgbs.{index}.upsample.kernel"] = kernel.clone()
    return buffers


def _randomise_normalisation(network: torch.nn.Module, rng: torch.Generator) -> None:
    """Give BatchNorm statistics and affine terms and PReLU slopes non-default values, as training would."""
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(channels, generator=rng))
            module.running_var.copy_(1 + 0.2 * torch.rand(channels, generator=rng))
            module.weight.copy_(1 + 0.1 * torch.randn(channels, generator=rng))
            module.bias.copy_(0.1 * torch.randn(channels, generator=rng))
            module.num_batches_tracked.fill_(1000)
        elif isinstance(module, torch.nn.PReLU):
            module.weight.copy_(0.25 + 0.05 * torch.randn(module.weight.shape, generator=rng))


def _training_options(kind: str, encoder_type: str, generator: Generator, start_from_latent_avg: bool,
                      backbone: BackboneConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "exp_dir": "experiments/stylebridge",
        "dataset_type": "ffhq_encode",
        "encoder_type": encoder_type,
        "batch_size": 8,
        "learning_rate": 0.0001,
        "optim_name": "ranger",
        "start_from_latent_avg": start_from_latent_avg,
        "lpips_lambda": 0.8,
        "l2_lambda": 1.0,
        "checkpoint_path": None,
        "device": "cuda:0",
    }
    if kind == "e4e":
        opts.update(stylegan_size=generator.img_resolution, progressive_start=20000, progressive_step_every=2000,
                    delta_norm=2, delta_norm_lambda=0.0002, w_discriminator_lambda=0.1)
    else:
        opts.update(input_nc=3, label_nc=0, output_size=generator.img_resolution, n_styles=generator.num_ws,
                    learn_in_w=encoder_type == "BackboneEncoderUsingLastLayerIntoW")
    if backbone != IR_SE_50:
        opts[BACKBONE_OPTION] = backbone.to_dict()
    return opts


def write_encoder_checkpoint(kind: str, generator: Generator, path: str | os.PathLike, seed: int = 0, *,
                             encoder_type: str | None = None, backbone: BackboneConfig = IR_SE_50,
                             start_from_latent_avg: bool = True, opts_as_namespace: bool = False) -> Path:
    """Write an untrained pSp or e4e checkpoint for `generator` in the layout the official training code saves.

    The encoder has deterministic random weights from `seed`. The decoder is `generator` in rosinality's layout,
    so the file matches that generator. A `backbone` other than IR-SE50 (e.g. a small one for tests) is recorded in
    opts so `load_encoder` can rebuild it. Raises FileExistsError rather than replacing a file.

    Args:
        kind: 'e4e' or 'psp'.
        generator: an unconditional StyleGAN2 generator with the skip architecture and no conv_clamp, the only
            kind rosinality's layout stores.
        path: output file.
        seed: seed of the encoder weights.
        encoder_type: the repository's `encoder_type`; default Encoder4Editing (e4e) or GradualStyleEncoder (pSp).
        backbone: widths and depths of the encoder backbone.
        start_from_latent_avg: store latent_avg (the generator's w_avg) and set the option that adds it.
        opts_as_namespace: store opts as an argparse.Namespace instead of a dict.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is invalid; expected one of {KINDS}.")
    encoder_type = encoder_type or _DEFAULT_ENCODER_TYPE[kind]
    supported = E4E_ENCODER_TYPES if kind == "e4e" else PSP_ENCODER_TYPES
    if encoder_type not in supported:
        raise ValueError(f"encoder_type {encoder_type!r} is invalid for {kind}; expected one of {list(supported)}.")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another output path or delete it first.")

    # 1. Encoder with seeded weights. fork_rng restores the global random state afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_encoder_network(encoder_type, backbone, generator.num_ws, generator.w_dim)
    with torch.no_grad():
        _randomise_normalisation(network, torch.Generator().manual_seed(seed))

    # 2. The official dict: state_dict of the whole model, options, and latent_avg when training used it.
    state = {f"encoder.{k}": v.detach().clone() for k, v in network.state_dict().items()}
    decoder = {**rosinality_state_dict(generator), **_rosinality_kernel_buffers(generator)}
    state.update({f"decoder.{k}": v.detach().clone() for k, v in decoder.items()})
    opts = _training_options(kind, encoder_type, generator, start_from_latent_avg, backbone)
    data: dict[str, Any] = {"state_dict": state, "opts": argparse.Namespace(**opts) if opts_as_namespace else opts}
    if start_from_latent_avg:
        rows = 1 if encoder_type == "BackboneEncoderUsingLastLayerIntoW" else generator.num_ws
        data["latent_avg"] = generator.mapping.w_avg.detach().float().cpu().repeat(rows, 1)

    # 3. Write beside the target and link it into place, so no partial file ever has the final name.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        torch.save(data, temporary)
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
