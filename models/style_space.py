"""Style space S: the per-layer style vectors that the affine layers compute from W+.

S is the list of affine outputs of every style layer, in the order synthesis runs them, each [B, channels of
that layer]. StyleGAN2: every SynthesisLayer and ToRGBLayer (b4.conv1, b4.torgb, b8.conv0, b8.conv1, b8.torgb,
...). StyleGAN3: the input's rotation and translation ([B, 4]), then every layer (L0_..., the ToRGB layer last).
Editing single channels of S is the StyleSpace method (Wu et al., "StyleSpace Analysis", CVPR 2021), and
StyleCLIP's global directions are directions in S. The networks describe their layers with `style_layout()`
(models.stylegan2.StyleLayer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch

from ..runtime import host
from .latents import LatentMismatchError, StyleGANLatent, describe_generator
from .sampling import to_image_layout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StyleGANStyles:
    """A batch of style vectors S of one generator (the STYLEGAN_STYLES socket's value)."""

    styles: tuple[torch.Tensor, ...]  # One [B, channels] float32 CPU tensor per style layer, in synthesis order.
    layer_names: tuple[str, ...]      # Synthesis module of each entry: "b4.conv1", "b4.torgb", "L0_36_512", ...
    fingerprint: str                  # The generator's W-space fingerprint (Generator.fingerprint).
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.styles) != len(self.layer_names) or not self.styles:
            raise ValueError(f"Styles need one tensor per layer name; got {len(self.styles)} tensors and "
                             f"{len(self.layer_names)} names.")
        batch = self.styles[0].shape[0]
        for name, style in zip(self.layer_names, self.styles, strict=True):
            if style.ndim != 2 or style.shape[0] != batch:
                raise ValueError(f"Style {name} must be [{batch}, channels], got {list(style.shape)}.")

    @property
    def batch_size(self) -> int:
        return self.styles[0].shape[0]

    @property
    def channels(self) -> list[int]:
        return [style.shape[1] for style in self.styles]

    def flat(self) -> torch.Tensor:
        """Concatenate all layers into [B, sum of channels], in synthesis order."""
        return torch.cat(self.styles, dim=1)

    def check_generator(self, generator, where: str = "") -> None:
        """Raise LatentMismatchError unless these styles fit `generator`'s style layers and W space."""
        prefix = f"{where}: " if where else ""
        require_style_space(generator, where)
        if generator.fingerprint != self.fingerprint:
            raise LatentMismatchError(f"{prefix}the styles were computed with generator {self.fingerprint[:12]} but "
                                      f"the connected generator is {describe_generator(generator)}. Connect the "
                                      f"generator the styles came from.")
        names = tuple(generator.synthesis.style_layer_names())
        expected = [layer.channels for layer in generator.synthesis.style_layout()]
        if names != self.layer_names or expected != self.channels:
            ours = list(zip(self.layer_names, self.channels, strict=False))
            theirs = list(zip(names, expected, strict=False))
            raise LatentMismatchError(f"{prefix}the styles have layers {ours} but the generator has {theirs}.")


def require_style_space(generator, where: str = "") -> None:
    """Raise ValueError unless `generator` has a style path (style_layout / ws_to_styles / synthesis_from_styles)."""
    synthesis = getattr(generator, "synthesis", None)
    if not all(hasattr(synthesis, name) for name in ("style_layout", "ws_to_styles", "synthesis_from_styles")):
        prefix = f"{where}: " if where else ""
        architecture = getattr(generator, "architecture_name", type(generator).__name__)
        raise ValueError(f"{prefix}style space needs a StyleGAN2 or StyleGAN3 generator loaded by StyleBridge; the "
                         f"connected generator is {architecture}. Edit its latents in W or W+ instead.")


def _device(generator) -> torch.device:
    return generator.mapping.fc0.weight.device


@torch.no_grad()
def latent_to_styles(generator, latent: StyleGANLatent, where: str = "") -> StyleGANStyles:
    """Compute S for a latent batch (W is broadcast to every layer first)."""
    require_style_space(generator, where)
    latent.check_generator(generator, where)
    styles = generator.synthesis.ws_to_styles(latent.ws().to(_device(generator)))
    return StyleGANStyles(tuple(style.float().cpu() for style in styles),
                          tuple(generator.synthesis.style_layer_names()), generator.fingerprint,
                          {"operation": "w-to-s", "space": latent.space})


@torch.no_grad()
def styles_to_images(generator, styles: StyleGANStyles, noise_mode: str = "const", noise_seed: int = 0,
                     chunk_size: int = 8, where: str = "") -> torch.Tensor:
    """Render S to IMAGE [B, H, W, C], `chunk_size` images at a time; same pixels as rendering the W+ it came from."""
    styles.check_generator(generator, where)
    device = _device(generator)
    noise_generator = torch.Generator(device=device).manual_seed(noise_seed) if noise_mode == "random" else None
    progress = host.ProgressBar(styles.batch_size)
    outputs = []
    for start in range(0, styles.batch_size, chunk_size):
        host.check_interrupted()
        chunk = [style[start:start + chunk_size].to(device) for style in styles.styles]
        images = generator.synthesis.synthesis_from_styles(chunk, noise_mode=noise_mode,
                                                           noise_generator=noise_generator)
        outputs.append(to_image_layout(images))
        progress.update(chunk[0].shape[0])
    return torch.cat(outputs)


def edit_style_channel(styles: StyleGANStyles, layer: int, channel: int, delta: float,
                       where: str = "") -> StyleGANStyles:
    """Add `delta` to one channel of one style layer for the whole batch (a StyleSpace edit)."""
    prefix = f"{where}: " if where else ""
    if not 0 <= layer < len(styles.styles):
        raise ValueError(f"{prefix}style layer {layer} is out of range; these styles have layers "
                         f"0..{len(styles.styles) - 1} ({styles.layer_names[0]} .. {styles.layer_names[-1]}).")
    width = styles.channels[layer]
    if not 0 <= channel < width:
        raise ValueError(f"{prefix}channel {channel} is out of range for style layer {layer} "
                         f"({styles.layer_names[layer]}), which has channels 0..{width - 1}.")
    edited = list(styles.styles)
    edited[layer] = edited[layer].clone()
    edited[layer][:, channel] += delta
    meta = {**styles.meta, "edit": {"layer": styles.layer_names[layer], "channel": channel, "delta": delta}}
    return replace(styles, styles=tuple(edited), meta=meta)
