"""StyleGAN3 generator (configs T and R) in plain PyTorch, with no compiled ops.

Parameter and buffer names equal those of the official stylegan3 `training/networks_stylegan3.py`
(`synthesis.input.freqs`, `synthesis.L3_52_512.up_filter`, ...), and the calling convention is the one of
StyleBridge's StyleGAN2 `Generator`: `G.mapping(z, c, truncation_psi, truncation_cutoff)`, `G.synthesis(ws)` and
`G(z, c, ...)`. Noise modes are accepted and ignored, as StyleGAN3 has no noise inputs.

Each synthesis layer runs a modulated convolution followed by a filtered leaky ReLU: upsample with a low-pass
filter, apply the nonlinearity at the higher rate, then low-pass filter and downsample. `filtered_lrelu_reference`
is the direct definition (zero insertion and full-rate filtering). `filtered_lrelu` computes the same values
with strided transposed convolutions for upsampling and strided convolutions for downsampling, so it never
builds the zero-inserted image and never computes the samples that downsampling discards. Tests compare the two.
Outputs match the official implementation within 1e-5 in fp32 on CPU. bench/bench_stylegan3.py prints the
difference for two large configurations, and tests/test_stylegan3.py checks values rendered by the official code.

The filters and the Fourier feature frequencies are buffers in the state dict, so a loaded generator uses the
checkpoint's filters. `design_lowpass_filter` designs them only for generators built from a config.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .filters import upfirdn2d
from .stylegan2 import NOISE_MODES, FullyConnectedLayer, MappingNetwork, StyleLayer
from .stylegan2 import Generator as _StyleGAN2Generator

if TYPE_CHECKING:
    from .safe_pickle import PersistentRecord

logger = logging.getLogger(__name__)

FILTER_IMPLEMENTATIONS = ("fast", "reference")


# ---------------------------------------------------------------------------------------------------------------------
# Configuration.


@dataclass
class StyleGAN3Config:
    """Architecture of a StyleGAN3 generator; stored as JSON in StyleBridge safetensors metadata.

    The defaults are the official StyleGAN3-T settings. `for_variant("r")` applies the StyleGAN3-R changes.
    """

    z_dim: int = 512                            # Input latent (Z) size.
    c_dim: int = 0                              # Conditioning label size; 0 = unconditional.
    w_dim: int = 512                            # Intermediate latent (W) size.
    img_resolution: int = 1024                  # Output resolution in pixels, a power of two >= 4.
    img_channels: int = 3                       # Output colour channels.
    channels: list[int] = field(default_factory=list)  # Output channels of L0 .. L{num_layers}; [] = official rule.
    channel_base: int = 32768                   # Channel rule: channels = min(channel_base / 2 / cutoff, channel_max).
    channel_max: int = 512                      # Channel rule: maximum channels of a layer.
    num_layers: int = 14                        # Synthesis layers, excluding the Fourier input and ToRGB.
    num_critical: int = 2                       # Critically sampled layers at the end.
    first_cutoff: float = 2.0                   # Cutoff frequency of the first layer, in cycles per image.
    first_stopband: float = 2 ** 2.1            # Minimum stopband frequency of the first layer.
    last_stopband_rel: float = 2 ** 0.3         # Minimum stopband of the last layer, relative to its cutoff.
    margin_size: int = 10                       # Extra pixels on each side of the image in intermediate layers.
    output_scale: float = 0.25                  # Scale factor of the output image.
    num_fp16_res: int = 4                       # Layers at the N highest sampling rates run in fp16 on CUDA.
    conv_kernel: int = 3                        # Convolution kernel size (1 in StyleGAN3-R); ToRGB always uses 1.
    filter_size: int = 6                        # Low-pass filter taps per factor of up/downsampling.
    lrelu_upsampling: int = 2                   # Sampling rate of the leaky ReLU relative to the layer's rate.
    use_radial_filters: bool = False            # Radially symmetric downsampling filters (StyleGAN3-R).
    conv_clamp: float | None = 256              # Clamp layer outputs to +-X; None = no clamping.
    magnitude_ema_beta: float = 0.999           # Training-only decay of magnitude_ema; kept for written pickles.
    mapping_layers: int = 2                     # Number of fully connected mapping layers.
    mapping_lr_multiplier: float = 0.01         # Learning-rate multiplier of the mapping layers (scales weights).

    def __post_init__(self):
        if self.img_resolution < 4 or self.img_resolution & (self.img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}.")
        if self.num_layers <= self.num_critical or self.num_critical < 0:
            raise ValueError(f"num_layers ({self.num_layers}) must be greater than num_critical "
                             f"({self.num_critical}), and num_critical must be >= 0.")
        for name in ("conv_kernel", "filter_size", "lrelu_upsampling", "mapping_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.channels:
            self.channels = _channel_rule(self)
        self.channels = [int(c) for c in self.channels]
        if len(self.channels) != self.num_layers + 1:
            raise ValueError(f"channels must list {self.num_layers + 1} layers (L0 to L{self.num_layers}), "
                             f"got {len(self.channels)}.")
        if self.channels[-1] != self.img_channels:
            raise ValueError(f"the last entry of channels is the ToRGB output and must equal img_channels "
                             f"({self.img_channels}), got {self.channels[-1]}.")

    @classmethod
    def for_variant(cls, variant: str, **fields: Any) -> StyleGAN3Config:
        """Build the official 't' or 'r' configuration, with `fields` overriding single values.

        'r' doubles channel_base and channel_max, uses 1x1 convolutions and radial downsampling filters, as the
        official train.py does for --cfg=stylegan3-r. The doubling applies to the channel_base and channel_max
        given in `fields` too.
        """
        variant = variant.lower().removeprefix("stylegan3-")
        if variant not in ("t", "r"):
            raise ValueError(f"variant {variant!r} is invalid; expected 't' or 'r'.")
        if variant == "r":
            fields["channel_base"] = 2 * fields.get("channel_base", cls.channel_base)
            fields["channel_max"] = 2 * fields.get("channel_max", cls.channel_max)
            fields.setdefault("conv_kernel", 1)
            fields.setdefault("use_radial_filters", True)
        return cls(**fields)

    @property
    def num_ws(self) -> int:
        # One latent for the Fourier input, one per layer and one for ToRGB.
        return self.num_layers + 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StyleGAN3Config:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown StyleGAN3 config fields {unknown}; known fields: {sorted(known)}.")
        return cls(**values)


def _frequency_plan(config: StyleGAN3Config) -> dict[str, np.ndarray]:
    """Per-layer cutoffs, stopbands, sampling rates, half widths and sizes, by the official rule (float64)."""
    last_cutoff = config.img_resolution / 2
    last_stopband = last_cutoff * config.last_stopband_rel
    # Cutoffs and stopbands grow geometrically and stay constant over the critically sampled layers.
    exponents = np.minimum(np.arange(config.num_layers + 1) / (config.num_layers - config.num_critical), 1)
    cutoffs = config.first_cutoff * (last_cutoff / config.first_cutoff) ** exponents
    stopbands = config.first_stopband * (last_stopband / config.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, config.img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config.margin_size * 2
    sizes[-2:] = config.img_resolution
    return {"cutoffs": cutoffs, "stopbands": stopbands, "sampling_rates": sampling_rates,
            "half_widths": half_widths, "sizes": sizes}


def _channel_rule(config: StyleGAN3Config) -> list[int]:
    cutoffs = _frequency_plan(config)["cutoffs"]
    channels = np.rint(np.minimum((config.channel_base / 2) / cutoffs, config.channel_max))
    channels[-1] = config.img_channels
    return [int(c) for c in channels]


@dataclass
class LayerSpec:
    """Geometry of one synthesis layer; the field names are the official SynthesisLayer attribute names."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: list[int]                  # [width, height] in pixels.
    out_size: list[int]
    in_sampling_rate: int               # Samples per image width.
    out_sampling_rate: int
    tmp_sampling_rate: int              # Rate at which the leaky ReLU runs.
    in_cutoff: float                    # Cycles per image width.
    out_cutoff: float
    in_half_width: float                # Transition band half width.
    out_half_width: float
    conv_kernel: int
    up_factor: int
    up_taps: int                        # 1 = no upsampling filter.
    down_factor: int
    down_taps: int
    down_radial: bool
    padding: list[int]                  # [x_before, x_after, y_before, y_after] of the upsampled image.


@dataclass
class InputSpec:
    """Geometry of the Fourier feature input; the field names are the official SynthesisInput attribute names."""

    channels: int
    size: list[int]                     # [width, height] in pixels, margins included.
    sampling_rate: float                # Samples per image width.
    bandwidth: float                    # Maximum frequency of the features, in cycles per image width.


def synthesis_specs(config: StyleGAN3Config) -> tuple[InputSpec, list[LayerSpec]]:
    """Compute the input and layer geometry of the official SynthesisNetwork for `config`."""
    plan = _frequency_plan(config)
    cutoffs, sampling_rates = plan["cutoffs"], plan["sampling_rates"]
    half_widths, sizes = plan["half_widths"], plan["sizes"]
    channels = config.channels
    input_spec = InputSpec(channels=channels[0], size=[int(sizes[0])] * 2, sampling_rate=float(sampling_rates[0]),
                           bandwidth=float(cutoffs[0]))

    specs = []
    for idx in range(config.num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == config.num_layers
        is_critically_sampled = idx >= config.num_layers - config.num_critical
        in_rate = int(sampling_rates[prev])
        out_rate = int(sampling_rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else config.lrelu_upsampling)
        conv_kernel = 1 if is_torgb else config.conv_kernel
        in_size = int(sizes[prev])
        out_size = int(sizes[idx])

        up_factor = int(np.rint(tmp_rate / in_rate))
        down_factor = int(np.rint(tmp_rate / out_rate))
        if in_rate * up_factor != tmp_rate or out_rate * down_factor != tmp_rate:
            raise ValueError(f"layer {idx}: sampling rates {in_rate} -> {tmp_rate} -> {out_rate} are not integer "
                             f"multiples; check lrelu_upsampling and the stopband settings.")
        up_taps = config.filter_size * up_factor if up_factor > 1 and not is_torgb else 1
        down_taps = config.filter_size * down_factor if down_factor > 1 and not is_torgb else 1

        # Pad so that the output has out_size samples, centred as in the official symmetric interpretation:
        # the extra half sample of an even filter goes to the low side, shifted by the upsampling factor.
        pad_total = (out_size - 1) * down_factor + 1
        pad_total -= (in_size + conv_kernel - 1) * up_factor
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + up_factor) // 2
        pad_hi = pad_total - pad_lo

        specs.append(LayerSpec(
            name=f"L{idx}_{out_size}_{channels[idx]}",
            is_torgb=is_torgb,
            is_critically_sampled=is_critically_sampled,
            use_fp16=bool(sampling_rates[idx] * (2 ** config.num_fp16_res) > config.img_resolution),
            in_channels=channels[prev],
            out_channels=channels[idx],
            in_size=[in_size, in_size],
            out_size=[out_size, out_size],
            in_sampling_rate=in_rate,
            out_sampling_rate=out_rate,
            tmp_sampling_rate=tmp_rate,
            in_cutoff=float(cutoffs[prev]),
            out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[idx]),
            conv_kernel=conv_kernel,
            up_factor=up_factor,
            up_taps=up_taps,
            down_factor=down_factor,
            down_taps=down_taps,
            down_radial=bool(config.use_radial_filters and not is_critically_sampled),
            padding=[int(pad_lo), int(pad_hi), int(pad_lo), int(pad_hi)],
        ))
    return input_spec, specs


# ---------------------------------------------------------------------------------------------------------------------
# Filter design.


def _kaiser_beta(attenuation_db: float) -> float:
    """Kaiser window beta for a stopband attenuation in dB (Kaiser's empirical formula)."""
    if attenuation_db > 50:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db > 21:
        return 0.5842 * (attenuation_db - 21) ** 0.4 + 0.07886 * (attenuation_db - 21)
    return 0.0


def _kaiser_window(numtaps: int, width: float, fs: float) -> np.ndarray:
    """Kaiser window for `numtaps` taps and a transition band `width` (same unit as fs)."""
    relative_width = width / (fs / 2)
    attenuation_db = 2.285 * (numtaps - 1) * np.pi * relative_width + 7.95
    return np.kaiser(numtaps, _kaiser_beta(attenuation_db))


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """Design a Kaiser-windowed low-pass filter normalised to unit DC gain, as the official SynthesisLayer does.

    Returns None for numtaps = 1 (identity), a 1-D separable filter [numtaps], or, with `radial`, a radially
    symmetric 2-D jinc filter [numtaps, numtaps]. The separable filter equals scipy.signal.firwin(numtaps, cutoff,
    width=width, fs=fs), checked in tests/test_stylegan3.py.
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}.")
    if numtaps == 1:
        return None
    window = _kaiser_window(numtaps, width, fs)
    if not radial:
        relative_cutoff = cutoff / (fs / 2)
        offsets = np.arange(numtaps) - (numtaps - 1) / 2
        taps = relative_cutoff * np.sinc(relative_cutoff * offsets) * window
        return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)

    coordinates = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(coordinates, coordinates))
    bessel = torch.special.bessel_j1(torch.from_numpy(2 * np.pi * cutoff * radius)).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        taps = bessel / (np.pi * radius)
    # NOTE: the centre tap of an odd-sized filter takes the jinc limit (cutoff); the official code divides 0 by 0
    # there, but it only designs even sizes (filter_size * down_factor with down_factor >= 2).
    taps = np.where(radius == 0, cutoff, taps)
    taps = taps * np.outer(window, window)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Filtered leaky ReLU.


def _filter_size(f: torch.Tensor | None) -> int:
    return 1 if f is None else int(f.shape[-1])


def _upfirdn2d_any(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
                   padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """upfirdn2d for a 1-D separable filter, a 2-D filter or None (identity), by zero insertion and dense filtering."""
    if f is None or f.ndim == 1:
        return upfirdn2d(x, f, up=up, down=down, padding=list(padding), gain=gain)
    px0, px1, py0, py1 = padding
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(batch, channels, height * up, width * up)
    x = F.pad(x, [px0, px1, py0, py1])  # Negative padding crops.
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(channels, 1, -1, -1)
    x = F.conv2d(x, kernel, groups=channels)
    return x[:, :, ::down, ::down]


def _activate(x: torch.Tensor, gain: float, slope: float, clamp: float | None, inplace: bool) -> torch.Tensor:
    """Leaky ReLU with negative slope `slope`, then scale by `gain` and clamp to +-clamp (official bias_act order)."""
    if slope != 1:
        x = F.leaky_relu_(x, slope) if inplace else F.leaky_relu(x, slope)
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def _check_filtered_lrelu_args(x: torch.Tensor, b: torch.Tensor | None, up: int, down: int, padding: Sequence[int],
                               gain: float, slope: float) -> tuple[int, int, int, int]:
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects x of shape [N, C, H, W], got {list(x.shape)}.")
    if b is not None and tuple(b.shape) != (x.shape[1],):
        raise ValueError(f"filtered_lrelu bias must have shape [{x.shape[1]}], got {list(b.shape)}.")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}.")
    if gain <= 0 or slope < 0:
        raise ValueError(f"filtered_lrelu needs gain > 0 and slope >= 0, got gain={gain}, slope={slope}.")
    if len(padding) != 4:
        raise ValueError(f"padding must be [x_before, x_after, y_before, y_after], got {list(padding)}.")
    return tuple(int(p) for p in padding)


def filtered_lrelu_reference(
    x: torch.Tensor,                        # Input [N, C, H, W].
    fu: torch.Tensor | None,                # Upsampling filter: 1-D separable [taps], 2-D [taps, taps] or None.
    fd: torch.Tensor | None,                # Downsampling filter, same forms.
    b: torch.Tensor | None = None,          # Bias [C], added before upsampling.
    up: int = 1,                            # Upsampling factor (zero insertion).
    down: int = 1,                          # Downsampling factor.
    padding: Sequence[int] = (0, 0, 0, 0),  # [x_before, x_after, y_before, y_after] of the upsampled image.
    gain: float = math.sqrt(2),             # Scale after the leaky ReLU.
    slope: float = 0.2,                     # Negative slope of the leaky ReLU; 1 = linear.
    clamp: float | None = None,             # Clamp to +-clamp after the gain; None = no clamping.
) -> torch.Tensor:
    """Filtered leaky ReLU by its definition: bias, zero-insertion upsampling with `fu` (gain up**2), leaky ReLU,
    gain and clamp, then filtering with `fd` and keeping every `down`-th sample."""
    padding = _check_filtered_lrelu_args(x, b, up, down, padding, gain, slope)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = _upfirdn2d_any(x, fu, up=up, padding=padding, gain=up ** 2)
    x = _activate(x, gain, slope, clamp, inplace=False)
    return _upfirdn2d_any(x, fd, down=down)


def _crop_or_pad(x: torch.Tensor, before: int, after: int, axis: int) -> torch.Tensor:
    """Pad `axis` (2 = H, 3 = W) with zeros by positive amounts and crop it by negative ones."""
    if before <= 0 and after <= 0:
        return x.narrow(axis, -before, x.shape[axis] + before + after)
    pad = [before, after] if axis == 3 else [0, 0, before, after]
    return F.pad(x, pad)


def _upsample_axis(x: torch.Tensor, kernel: torch.Tensor, up: int, pad0: int, pad1: int, axis: int) -> torch.Tensor:
    """Zero-insert by `up`, pad by (pad0, pad1) and convolve with the 1-D `kernel` along `axis` (2 = H, 3 = W).

    A depthwise transposed convolution with stride `up` computes sum_n x[n] kernel[i - up*n], which is zero
    insertion followed by convolution, without building the zero-inserted image. Its full output starts
    taps - 1 - pad0 samples before the requested one and ends taps - up - pad1 samples after it. Where they fit,
    these crops become the convolution's padding and output_padding, which saves a copy. output_padding can only
    make the end crop shorter than the start crop, so when the end crop is longer, a leading zero tap delays the
    output by one sample to swap that.
    """
    channels = x.shape[1]
    taps = kernel.numel()
    crop_before, crop_after = taps - 1 - pad0, taps - up - pad1
    if crop_before < crop_after and up > 1:
        kernel = F.pad(kernel, [1, 0])
        taps += 1
        crop_before += 1
    shape = [channels, 1, taps, 1] if axis == 2 else [channels, 1, 1, taps]
    stride = (up, 1) if axis == 2 else (1, up)
    weight = kernel.reshape(shape[1:]).expand(shape)

    output_padding = crop_before - crop_after
    if crop_after >= 0 and 0 <= output_padding < up:
        padding = (crop_before, 0) if axis == 2 else (0, crop_before)
        extra = (output_padding, 0) if axis == 2 else (0, output_padding)
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding, output_padding=extra, groups=channels)
    x = F.conv_transpose2d(x, weight, stride=stride, groups=channels)
    return _crop_or_pad(x, -crop_before, -crop_after, axis)


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Sequence[int] = (0, 0, 0, 0),
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """Same result as `filtered_lrelu_reference` (within float rounding), computed with strided transposed
    convolutions for upsampling and strided convolutions for downsampling, so no zero-inserted image is built
    and no discarded sample is computed.

    A 2-D upsampling filter (the official networks never design one) falls back to the reference.
    """
    padding = _check_filtered_lrelu_args(x, b, up, down, padding, gain, slope)
    if fu is not None and fu.ndim == 2:
        return filtered_lrelu_reference(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    channels = x.shape[1]

    # 1. Bias at the input rate, as in the definition: zero padding makes it differ from a bias after upsampling.
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)

    # 2. Upsample along H, then W. The leaky ReLU commutes with a positive scale, so the activation gain joins
    #    the filter gain up**2 here, split evenly between the two axes.
    axis_gain = up * math.sqrt(gain)
    px0, px1, py0, py1 = padding
    if fu is None and up == 1:
        x = F.pad(x, [px0, px1, py0, py1]) * (axis_gain ** 2)
    else:
        if x.device.type == "cpu":
            # oneDNN's depthwise (transposed) convolutions ran 2-3x faster on channels-last tensors when measured
            # on a 2-core x86 machine with torch 2.14.
            x = x.contiguous(memory_format=torch.channels_last)
        kernel = torch.ones([1], dtype=x.dtype, device=x.device) if fu is None else fu.to(x.dtype)
        kernel = kernel * axis_gain
        x = _upsample_axis(x, kernel, up, py0, py1, axis=2)
        x = _upsample_axis(x, kernel, up, px0, px1, axis=3)

    # 3. Nonlinearity at the high rate. x is a fresh tensor here, so in-place ops are safe unless autograd needs
    #    the leaky ReLU's output for the backward pass (projection, StyleCLIP optimisation).
    x = _activate(x, 1.0, slope, clamp, inplace=not (x.requires_grad and torch.is_grad_enabled()))

    # 4. Downsampling filter evaluated only at the kept samples.
    if fd is not None:
        fd = fd.to(x.dtype)
        if fd.ndim == 1:
            taps = fd.flip(0)
            x = F.conv2d(x, taps.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1), stride=(1, down), groups=channels)
            x = F.conv2d(x, taps.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1), stride=(down, 1), groups=channels)
        else:
            x = F.conv2d(x, fd.flip([0, 1])[None, None].repeat(channels, 1, 1, 1), stride=down, groups=channels)
    elif down > 1:
        x = x[:, :, ::down, ::down]
    return x


# ---------------------------------------------------------------------------------------------------------------------
# Layers.


def modulated_conv2d(
    x: torch.Tensor,                        # Input [N, I, H, W].
    weight: torch.Tensor,                   # Weight [O, I, k, k].
    styles: torch.Tensor,                   # Per-sample input channel scales [N, I].
    demodulate: bool = True,                # Normalise each output channel's modulated weights to unit norm.
    padding: int = 0,                       # Zero padding of the convolution.
    input_gain: torch.Tensor | None = None, # Input scale applied after demodulation: [] or [N, I].
    bias: torch.Tensor | None = None,       # Added to the output [O]; None = no bias.
) -> torch.Tensor:
    """StyleGAN3's modulated convolution: like StyleGAN2's, plus weight and style pre-normalisation and input_gain.

    Each sample gets its own modulated weights, and the batch runs as one grouped convolution (groups = N), so a
    single image is one ordinary convolution with the bias fused in.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert x.shape[1] == in_channels, f"expected {in_channels} input channels, got {x.shape[1]}"  # [NIHW]
    assert styles.shape == (batch_size, in_channels), f"styles shape {list(styles.shape)}"  # [NI]

    if demodulate:
        # Normalise first, as the official code does, so that the squares below stay in range in fp16.
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [NOIkk]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [NO]
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(batch_size, in_channels).reshape(batch_size, 1, -1, 1, 1)

    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw).to(x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
        # A channels-last input with a contiguous weight would be copied to contiguous layout first.
        w = w.contiguous(memory_format=torch.channels_last)
    if bias is not None:
        bias = bias.to(x.dtype).repeat(batch_size)
    x = F.conv2d(x, w, bias=bias, padding=padding, groups=batch_size)
    return x.reshape(batch_size, out_channels, *x.shape[2:])


def fourier_features_init(channels: int, bandwidth: float,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the initial frequencies [channels, 2] and phases [channels] of the Fourier input.

    Frequencies follow the official initialisation: a standard normal 2-D draw of radius r keeps its direction and
    gets radius exp(-r^2 / 4) * bandwidth, which is uniform over the disc of radius `bandwidth`. Phases are
    uniform in [-0.5, 0.5).
    """
    freqs = torch.randn([channels, 2], generator=generator)
    radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
    freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
    phases = torch.rand([channels], generator=generator) - 0.5
    return freqs, phases


class SynthesisInput(torch.nn.Module):
    """Fourier features with a learned per-sample rotation and translation, then a learned channel mixing."""

    def __init__(self, w_dim: int, spec: InputSpec):
        super().__init__()
        self.w_dim = w_dim
        self.channels = spec.channels
        self.size = list(spec.size)             # [width, height].
        self.sampling_rate = spec.sampling_rate
        self.bandwidth = spec.bandwidth

        freqs, phases = fourier_features_init(self.channels, self.bandwidth)
        self.weight = torch.nn.Parameter(torch.randn([self.channels, self.channels]))
        # The affine layer outputs (cos, sin, tx, ty) of the learned transform; it starts as the identity.
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        # Inverse of a user transform of the output image, in image-width units; see set_input_transform().
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor | None, styles: torch.Tensor | None = None) -> torch.Tensor:
        """Compute Fourier features [N, C, H, W] for W [N, w_dim], or for the affine output `styles` [N, 4] instead."""
        if styles is None:
            assert w.ndim == 2, f"w must be [N, {self.w_dim}], got {list(w.shape)}"
            assert w.shape[1] == self.w_dim, f"w must be [N, {self.w_dim}], got {list(w.shape)}"
            styles = self.affine(w)
        batch_size = styles.shape[0]
        assert styles.shape == (batch_size, 4), f"styles must be [N, 4], got {list(styles.shape)}"
        device = styles.device

        # Learned transform: normalise the rotation part to unit length, then build the inverse rotation and
        # translation as 3x3 matrices and apply them after the user transform.
        t = styles
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # [N, 4]: cos, sin, tx, ty.
        rotation = torch.eye(3, device=device).repeat(batch_size, 1, 1)
        rotation[:, 0, 0] = t[:, 0]
        rotation[:, 0, 1] = -t[:, 1]
        rotation[:, 1, 0] = t[:, 1]
        rotation[:, 1, 1] = t[:, 0]
        translation = torch.eye(3, device=device).repeat(batch_size, 1, 1)
        translation[:, 0, 2] = -t[:, 2]
        translation[:, 1, 2] = -t[:, 3]
        transforms = rotation @ translation @ self.transform.unsqueeze(0)  # [N, 3, 3]

        # Transform the frequencies [N, C, 2] and shift the phases [N, C].
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        # Fade out frequencies that the user transform pushed beyond the band the layers can represent.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        # Pixel centres in image-width units, from affine_grid: [1, H, W, 2] with (x, y) in the last dimension.
        width, height = self.size
        theta = torch.zeros([1, 2, 3], device=device)
        theta[0, 0, 0] = 0.5 * width / self.sampling_rate
        theta[0, 1, 1] = 0.5 * height / self.sampling_rate
        grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)

        # Features sin(2 pi (<position, freq> + phase)) * amplitude, then the channel mixing.
        x = (grid.unsqueeze(3) @ freqs.transpose(1, 2)[:, None, None]).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases[:, None, None, :]) * (2 * math.pi))
        x = x * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]


class SynthesisLayer(torch.nn.Module):
    """Modulated convolution followed by a filtered leaky ReLU (or, for ToRGB, bias and clamp only)."""

    def __init__(self,
        w_dim: int,                             # W size.
        spec: LayerSpec,                        # Geometry: sizes, sampling rates, factors and padding.
        conv_clamp: float | None = 256,         # Clamp outputs to +-X; None = no clamping.
        magnitude_ema_beta: float = 0.999,      # Training-only; kept so that written pickles carry it.
        design_filters: bool = True,            # Design the filters now; False leaves placeholders to be loaded.
    ):
        super().__init__()
        self.w_dim = w_dim
        for name, value in asdict(spec).items():
            if name != "name":
                setattr(self, name, value)
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, self.in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([self.out_channels, self.in_channels, self.conv_kernel,
                                                      self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([self.out_channels]))
        # Mean square of this layer's input over training; its inverse square root normalises the input.
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", self._filter(self.up_taps, self.in_cutoff, self.in_half_width, False,
                                                       design_filters))
        self.register_buffer("down_filter", self._filter(self.down_taps, self.out_cutoff, self.out_half_width,
                                                         self.down_radial, design_filters))

    def _filter(self, taps: int, cutoff: float, half_width: float, radial: bool, design: bool) -> torch.Tensor | None:
        if taps == 1:
            return None
        if not design:
            return torch.zeros([taps, taps] if radial else [taps])
        return design_lowpass_filter(taps, cutoff, 2 * half_width, self.tmp_sampling_rate, radial=radial)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, force_fp32: bool = False,
                filter_impl: str = "fast", styles: torch.Tensor | None = None) -> torch.Tensor:
        """Run the layer with the style from W `w` [N, w_dim], or with the affine output `styles` [N, in_channels]."""
        in_width, in_height = self.in_size
        assert x.shape[1:] == (self.in_channels, in_height, in_width), \
            f"expected [N, {self.in_channels}, {in_height}, {in_width}], got {list(x.shape)}"
        if styles is None:
            assert w.shape == (x.shape[0], self.w_dim), f"w must be [{x.shape[0]}, {self.w_dim}], got {list(w.shape)}"
            styles = self.affine(w)
        assert styles.shape == (x.shape[0], self.in_channels), \
            f"styles must be [{x.shape[0]}, {self.in_channels}], got {list(styles.shape)}"
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))

        # NOTE: the fp16 CUDA path has not been compared with the official CUDA kernels, which filter in fp32
        # internally; this code filters in fp16 there. CPU always runs fp32.
        use_fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        # The fast path adds the bias inside the convolution; the reference adds it in filtered_lrelu, which
        # is the same point of the computation (before upsampling).
        fast = filter_impl == "fast"
        x = modulated_conv2d(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt(),
                             bias=self.bias if fast else None)

        implementation = filtered_lrelu if fast else filtered_lrelu_reference
        x = implementation(x, self.up_filter, self.down_filter, b=None if fast else self.bias.to(x.dtype),
                           up=self.up_factor, down=self.down_factor, padding=self.padding,
                           gain=1 if self.is_torgb else math.sqrt(2), slope=1 if self.is_torgb else 0.2,
                           clamp=self.conv_clamp)

        out_width, out_height = self.out_size
        assert x.shape[1:] == (self.out_channels, out_height, out_width), \
            f"expected [N, {self.out_channels}, {out_height}, {out_width}], got {list(x.shape)}"
        return x


# ---------------------------------------------------------------------------------------------------------------------
# Networks.


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, config: StyleGAN3Config, design_filters: bool = True):
        super().__init__()
        self.w_dim = config.w_dim
        self.num_ws = config.num_ws
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.num_layers = config.num_layers
        self.num_critical = config.num_critical
        self.margin_size = config.margin_size
        self.output_scale = config.output_scale
        self.num_fp16_res = config.num_fp16_res
        # The official default runs the fp16 layers in fp16 on CUDA; loaders set True for a pure fp32 generator.
        self.force_fp32_default = False

        input_spec, layer_specs = synthesis_specs(config)
        self.input = SynthesisInput(config.w_dim, input_spec)
        self.layer_names = []
        for spec in layer_specs:
            layer = SynthesisLayer(config.w_dim, spec, conv_clamp=config.conv_clamp,
                                   magnitude_ema_beta=config.magnitude_ema_beta, design_filters=design_filters)
            setattr(self, spec.name, layer)
            self.layer_names.append(spec.name)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool | None = None,
                noise_generator: torch.Generator | None = None, filter_impl: str = "fast",
                **unused) -> torch.Tensor:
        """Render images [N, C, H, W] (about -1..1) from W+ latents [N, num_ws, w_dim].

        `noise_mode` and `noise_generator` are accepted for the StyleGAN2 calling convention and ignored, as
        StyleGAN3 has no noise inputs. `filter_impl` chooses 'fast' or 'reference' filtered leaky ReLU.
        """
        unused.pop("update_emas", None)
        unused.pop("fused_modconv", None)
        if unused:
            raise TypeError(f"Unexpected synthesis arguments: {sorted(unused)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r} is invalid; expected one of {NOISE_MODES}.")
        if filter_impl not in FILTER_IMPLEMENTATIONS:
            raise ValueError(f"filter_impl {filter_impl!r} is invalid; expected one of {FILTER_IMPLEMENTATIONS}.")
        del noise_generator
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}.")
        if force_fp32 is None:
            force_fp32 = self.force_fp32_default
        ws = ws.to(torch.float32).unbind(dim=1)

        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:], strict=True):
            x = getattr(self, name)(x, w, force_fp32=force_fp32, filter_impl=filter_impl)
        return self._output(x)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32).contiguous()

    # Style space: S is the affine output of the input (its rotation and translation, [N, 4]) and of every layer
    # ([N, in_channels]), in the order they run. Each reads its own W+ entry, so an S edit of one layer has an
    # exact W+ form whenever that layer's affine weight has full row rank. Every layer is a stage of
    # `run_style_stages`, with the input as stage 0.

    def style_layout(self) -> list[StyleLayer]:
        """Describe every layer of S ("input", "L0_36_512", ..., the ToRGB layer last) in S order."""
        # The layout depends only on the architecture, so it is built once (outside nn.Module's attributes).
        if "_style_layout" not in self.__dict__:
            self.__dict__["_style_layout"] = self._build_style_layout()
        return list(self.__dict__["_style_layout"])

    def _build_style_layout(self) -> list[StyleLayer]:
        layout = [StyleLayer(0, "input", 0, int(self.input.sampling_rate), 4, "input", 0)]
        for index, name in enumerate(self.layer_names):
            layer = getattr(self, name)
            layout.append(StyleLayer(index + 1, name, index + 1, int(layer.out_sampling_rate), layer.in_channels,
                                     "torgb" if layer.is_torgb else "conv", index + 1))
        return layout

    def style_modules(self) -> list[torch.nn.Module]:
        """Return the input and the layers, in S order. Each has an `affine` FullyConnectedLayer."""
        return [self.input] + [getattr(self, name) for name in self.layer_names]

    def style_layer_names(self) -> list[str]:
        """Return the module names of the style layers ("input", "L0_36_512", ...), in S order."""
        return ["input", *self.layer_names]

    def ws_to_styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Compute S from W+ [N, num_ws, w_dim]: each affine output, exactly as `forward` computes it."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}.")
        ws = ws.to(torch.float32).unbind(dim=1)
        return [module.affine(w) for module, w in zip(self.style_modules(), ws, strict=True)]

    def run_style_stages(self, styles: list[torch.Tensor], first: int = 0, last: int | None = None,
                         state: torch.Tensor | None = None, noise_mode: str = "random",
                         force_fp32: bool | None = None, noise_generator: torch.Generator | None = None,
                         filter_impl: str = "fast") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run stages first..last-1 (0 = the input, k = layer k - 1) from `state` with the styles of S.

        `state` is the activation an earlier call returned for the stages before `first` (None when `first` is
        0). Returns the new activation and the image [N, C, H, W] once the ToRGB layer has run (else None).
        `noise_mode` and `noise_generator` are accepted for the StyleGAN2 calling convention and ignored.
        """
        del noise_mode, noise_generator
        modules = self.style_modules()
        assert len(styles) == len(modules), f"expected {len(modules)} style tensors, got {len(styles)}"
        last = len(modules) if last is None else last
        assert (state is None) == (first == 0), "pass the state of the stages before `first`, and only then"
        if force_fp32 is None:
            force_fp32 = self.force_fp32_default
        x = state
        for stage in range(first, last):
            style = styles[stage].to(torch.float32)
            if stage == 0:
                x = self.input(None, styles=style)
            else:
                x = modules[stage](x, None, force_fp32=force_fp32, filter_impl=filter_impl, styles=style)
        return x, (self._output(x) if last == len(modules) else None)

    def synthesis_from_styles(self, styles: list[torch.Tensor], noise_mode: str = "random",
                              force_fp32: bool | None = None, noise_generator: torch.Generator | None = None,
                              filter_impl: str = "fast") -> torch.Tensor:
        """Render images [N, C, H, W] from S (see `ws_to_styles`); equal to `forward` on the W+ that gave S."""
        _, img = self.run_style_stages(styles, force_fp32=force_fp32, filter_impl=filter_impl)
        return img


class Generator(torch.nn.Module):
    """StyleGAN3 generator with the official attributes (z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels)."""

    architecture_name = "stylegan3"

    def __init__(self, config: StyleGAN3Config, design_filters: bool = True):
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(config, design_filters=design_filters)
        self.num_ws = self.synthesis.num_ws
        # StyleGAN3's mapping network is StyleGAN2's with hidden and embedding sizes fixed to w_dim.
        self.mapping = MappingNetwork(
            z_dim=config.z_dim, c_dim=config.c_dim, w_dim=config.w_dim, num_ws=self.num_ws,
            num_layers=config.mapping_layers, activation="lrelu", lr_multiplier=config.mapping_lr_multiplier)
        self._fingerprint: str | None = None
        self.source: dict[str, Any] = {}  # Where the weights came from: path, format; set by the loader.

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    # The same digest as StyleGAN2's: mapping weights plus the W+ layout.
    fingerprint = _StyleGAN2Generator.fingerprint
    reset_fingerprint = _StyleGAN2Generator.reset_fingerprint


# ---------------------------------------------------------------------------------------------------------------------
# Input transform.


def input_transform_matrix(translate_x: float, translate_y: float, rotate_degrees: float) -> np.ndarray:
    """Return the 3x3 matrix that SynthesisInput.transform takes for a translation and rotation of the image.

    Built as the official gen_images.py does for --translate and --rotate: the forward matrix
    [[cos, sin, tx], [-sin, cos, ty], [0, 0, 1]] (angle in degrees), inverted, because the input layer takes the
    inverse transform. Translations are in image widths: 1.0 moves the content by the full image size.
    """
    angle = math.radians(rotate_degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    forward = np.array([[cos, sin, translate_x], [-sin, cos, translate_y], [0.0, 0.0, 1.0]])
    return np.linalg.inv(forward)


def set_input_transform(generator: Generator, translate_x: float = 0.0, translate_y: float = 0.0,
                        rotate_degrees: float = 0.0) -> Generator:
    """Return a copy of `generator` whose output is translated and rotated; `generator` itself is not changed.

    The copy shares every parameter and buffer with `generator` except `synthesis.input.transform`, so it costs
    no weight memory and the original keeps rendering as before, for example in a loader cache.

    Args:
        generator: a StyleGAN3 generator.
        translate_x, translate_y: translation in image widths (0.5 = half the image), as gen_images.py --translate.
        rotate_degrees: rotation angle in degrees, as gen_images.py --rotate.

    Returns:
        The shallow copy. NOTE: moving it with .to() also moves the shared weights of the original.
    """
    synthesis = getattr(generator, "synthesis", None)
    if not isinstance(getattr(synthesis, "input", None), SynthesisInput):
        raise TypeError(f"set_input_transform needs a StyleGAN3 generator with synthesis.input, got "
                        f"{type(generator).__name__} ({getattr(generator, 'architecture_name', 'unknown')}).")
    for name, value in (("translate_x", translate_x), ("translate_y", translate_y),
                        ("rotate_degrees", rotate_degrees)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
    matrix = input_transform_matrix(float(translate_x), float(translate_y), float(rotate_degrees))
    transform = torch.as_tensor(matrix, dtype=generator.synthesis.input.transform.dtype,
                                device=generator.synthesis.input.transform.device)

    # Copy only the path from the generator to the transform buffer; every other module and tensor is shared.
    input_copy = _shallow_module_copy(generator.synthesis.input)
    input_copy._buffers["transform"] = transform
    synthesis_copy = _shallow_module_copy(generator.synthesis)
    synthesis_copy._modules["input"] = input_copy
    generator_copy = _shallow_module_copy(generator)
    generator_copy._modules["synthesis"] = synthesis_copy
    generator_copy.source = dict(generator.source, input_transform=[float(translate_x), float(translate_y),
                                                                    float(rotate_degrees)])
    return generator_copy


def _shallow_module_copy(module: torch.nn.Module) -> torch.nn.Module:
    """Copy a module object with its own _modules and _buffers dicts, sharing the tensors and submodules."""
    result = copy.copy(module)
    result._modules = dict(module._modules)
    result._buffers = dict(module._buffers)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


def _load_error(message: str) -> Exception:
    # CheckpointError lives in checkpoints.py, which imports this module; import it here to avoid the cycle.
    from .checkpoints import CheckpointError

    return CheckpointError(message)


def from_state_dict(config: StyleGAN3Config, state: dict[str, torch.Tensor], source: str) -> Generator:
    """Build a Generator for `config` and load `state` strictly (same keys and shapes) as fp32, in eval mode.

    Raises CheckpointError naming the missing, unexpected or misshaped tensors.
    """
    generator = Generator(config, design_filters=False)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise _load_error(f"{source}: StyleGAN3 weights do not match the inferred architecture; missing tensors "
                          f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, unexpected tensors "
                          f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}. The file is incomplete or "
                          f"from a different network.")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise _load_error(f"{source}: tensor {key} has shape {list(tensor.shape)}, expected "
                              f"{list(expected[key].shape)} for the inferred StyleGAN3 architecture.")
    generator.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return generator.eval().requires_grad_(False)


# Layer attributes that decide the computation; a mismatch means the inferred config is wrong.
_GEOMETRY_ATTRIBUTES = ("is_torgb", "use_fp16", "in_channels", "out_channels", "in_size", "out_size",
                        "in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "conv_kernel", "up_factor",
                        "up_taps", "down_factor", "down_taps", "down_radial", "padding")
# Attributes used only to design filters, which a checkpoint stores as buffers.
_DESIGN_ATTRIBUTES = ("is_critically_sampled", "in_cutoff", "out_cutoff", "in_half_width", "out_half_width")


def _same_value(ours: Any, theirs: Any) -> bool:
    ours_array = np.asarray(ours, dtype=np.float64)
    theirs_array = np.asarray(theirs, dtype=np.float64)
    return ours_array.shape == theirs_array.shape and bool(np.allclose(ours_array, theirs_array, rtol=1e-9, atol=0))


def _config_from_record(g: PersistentRecord, source: str) -> StyleGAN3Config:
    """Infer a StyleGAN3Config from an official G_ema record's attributes, init kwargs and tensor shapes."""
    mapping = g.modules.get("mapping")
    synthesis = g.modules.get("synthesis")
    if mapping is None or synthesis is None or "input" not in synthesis.modules:
        raise _load_error(f"{source}: G_ema has no mapping, synthesis or synthesis.input; not a StyleGAN3 generator.")
    kwargs = g.init_kwargs
    layer_names = list(synthesis.attr("layer_names") or
                       sorted((k for k in synthesis.modules if re.fullmatch(r"L\d+_\d+_\d+", k)),
                              key=lambda k: int(k[1:].split("_")[0])))
    layers = [synthesis.modules.get(name) for name in layer_names]
    if not layers or any(layer is None for layer in layers):
        raise _load_error(f"{source}: synthesis layers {layer_names} are missing or incomplete.")
    first, last = layers[0], layers[-1]
    upsampling = next((layer for layer in layers if int(layer.attr("up_factor", 1)) > 1), None)
    fc0 = mapping.modules.get("fc0")
    if fc0 is None:
        raise _load_error(f"{source}: the mapping network has no fc0 layer.")

    def hyperparameter(name: str, default: Any) -> Any:
        return kwargs.get(name, synthesis.init_kwargs.get(name, default))

    filter_size = StyleGAN3Config.filter_size
    if upsampling is not None:
        filter_size = int(upsampling.attr("up_taps")) // int(upsampling.attr("up_factor"))
    in_rate, out_rate = int(first.attr("in_sampling_rate")), int(first.attr("out_sampling_rate"))
    try:
        return StyleGAN3Config(
            z_dim=int(g.attr("z_dim", kwargs.get("z_dim"))),
            c_dim=int(g.attr("c_dim", kwargs.get("c_dim", 0))),
            w_dim=int(g.attr("w_dim", kwargs.get("w_dim"))),
            img_resolution=int(g.attr("img_resolution", kwargs.get("img_resolution"))),
            img_channels=int(g.attr("img_channels", kwargs.get("img_channels", 3))),
            channels=[int(layer.parameters["weight"].shape[0]) for layer in layers],
            channel_base=int(hyperparameter("channel_base", StyleGAN3Config.channel_base)),
            channel_max=int(hyperparameter("channel_max", StyleGAN3Config.channel_max)),
            num_layers=int(synthesis.attr("num_layers", len(layers) - 1)),
            num_critical=int(synthesis.attr("num_critical", StyleGAN3Config.num_critical)),
            first_cutoff=float(first.attr("in_cutoff", hyperparameter("first_cutoff", StyleGAN3Config.first_cutoff))),
            first_stopband=float(hyperparameter("first_stopband", StyleGAN3Config.first_stopband)),
            last_stopband_rel=float(hyperparameter("last_stopband_rel", StyleGAN3Config.last_stopband_rel)),
            margin_size=int(synthesis.attr("margin_size", StyleGAN3Config.margin_size)),
            output_scale=float(synthesis.attr("output_scale", StyleGAN3Config.output_scale)),
            num_fp16_res=int(synthesis.attr("num_fp16_res", 0)),
            conv_kernel=int(first.attr("conv_kernel", StyleGAN3Config.conv_kernel)),
            filter_size=filter_size,
            lrelu_upsampling=round(float(first.attr("tmp_sampling_rate")) / max(in_rate, out_rate)),
            use_radial_filters=bool(any(layer.attr("down_radial", False) for layer in layers)
                                    or hyperparameter("use_radial_filters", False)),
            conv_clamp=last.attr("conv_clamp", first.attr("conv_clamp")),
            magnitude_ema_beta=float(first.attr("magnitude_ema_beta", StyleGAN3Config.magnitude_ema_beta)),
            mapping_layers=int(mapping.attr("num_layers")),
            mapping_lr_multiplier=float(fc0.attr("bias_gain", StyleGAN3Config.mapping_lr_multiplier)),
        )
    except (TypeError, ValueError, KeyError) as error:
        raise _load_error(f"{source}: could not infer the StyleGAN3 architecture from the pickle's attributes "
                          f"({type(error).__name__}: {error}).") from error


def _check_geometry(config: StyleGAN3Config, synthesis: PersistentRecord, source: str) -> None:
    """Compare the geometry computed from `config` with the attributes stored in the checkpoint."""
    input_spec, specs = synthesis_specs(config)
    stored_names = list(synthesis.attr("layer_names") or [])
    if stored_names and stored_names != [spec.name for spec in specs]:
        raise _load_error(f"{source}: synthesis layers {stored_names} differ from {[s.name for s in specs]} "
                          f"computed for the inferred config; the pickle's architecture is not supported.")
    mismatches, design_mismatches = [], []
    stored_input = synthesis.modules["input"]
    for name, value in asdict(input_spec).items():
        stored = stored_input.attr(name)
        if stored is not None and not _same_value(value, stored):
            mismatches.append(f"input.{name}: stored {np.asarray(stored).tolist()}, computed {value}")
    for spec in specs:
        layer = synthesis.modules[spec.name]
        for name in _GEOMETRY_ATTRIBUTES + _DESIGN_ATTRIBUTES:
            stored = layer.attr(name)
            value = getattr(spec, name)
            if stored is None or _same_value(value, stored):
                continue
            line = f"{spec.name}.{name}: stored {np.asarray(stored).tolist()}, computed {value}"
            (design_mismatches if name in _DESIGN_ATTRIBUTES else mismatches).append(line)
    if mismatches:
        raise _load_error(f"{source}: the StyleGAN3 layer geometry inferred from the pickle does not match its "
                          f"stored attributes ({'; '.join(mismatches[:6])}). The network was built with settings "
                          f"this loader does not infer; report the file's synthesis init kwargs.")
    if design_mismatches:
        # Filters come from the checkpoint's buffers, so these values do not change the output.
        logger.warning("%s: filter design attributes differ from the inferred config (%s); using the stored "
                       "filters.", source, "; ".join(design_mismatches[:4]))


def from_nvidia_record(g: PersistentRecord, source: str) -> Generator:
    """Build a StyleGAN3 Generator from an official `G_ema` persistence record.

    The config comes from the record's attributes, init kwargs and tensor shapes. The layer geometry computed from
    it is checked against every stored layer attribute, and the tensors are loaded strictly.

    Raises:
        CheckpointError: when the architecture cannot be inferred or the tensors do not match it.
    """
    config = _config_from_record(g, source)
    _check_geometry(config, g.modules["synthesis"], source)
    generator = from_state_dict(config, g.tensors(), source)
    generator.source = {"path": source, "format": "nvidia-pickle", "class_name": g.class_name}
    return generator


__all__ = [
    "Generator",
    "InputSpec",
    "LayerSpec",
    "StyleGAN3Config",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "design_lowpass_filter",
    "filtered_lrelu",
    "filtered_lrelu_reference",
    "fourier_features_init",
    "from_nvidia_record",
    "from_state_dict",
    "input_transform_matrix",
    "modulated_conv2d",
    "set_input_transform",
    "synthesis_specs",
]
