"""FIR filtering with up/downsampling (upfirdn2d) in plain PyTorch, for StyleGAN's resampling filters.

Filters are kept 1-D: every filter that StyleGAN2 uses is the outer product of a 1-D filter with itself.
`upfirdn2d_reference` is the direct definition with the 2-D filter; tests compare both fast paths against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def setup_filter(taps: Sequence[float] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Return a 1-D float32 filter from its taps, scaled to sum to 1 when `normalize` is set.

    The 2-D filter it stands for is `outer(f, f)`, which also sums to 1.
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError(f"Filter taps must be a non-empty 1-D sequence, got shape {list(f.shape)}.")
    if normalize:
        f = f / f.sum()
    return f


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Expand padding to (x_before, x_after, y_before, y_after)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def _pad_or_crop(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> torch.Tensor:
    """Zero-pad by positive amounts and crop by negative ones, per side."""
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    return x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]


def _insert_zeros(x: torch.Tensor, up: int) -> torch.Tensor:
    """Upsample [N, C, H, W] to [N, C, H*up, W*up] by placing each sample at the top-left of an up x up cell."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    return x.reshape(n, c, h * up, w * up)


def upfirdn2d(
    x: torch.Tensor,                        # Input [N, C, H, W].
    f: torch.Tensor | None,                 # 1-D filter from setup_filter(), None = identity.
    up: int = 1,                            # Upsampling factor, by zero insertion.
    down: int = 1,                          # Downsampling factor, by dropping samples.
    padding: int | Sequence[int] = 0,       # Padding of the upsampled image; negative values crop.
    gain: float = 1.0,                      # Overall gain applied to the 2-D filter.
    separable: bool | None = None,          # Filter in two 1-D passes; None = only for filters over 6 taps.
) -> torch.Tensor:
    """Upsample, pad, FIR-filter (true convolution) and downsample a batch of images.

    Short filters run as one depthwise 2-D convolution, which oneDNN executes faster on the CPU than two 1-D
    passes (measured for StyleGAN2's 4-tap filter); long filters run separably.
    """
    if f is None:
        f = torch.ones([1], dtype=torch.float32, device=x.device)
    px0, px1, py0, py1 = _parse_padding(padding)
    channels = x.shape[1]
    if separable is None:
        separable = f.numel() > 6

    if up > 1:
        x = _insert_zeros(x, up)
    x = _pad_or_crop(x, px0, px1, py0, py1)

    # Flip the taps, since conv2d computes correlation and the filter is defined as a convolution.
    taps = f.to(x.dtype).flip(0)
    if separable:
        kernel_x = (taps * gain).reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)
        kernel_y = taps.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1)
        x = F.conv2d(F.conv2d(x, kernel_x, groups=channels), kernel_y, groups=channels)
    else:
        kernel = (torch.outer(taps, taps) * gain)[None, None].repeat(channels, 1, 1, 1)
        x = F.conv2d(x, kernel, groups=channels)

    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upfirdn2d_reference(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
                        padding: int | Sequence[int] = 0, gain: float = 1.0) -> torch.Tensor:
    """Direct 2-D version of upfirdn2d(), for tests: one depthwise convolution with outer(f, f)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    channels = x.shape[1]
    if up > 1:
        x = _insert_zeros(x, up)
    x = _pad_or_crop(x, px0, px1, py0, py1)
    f2d = torch.outer(f, f) * gain
    kernel = f2d.flip([0, 1]).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    x = F.conv2d(x, kernel, groups=channels)
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with filter `f`, keeping the output exactly `up` times the input size."""
    taps = f.numel()
    pad0 = (taps + up - 1) // 2
    pad1 = (taps - up) // 2
    return upfirdn2d(x, f, up=up, padding=[pad0, pad1, pad0, pad1], gain=up * up)
