"""ArcFace IR-SE50 face recognition network and the identity loss that StyleCLIP's latent optimisation uses.

The weights are the `model_ir_se50.pth` state dict that StyleCLIP, pSp and e4e use (TreB1eN's InsightFace_Pytorch
port), read from the "arcface" model folder with `torch.load(weights_only=True)`. Module names equal that
implementation's (`input_layer.0.weight`, `body.0.res_layer.5.fc1.weight`, `output_layer.3.weight`, ...), so
the state dict loads with strict=True. The residual units come from models.encoder_networks, whose pSp/e4e
backbone is the same network without the embedding head.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .encoder_networks import IR_SE_50, BackboneConfig, build_ir_stem_and_body
from .safe_pickle import TorchFileError, load_torch_data

logger = logging.getLogger(__name__)

ARCFACE_FOLDER = "arcface"
INPUT_SIZE = 112          # The network takes 112 x 112 face crops.
EMBEDDING_SIZE = 512      # Length of the identity embedding.
OUTPUT_SPATIAL = 7        # Side of the last feature map for a 112 px input (four stride-2 stages).


class ArcFaceError(ValueError):
    """Raised when an ArcFace weights file cannot be read or does not fit the IR-SE network."""


class ArcFace(nn.Module):
    """IR / IR-SE ResNet with ArcFace's embedding head; returns unit-length identity embeddings [N, 512]."""

    def __init__(self, backbone: BackboneConfig = IR_SE_50, embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        self.backbone = backbone
        self.input_layer, self.body = build_ir_stem_and_body(backbone)
        in_channels = backbone.stage_channels[-1]
        # Index 1 is dropout and index 2 flattening in the original Sequential. Neither has weights.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(0.6),
            nn.Flatten(),
            nn.Linear(in_channels * OUTPUT_SPATIAL * OUTPUT_SPATIAL, embedding_size),
            nn.BatchNorm1d(embedding_size))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        assert faces.shape[1:] == (3, INPUT_SIZE, INPUT_SIZE), f"faces must be [N, 3, 112, 112], got {faces.shape}"
        x = self.body(self.input_layer(faces))
        return F.normalize(self.output_layer(x), dim=1)


def backbone_from_state_dict(state: dict[str, torch.Tensor], source: str) -> BackboneConfig:
    """Infer stage widths and depths from a state dict: a new stage starts where the unit width changes.

    IR-SE50 has stages of 3, 4, 14 and 3 units with widths 64, 128, 256 and 512.
    """
    unit_indices = sorted({int(m.group(1)) for key in state if (m := re.match(r"body\.(\d+)\.", key))})
    if "input_layer.0.weight" not in state or not unit_indices:
        raise ArcFaceError(f"{source} lacks input_layer.0.weight or body.* tensors; it is not an ArcFace IR / IR-SE "
                           f"state dict such as model_ir_se50.pth.")
    widths = [int(state[f"body.{index}.res_layer.1.weight"].shape[0]) for index in unit_indices]
    stem = int(state["input_layer.0.weight"].shape[0])
    # Stage starts: the first unit, and every unit whose width differs from the previous unit's.
    starts = [0] + [position for position in range(1, len(widths)) if widths[position] != widths[position - 1]]
    if len(starts) != 4:
        raise ArcFaceError(f"{source} has {len(starts)} backbone stages (unit widths {widths}); the ArcFace IR "
                           f"networks have 4.")
    units = [end - start for start, end in zip(starts, starts[1:] + [len(widths)], strict=True)]
    se = f"body.{unit_indices[0]}.res_layer.5.fc1.weight" in state
    reduction = 16
    if se:
        reduction = widths[0] // int(state[f"body.{unit_indices[0]}.res_layer.5.fc1.weight"].shape[0])
    return BackboneConfig(stem_channels=stem, stage_channels=tuple(widths[start] for start in starts),
                          stage_units=tuple(units), squeeze_excitation=se, se_reduction=reduction)


def load_arcface(path: str | os.PathLike, device: str | torch.device = "cpu") -> ArcFace:
    """Load an ArcFace IR / IR-SE state dict (`model_ir_se50.pth`) as an eval-mode network without gradients."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ArcFace weights not found: {path}. Put model_ir_se50.pth (the file StyleCLIP, "
                                f"pSp and e4e use) in the {ARCFACE_FOLDER} model folder.")
    try:
        state = load_torch_data(path)
    except TorchFileError as error:
        raise ArcFaceError(f"{error}. Expected the ArcFace IR-SE50 state dict (model_ir_se50.pth).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArcFaceError(f"{path} contains a {type(state).__name__}, not an ArcFace state dict.")
    backbone = backbone_from_state_dict(state, str(path))
    embedding_size = int(state["output_layer.3.weight"].shape[0]) if "output_layer.3.weight" in state else 0
    network = ArcFace(backbone, embedding_size or EMBEDDING_SIZE)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if missing or unexpected or wrong:
        raise ArcFaceError(f"{path} does not fit the ArcFace IR network inferred from it ({backbone}): missing "
                           f"{missing[:4]}, unexpected {unexpected[:4]}, other shapes {wrong[:4]}.")
    network.load_state_dict(state, strict=True)
    return network.float().eval().requires_grad_(False).to(device)


def face_crop(images: torch.Tensor) -> torch.Tensor:
    """Crop generator output [N, 3, H, W] to ArcFace's input as StyleCLIP's IDLoss does.

    The image is average-pooled to 256 px, the face region rows 35..222 and columns 32..219 are kept (this
    assumes FFHQ-aligned faces), and the crop is pooled to 112 px.
    """
    x = images.float()
    if x.shape[2:] != (256, 256):
        x = F.adaptive_avg_pool2d(x, (256, 256))
    x = x[:, :, 35:223, 32:220]
    return F.adaptive_avg_pool2d(x, (INPUT_SIZE, INPUT_SIZE))


def identity_loss(network: ArcFace, edited: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of the identity embeddings of two image batches [N, 3, H, W] (-1..1), per image [N].

    The original's embeddings are treated as constants. 0 means the same identity. StyleCLIP's IDLoss averages
    these values over the batch.
    """
    device = next(network.parameters()).device
    with torch.no_grad():
        target = network(face_crop(original.to(device)))
    current = network(face_crop(edited.to(device)))
    return 1 - (current * target).sum(dim=1)


def write_arcface(path: str | os.PathLike, backbone: BackboneConfig = IR_SE_50, seed: int = 0) -> Path:
    """Save a randomly initialised ArcFace state dict in the model_ir_se50.pth layout, for tests."""
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ArcFace(backbone)
        # Fresh BatchNorm statistics (mean 0, variance 1) would make every normalisation an identity, so spread them.
        for module in network.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path
