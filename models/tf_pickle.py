"""Convert TensorFlow-era StyleGAN2 network pickles to a PyTorch Generator without TensorFlow.

The NVlabs stylegan2 and stylegan2-ada (TensorFlow) repositories pickle a tuple (G, D, Gs) of
`dnnlib.tflib.network.Network` objects. Each network pickles its state as a dict with these keys:
- `version`, `name` and `build_func_name`;
- `static_kwargs`, the build function's keyword arguments;
- `components`, the sub-networks (`mapping` and `synthesis` here);
- `variables`, a list of (TF variable name, numpy array) pairs;
- `build_module_src`, the Python source of the module that builds the network.
TensorFlow's loader executes that source. This module instead unpickles every Network as a `TFNetworkRecord`
that keeps only the data, through the restricted unpickler. So no code from the file runs, and any global
outside the allowlist still raises UnsafePickleError.

Only StyleGAN2 config E/F-like generators convert (`G_main` with `G_synthesis_stylegan2` or the ADA
`G_synthesis`, architectures 'orig', 'skip' and 'resnet'). StyleGAN1 (`G_style`, which is also StyleGAN2
config A), configs B-D (progressive growing with `ToRGB_lod*` layers) and original-repository conditional
models (`LabelConcat`) raise CheckpointError naming the detected network.

Weight layouts (TF variable -> PyTorch parameter, both as stored):
- dense weights are [in, out] in TF and [out, in] here.
- convolution weights are [kh, kw, in, out] in TF and [out, in, kh, kw] here.
- upsampling convolutions (`Conv0_up`, `Skip`) are also flipped in both spatial axes. TF's upsample_conv_2d
  flips the kernel before tf.nn.conv2d_transpose, while `modulated_conv2d` here passes the stored kernel to
  conv_transpose2d unflipped (tests/test_tf_pickle.py checks this against a direct implementation).
- `mod_bias` excludes the +1 that TF adds to every style, and our affine biases include it.
"""

from __future__ import annotations

import copyreg
import hashlib
import logging
import math
import os
import pickle
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .checkpoints import CheckpointError, _build
from .safe_pickle import RestrictedUnpickler, UnsafePickleError
from .stylegan2 import _ACTIVATIONS, Generator, StyleGAN2Config

logger = logging.getLogger(__name__)

TF_NETWORK_GLOBAL = ("dnnlib.tflib.network", "Network")
SUPPORTED_MESSAGE = "StyleBridge converts StyleGAN2 config E/F TF pickles (NVlabs stylegan2 and stylegan2-ada)"

# Build functions of the generators that convert, by repository.
_SYNTHESIS_FLAVORS = {"G_synthesis_stylegan2": "stylegan2", "G_synthesis": "stylegan2-ada"}

# Static kwargs that change the network. Each is read below, or checked through the variable shapes and the
# components' build functions.
_HANDLED_KWARGS = {
    "latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "fmap_base", "fmap_decay",
    "fmap_min", "fmap_max", "fmap_const", "architecture", "resample_kernel", "use_noise", "nonlinearity",
    "mapping_layers", "mapping_fmaps", "label_fmaps", "mapping_nonlinearity", "mapping_lrmul",
    "normalize_latents", "conv_clamp", "num_fp16_res", "mapping_func", "synthesis_func",
}
# Static kwargs that do not change the fp32 output: training settings, precision and graph-building switches,
# run-time defaults that callers override (truncation), and `conditioning`, which the official stylegan3
# legacy.py converter also ignores.
_IGNORED_KWARGS = {
    "dtype", "fused_modconv", "randomize_noise", "truncation_psi", "truncation_cutoff", "truncation_psi_val",
    "truncation_cutoff_val", "dlatent_avg_beta", "w_avg_beta", "style_mixing_prob", "structure", "conditioning",
    "dlatent_broadcast",
}


# ---------------------------------------------------------------------------------------------------------------------
# Reading.


class TFNetworkRecord:
    """A `dnnlib.tflib.network.Network` from a TF-era pickle, kept as data.

    The pickle builds it with NEWOBJ and BUILD: `__new__` accepts no arguments, and `__setstate__` copies the
    known fields after checking their types. `build_module_src` is kept only as its length and SHA-256, so the
    source can be identified in reports but is never compiled or executed.
    """

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError("dnnlib.tflib.network.Network was called with arguments; TF-era pickles build "
                                    "networks from a state dict only, so this file is not a genuine network pickle.")
        record = super().__new__(cls)
        record.version = None
        record.name = ""
        record.build_func_name = ""
        record.static_kwargs = {}
        record.components = {}
        record.variables = {}
        record.build_module_src_length = 0
        record.build_module_src_sha256 = ""
        return record

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"TF network state is a {type(state).__name__}, expected a dict.")
        self.version = state.get("version")
        self.name = str(state.get("name") or "")
        self.build_func_name = str(state.get("build_func_name") or "")
        self.static_kwargs = _checked_dict(state.get("static_kwargs"), "static_kwargs", self.name)
        components = _checked_dict(state.get("components"), "components", self.name)
        for key, component in components.items():
            if not isinstance(component, TFNetworkRecord):
                raise UnsafePickleError(f"TF network {self.name!r}: component {key!r} is a "
                                        f"{type(component).__name__}, not a Network.")
        self.components = components
        self.variables = _checked_variables(state.get("variables"), self.name)
        source = state.get("build_module_src") or ""
        if not isinstance(source, str):
            raise UnsafePickleError(f"TF network {self.name!r}: build_module_src is a {type(source).__name__}.")
        self.build_module_src_length = len(source)
        self.build_module_src_sha256 = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()

    def __repr__(self) -> str:
        return (f"TFNetworkRecord(name={self.name!r}, build_func_name={self.build_func_name!r}, "
                f"variables={len(self.variables)}, components={sorted(self.components)})")


def _checked_dict(value: Any, field: str, network: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsafePickleError(f"TF network {network!r}: {field} is a {type(value).__name__}, expected a dict.")
    return dict(value)


def _checked_variables(value: Any, network: str) -> dict[str, np.ndarray]:
    if value is None:
        return {}
    if not isinstance(value, (list, tuple)):
        raise UnsafePickleError(f"TF network {network!r}: variables is a {type(value).__name__}, expected a list.")
    variables: dict[str, np.ndarray] = {}
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise UnsafePickleError(f"TF network {network!r}: variables must be (name, array) pairs.")
        name, array = item
        # A TF session returns 0-d variables as numpy scalars, the others as arrays.
        if not isinstance(array, (np.ndarray, np.generic)):
            raise UnsafePickleError(f"TF network {network!r}: variable {name!r} is a {type(array).__name__}, "
                                    f"expected a numpy array.")
        if name in variables:
            raise UnsafePickleError(f"TF network {network!r}: variable {name!r} appears twice.")
        variables[name] = np.asarray(array)
    return variables


class TFPickleUnpickler(RestrictedUnpickler):
    """RestrictedUnpickler that also resolves `dnnlib.tflib.network.Network`, to TFNetworkRecord."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == TF_NETWORK_GLOBAL:
            return TFNetworkRecord
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickleError(
                f"{self.source}: the pickle references {module}.{name}; a TF-era network pickle references only "
                f"dnnlib.tflib.network.Network from dnnlib.tflib, so StyleBridge does not load this file.")
        return super().find_class(module, name)


def load_tf_networks(file: BinaryIO, source: str = "<pickle>") -> Any:
    """Unpickle a TF-era network pickle with every Network as a TFNetworkRecord; no code from the file runs."""
    return TFPickleUnpickler(file, source=source).load()


# ---------------------------------------------------------------------------------------------------------------------
# Parameter names.


@dataclass(frozen=True)
class TFParameter:
    """One TF variable and the Generator state-dict entry it becomes."""

    network: str    # 'Gs' (the generator's own variables), 'mapping' or 'synthesis'.
    tf_name: str    # Variable name inside that network, e.g. '8x8/Conv0_up/weight'.
    key: str        # Generator state-dict key, e.g. 'synthesis.b8.conv0.weight'.
    layout: str     # 'plain', 'dense', 'conv', 'conv_up', 'const', 'noise' or 'mod_bias', as in to_torch_layout.


def tf_parameter_map(config: StyleGAN2Config) -> list[TFParameter]:
    """List the TF variables of a config E/F-like generator with `config`, in the order TF creates them."""
    parameters = [TFParameter("Gs", "dlatent_avg", "mapping.w_avg", "plain")]
    if config.c_dim:
        parameters += [TFParameter("mapping", "LabelEmbed/weight", "mapping.embed.weight", "dense"),
                       TFParameter("mapping", "LabelEmbed/bias", "mapping.embed.bias", "plain")]
    for index in range(config.mapping_layers):
        parameters += [TFParameter("mapping", f"Dense{index}/weight", f"mapping.fc{index}.weight", "dense"),
                       TFParameter("mapping", f"Dense{index}/bias", f"mapping.fc{index}.bias", "plain")]

    synthesis: list[TFParameter] = []
    noise: list[TFParameter] = []

    def modulated_layer(scope: str, prefix: str, noise_index: int, up: bool) -> None:
        synthesis.append(TFParameter("synthesis", f"{scope}/weight", f"{prefix}.weight", "conv_up" if up else "conv"))
        synthesis.append(TFParameter("synthesis", f"{scope}/mod_weight", f"{prefix}.affine.weight", "dense"))
        synthesis.append(TFParameter("synthesis", f"{scope}/mod_bias", f"{prefix}.affine.bias", "mod_bias"))
        if config.use_noise:
            synthesis.append(TFParameter("synthesis", f"{scope}/noise_strength", f"{prefix}.noise_strength", "plain"))
            noise.append(TFParameter("synthesis", f"noise{noise_index}", f"{prefix}.noise_const", "noise"))
        synthesis.append(TFParameter("synthesis", f"{scope}/bias", f"{prefix}.bias", "plain"))

    def to_rgb(scope: str, prefix: str) -> None:
        synthesis.append(TFParameter("synthesis", f"{scope}/weight", f"{prefix}.weight", "conv"))
        synthesis.append(TFParameter("synthesis", f"{scope}/mod_weight", f"{prefix}.affine.weight", "dense"))
        synthesis.append(TFParameter("synthesis", f"{scope}/mod_bias", f"{prefix}.affine.bias", "mod_bias"))
        synthesis.append(TFParameter("synthesis", f"{scope}/bias", f"{prefix}.bias", "plain"))

    # Noise input i feeds layer i: the 4x4 convolution, then two per block (log2(res) * 2 - 5 and - 4).
    synthesis.append(TFParameter("synthesis", "4x4/Const/const", "synthesis.b4.const", "const"))
    modulated_layer("4x4/Conv", "synthesis.b4.conv1", 0, up=False)
    if config.architecture == "skip" or config.img_resolution == 4:
        to_rgb("4x4/ToRGB", "synthesis.b4.torgb")
    for res in config.block_resolutions[1:]:
        log2 = int(math.log2(res))
        modulated_layer(f"{res}x{res}/Conv0_up", f"synthesis.b{res}.conv0", log2 * 2 - 5, up=True)
        modulated_layer(f"{res}x{res}/Conv1", f"synthesis.b{res}.conv1", log2 * 2 - 4, up=False)
        if config.architecture == "resnet":
            synthesis.append(TFParameter("synthesis", f"{res}x{res}/Skip/weight", f"synthesis.b{res}.skip.weight",
                                         "conv_up"))
        if config.architecture == "skip" or res == config.img_resolution:
            to_rgb(f"{res}x{res}/ToRGB", f"synthesis.b{res}.torgb")
    return parameters + noise + synthesis


def to_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    """Rearrange a TF variable into the layout of the matching Generator tensor."""
    if layout == "dense":
        return value.T                                      # [in, out] -> [out, in]
    if layout == "conv":
        return value.transpose(3, 2, 0, 1)                  # [kh, kw, in, out] -> [out, in, kh, kw]
    if layout == "conv_up":
        return value[::-1, ::-1].transpose(3, 2, 0, 1)      # Flipped kernel, see the module docstring.
    if layout == "const":
        return value[0]                                     # [1, C, 4, 4] -> [C, 4, 4]
    if layout == "noise":
        return value[0, 0]                                  # [1, 1, R, R] -> [R, R]
    if layout == "mod_bias":
        return value + 1
    return value


def to_tf_layout(value: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of to_torch_layout: rearrange a Generator tensor into its TF variable layout."""
    if layout == "dense":
        return value.T
    if layout == "conv":
        return value.transpose(2, 3, 1, 0)
    if layout == "conv_up":
        return value.transpose(2, 3, 1, 0)[::-1, ::-1]
    if layout == "const":
        return value[np.newaxis]
    if layout == "noise":
        return value[np.newaxis, np.newaxis]
    if layout == "mod_bias":
        return value - 1
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Checking the network and inferring its configuration.


def _unsupported(source: str, description: str, advice: str = "") -> CheckpointError:
    message = f"{SUPPORTED_MESSAGE}; {source} is {description}."
    if advice:
        message += " " + advice
    return CheckpointError(message)


def _select_generator(data: Any, source: str) -> TFNetworkRecord:
    """Return Gs from the (G, D, Gs) tuple, or the network itself when the file contains only one."""
    if isinstance(data, (tuple, list)) and len(data) == 3 and all(isinstance(n, TFNetworkRecord) for n in data):
        return data[2]
    if isinstance(data, TFNetworkRecord):
        return data
    found = type(data).__name__
    if isinstance(data, (tuple, list)):
        found += " of " + ", ".join(type(item).__name__ for item in data[:5])
    raise CheckpointError(f"{source} references dnnlib.tflib but contains a {found}, not the (G, D, Gs) tuple of "
                          f"networks that the StyleGAN TF training code writes.")


def _all_variables(gs: TFNetworkRecord) -> list[str]:
    """Names of Gs's variables and its components' variables, one level deep as in every StyleGAN network."""
    names = list(gs.variables)
    for component_name, component in gs.components.items():
        names += [f"{component_name}/{name}" for name in component.variables]
    return names


def _check_supported(gs: TFNetworkRecord, source: str) -> tuple[TFNetworkRecord, TFNetworkRecord, str]:
    """Return (mapping, synthesis, flavor) or raise a CheckpointError that names the detected network."""
    names = _all_variables(gs)
    if gs.build_func_name == "G_style" or any("/StyleMod/" in name for name in names):
        raise _unsupported(source, f"a StyleGAN1 generator ({gs.build_func_name or 'no build function'}, "
                                   f"AdaIN style modulation; StyleGAN2 config A uses the same network)")
    if gs.build_func_name != "G_main":
        raise _unsupported(source, f"a network built by {gs.build_func_name!r}, not a StyleGAN2 generator (G_main)")

    mapping = gs.components.get("mapping")
    synthesis = gs.components.get("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(f"{source}: the G_main network has components {sorted(gs.components)}; a StyleGAN2 "
                              f"generator has 'mapping' and 'synthesis'. The file is incomplete or modified.")
    nested = sorted(name for name in ("mapping", "synthesis") if gs.components[name].components)
    if nested:
        raise CheckpointError(f"{source}: the {nested} networks have sub-networks, which StyleGAN2's mapping and "
                              f"synthesis networks never have; the file is modified.")

    # NOTE: at lod 0 a config B-D synthesis network computes the 'orig' architecture with ToRGB_lod0 as its last
    # ToRGB layer. These could convert, but stay rejected until compared with an output of TF itself.
    progressive = sorted({name.split("/")[0] for name in synthesis.variables if name.startswith("ToRGB_lod")})
    if synthesis.build_func_name == "G_synthesis_stylegan_revised" or progressive or "lod" in synthesis.variables:
        raise _unsupported(
            source, f"a StyleGAN2 config B-D generator ({synthesis.build_func_name or 'unknown synthesis'} with "
                    f"progressive growing, ToRGB layers {progressive[:3] or 'per level of detail'})",
            "Those configurations were research baselines; use the config E or F network of the same dataset.")
    if not any(name.endswith("/mod_weight") for name in synthesis.variables):
        raise _unsupported(source, f"a generator without modulated convolutions (synthesis network "
                                   f"{synthesis.build_func_name!r} has no mod_weight variables)")
    flavor = _SYNTHESIS_FLAVORS.get(synthesis.build_func_name)
    if flavor is None:
        raise _unsupported(source, f"a generator whose synthesis network is built by "
                                   f"{synthesis.build_func_name!r}; known builders: {sorted(_SYNTHESIS_FLAVORS)}")
    if mapping.build_func_name != "G_mapping":
        raise _unsupported(source, f"a generator whose mapping network is built by {mapping.build_func_name!r}, "
                                   f"not G_mapping")
    if "LabelConcat/weight" in mapping.variables:
        raise _unsupported(
            source, "a conditional generator from the original stylegan2 repository (LabelConcat)",
            "Its mapping network normalises the latent and the label embedding together, which the "
            "stylegan2-ada mapping network used here (LabelEmbed, normalised separately) cannot reproduce.")
    if not isinstance(gs.version, int) or gs.version < 4:
        raise _unsupported(source, f"a TF network pickle of version {gs.version!r}; StyleGAN2 pickles have "
                                   f"version 4 (stylegan2) or 5 (stylegan2-ada)")
    return mapping, synthesis, flavor


def _merged_kwargs(gs: TFNetworkRecord, mapping: TFNetworkRecord, synthesis: TFNetworkRecord,
                   source: str) -> dict[str, Any]:
    # G_main forwards its kwargs to both components, so Gs contains them all. The mapping network adds
    # dlatent_broadcast.
    kwargs = {**synthesis.static_kwargs, **mapping.static_kwargs, **gs.static_kwargs}
    unknown = sorted(set(kwargs) - _HANDLED_KWARGS - _IGNORED_KWARGS)
    if unknown:
        raise CheckpointError(f"{source}: static_kwargs {unknown} are unknown to StyleBridge's TF converter, so "
                              f"it cannot tell whether the network computes what it expects. Known: "
                              f"{sorted(_HANDLED_KWARGS | _IGNORED_KWARGS)}.")
    return kwargs


def _shape(network: TFNetworkRecord, name: str, source: str) -> tuple[int, ...]:
    if name not in network.variables:
        raise CheckpointError(f"{source}: TF variable {network.name or 'network'}/{name} is missing; the "
                              f"generator is incomplete or of another architecture.")
    return tuple(network.variables[name].shape)


def _infer_architecture(synthesis: TFNetworkRecord, resolutions: list[int], kwargs: dict, source: str) -> str:
    to_rgb = [res for res in resolutions if f"{res}x{res}/ToRGB/weight" in synthesis.variables]
    has_skip = any(name.endswith("/Skip/weight") for name in synthesis.variables)
    if has_skip and to_rgb == resolutions[-1:]:
        architecture = "resnet"
    elif not has_skip and to_rgb == resolutions:
        architecture = "skip"
    elif not has_skip and to_rgb == resolutions[-1:]:
        architecture = "orig"
    else:
        raise CheckpointError(f"{source}: ToRGB layers at {to_rgb} px and Skip layers "
                              f"{'present' if has_skip else 'absent'} match none of the architectures "
                              f"'orig', 'skip' or 'resnet'.")
    # TF's G_synthesis defaults to 'skip' when the kwarg is absent. At 4 px the three architectures coincide.
    declared = kwargs.get("architecture", "skip")
    if len(resolutions) == 1 and declared in ("orig", "skip", "resnet"):
        architecture = declared
    if declared != architecture:
        raise CheckpointError(f"{source}: static_kwargs declare architecture {declared!r} but the variables "
                              f"are those of {architecture!r}; the file is inconsistent.")
    return architecture


def _resample_taps(kwargs: dict, source: str) -> list[float]:
    kernel = kwargs.get("resample_kernel", [1, 3, 3, 1])
    if kernel is None:
        return [1.0, 1.0]  # TF's upfirdn_2d uses a box filter of the resampling factor when given None.
    taps = np.asarray(kernel, dtype=np.float64)
    if taps.ndim != 1 or taps.size == 0:
        raise CheckpointError(f"{source}: resample_kernel {kernel!r} is not a 1-D list of taps; StyleBridge "
                              f"supports separable filters only.")
    return [float(v) for v in taps]


def _check_choice(kwargs: dict, name: str, default: Any, allowed: set, source: str) -> Any:
    value = kwargs.get(name, default)
    if value not in allowed:
        raise CheckpointError(f"{source}: static_kwargs {name}={value!r} is not supported; StyleBridge converts "
                              f"{name} in {sorted(allowed, key=str)}.")
    return value


def infer_config(gs: TFNetworkRecord, source: str) -> tuple[StyleGAN2Config, str]:
    """Infer the StyleGAN2Config of Gs from its variable shapes and static kwargs; return it and the flavor."""
    mapping, synthesis, flavor = _check_supported(gs, source)
    kwargs = _merged_kwargs(gs, mapping, synthesis, source)
    _check_choice(kwargs, "nonlinearity", "lrelu", {"lrelu"}, source)
    _check_choice(kwargs, "normalize_latents", True, {True}, source)
    activation = _check_choice(kwargs, "mapping_nonlinearity", "lrelu", set(_ACTIVATIONS), source)

    # Resolution and channels, from the synthesis scopes ('8x8/Conv1/weight' is [3, 3, in, out]).
    scopes = {int(m.group(1)) for name in synthesis.variables if (m := re.match(r"(\d+)x\1/", name))}
    img_resolution = max(scopes, default=4)
    resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
    if kwargs.get("resolution", img_resolution) != img_resolution:
        raise CheckpointError(f"{source}: static_kwargs resolution={kwargs['resolution']} but the synthesis "
                              f"layers reach {img_resolution} px; the file is inconsistent.")
    const_channels = _shape(synthesis, "4x4/Const/const", source)[1]
    channels = [_shape(synthesis, "4x4/Conv/weight", source)[3]]
    channels += [_shape(synthesis, f"{res}x{res}/Conv1/weight", source)[3] for res in resolutions[1:]]
    if const_channels != channels[0]:
        raise CheckpointError(f"{source}: the 4x4 constant has {const_channels} channels (fmap_const) but the "
                              f"4x4 convolution outputs {channels[0]}; StyleBridge's generator needs them equal.")
    architecture = _infer_architecture(synthesis, resolutions, kwargs, source)
    img_channels = _shape(synthesis, f"{img_resolution}x{img_resolution}/ToRGB/weight", source)[3]

    # Mapping network, from the dense layer shapes ('Dense0/weight' is [in, out]).
    mapping_layers = len([n for n in mapping.variables if re.fullmatch(r"Dense\d+/weight", n)])
    if mapping_layers == 0 or kwargs.get("mapping_layers", mapping_layers) != mapping_layers:
        raise CheckpointError(f"{source}: found {mapping_layers} mapping layers (Dense*/weight), static_kwargs "
                              f"say {kwargs.get('mapping_layers')}; the mapping network is incomplete.")
    w_dim = _shape(mapping, f"Dense{mapping_layers - 1}/weight", source)[1]
    mapping_inputs, hidden = _shape(mapping, "Dense0/weight", source)
    c_dim = embed_features = 0
    if "LabelEmbed/weight" in mapping.variables:
        c_dim, embed_features = _shape(mapping, "LabelEmbed/weight", source)
    use_noise = bool(kwargs.get("use_noise", True))
    if use_noise != ("noise0" in synthesis.variables):
        raise CheckpointError(f"{source}: static_kwargs use_noise={use_noise} but noise variables are "
                              f"{'absent' if use_noise else 'present'}; the file is inconsistent.")

    config = StyleGAN2Config(
        z_dim=mapping_inputs - embed_features,
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=img_resolution,
        img_channels=img_channels,
        channels=channels,
        architecture=architecture,
        conv_clamp=None if kwargs.get("conv_clamp") is None else float(kwargs["conv_clamp"]),
        num_fp16_res=int(kwargs.get("num_fp16_res", 0)),
        resample_filter=_resample_taps(kwargs, source),
        use_noise=use_noise,
        mapping_layers=mapping_layers,
        mapping_embed_features=embed_features if c_dim and embed_features != w_dim else None,
        mapping_layer_features=hidden if mapping_layers > 1 and hidden != w_dim else None,
        mapping_activation=activation,
        mapping_lr_multiplier=float(kwargs.get("mapping_lrmul", 0.01)),
        has_w_avg=True,
    )
    return config, flavor


# ---------------------------------------------------------------------------------------------------------------------
# Conversion.


def convert_tf_generator(gs: TFNetworkRecord, source: str = "<pickle>") -> Generator:
    """Build a Generator from the TF record of Gs; every TF variable except Gs/lod must be used."""
    config, flavor = infer_config(gs, source)
    networks = {"Gs": gs, "mapping": gs.components["mapping"], "synthesis": gs.components["synthesis"]}

    state: dict[str, torch.Tensor] = {}
    used: set[str] = {"Gs/lod"}  # G_main's level-of-detail input; it matters only to progressive growing.
    for parameter in tf_parameter_map(config):
        network = networks[parameter.network]
        value = network.variables.get(parameter.tf_name)
        if value is None:
            raise CheckpointError(f"{source}: TF variable {parameter.network}/{parameter.tf_name} is missing for "
                                  f"the inferred {config.architecture!r} generator; the file is incomplete.")
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(f"{source}: TF variable {parameter.network}/{parameter.tf_name} has dtype "
                                  f"{value.dtype}, expected floating point.")
        array = np.array(to_torch_layout(value, parameter.layout), dtype=np.float32, order="C")
        state[parameter.key] = torch.from_numpy(array)
        used.add(f"{parameter.network}/{parameter.tf_name}")

    present = {f"Gs/{name}" for name in gs.variables}
    present |= {f"{component}/{name}" for component in ("mapping", "synthesis")
                for name in networks[component].variables}
    unused = sorted(present - used)
    if unused:
        raise CheckpointError(f"{source}: TF variables {unused[:8]} have no place in a StyleGAN2 "
                              f"{config.architecture!r} generator; the network has layers StyleBridge does not "
                              f"convert.")

    generator = _build(config, state, source)
    generator.source = {"format": "tf-pickle", "flavor": flavor, "network": gs.name or "Gs",
                        "build_func_name": networks["synthesis"].build_func_name, "tf_version": gs.version}
    return generator


def read_tf_pickle(path: str | os.PathLike) -> Generator:
    """Read a TF-era StyleGAN2 pickle (G, D, Gs) and return Gs as a CPU fp32 Generator in eval mode."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = load_tf_networks(file, source=source)
    except (CheckpointError, UnsafePickleError):
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise CheckpointError(f"{source} could not be read as a TF-era pickle ({type(error).__name__}: {error}); "
                              f"the file is probably truncated or damaged. Download or copy it again.") from error

    gs = _select_generator(data, source)
    generator = convert_tf_generator(gs, source)
    generator.source = {"path": source, **generator.source}
    logger.info("Converted TF-era pickle %s (%s %r, %d px, %s).", source, generator.source["flavor"],
                generator.config.architecture, generator.img_resolution,
                "conditional" if generator.c_dim else "unconditional")
    return generator


# ---------------------------------------------------------------------------------------------------------------------
# Writing, for tests and fixtures.

TF_PLACEHOLDER_SOURCE = "# Source omitted: written by StyleBridge, which stores weights only.\n"
TF_FLAVORS = ("stylegan2", "stylegan2-ada")
NUMPY_MODULE_PREFIXES = ("numpy.core", "numpy._core")  # Module names that numpy 1.x and 2.x write in pickles.


class TFNetworkWriterRecord:
    """A network to pickle in the TF-era layout with `dump_tf_networks`.

    The pickle names its class `dnnlib.tflib.network.Network` and stores the state dict that the TF Network's
    `__getstate__` returns, as the real files do.
    """

    def __init__(self, name: str, build_func_name: str, static_kwargs: dict, variables: list[tuple[str, Any]],
                 components: dict[str, TFNetworkWriterRecord] | None = None, version: int = 4,
                 build_module_src: str = TF_PLACEHOLDER_SOURCE, shapes: dict[str, list] | None = None):
        self.name = name
        self.build_func_name = build_func_name
        self.static_kwargs = dict(static_kwargs)
        self.variables = list(variables)
        self.components = dict(components or {})
        self.version = version
        self.build_module_src = build_module_src
        self.shapes = dict(shapes or {})  # input_shapes, output_shapes, input_names, output_names (version 5).

    def __reduce_ex__(self, protocol):
        state = {
            "version": self.version,
            "name": self.name,
            "static_kwargs": dict(self.static_kwargs),
            "components": dict(self.components),
            "build_module_src": self.build_module_src,
            "build_func_name": self.build_func_name,
            "variables": list(self.variables),
        }
        if self.version >= 5:
            state.update(self.shapes)
        # copyreg.__newobj__ makes pickle write NEWOBJ and BUILD, as for the real Network class.
        return copyreg.__newobj__, (type(self),), state


class _TFPickler(pickle._Pickler):
    """Pure-Python pickler that writes chosen objects under other global names.

    Pickle normally names a class or function by its own module, which must import back to the same object.
    The fixtures need names that do not exist here (`dnnlib.tflib.network.Network`) or that differ between
    numpy versions, so `save_global` writes the GLOBAL or STACK_GLOBAL opcode for those objects itself, the
    same way the standard pickler does for any other global.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: BinaryIO, protocol: int, aliases: dict[int, tuple[str, str]]):
        super().__init__(file, protocol=protocol)
        self._aliases = aliases

    def save_global(self, obj, name=None):
        alias = self._aliases.get(id(obj))
        if alias is None:
            return super().save_global(obj, name)
        module, qualname = alias
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)

    # The base class dispatches Python functions to its own save_global, bypassing the override above.
    dispatch[types.FunctionType] = save_global


def dump_tf_networks(data: Any, file: BinaryIO, protocol: int = 4, numpy_prefix: str = "numpy.core") -> None:
    """Pickle `data` (TFNetworkWriterRecords and numpy arrays) with the global names of a TF-era file.

    Args:
        protocol: pickle protocol, 2 to 5.
        numpy_prefix: 'numpy.core' (what numpy 1.x writes, so every file written by the TF code has it) or
            'numpy._core' (what numpy 2.x writes).
    """
    if numpy_prefix not in NUMPY_MODULE_PREFIXES:
        raise ValueError(f"numpy_prefix {numpy_prefix!r} is invalid; expected one of {NUMPY_MODULE_PREFIXES}.")
    if not 2 <= protocol <= 5:
        raise ValueError(f"protocol {protocol} is invalid; TF-era pickles use protocols 2 to 5.")
    core = getattr(np, "_core", None) or np.core
    aliases = {
        id(TFNetworkWriterRecord): TF_NETWORK_GLOBAL,
        id(core.multiarray._reconstruct): (f"{numpy_prefix}.multiarray", "_reconstruct"),
        id(core.multiarray.scalar): (f"{numpy_prefix}.multiarray", "scalar"),
        id(core.numeric._frombuffer): (f"{numpy_prefix}.numeric", "_frombuffer"),
    }
    _TFPickler(file, protocol, aliases).dump(data)


def _fmap_kwargs(config: StyleGAN2Config) -> dict[str, int]:
    """Return fmap_base and fmap_max that reproduce `config.channels` by TF's rule, or raise ValueError.

    TF sizes the block at resolution r with min(fmap_base * 2 / r, fmap_max) channels.
    """
    fmap_max = max(config.channels)
    below_max = [(res, ch) for res, ch in zip(config.block_resolutions, config.channels, strict=True) if ch < fmap_max]
    res, ch = below_max[0] if below_max else (config.img_resolution, fmap_max)
    fmap_base = ch * res // 2
    rule = [min(fmap_base * 2 // r, fmap_max) for r in config.block_resolutions]
    if rule != config.channels:
        raise ValueError(f"channels {config.channels} do not follow TF's rule min(fmap_base * 2 / res, fmap_max) "
                         f"for any fmap_base; a TF-era pickle cannot describe them.")
    return {"fmap_base": fmap_base, "fmap_max": fmap_max}


def _generator_kwargs(config: StyleGAN2Config, flavor: str, architecture: str | None) -> dict[str, Any]:
    """Return the static kwargs of G_main as the TF training scripts pass them, leaving TF defaults out."""
    kwargs: dict[str, Any] = {"num_channels": config.img_channels, "resolution": config.img_resolution,
                              "label_size": config.c_dim, **_fmap_kwargs(config)}

    # Mapping network.
    if config.z_dim != 512:
        kwargs["latent_size"] = config.z_dim
    if config.w_dim != 512:
        kwargs["dlatent_size"] = config.w_dim
    if config.mapping_layers != 8:
        kwargs["mapping_layers"] = config.mapping_layers
    hidden = config.mapping_layer_features or config.w_dim
    if flavor == "stylegan2" and hidden != 512:
        kwargs["mapping_fmaps"] = hidden  # The original G_mapping defaults to 512, not to dlatent_size.
    if flavor == "stylegan2-ada" and config.mapping_layer_features is not None:
        kwargs["mapping_fmaps"] = config.mapping_layer_features
    embed_features = config.mapping_embed_features or config.w_dim
    if config.c_dim and (config.mapping_embed_features is not None or embed_features != config.z_dim):
        kwargs["label_fmaps"] = embed_features  # The ADA G_mapping defaults to latent_size, not to dlatent_size.
    if config.mapping_lr_multiplier != 0.01:
        kwargs["mapping_lrmul"] = config.mapping_lr_multiplier
    if config.mapping_activation != "lrelu":
        kwargs["mapping_nonlinearity"] = config.mapping_activation

    # Synthesis network.
    if [float(v) for v in config.resample_filter] != [1.0, 3.0, 3.0, 1.0]:
        kwargs["resample_kernel"] = list(config.resample_filter)
    if architecture is not None or config.architecture != "skip":
        kwargs["architecture"] = architecture or config.architecture
    if flavor == "stylegan2-ada":
        kwargs["num_fp16_res"] = config.num_fp16_res
        if config.conv_clamp is not None:
            kwargs["conv_clamp"] = config.conv_clamp
        if not config.use_noise:
            kwargs["use_noise"] = False
    return kwargs


def _check_writable(config: StyleGAN2Config, flavor: str) -> None:
    if flavor not in TF_FLAVORS:
        raise ValueError(f"flavor {flavor!r} is invalid; expected one of {TF_FLAVORS}.")
    if flavor == "stylegan2":
        problems = []
        if config.c_dim:
            problems.append("conditioning (its LabelConcat mapping differs from ours; use flavor='stylegan2-ada')")
        if config.conv_clamp is not None:
            problems.append(f"conv_clamp={config.conv_clamp}")
        if not config.use_noise:
            problems.append("use_noise=False")
        if problems:
            raise ValueError(f"The original stylegan2 TF networks have no {', '.join(problems)}; write this "
                             f"generator with flavor='stylegan2-ada'.")


def _generator_networks(generator: Generator, name: str, flavor: str, architecture: str | None, version: int,
                        build_module_src: str) -> TFNetworkWriterRecord:
    config = generator.config
    state = {key: tensor.detach().to("cpu", torch.float32).numpy() for key, tensor in generator.state_dict().items()}
    variables: dict[str, list[tuple[str, Any]]] = {"Gs": [], "mapping": [], "synthesis": []}
    if flavor == "stylegan2":
        variables["Gs"].append(("lod", np.float32(0)))
    for parameter in tf_parameter_map(config):
        value = np.array(to_tf_layout(state[parameter.key], parameter.layout), dtype=np.float32, order="C")
        if value.ndim == 0:
            value = np.float32(value)  # A TF session returns 0-d variables as numpy scalars.
        variables[parameter.network].append((parameter.tf_name, value))

    kwargs = _generator_kwargs(config, flavor, architecture)
    synthesis_func = "G_synthesis_stylegan2" if flavor == "stylegan2" else "G_synthesis"
    ws_shape = [None, config.num_ws, config.w_dim]
    image_shape = [None, config.img_channels, config.img_resolution, config.img_resolution]
    common = {"version": version, "build_module_src": build_module_src}
    synthesis = TFNetworkWriterRecord(
        "G_synthesis", synthesis_func, kwargs, variables["synthesis"], **common,
        shapes={"input_shapes": [ws_shape], "output_shapes": [image_shape], "input_names": ["dlatents_in"],
                "output_names": ["images_out"]})
    mapping = TFNetworkWriterRecord(
        "G_mapping", "G_mapping", {**kwargs, "dlatent_broadcast": config.num_ws}, variables["mapping"], **common,
        shapes={"input_shapes": [[None, config.z_dim], [None, config.c_dim]], "output_shapes": [ws_shape],
                "input_names": ["latents_in", "labels_in"], "output_names": ["dlatents_out"]})
    return TFNetworkWriterRecord(
        name, "G_main", kwargs, variables["Gs"], components={"synthesis": synthesis, "mapping": mapping}, **common,
        shapes={"input_shapes": [[None, config.z_dim], [None, config.c_dim]], "output_shapes": [image_shape],
                "input_names": ["latents_in", "labels_in"], "output_names": ["images_out"]})


def _discriminator_network(config: StyleGAN2Config, flavor: str, version: int, build_module_src: str,
                           seed: int = 0) -> TFNetworkWriterRecord:
    """Describe a small resnet discriminator with random weights, for a complete (G, D, Gs) tuple.

    It has 16 channels everywhere (fmap_max=16), the variable names of D_stylegan2 / D_main, and a label
    embedding when the generator is conditional.
    """
    rng = np.random.default_rng(seed)
    features = 16
    variables: list[tuple[str, Any]] = []

    def add(name: str, shape: list[int]) -> None:
        variables.append((name, rng.standard_normal(shape).astype(np.float32)))

    kwargs: dict[str, Any] = {"num_channels": config.img_channels, "resolution": config.img_resolution,
                              "label_size": config.c_dim, "fmap_base": features * config.img_resolution,
                              "fmap_max": features, "mbstd_group_size": 4}
    if config.c_dim:
        kwargs["mapping_fmaps"] = features
        add("LabelEmbed/weight", [config.c_dim, features])
        add("LabelEmbed/bias", [features])
    for res in reversed(config.block_resolutions[1:]):
        if res == config.img_resolution:
            add(f"{res}x{res}/FromRGB/weight", [1, 1, config.img_channels, features])
            add(f"{res}x{res}/FromRGB/bias", [features])
        add(f"{res}x{res}/Conv0/weight", [3, 3, features, features])
        add(f"{res}x{res}/Conv0/bias", [features])
        add(f"{res}x{res}/Conv1_down/weight", [3, 3, features, features])
        add(f"{res}x{res}/Conv1_down/bias", [features])
        add(f"{res}x{res}/Skip/weight", [1, 1, features, features])
    add("4x4/Conv/weight", [3, 3, features + 1, features])  # +1 input channel from the minibatch stddev layer.
    add("4x4/Conv/bias", [features])
    add("4x4/Dense0/weight", [features * 16, features])
    add("4x4/Dense0/bias", [features])
    outputs = features if config.c_dim else 1
    add("Output/weight", [features, outputs])
    add("Output/bias", [outputs])
    build_func_name = "D_stylegan2" if flavor == "stylegan2" else "D_main"
    image_shape = [None, config.img_channels, config.img_resolution, config.img_resolution]
    return TFNetworkWriterRecord(
        "D", build_func_name, kwargs, variables, version=version, build_module_src=build_module_src,
        shapes={"input_shapes": [image_shape, [None, config.c_dim]], "output_shapes": [[None, 1]],
                "input_names": ["images_in", "labels_in"], "output_names": ["scores_out"]})


def tf_networks(generator: Generator, flavor: str = "stylegan2", architecture: str | None = None,
                build_module_src: str = TF_PLACEHOLDER_SOURCE) -> tuple[TFNetworkWriterRecord, ...]:
    """Describe `generator` as the (G, D, Gs) networks of a TF-era pickle; see write_tf_pickle."""
    config = generator.config
    _check_writable(config, flavor)
    version = 4 if flavor == "stylegan2" else 5
    networks = tuple(_generator_networks(generator, name, flavor, architecture, version, build_module_src)
                     for name in ("G", "Gs"))
    discriminator = _discriminator_network(config, flavor, version, build_module_src)
    return networks[0], discriminator, networks[1]


def write_tf_pickle(generator: Generator, path: str | os.PathLike, flavor: str = "stylegan2",
                    architecture: str | None = None, protocol: int | None = None, numpy_prefix: str = "numpy.core",
                    build_module_src: str = TF_PLACEHOLDER_SOURCE) -> Path:
    """Write `generator` as a TF-era network pickle (G, D, Gs), in the layout NVIDIA's TF code writes.

    G and Gs hold the generator's weights, D is a small random discriminator, and `build_module_src` is a
    placeholder instead of TF source code. The official stylegan3 legacy.py converts these files too (checked
    by hand against its output; no test here runs it).

    Args:
        flavor: 'stylegan2' (NVlabs stylegan2: version 4 networks, G_synthesis_stylegan2, no conv_clamp, no
            conditioning) or 'stylegan2-ada' (the TF stylegan2-ada repository: version 5, G_synthesis,
            conv_clamp, num_fp16_res and LabelEmbed conditioning).
        architecture: value written as static_kwargs['architecture']. None writes the generator's
            architecture, and leaves it out for 'skip', the TF default, as the training scripts do. A value that
            differs from the generator's makes an inconsistent file, for tests.
        protocol: pickle protocol, 2 to 5. None writes what the TF training code wrote: 4 for 'stylegan2'
            (NVlabs stylegan2's misc.save_pkl uses pickle.HIGHEST_PROTOCOL, 4 on its Python 3.6/3.7) and 3 for
            'stylegan2-ada' (its training loop calls pickle.dump with the default protocol).
        numpy_prefix: see dump_tf_networks.
    """
    if protocol is None:
        protocol = 4 if flavor == "stylegan2" else 3
    path = Path(path)
    data = tf_networks(generator, flavor=flavor, architecture=architecture, build_module_src=build_module_src)
    with open(path, "xb") as file:
        dump_tf_networks(data, file, protocol=protocol, numpy_prefix=numpy_prefix)
    return path


__all__ = [
    "NUMPY_MODULE_PREFIXES",
    "SUPPORTED_MESSAGE",
    "TF_FLAVORS",
    "TF_NETWORK_GLOBAL",
    "TF_PLACEHOLDER_SOURCE",
    "TFNetworkRecord",
    "TFNetworkWriterRecord",
    "TFParameter",
    "TFPickleUnpickler",
    "convert_tf_generator",
    "dump_tf_networks",
    "infer_config",
    "load_tf_networks",
    "read_tf_pickle",
    "tf_networks",
    "tf_parameter_map",
    "to_tf_layout",
    "to_torch_layout",
    "write_tf_pickle",
]
