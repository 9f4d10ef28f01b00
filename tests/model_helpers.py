"""Helpers shared by the model tests."""

import hashlib

import torch


def state_hash(module: torch.nn.Module) -> str:
    """Return a SHA-256 digest of a module's state dict, to show that a call left the module unchanged."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
