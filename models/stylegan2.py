"""StyleGAN2 generator (StyleGAN2 and StyleGAN2-ADA) in plain PyTorch, with no compiled ops.

Parameter and buffer names equal those of the official stylegan2-ada-pytorch / stylegan3 networks
(`mapping.fc0.weight`, `synthesis.b8.conv0.affine.bias`, ...), so their state dicts load without renaming,
and the calling convention is the official one: `G.mapping(z, c, truncation_psi, truncation_cutoff)`,
`G.synthesis(ws, noise_mode)` and `G(z, c, ...)`. Outputs match the official implementation within 1e-4
in fp32 (tests/test_fidelity.py, and docs/fidelity.md for the comparison against the official code).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .filters import setup_filter, upfirdn2d, upsample2d

logger = logging.getLogger(__name__)

NOISE_MODES = ("const", "random", "none")
ARCHITECTURES = ("orig", "skip", "resnet")

# Activation functions of the official bias_act op: (function, default gain).
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (lambda x: torch.sigmoid(x) * x, math.sqrt(2)),
}


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """Add a bias along `dim`, apply the activation, scale by its gain and clamp to +-clamp."""
    func, default_gain = _ACTIVATIONS[activation]
    gain = default_gain if gain is None else gain
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)

    # Without autograd, work in place on the fresh tensor from the bias addition to save memory passes.
    if bias is not None and not (torch.is_grad_enabled() and x.requires_grad):
        if activation == "lrelu":
            F.leaky_relu_(x, 0.2)
        elif activation != "linear":
            x = func(x)
        if gain != 1:
            x.mul_(gain)
        if clamp is not None and clamp >= 0:
            x.clamp_(-clamp, clamp)
        return x

    x = func(x)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


_skip_random_init = threading.local()


@contextlib.contextmanager
def weights_loaded_later():
    """Build modules with uninitialised weights, which is faster when a checkpoint overwrites them all."""
    previous = getattr(_skip_random_init, "active", False)
    _skip_random_init.active = True
    try:
        yield
    finally:
        _skip_random_init.active = previous


def _initial_values(shape: list[int]) -> torch.Tensor:
    """Standard normal initial weights, as the official networks use, or uninitialised memory inside
    `weights_loaded_later()`."""
    if getattr(_skip_random_init, "active", False):
        return torch.empty(shape)
    return torch.randn(shape)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def channels_for(img_resolution: int, channel_base: int = 32768, channel_max: int = 512) -> list[int]:
    """Channel counts of the synthesis blocks from 4 px up to `img_resolution`, by the official rule."""
    resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
    return [min(channel_base // res, channel_max) for res in resolutions]


# ---------------------------------------------------------------------------------------------------------------------
# Configuration.


@dataclass
class StyleGAN2Config:
    """Architecture of a StyleGAN2 generator; stored as JSON in StyleBridge safetensors metadata."""

    z_dim: int = 512                            # Input latent (Z) size; 0 = no latent.
    c_dim: int = 0                              # Conditioning label size; 0 = unconditional.
    w_dim: int = 512                            # Intermediate latent (W) size.
    img_resolution: int = 1024                  # Output resolution in pixels, a power of two >= 4.
    img_channels: int = 3                       # Output colour channels.
    channels: list[int] = field(default_factory=list)  # Channels of blocks 4 px .. img_resolution; [] = official rule.
    architecture: str = "skip"                  # 'orig', 'skip' or 'resnet'.
    conv_clamp: float | None = 256              # Clamp conv outputs to +-X; None = no clamping.
    num_fp16_res: int = 4                       # Highest N resolutions run in fp16 when fp16 is requested on CUDA.
    resample_filter: list[float] = field(default_factory=lambda: [1, 3, 3, 1])  # Resampling filter taps.
    use_noise: bool = True                      # Whether synthesis layers have noise inputs.
    mapping_layers: int = 8                     # Number of fully connected mapping layers.
    mapping_embed_features: int | None = None   # Label embedding size; None = w_dim.
    mapping_layer_features: int | None = None   # Hidden mapping layer size; None = w_dim.
    mapping_activation: str = "lrelu"           # Mapping layer activation.
    mapping_lr_multiplier: float = 0.01         # Learning-rate multiplier of the mapping layers (scales weights).
    has_w_avg: bool = True                      # Whether the mapping network tracks w_avg (needed for truncation).

    def __post_init__(self):
        for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_fp16_res", "mapping_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        if self.conv_clamp is not None and not isinstance(self.conv_clamp, (int, float)):
            raise ValueError(f"conv_clamp must be a number or None, got {self.conv_clamp!r}.")
        if self.img_resolution < 4 or self.img_resolution & (self.img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is invalid; expected one of {ARCHITECTURES}.")
        for name in (self.mapping_activation,):
            if name not in _ACTIVATIONS:
                raise ValueError(f"activation {name!r} is invalid; expected one of {sorted(_ACTIVATIONS)}.")
        if not self.channels:
            self.channels = channels_for(self.img_resolution)
        self.channels = [int(c) for c in self.channels]
        expected = int(math.log2(self.img_resolution)) - 1
        if len(self.channels) != expected:
            raise ValueError(f"channels must list {expected} blocks (4 px to {self.img_resolution} px), "
                             f"got {len(self.channels)}.")

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        # Each block has two convolutions (one at 4 px) and the last block's ToRGB takes one more latent.
        return 2 * int(math.log2(self.img_resolution)) - 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StyleGAN2Config:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown StyleGAN2 config fields {unknown}; known fields: {sorted(known)}.")
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(torch.nn.Module):
    def __init__(self,
        in_features: int,                   # Number of input features.
        out_features: int,                  # Number of output features.
        bias: bool = True,                  # Add a bias before the activation.
        activation: str = "linear",         # 'linear', 'lrelu', etc.
        lr_multiplier: float = 1.0,         # Learning-rate multiplier; the stored weights are scaled by it at run time.
        bias_init: float = 0.0,             # Initial bias value.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(_initial_values([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, activation=self.activation)


def modulated_conv2d(
    x: torch.Tensor,                    # Input [N, I, H, W].
    weight: torch.Tensor,               # Weight [O, I, k, k].
    styles: torch.Tensor,               # Per-sample input channel scales [N, I].
    noise: torch.Tensor | None = None,  # Added to the output after demodulation, broadcastable to [N, O, H', W'].
    up: int = 1,                        # 1, or 2 for a transposed convolution followed by the resampling filter.
    padding: int = 0,                   # Padding of a stride-1 convolution.
    resample_filter: torch.Tensor | None = None,  # 1-D filter for up = 2.
    demodulate: bool = True,            # Normalise each output channel's weights to unit norm.
) -> torch.Tensor:
    """StyleGAN2's modulated convolution: scale input channels by `styles`, convolve, then demodulate."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert x.shape[1] == in_channels, f"expected {in_channels} input channels, got {x.shape[1]}"  # [NIHW]
    assert styles.shape == (batch_size, in_channels), f"styles shape {list(styles.shape)}"  # [NI]

    # Pre-normalise in fp16 so that the squared weights below cannot overflow.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [NOIkk]
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [NO]

    if batch_size == 1:
        # One sample: scale the weights, which is cheaper than scaling the activations twice.
        weight = weight * styles.reshape(1, -1, 1, 1)  # [OIkk]
        if dcoefs is not None:
            weight = weight * dcoefs.reshape(-1, 1, 1, 1)
        x = _conv(x, weight.to(x.dtype), up, padding, resample_filter)
    else:
        # Several samples: scale the activations so the whole batch shares one ordinary convolution.
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = _conv(x, weight.to(x.dtype), up, padding, resample_filter)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)

    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def _conv(x: torch.Tensor, weight: torch.Tensor, up: int, padding: int,
          resample_filter: torch.Tensor | None) -> torch.Tensor:
    """Stride-1 convolution, or for up = 2 the official conv2d_resample order: a transposed convolution on the
    zero-inserted grid with "convolution" (not correlation) weights, then the resampling filter."""
    if up == 1:
        return F.conv2d(x, weight, padding=padding)
    kw = weight.shape[-1]
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up)
    taps = resample_filter.numel()
    pad0 = (taps + up - 1) // 2 + padding - (kw - 1)
    pad1 = (taps - up) // 2 + padding - (kw - up)
    return upfirdn2d(x, resample_filter, padding=[pad0, pad1, pad0, pad1], gain=up * up)


class SynthesisLayer(torch.nn.Module):
    def __init__(self,
        in_channels: int,                   # Number of input channels.
        out_channels: int,                  # Number of output channels.
        w_dim: int,                         # W size.
        resolution: int,                    # Output resolution of this layer.
        kernel_size: int = 3,               # Convolution kernel size.
        up: int = 1,                        # 1, or 2 to double the resolution.
        use_noise: bool = True,             # Add per-pixel noise.
        activation: str = "lrelu",          # Activation function.
        resample_filter: list[float] = (1, 3, 3, 1),  # Resampling filter taps.
        conv_clamp: float | None = None,    # Clamp outputs to +-X; None = no clamping.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.act_gain = _ACTIVATIONS[activation][1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_initial_values([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", _initial_values([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, noise_mode: str = "random", gain: float = 1.0,
                noise_generator: torch.Generator | None = None, styles: torch.Tensor | None = None) -> torch.Tensor:
        """Run the layer on `x`; `styles` [N, in_channels], when given, replaces `self.affine(w)` (w is unused)."""
        assert noise_mode in NOISE_MODES, f"noise_mode {noise_mode!r} not in {NOISE_MODES}"
        in_resolution = self.resolution // self.up
        assert x.shape[1:] == (self.in_channels, in_resolution, in_resolution), \
            f"expected [N, {self.in_channels}, {in_resolution}, {in_resolution}], got {list(x.shape)}"
        if styles is None:
            styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                generator=noise_generator) * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), self.activation, gain=self.act_gain * gain, clamp=act_clamp)


class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_initial_values([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, styles: torch.Tensor | None = None) -> torch.Tensor:
        """Project `x` to RGB; `styles` [N, in_channels], when given, replaces `self.affine(w)` (before weight_gain)."""
        if styles is None:
            styles = self.affine(w)
        styles = styles * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class Conv2dLayer(torch.nn.Module):
    """Plain convolution with equalised learning rate; StyleGAN2 uses it for the resnet skip (1x1, up = 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, resample_filter: list[float] = (1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = _ACTIVATIONS[activation][1]
        self.weight = torch.nn.Parameter(_initial_values([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.up > 1:
            kernel = w.shape[-1]
            assert kernel == 1, "Conv2dLayer supports upsampling only for 1x1 kernels"
            # A 1x1 convolution commutes with upsampling, so convolve at the low resolution first.
            x = F.conv2d(x, w)
            x = upsample2d(x, self.resample_filter, up=self.up)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, self.activation, gain=self.act_gain * gain, clamp=act_clamp)


# ---------------------------------------------------------------------------------------------------------------------
# Networks.


class MappingNetwork(torch.nn.Module):
    def __init__(self,
        z_dim: int,                             # Z size; 0 = no latent.
        c_dim: int,                             # Label size; 0 = no label.
        w_dim: int,                             # W size.
        num_ws: int | None,                     # Number of W+ layers to broadcast to; None = return [N, w_dim].
        num_layers: int = 8,                    # Number of mapping layers.
        embed_features: int | None = None,      # Label embedding size; None = w_dim.
        layer_features: int | None = None,      # Hidden layer size; None = w_dim.
        activation: str = "lrelu",              # Activation function.
        lr_multiplier: float = 0.01,            # Learning-rate multiplier of the layers.
        has_w_avg: bool = True,                 # Keep the w_avg buffer used by truncation.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if has_w_avg:
            self.register_buffer("w_avg", torch.zeros([w_dim]))
        self.has_w_avg = has_w_avg

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        del update_emas  # Training only; accepted for the official signature.
        x = None
        if self.z_dim > 0:
            assert z is not None and z.ndim == 2 and z.shape[1] == self.z_dim, \
                f"z must be [N, {self.z_dim}], got {None if z is None else list(z.shape)}"
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert c is not None and c.ndim == 2 and c.shape[1] == self.c_dim, \
                f"c must be [N, {self.c_dim}], got {None if c is None else list(c.shape)}"
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]

        if truncation_psi != 1:
            if not self.has_w_avg:
                raise ValueError("This generator has no w_avg, so truncation is unavailable; use truncation_psi=1.")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisBlock(torch.nn.Module):
    def __init__(self,
        in_channels: int,                   # Input channels; 0 = first block, which starts from a learned constant.
        out_channels: int,                  # Output channels.
        w_dim: int,                         # W size.
        resolution: int,                    # Resolution of this block.
        img_channels: int,                  # Output image channels.
        is_last: bool,                      # Whether this is the last block.
        architecture: str = "skip",         # 'orig', 'skip' or 'resnet'.
        resample_filter: list[float] = (1, 3, 3, 1),
        conv_clamp: float | None = 256,
        use_fp16: bool = False,             # Run in fp16 when the generator runs on CUDA in fp16.
        use_noise: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.num_conv = 0
        self.num_torgb = 0
        layer_kwargs = dict(w_dim=w_dim, resolution=resolution, resample_filter=resample_filter,
                            conv_clamp=conv_clamp, use_noise=use_noise)

        if in_channels == 0:
            self.const = torch.nn.Parameter(_initial_values([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor | None,
                noise_mode: str = "random", force_fp32: bool = False, noise_generator: torch.Generator | None = None,
                styles: list[torch.Tensor] | None = None):
        """Run the block from its W+ slice `ws` [N, num_conv + num_torgb, w_dim], or from `styles`.

        `styles`, when given, holds the affine outputs of the block's layers in order (conv0, conv1, torgb), each
        [N, in_channels of that layer]; `ws` is then unused and may be None.
        """
        if styles is None:
            assert ws.shape[1] == self.num_conv + self.num_torgb, f"block {self.resolution}: ws shape {list(ws.shape)}"
            inputs = iter([(w, None) for w in ws.unbind(dim=1)])
            reference = ws
        else:
            assert len(styles) == self.num_conv + self.num_torgb, f"block {self.resolution}: {len(styles)} styles"
            inputs = iter([(None, s) for s in styles])
            reference = styles[0]
        use_fp16 = self.use_fp16 and not force_fp32 and reference.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        layer_kwargs = dict(noise_mode=noise_mode, noise_generator=noise_generator)

        # Input. On the CPU, oneDNN runs these convolutions (transposed ones most of all) markedly faster on
        # channels-last activations; the values are the same up to float rounding.
        memory_format = torch.channels_last if reference.device.type == "cpu" else torch.contiguous_format
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([reference.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype=dtype)
        x = x.contiguous(memory_format=memory_format)

        # Main layers.
        if self.in_channels == 0:
            w, s = next(inputs)
            x = self.conv1(x, w, styles=s, **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            w, s = next(inputs)
            x = self.conv0(x, w, styles=s, **layer_kwargs)
            w, s = next(inputs)
            x = self.conv1(x, w, styles=s, gain=np.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            w, s = next(inputs)
            x = self.conv0(x, w, styles=s, **layer_kwargs)
            w, s = next(inputs)
            x = self.conv1(x, w, styles=s, **layer_kwargs)

        # ToRGB, summed over resolutions in the skip architecture.
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            w, s = next(inputs)
            y = self.torgb(x, w, styles=s).to(torch.float32)
            img = img + y if img is not None else y
        return x, img

    def style_layers(self) -> list[torch.nn.Module]:
        """The block's layers that take a style, in the order `forward` runs them (conv0, conv1, torgb)."""
        layers = [self.conv0] if self.in_channels != 0 else []
        layers.append(self.conv1)
        if self.is_last or self.architecture == "skip":
            layers.append(self.torgb)
        return layers


@dataclass(frozen=True)
class StyleLayer:
    """One layer of style space S: a layer whose style vector is an affine transform of one W+ entry."""

    index: int          # Position in S (synthesis order).
    name: str           # Module name in the synthesis network: "b8.conv0", "b8.torgb", "L3_52_512", "input".
    stage: int          # Stage of SynthesisNetwork.run_style_stages that runs it (a StyleGAN2 block).
    resolution: int     # Output resolution of the layer, in pixels (StyleGAN3: its sampling rate).
    channels: int       # Style width: the layer's input channels (4 for StyleGAN3's input transform).
    kind: str           # "conv", "torgb", or "input" (StyleGAN3's learned rotation and translation).
    w_index: int        # W+ entry the layer's affine transform reads.

    @property
    def is_conv(self) -> bool:
        return self.kind == "conv"


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.num_fp16_res = config.num_fp16_res
        # The official default runs the fp16 blocks in fp16 on CUDA; loaders set True for a pure fp32 generator.
        self.force_fp32_default = False
        self.block_resolutions = config.block_resolutions
        log2 = int(math.log2(config.img_resolution))
        fp16_resolution = max(2 ** (log2 + 1 - config.num_fp16_res), 8)
        channels = dict(zip(self.block_resolutions, config.channels, strict=True))
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == config.img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0, channels[res], w_dim=config.w_dim, resolution=res,
                img_channels=config.img_channels, is_last=is_last, architecture=config.architecture,
                resample_filter=config.resample_filter, conv_clamp=config.conv_clamp,
                use_fp16=res >= fp16_resolution, use_noise=config.use_noise)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)
        assert self.num_ws == config.num_ws

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool | None = None,
                noise_generator: torch.Generator | None = None, **unused) -> torch.Tensor:
        """Render images [N, C, H, W] (about -1..1) from W+ latents [N, num_ws, w_dim]."""
        unused.pop("update_emas", None)
        unused.pop("fused_modconv", None)  # The official switch between two equal computations.
        if unused:
            raise TypeError(f"Unexpected synthesis arguments: {sorted(unused)}")
        self._check_ws_shape(ws)
        ws = ws.to(torch.float32)
        if force_fp32 is None:
            force_fp32 = self.force_fp32_default
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, force_fp32=force_fp32,
                           noise_generator=noise_generator)
        return img

    # Style space: S is the list of every affine output, one tensor [N, in_channels] per SynthesisLayer and
    # ToRGBLayer, in the order the layers run. A block is one stage of `run_style_stages`.

    def style_layout(self) -> list[StyleLayer]:
        """Describe every layer of S ("b4.conv1", "b4.torgb", "b8.conv0", ...) in S order."""
        # The layout depends only on the architecture, so it is built once (outside nn.Module's attributes).
        if "_style_layout" not in self.__dict__:
            self.__dict__["_style_layout"] = self._build_style_layout()
        return list(self.__dict__["_style_layout"])

    def _build_style_layout(self) -> list[StyleLayer]:
        layout = []
        w_index = 0
        for stage, res in enumerate(self.block_resolutions):
            block = getattr(self, f"b{res}")
            for position, layer in enumerate(block.style_layers()):
                name = layer_name(block, layer)
                layout.append(StyleLayer(len(layout), f"b{res}.{name}", stage, res, layer.in_channels,
                                         "torgb" if name == "torgb" else "conv", w_index + position))
            w_index += block.num_conv
        return layout

    def style_modules(self) -> list[torch.nn.Module]:
        """Return the layers that take a style, in S order. Each has an `affine` FullyConnectedLayer."""
        return [layer for res in self.block_resolutions for layer in getattr(self, f"b{res}").style_layers()]

    def style_layer_names(self) -> list[str]:
        """Return the module names of the layers that take a style ("b4.conv1", "b4.torgb", ...), in S order."""
        return [layer.name for layer in self.style_layout()]

    def _check_ws_shape(self, ws: torch.Tensor) -> None:
        assert ws.ndim == 3, f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
        assert ws.shape[1:] == (self.num_ws, self.w_dim), \
            f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"

    def ws_to_styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Compute S from W+ [N, num_ws, w_dim]: each layer's affine output, exactly as `forward` computes it."""
        self._check_ws_shape(ws)
        ws = ws.to(torch.float32)
        return [module.affine(ws[:, layer.w_index])  # [N, in_channels]
                for layer, module in zip(self.style_layout(), self.style_modules(), strict=True)]

    def run_style_stages(self, styles: list[torch.Tensor], first: int = 0, last: int | None = None,
                         state: tuple | None = None, noise_mode: str = "random", force_fp32: bool | None = None,
                         noise_generator: torch.Generator | None = None) -> tuple[tuple, torch.Tensor | None]:
        """Run blocks first..last-1 from `state` with the styles of S (all layers' tensors, see `ws_to_styles`).

        `state` is what an earlier call returned for the blocks before `first` (None when `first` is 0), so a
        caller that edits the styles of one block can run the blocks before it once. Returns the new state and the
        image [N, C, H, W] once the last block has run (else None).
        """
        layout = self.style_layout()
        assert len(styles) == len(layout), f"expected {len(layout)} style tensors, got {len(styles)}"
        for layer, style in zip(layout, styles, strict=True):
            assert style.ndim == 2, f"style {layer.index} ({layer.name}) must be [N, channels], got {list(style.shape)}"
            assert style.shape[1] == layer.channels, \
                f"style {layer.index} ({layer.name}) must be [N, {layer.channels}], got {list(style.shape)}"
        last = len(self.block_resolutions) if last is None else last
        assert (state is None) == (first == 0), "pass the state of the blocks before `first`, and only then"
        if force_fp32 is None:
            force_fp32 = self.force_fp32_default
        x, img = state if state is not None else (None, None)
        for stage in range(first, last):
            block = getattr(self, f"b{self.block_resolutions[stage]}")
            block_styles = [styles[layer.index].to(torch.float32) for layer in layout if layer.stage == stage]
            x, img = block(x, img, None, noise_mode=noise_mode, force_fp32=force_fp32,
                           noise_generator=noise_generator, styles=block_styles)
        return (x, img), (img if last == len(self.block_resolutions) else None)

    def synthesis_from_styles(self, styles: list[torch.Tensor], noise_mode: str = "random",
                              force_fp32: bool | None = None,
                              noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """Render images [N, C, H, W] from S (see `ws_to_styles`); equal to `forward` on the W+ that gave S."""
        _, img = self.run_style_stages(styles, noise_mode=noise_mode, force_fp32=force_fp32,
                                       noise_generator=noise_generator)
        return img


def layer_name(block: SynthesisBlock, layer: torch.nn.Module) -> str:
    """Attribute name of `layer` inside `block` ("conv0", "conv1" or "torgb")."""
    for name in ("conv0", "conv1", "torgb"):
        if getattr(block, name, None) is layer:
            return name
    raise ValueError(f"{type(layer).__name__} is not a layer of block b{block.resolution}.")


class Generator(torch.nn.Module):
    """StyleGAN2 generator with the official attributes (z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels)."""

    architecture_name = "stylegan2"

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=config.z_dim, c_dim=config.c_dim, w_dim=config.w_dim, num_ws=self.num_ws,
            num_layers=config.mapping_layers, embed_features=config.mapping_embed_features,
            layer_features=config.mapping_layer_features, activation=config.mapping_activation,
            lr_multiplier=config.mapping_lr_multiplier, has_w_avg=config.has_w_avg)
        self._fingerprint: str | None = None
        self.source: dict[str, Any] = {}  # Where the weights came from: path, format; set by the loader.

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    @property
    def fingerprint(self) -> str:
        """Hex digest identifying this generator's W space: the mapping network's weights and the W+ layout.

        Latents are valid for every generator with the same fingerprint, which includes copies of this one in
        other file formats and generators fine-tuned with a frozen mapping network. Computed once; call
        `reset_fingerprint()` after changing the mapping weights in place.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(f"{self.num_ws}:{self.w_dim}:{self.z_dim}:{self.c_dim}".encode())
            for name, tensor in sorted(self.mapping.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def reset_fingerprint(self) -> None:
        self._fingerprint = None
