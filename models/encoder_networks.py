"""Encoder networks of pSp (eladrich/pixel2style2pixel) and e4e (omertov/encoder4editing) in plain PyTorch.

Both encoders map a 256 px face to StyleGAN W+ latents with an IR-SE ResNet backbone (the ArcFace IR-SE50 from
InsightFace) and a feature pyramid. Module and parameter names equal those of the two repositories
(`input_layer.0.weight`, `body.3.res_layer.5.fc1.weight`, `styles.17.convs.10.weight`, `latlayer1.bias`, ...), so
the `encoder.*` part of their checkpoints loads with `load_state_dict(strict=True)`. Layout notes:

- The backbone has four stages of bottleneck units. The first unit of each stage halves the resolution, so a
  256 x 256 input gives feature maps of 128, 64, 32 and 16 px.
- The style heads ("map2style", `GradualStyleBlock`) read the 16 px map for the coarse W+ layers 0-2, the 32 px
  pyramid level for the middle layers 3-6 and the 64 px level for the fine layers 7 and up.
- e4e predicts one W from the first head and adds one offset per further layer. pSp predicts every layer directly.

bench/fidelity_encoders.py compares these classes with the official ones (IR-SE50, random weights, fp32 on the CPU):
names and shapes are the same and outputs agree exactly, with a max abs difference of 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The first W+ layer of the middle and of the fine group; earlier layers read coarser features.
MIDDLE_START = 3
FINE_START = 7
# Side of the square feature map each style head group reduces to 1 x 1 with stride-2 convolutions. These are the
# sizes for a 256 px input; they fix the number of convolutions, which the checkpoints store.
HEAD_SPATIAL = {"coarse": 16, "middle": 32, "fine": 64}


@dataclass(frozen=True)
class BackboneConfig:
    """Widths and depths of the IR / IR-SE ResNet backbone. The defaults are IR-SE50, as both repositories use."""

    stem_channels: int = 64                              # Channels of the input layer's output.
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)  # Output channels of the four stages.
    stage_units: tuple[int, ...] = (3, 4, 14, 3)         # Bottleneck units per stage (IR-50).
    squeeze_excitation: bool = True                      # IR-SE units ('ir_se'); False = plain IR units ('ir').
    se_reduction: int = 16                               # Channel reduction inside the squeeze-excitation module.

    def __post_init__(self):
        object.__setattr__(self, "stage_channels", tuple(int(c) for c in self.stage_channels))
        object.__setattr__(self, "stage_units", tuple(int(u) for u in self.stage_units))
        if len(self.stage_channels) != 4 or len(self.stage_units) != 4:
            raise ValueError(f"The backbone needs exactly 4 stages; got stage_channels {list(self.stage_channels)} "
                             f"and stage_units {list(self.stage_units)}.")
        if min(self.stage_units) < 1 or self.stem_channels < 1 or min(self.stage_channels) < 1:
            raise ValueError(f"Backbone channel and unit counts must be positive; got stem {self.stem_channels}, "
                             f"channels {list(self.stage_channels)}, units {list(self.stage_units)}.")
        if self.squeeze_excitation and min(self.stage_channels) < self.se_reduction:
            raise ValueError(f"Squeeze-excitation with reduction {self.se_reduction} needs at least "
                             f"{self.se_reduction} channels per stage; got {list(self.stage_channels)}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so the dict can be stored in a checkpoint loaded with weights_only=True."""
        values = asdict(self)
        values["stage_channels"] = list(self.stage_channels)
        values["stage_units"] = list(self.stage_units)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BackboneConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown backbone fields {unknown}; known fields: {sorted(known)}.")
        return cls(**values)


IR_SE_50 = BackboneConfig()

# Encoder classes by the `encoder_type` option of each repository.
PSP_ENCODER_TYPES = ("GradualStyleEncoder", "BackboneEncoderUsingLastLayerIntoW",
                     "BackboneEncoderUsingLastLayerIntoWPlus")
E4E_ENCODER_TYPES = ("Encoder4Editing", "GradualStyleEncoder", "SingleStyleCodeEncoder")


# ---------------------------------------------------------------------------------------------------------------------
# Layers.


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate: the weight is scaled by 1/sqrt(in_features) at run time.

    Only the form the encoders use (no activation, learning-rate multiplier 1) is implemented.
    """

    def __init__(self,
                 in_features: int,   # Input width.
                 out_features: int,  # Output width.
                 ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class SEModule(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from the global average of all channels."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIR(nn.Module):
    """IR bottleneck unit: BN, 3x3 conv, PReLU, strided 3x3 conv, BN (and SE), plus a shortcut."""

    def __init__(self,
                 in_channels: int,          # Input channels.
                 out_channels: int,         # Output channels.
                 stride: int,               # 2 for the first unit of a stage, else 1.
                 squeeze_excitation: bool,  # Append an SEModule to the residual branch (IR-SE).
                 se_reduction: int = 16,    # Channel reduction of the SEModule.
                 ):
        super().__init__()
        if in_channels == out_channels:
            # A 1x1 max pool with a stride only subsamples, so this shortcut has no parameters.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))
        residual = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if squeeze_excitation:
            residual.append(SEModule(out_channels, se_reduction))
        self.res_layer = nn.Sequential(*residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)



def build_ir_stem_and_body(backbone: BackboneConfig, input_channels: int = 3) -> tuple[nn.Sequential, nn.Sequential]:
    """Build the IR / IR-SE input layer and residual body under the module names the official checkpoints use."""
    input_layer = nn.Sequential(
        nn.Conv2d(input_channels, backbone.stem_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(backbone.stem_channels),
        nn.PReLU(backbone.stem_channels))
    units = []
    in_channels = backbone.stem_channels
    for channels, count in zip(backbone.stage_channels, backbone.stage_units, strict=True):
        for index in range(count):
            units.append(BottleneckIR(in_channels, channels, 2 if index == 0 else 1,
                                      backbone.squeeze_excitation, backbone.se_reduction))
            in_channels = channels
    return input_layer, nn.Sequential(*units)

class GradualStyleBlock(nn.Module):
    """Style head ("map2style"): stride-2 convolutions down to 1 x 1, then an EqualLinear to one W vector."""

    def __init__(self,
                 in_channels: int,   # Channels of the feature map read.
                 out_channels: int,  # Width of the W vector (the generator's w_dim).
                 spatial: int,       # Side of the feature map for a 256 px input; log2(spatial) convolutions.
                 ):
        super().__init__()
        self.out_channels = out_channels
        layers: list[nn.Module] = []
        for index in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # [B, C, 1, 1] for inputs of the designed size.
        if x.shape[2:] != (1, 1):
            raise ValueError(f"Style head input reduced to {list(x.shape[2:])} instead of 1 x 1; the encoder input "
                             f"has the wrong size (pSp and e4e take 256 x 256, or 192 x 256 for e4e cars).")
        return self.linear(x.flatten(1))


def _upsample_add(coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Feature pyramid step: bilinear upsampling of `coarse` to the size of `lateral` (corners aligned), then add."""
    return F.interpolate(coarse, size=lateral.shape[2:], mode="bilinear", align_corners=True) + lateral


# ---------------------------------------------------------------------------------------------------------------------
# Encoders.


class _Backbone(nn.Module):
    """Input layer and ResNet body, shared by every encoder class."""

    def __init__(self, backbone: BackboneConfig, input_channels: int):
        super().__init__()
        self.backbone = backbone
        self.input_layer, self.body = build_ir_stem_and_body(backbone, input_channels)
        # Index of the last unit of stages 2, 3 and 4, whose outputs feed the pyramid.
        ends = [sum(backbone.stage_units[:stage + 1]) - 1 for stage in range(4)]
        self._tap_units = (ends[1], ends[2], ends[3])

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the stage 2, 3 and 4 outputs: [B, C2, H/4, W/4], [B, C3, H/8, W/8], [B, C4, H/16, W/16]."""
        x = self.input_layer(x)
        taps = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self._tap_units:
                taps.append(x)
        return taps[0], taps[1], taps[2]


class _PyramidEncoder(_Backbone):
    """Backbone plus feature pyramid and one GradualStyleBlock per W+ layer."""

    def __init__(self, backbone: BackboneConfig, num_styles: int, style_dim: int, input_channels: int = 3):
        super().__init__(backbone, input_channels)
        self.style_count = num_styles
        width = backbone.stage_channels[3]
        self.styles = nn.ModuleList()
        for index in range(num_styles):
            if index < MIDDLE_START:
                group = "coarse"
            elif index < FINE_START:
                group = "middle"
            else:
                group = "fine"
            self.styles.append(GradualStyleBlock(width, style_dim, HEAD_SPATIAL[group]))
        self.latlayer1 = nn.Conv2d(backbone.stage_channels[2], width, 1)
        self.latlayer2 = nn.Conv2d(backbone.stage_channels[1], width, 1)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature map each W+ layer's head reads: 16 px for coarse, 32 px for middle, 64 px for fine."""
        c1, c2, c3 = self.features(x)
        maps = [c3] * min(self.style_count, MIDDLE_START)
        if self.style_count > MIDDLE_START:
            p2 = _upsample_add(c3, self.latlayer1(c2))
            maps += [p2] * (min(self.style_count, FINE_START) - MIDDLE_START)
            if self.style_count > FINE_START:
                p1 = _upsample_add(p2, self.latlayer2(c1))
                maps += [p1] * (self.style_count - FINE_START)
        return maps


class GradualStyleEncoder(_PyramidEncoder):
    """pSp encoder: each W+ layer predicted directly by its own head. Returns [B, num_styles, style_dim]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.pyramid(x)
        return torch.stack([head(features) for head, features in zip(self.styles, maps, strict=True)], dim=1)


class Encoder4Editing(_PyramidEncoder):
    """e4e encoder: the first head predicts W, every later head an offset for its layer. Returns [B, num_styles, D].

    This is e4e's inference stage with all offsets active. Its progressive training stages only switch offsets off.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.pyramid(x)
        w = self.styles[0](maps[0])
        offsets = [torch.zeros_like(w)]
        offsets += [head(features) for head, features in zip(self.styles[1:], maps[1:], strict=True)]
        return w.unsqueeze(1) + torch.stack(offsets, dim=1)


class BackboneEncoderW(_Backbone):
    """Single-code encoder (pSp BackboneEncoderUsingLastLayerIntoW, e4e SingleStyleCodeEncoder): one W per image.

    Returns [B, style_dim].
    """

    def __init__(self, backbone: BackboneConfig, num_styles: int, style_dim: int, input_channels: int = 3):
        super().__init__(backbone, input_channels)
        self.style_count = num_styles
        self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = EqualLinear(backbone.stage_channels[3], style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, c3 = self.features(x)
        return self.linear(self.output_pool(c3).flatten(1))


class BackboneEncoderWPlus(_Backbone):
    """pSp BackboneEncoderUsingLastLayerIntoWPlus: all W+ layers from one linear layer. Returns [B, num_styles, D]."""

    def __init__(self, backbone: BackboneConfig, num_styles: int, style_dim: int, input_channels: int = 3):
        super().__init__(backbone, input_channels)
        self.style_count = num_styles
        self.style_dim = style_dim
        width = backbone.stage_channels[3]
        self.output_layer_2 = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.AdaptiveAvgPool2d((7, 7)),
            nn.Flatten(),
            nn.Linear(width * 7 * 7, style_dim))
        self.linear = EqualLinear(style_dim, style_dim * num_styles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, c3 = self.features(x)
        return self.linear(self.output_layer_2(c3)).view(-1, self.style_count, self.style_dim)


_CLASSES = {
    "GradualStyleEncoder": GradualStyleEncoder,
    "Encoder4Editing": Encoder4Editing,
    "SingleStyleCodeEncoder": BackboneEncoderW,
    "BackboneEncoderUsingLastLayerIntoW": BackboneEncoderW,
    "BackboneEncoderUsingLastLayerIntoWPlus": BackboneEncoderWPlus,
}


def build_encoder_network(encoder_type: str, backbone: BackboneConfig, num_styles: int, style_dim: int,
                          input_channels: int = 3) -> nn.Module:
    """Build the encoder class named by a checkpoint's `encoder_type` option, with default-initialised weights.

    Build it under `torch.device("meta")` and load with `load_state_dict(..., assign=True)` to skip the random
    initialisation when a checkpoint overwrites every weight.
    """
    if encoder_type not in _CLASSES:
        raise ValueError(f"encoder_type {encoder_type!r} is not supported; expected one of {sorted(_CLASSES)}.")
    return _CLASSES[encoder_type](backbone, num_styles, style_dim, input_channels)
