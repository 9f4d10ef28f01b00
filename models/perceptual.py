"""Image distances for inversion: LPIPS on VGG16 when its weights are present, else pixel L1 plus MS-SSIM.

Weights come from the "lpips" model folder and are read as data (`torch.load(weights_only=True)` or
safetensors); nothing is downloaded:

- `vgg16-397923af.pth`: torchvision's ImageNet VGG16 weights (`torchvision.models.VGG16_Weights.IMAGENET1K_V1`).
  Only the `features.*` tensors are used, so a file holding just those works too.
- `vgg.pth` (optional): the LPIPS v0.1 per-channel weights for VGG16 (`lin0.model.1.weight` ... `lin4...`), as
  the `lpips` package ships them. Without it every channel has weight 1, which the LPIPS paper calls the
  uncalibrated VGG baseline, and the metric is reported as "VGG16 feature distance" instead of LPIPS.

NVIDIA's `vgg16.pt` (used by the official StyleGAN2-ADA projector) is a TorchScript archive, which `torch.jit.load`
runs as code. It is therefore not loaded, and a warning points to torchvision's file instead.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..runtime import host
from .safe_pickle import TorchFileError, load_torch_data

logger = logging.getLogger(__name__)

LPIPS_FOLDER = "lpips"
VGG16_FILE_NAMES = ("vgg16-397923af.pth", "vgg16.pth", "vgg16.safetensors")
LPIPS_LINEAR_FILE_NAMES = ("vgg.pth", "lpips_vgg.pth")
NVIDIA_VGG16_FILE = "vgg16.pt"
LOSS_NAMES = ("auto", "lpips", "pixel+ms-ssim")

# VGG16 convolution widths ("M" = 2x2 max pooling), the layout of torchvision's `vgg16().features`.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# End indices (exclusive) in `features` of the five LPIPS taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_LPIPS_TAPS = (4, 9, 16, 23, 30)
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Images larger than this are area-downsampled before VGG16, as the official projector does.
_VGG_MAX_SIDE = 256

# MS-SSIM: standard scale weights (Wang et al. 2003), Gaussian window and stability constants for data range 1.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01 ** 2
_SSIM_C2 = 0.03 ** 2
# Share of 1 - MS-SSIM in the fallback loss; the rest is L1. L1 keeps colours right, which MS-SSIM weighs only
# through its luminance term at the coarsest scale.
MS_SSIM_SHARE = 0.84


class PerceptualWeightsError(ValueError):
    """Raised when a file in the lpips folder is not the expected VGG16 or LPIPS weights."""


# ---------------------------------------------------------------------------------------------------------------------
# Distances.


class ImageDistance(torch.nn.Module):
    """Per-sample distance between images [N, 3, H, W] in -1..1; targets are prepared once with `prepare`."""

    name = "distance"
    is_lpips = False

    def prepare(self, target: torch.Tensor) -> torch.Tensor:
        """Return what `forward` compares against (features or the image itself) for target images."""
        return target

    def forward(self, images: torch.Tensor, prepared_target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LPIPSDistance(ImageDistance):
    """LPIPS (Zhang et al. 2018) on VGG16: channel-normalised features of five layers, squared differences weighted
    per channel, averaged over positions and summed over layers.

    `prepare` and `features` return all of it as one flat vector per image [N, F], so the distance is the sum
    of squared differences, which is also how NVIDIA's projector computes it.
    """

    is_lpips = True

    def __init__(self, features: torch.nn.Sequential, channel_weights: list[torch.Tensor] | None = None):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1))
        calibrated = channel_weights is not None
        if channel_weights is None:
            channel_weights = [torch.ones(channels) for channels in _LPIPS_CHANNELS]
        for index, weights in enumerate(channel_weights):
            # Trained LPIPS weights are non-negative; clamp so that the square root below is defined.
            self.register_buffer(f"scale{index}", weights.float().clamp(min=0).sqrt().reshape(1, -1, 1, 1))
        self.name = "LPIPS (VGG16)" if calibrated else "VGG16 feature distance (LPIPS, uncalibrated)"

    def features_of(self, images: torch.Tensor) -> torch.Tensor:
        """Flat LPIPS features [N, F] of images [N, 3, H, W] in -1..1."""
        if images.shape[-1] > _VGG_MAX_SIDE or images.shape[-2] > _VGG_MAX_SIDE:
            images = F.interpolate(images, size=(_VGG_MAX_SIDE, _VGG_MAX_SIDE), mode="area")
        x = ((images + 1) / 2 - self.mean) / self.std
        parts = []
        start = 0
        for index, end in enumerate(_LPIPS_TAPS):
            x = self.features[start:end](x)
            start = end
            normalised = x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            scaled = normalised * getattr(self, f"scale{index}") / math.sqrt(x.shape[2] * x.shape[3])
            parts.append(scaled.flatten(1))
        return torch.cat(parts, dim=1)

    def prepare(self, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.features_of(target)

    def forward(self, images: torch.Tensor, prepared_target: torch.Tensor) -> torch.Tensor:
        return (self.features_of(images) - prepared_target).square().sum(dim=1)


class PixelMSSSIMDistance(ImageDistance):
    """Fallback loss without VGG16 weights: 0.84 x (1 - MS-SSIM) + 0.16 x mean absolute error, on 0..1 images.

    MS-SSIM uses as many of the five standard scales as the image allows (each scale halves the size and must
    stay at least as large as the 11-pixel window), with the scale weights renormalised to sum to 1.
    """

    name = "pixel L1 + MS-SSIM"

    def forward(self, images: torch.Tensor, prepared_target: torch.Tensor) -> torch.Tensor:
        a = (images + 1) / 2
        b = (prepared_target + 1) / 2
        l1 = (a - b).abs().flatten(1).mean(dim=1)
        return MS_SSIM_SHARE * (1 - ms_ssim(a, b)) + (1 - MS_SSIM_SHARE) * l1


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    return kernel.reshape(1, 1, 1, size).repeat(channels, 1, 1, 1)  # [C, 1, 1, size], applied along W then H


def _ssim_terms(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per sample, with a separable Gaussian window (no padding)."""
    channels = a.shape[1]

    def blur(x):
        x = F.conv2d(x, window, groups=channels)
        return F.conv2d(x, window.transpose(2, 3), groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    contrast_structure = (2 * cov + _SSIM_C2) / (var_a + var_b + _SSIM_C2)
    luminance = (2 * mu_a * mu_b + _SSIM_C1) / (mu_a.square() + mu_b.square() + _SSIM_C1)
    return (luminance * contrast_structure).flatten(1).mean(dim=1), contrast_structure.flatten(1).mean(dim=1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM [N] of images [N, C, H, W] in 0..1 (1 = identical)."""
    assert a.ndim == 4, f"expected images [N, C, H, W], got {list(a.shape)}"
    assert a.shape == b.shape, f"expected equal shapes, got {list(a.shape)} and {list(b.shape)}"
    side = min(a.shape[-2:])
    window_size = min(_SSIM_WINDOW, side if side % 2 else side - 1)
    scales = 1
    while scales < len(_MS_SSIM_WEIGHTS) and side // 2 ** scales >= window_size:
        scales += 1
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:scales], device=a.device, dtype=a.dtype)
    weights = weights / weights.sum()
    window = _gaussian_window(window_size, _SSIM_SIGMA, a.shape[1], a.device, a.dtype)

    factors = []
    for scale in range(scales):
        ssim, contrast_structure = _ssim_terms(a, b, window)
        # Negative terms would make the fractional powers undefined; clamp them as common MS-SSIM code does.
        factors.append((ssim if scale == scales - 1 else contrast_structure).clamp(min=1e-6))
        if scale < scales - 1:
            a = F.avg_pool2d(a, kernel_size=2)
            b = F.avg_pool2d(b, kernel_size=2)
    stacked = torch.stack(factors, dim=1)  # [N, scales]
    return (stacked ** weights).prod(dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


def build_vgg16_features() -> torch.nn.Sequential:
    """VGG16's convolutional part up to relu5_3, with torchvision's module indices (`features.0`, ...)."""
    layers: list[torch.nn.Module] = []
    in_channels = 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(torch.nn.Conv2d(in_channels, item, kernel_size=3, padding=1))
            layers.append(torch.nn.ReLU(inplace=False))
            in_channels = item
    return torch.nn.Sequential(*layers)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a flat name -> tensor mapping from a .pth/.pt (weights only) or .safetensors file."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = load_torch_data(path)
    except TorchFileError as error:
        raise PerceptualWeightsError(
            f"{error}. Expected torchvision's VGG16 state dict "
            f"({VGG16_FILE_NAMES[0]}) or the LPIPS weights ({LPIPS_LINEAR_FILE_NAMES[0]})."
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(value, torch.Tensor) for value in data.values()):
        raise PerceptualWeightsError(f"{path} does not contain a state dict of tensors.")
    return dict(data)


def load_vgg16_features(path: str | Path) -> torch.nn.Sequential:
    """Load torchvision's VGG16 weights file (its `features.*` tensors) into `build_vgg16_features()`.

    Raises:
        PerceptualWeightsError: a tensor is missing or has the wrong shape, naming the first offenders.
    """
    path = Path(path)
    tensors = _read_tensors(path)
    features = build_vgg16_features()
    expected = {f"features.{name}": value for name, value in features.state_dict().items()}
    missing = [name for name in expected if name not in tensors]
    wrong = [f"{name} {list(tensors[name].shape)} (expected {list(value.shape)})"
             for name, value in expected.items() if name in tensors and tensors[name].shape != value.shape]
    if missing or wrong:
        raise PerceptualWeightsError(
            f"{path} is not torchvision's VGG16 state dict: missing {missing[:4]}, wrong shapes {wrong[:4]}. Put "
            f"torchvision's {VGG16_FILE_NAMES[0]} (VGG16_Weights.IMAGENET1K_V1) there.")
    features.load_state_dict({name[len("features."):]: tensors[name].float() for name in expected})
    return features


def load_lpips_channel_weights(path: str | Path) -> list[torch.Tensor]:
    """Load the LPIPS v0.1 VGG16 channel weights (`lin{i}.model.1.weight`, [1, C, 1, 1]) as five vectors [C]."""
    path = Path(path)
    tensors = _read_tensors(path)
    weights = []
    for index, channels in enumerate(_LPIPS_CHANNELS):
        name = f"lin{index}.model.1.weight"
        value = tensors.get(name)
        if value is None or value.numel() != channels:
            shape = None if value is None else list(value.shape)
            raise PerceptualWeightsError(f"{path} is not the LPIPS VGG16 weights file: {name} is {shape}, expected "
                                         f"[1, {channels}, 1, 1].")
        weights.append(value.reshape(channels).float())
    return weights


def _find_in_lpips_folders(names: tuple[str, ...]) -> Path | None:
    for folder in host.model_folders(LPIPS_FOLDER):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


# The last LPIPS network built, keyed by its files (path, size, modification time) and device.
_lpips_cache: dict[tuple, LPIPSDistance] = {}
_cache_lock = threading.Lock()


@dataclass
class DistanceChoice:
    """The distance chosen for a run and why: `missing` names the file whose absence caused a fallback."""

    distance: ImageDistance
    missing: str | None = None


def load_distance(loss: str = "auto", device: torch.device | str = "cpu", where: str = "") -> DistanceChoice:
    """Build the image distance for `loss` ("auto", "lpips" or "pixel+ms-ssim") from the lpips model folder.

    "auto" uses LPIPS when VGG16 weights are present and otherwise logs a warning that names the missing file and
    falls back to pixel L1 + MS-SSIM. "lpips" raises FileNotFoundError when the weights are missing.
    """
    prefix = f"{where}: " if where else ""
    if loss not in LOSS_NAMES:
        raise ValueError(f"{prefix}loss {loss!r} is invalid; expected one of {LOSS_NAMES}.")
    if loss == "pixel+ms-ssim":
        return DistanceChoice(PixelMSSSIMDistance().to(device))

    folder = host.model_folders(LPIPS_FOLDER)[0]
    vgg_path = _find_in_lpips_folders(VGG16_FILE_NAMES)
    if vgg_path is None:
        nvidia = _find_in_lpips_folders((NVIDIA_VGG16_FILE,))
        reason = (f"{nvidia} is NVIDIA's TorchScript file, which contains code and is not loaded; " if nvidia else "")
        message = (f"{prefix}{reason}VGG16 weights for LPIPS not found: put torchvision's {VGG16_FILE_NAMES[0]} "
                   f"in {folder}")
        if loss == "lpips":
            raise FileNotFoundError(message + ", or choose the pixel+ms-ssim loss.")
        logger.warning("%s. Using the pixel L1 + MS-SSIM loss instead, which preserves less detail.", message)
        return DistanceChoice(PixelMSSSIMDistance().to(device), missing=str(folder / VGG16_FILE_NAMES[0]))

    linear_path = _find_in_lpips_folders(LPIPS_LINEAR_FILE_NAMES)
    key = (_file_key(vgg_path), _file_key(linear_path) if linear_path is not None else None, str(device))
    with _cache_lock:
        cached = _lpips_cache.get(key)
    if cached is not None:
        return DistanceChoice(cached)

    features = load_vgg16_features(vgg_path)
    channel_weights = load_lpips_channel_weights(linear_path) if linear_path is not None else None
    if channel_weights is None:
        logger.info("%sLPIPS channel weights (%s) not found in %s; using VGG16 features with equal channel weights.",
                    prefix, LPIPS_LINEAR_FILE_NAMES[0], folder)
    distance = LPIPSDistance(features, channel_weights).to(device)
    with _cache_lock:
        _lpips_cache.clear()  # keep one network: VGG16 features take 59 MB
        _lpips_cache[key] = distance
    return DistanceChoice(distance)


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns
