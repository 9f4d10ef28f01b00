"""Write generators in the real third-party file layouts (NVIDIA pickle, rosinality .pt), for tests and demos.

The files contain weights only. NVIDIA pickles written here reference the same persistence global as the official
ones but carry a placeholder instead of module source, so no third-party code is ever stored.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from pathlib import Path

import numpy as np
import torch

from . import stylegan3
from .safe_pickle import PersistentWriterRecord, dump_persistent, module_state
from .stylegan2 import Generator, MappingNetwork, StyleGAN2Config, SynthesisBlock, SynthesisNetwork

# Attributes of our modules that are StyleBridge bookkeeping, not part of the official objects.
_PRIVATE_ATTRIBUTES = {"config", "source", "_fingerprint", "force_fp32_default", "has_w_avg"}


@contextlib.contextmanager
def _create_atomically(path: Path):
    """Open a temporary file beside `path` for writing, and move it to `path` only once fully written.

    An interrupted write leaves no partial file under the final name, and an existing file is never replaced:
    FileExistsError is raised before anything is written.
    """
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another output path or delete it first.")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temporary, "xb") as file:
            yield file
        os.link(temporary, path)  # Fails instead of replacing a file created meanwhile.
    finally:
        temporary.unlink(missing_ok=True)


def make_generator(config: StyleGAN2Config, seed: int = 0) -> Generator:
    """Build a generator with deterministic random weights, including non-zero biases, noise strengths and w_avg.

    The values follow the shapes and rough scales of a trained network, so that every term of the forward pass
    (biases, noise, truncation, clamping) affects the output and a fidelity test exercises all of them.
    """
    generator = Generator(config)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(generator.state_dict().items()):
            values = torch.randn(tensor.shape, generator=rng)
            if name.endswith("noise_strength"):
                values = values * 0.1
            elif name.endswith("affine.bias"):
                values = 1 + 0.1 * values
            elif name.endswith(".bias"):
                values = 0.1 * values
            elif name.startswith("mapping.fc") and name.endswith("weight"):
                values = values / config.mapping_lr_multiplier
            tensor.copy_(values)
    return generator.eval().requires_grad_(False)


def _official_kwargs(config: StyleGAN2Config) -> dict:
    channel_base = config.channels[-1] * config.img_resolution
    return dict(
        z_dim=config.z_dim, c_dim=config.c_dim, w_dim=config.w_dim, img_resolution=config.img_resolution,
        img_channels=config.img_channels,
        mapping_kwargs=dict(num_layers=config.mapping_layers, embed_features=config.mapping_embed_features,
                            layer_features=config.mapping_layer_features, activation=config.mapping_activation,
                            lr_multiplier=config.mapping_lr_multiplier),
        channel_base=channel_base, channel_max=max(config.channels), num_fp16_res=config.num_fp16_res,
        conv_clamp=config.conv_clamp, architecture=config.architecture)


def _record(module: torch.nn.Module, init_kwargs: dict | None = None,
            stylegan3_layout: bool = False) -> PersistentWriterRecord:
    """Describe `module` and its children as persistence records with the official attribute layout.

    `stylegan3_layout` adds what the official networks_stylegan3.py objects pickle beyond our attributes: numpy
    attribute types, None buffers for identity filters and the mapping's None `embed`. StyleGAN2 records do not
    use it.
    """
    attributes = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name in _PRIVATE_ATTRIBUTES or name == "training":
            continue
        if isinstance(value, (int, float, str, bool, list, tuple)) or value is None:
            attributes[name] = list(value) if isinstance(value, tuple) else value
    # Attributes the official classes have and ours do not need.
    if isinstance(module, SynthesisNetwork):
        attributes["img_resolution_log2"] = int(math.log2(module.img_resolution))
    if isinstance(module, SynthesisBlock):
        attributes.update(channels_last=False, fused_modconv_default=True)

    buffers = {}
    for name, tensor in module._buffers.items():
        if tensor is None:
            continue
        if name == "resample_filter":
            tensor = torch.outer(tensor, tensor)  # The official buffer is the 2-D filter.
        buffers[name] = tensor
    parameters = dict(module._parameters)
    submodules = {name: _record(child, stylegan3_layout=stylegan3_layout) for name, child in module._modules.items()}
    if stylegan3_layout:
        _adjust_stylegan3_record(module, attributes, submodules)
    state = module_state(attributes, submodules, init_kwargs=init_kwargs, parameters=parameters, buffers=buffers)
    if stylegan3_layout:
        # Official StyleGAN3 layers keep an identity filter as a None buffer, in registration order.
        state["_buffers"] = type(state["_buffers"])(
            (name, state["_buffers"].get(name)) for name in module._buffers)
    return PersistentWriterRecord(class_name=type(module).__name__, state=state)


def _adjust_stylegan3_record(module: torch.nn.Module, attributes: dict, submodules: dict) -> None:
    """Give StyleGAN3 attributes the types the official objects pickle: numpy sizes and float64 frequencies."""
    if isinstance(module, stylegan3.SynthesisInput):
        attributes["size"] = np.asarray(module.size, dtype=np.int64)
        attributes["sampling_rate"] = np.float64(module.sampling_rate)
        attributes["bandwidth"] = np.float64(module.bandwidth)
    if isinstance(module, stylegan3.SynthesisLayer):
        for name in ("in_size", "out_size"):
            attributes[name] = np.asarray(getattr(module, name), dtype=np.int64)
        for name in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width"):
            attributes[name] = np.float64(getattr(module, name))
        attributes["use_fp16"] = np.bool_(module.use_fp16)
    if isinstance(module, MappingNetwork):
        attributes["w_avg_beta"] = 0.998  # Training-only; the official default.
        if "embed" not in submodules:
            attributes["embed"] = None  # Without labels the official mapping has a plain None attribute.


def _official_stylegan3_kwargs(config: stylegan3.StyleGAN3Config) -> dict:
    synthesis_fields = ("channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff",
                        "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res",
                        "conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters", "conv_clamp",
                        "magnitude_ema_beta")
    return {
        "z_dim": config.z_dim, "c_dim": config.c_dim, "w_dim": config.w_dim, "img_resolution": config.img_resolution,
        "img_channels": config.img_channels,
        "mapping_kwargs": {"num_layers": config.mapping_layers, "lr_multiplier": config.mapping_lr_multiplier},
        **{name: getattr(config, name) for name in synthesis_fields},
    }


def make_stylegan3_generator(config: stylegan3.StyleGAN3Config, seed: int = 0) -> stylegan3.Generator:
    """Build a StyleGAN3 generator with deterministic random weights, for tests and demos.

    Biases, magnitude_ema, the input's learned transform, Fourier frequencies and w_avg all get non-trivial
    values, so that each term of the forward pass affects the output. The filters keep their designed values.
    """
    generator = stylegan3.Generator(config)
    rng = torch.Generator().manual_seed(seed)
    input_layer = generator.synthesis.input
    with torch.no_grad():
        freqs, phases = stylegan3.fourier_features_init(input_layer.channels, input_layer.bandwidth, generator=rng)
        input_layer.freqs.copy_(freqs)
        input_layer.phases.copy_(phases)
        for name, tensor in sorted(generator.state_dict().items()):
            if name.endswith(("up_filter", "down_filter", "input.transform", "input.freqs", "input.phases")):
                continue
            values = torch.randn(tensor.shape, generator=rng)
            if name.endswith("magnitude_ema"):
                values = (0.5 * values).exp()  # A positive mean square of the layer input.
            elif name.endswith("input.affine.weight"):
                values = 0.2 * values
            elif name.endswith("input.affine.bias"):
                values = torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.1 * values
            elif name.endswith("affine.bias"):
                values = 1 + 0.1 * values
            elif name.endswith(".bias"):
                values = 0.1 * values
            elif name.startswith("mapping.fc") and name.endswith("weight"):
                values = values / config.mapping_lr_multiplier
            tensor.copy_(values)
    return generator.eval().requires_grad_(False)


def write_nvidia_pickle(generator: Generator | stylegan3.Generator, path: str | os.PathLike,
                        protocol: int = 4) -> Path:
    """Write `generator` as a network pickle in the stylegan2-ada-pytorch / stylegan3 layout (G, D, G_ema)."""
    path = Path(path)
    if isinstance(generator, stylegan3.Generator):
        g_ema = _record(generator, init_kwargs=_official_stylegan3_kwargs(generator.config), stylegan3_layout=True)
    else:
        g_ema = _record(generator, init_kwargs=_official_kwargs(generator.config))
    # A small discriminator record keeps the file shaped like a training snapshot; loaders must skip it.
    discriminator = PersistentWriterRecord(
        class_name="Discriminator",
        state=module_state({"c_dim": generator.c_dim, "img_resolution": generator.img_resolution}, {},
                           parameters={"placeholder": torch.zeros([1])}))
    data = {
        "G": g_ema,
        "D": discriminator,
        "G_ema": g_ema,
        "augment_pipe": None,
        "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                "resolution": generator.img_resolution, "use_labels": generator.c_dim > 0},
    }
    with _create_atomically(path) as file:
        dump_persistent(data, file, protocol=protocol)
    return path


def rosinality_state_dict(generator: Generator) -> dict[str, torch.Tensor]:
    """Return `generator`'s weights as a rosinality stylegan2-pytorch `g_ema` state dict."""
    config = generator.config
    if config.c_dim or config.architecture != "skip" or config.conv_clamp is not None:
        raise ValueError("rosinality's layout holds only unconditional skip generators without conv_clamp.")
    official = generator.state_dict()
    out: dict[str, torch.Tensor] = {}
    for index in range(config.mapping_layers):
        out[f"style.{index + 1}.weight"] = official[f"mapping.fc{index}.weight"]
        out[f"style.{index + 1}.bias"] = official[f"mapping.fc{index}.bias"]
    out["input.input"] = official["synthesis.b4.const"].unsqueeze(0)

    def styled_conv(src: str, dst: str, noise_index: int) -> None:
        out[f"{dst}.conv.weight"] = official[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = official[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = official[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = official[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = official[f"{src}.bias"]
        out[f"noises.noise_{noise_index}"] = official[f"{src}.noise_const"][None, None]

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.conv.weight"] = official[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = official[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = official[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = official[f"{src}.bias"].reshape(1, -1, 1, 1)

    styled_conv("synthesis.b4.conv1", "conv1", 0)
    to_rgb("synthesis.b4.torgb", "to_rgb1")
    for index, res in enumerate(config.block_resolutions[1:]):
        styled_conv(f"synthesis.b{res}.conv0", f"convs.{2 * index}", 2 * index + 1)
        styled_conv(f"synthesis.b{res}.conv1", f"convs.{2 * index + 1}", 2 * index + 2)
        to_rgb(f"synthesis.b{res}.torgb", f"to_rgbs.{index}")
    return {k: v.clone() for k, v in out.items()}


def write_rosinality(generator: Generator, path: str | os.PathLike, training_checkpoint: bool = False) -> Path:
    """Write a rosinality `.pt`: converted-weights layout ({g_ema, latent_avg}) or a training checkpoint.

    The training layout also stores `args` as an argparse.Namespace and optimiser state, as train.py does, and
    has no latent_avg.
    """
    path = Path(path)
    state = rosinality_state_dict(generator)
    if training_checkpoint:
        data = {
            "g": state, "d": {}, "g_ema": state, "g_optim": {"state": {}, "param_groups": []},
            "d_optim": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(size=generator.img_resolution, latent=generator.w_dim,
                                       n_mlp=generator.config.mapping_layers, channel_multiplier=2),
            "ada_aug_p": 0.0,
        }
    else:
        data = {"g_ema": state, "latent_avg": generator.mapping.w_avg.clone()}
    with _create_atomically(path) as file:
        torch.save(data, file)
    return path
