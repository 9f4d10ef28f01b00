"""The STYLEGAN_LATENT socket's value: a batch of W or W+ latents tied to the generator they came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SPACES = ("W", "W+")


class LatentMismatchError(ValueError):
    """Raised when a latent is used with a generator whose W space it does not belong to."""


def describe_generator(generator) -> str:
    """Name a generator for messages: the start of its W-space fingerprint, and its file when known."""
    path = getattr(generator, "source", {}).get("path")
    return f"{generator.fingerprint[:12]} ({path})" if path else generator.fingerprint[:12]


@dataclass(frozen=True)
class StyleGANLatent:
    """A batch of latents in W ([B, w_dim]) or W+ ([B, num_ws, w_dim]) of one generator.

    `fingerprint` identifies the generator's W space (see `Generator.fingerprint`); a latent is valid only for
    generators with the same fingerprint, `num_ws` and `w_dim`.
    """

    w: torch.Tensor
    space: str
    num_ws: int
    w_dim: int
    fingerprint: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"Latent space {self.space!r} is invalid; expected one of {SPACES}.")
        expected = [self.w_dim] if self.space == "W" else [self.num_ws, self.w_dim]
        if self.w.ndim != len(expected) + 1 or list(self.w.shape[1:]) != expected:
            raise ValueError(f"Latent in {self.space} must have shape [B, {', '.join(map(str, expected))}], "
                             f"got {list(self.w.shape)}.")

    @property
    def batch_size(self) -> int:
        return self.w.shape[0]

    def ws(self) -> torch.Tensor:
        """Per-layer latents [B, num_ws, w_dim], broadcasting W to every layer."""
        if self.space == "W":
            return self.w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return self.w

    def check_generator(self, generator, where: str = "") -> None:
        """Raise LatentMismatchError unless this latent belongs to `generator`'s W space."""
        prefix = f"{where}: " if where else ""
        if generator.fingerprint != self.fingerprint:
            made_by = self.meta.get("generator_path")
            made_by_text = f" ({made_by})" if made_by else ""
            raise LatentMismatchError(
                f"{prefix}the latent was made by generator {self.fingerprint[:12]}{made_by_text}, "
                f"{self.num_ws} layers x {self.w_dim}, but the connected generator is "
                f"{describe_generator(generator)}, {generator.num_ws} layers x {generator.w_dim}. Connect the "
                f"generator that produced the latent, or sample a new latent from this one.")
        if generator.num_ws != self.num_ws or generator.w_dim != self.w_dim:
            raise LatentMismatchError(
                f"{prefix}the latent has {self.num_ws} layers x {self.w_dim} but the generator expects "
                f"{generator.num_ws} x {generator.w_dim}.")
