"""Edit directions in W: the STYLEGAN_DIRECTION socket's value, direction files, and SeFa / GANSpace computed
from a generator.

File formats read by `load_direction` (chosen by suffix):
- `.npy`: an array; InterFaceGAN boundaries are [1, w_dim]. A 1-D array is one direction, a 2-D array [K, w_dim]
  is K directions in W, a 3-D array [K, num_ws, w_dim] is K per-layer (W+) directions.
- `.npz`: GANSpace components (harskish/ganspace, decomposition.py): `lat_comp` [K, 1, w_dim] unit vectors,
  `lat_mean` [1, w_dim], `lat_stdev` [K] (the spread of sampled W along each component).
- `.pt` / `.pth`: the output of rosinality's closed_form_factorization.py, {"ckpt": str, "eigvec": [w_dim, K]}
  with one eigenvector per column, or a plain tensor laid out like `.npy`. Loaded with weights_only=True.
- `.safetensors`: StyleBridge's own format, written by `save_direction`. It has the tensor "vectors", optional
  "stdevs" and "values", and name, source and generator fingerprint in the metadata. A safetensors file with a
  single tensor and no such metadata is read like `.npy`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .latents import LatentMismatchError, StyleGANLatent
from .safe_pickle import NumpyFileError, TorchFileError, load_numpy_file, load_torch_data

logger = logging.getLogger(__name__)

DIRECTION_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")
SCALES = ("unit", "stdev")
FORMAT_NAME = "stylebridge-direction"
FORMAT_VERSION = "1"
MAX_GANSPACE_SAMPLES = 1_000_000
MAPPING_CHUNK = 4096  # Latents mapped per mapping-network call when sampling W for GANSpace.


class DirectionShapeError(ValueError):
    """Raised when a direction's width or layer count does not match the latent or generator it is used with."""


@dataclass(frozen=True)
class StyleGANDirection:
    """K edit directions in one generator's W space.

    `vectors` is [K, w_dim] for directions that move every W+ layer alike, or [K, num_ws, w_dim] for per-layer
    directions. `fingerprint` is the generator's (see `Generator.fingerprint`), or None when the file did not
    record it; such a direction is checked by shape only.
    """

    vectors: torch.Tensor
    name: str
    source: str                         # "interfacegan", "ganspace", "sefa", "rosinality-sefa", "array", ...
    fingerprint: str | None = None
    stdevs: torch.Tensor | None = None  # [K] spread of sampled W along each direction (GANSpace); None = unknown.
    values: torch.Tensor | None = None  # [K] eigenvalues or explained variance, strongest first; None = unknown.
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.vectors.ndim not in (2, 3) or self.vectors.shape[0] < 1:
            raise DirectionShapeError(f"Direction {self.name!r} must have shape [K, w_dim] or [K, num_ws, w_dim], "
                                      f"got {list(self.vectors.shape)}.")
        for label in ("stdevs", "values"):
            extra = getattr(self, label)
            if extra is not None and tuple(extra.shape) != (self.count,):
                raise DirectionShapeError(f"Direction {self.name!r}: {label} must have shape [{self.count}], got "
                                          f"{list(extra.shape)}.")

    @property
    def count(self) -> int:
        return self.vectors.shape[0]

    @property
    def w_dim(self) -> int:
        return self.vectors.shape[-1]

    @property
    def num_ws(self) -> int | None:
        """Number of W+ layers of per-layer directions; None for directions in W."""
        return self.vectors.shape[1] if self.vectors.ndim == 3 else None

    @property
    def space(self) -> str:
        return "W" if self.vectors.ndim == 2 else "W+"

    def vector(self, index: int, where: str = "") -> torch.Tensor:
        """Direction `index`: [w_dim] or [num_ws, w_dim]."""
        if not 0 <= index < self.count:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}direction index {index} is out of range; {self.name!r} has {self.count} "
                             f"direction(s), so use 0..{self.count - 1}.")
        return self.vectors[index]

    def select(self, index: int, where: str = "") -> StyleGANDirection:
        """Return a direction with only vector `index`, and its stdev and value."""
        vector = self.vector(index, where)
        pick = slice(index, index + 1)
        return replace(self, vectors=vector.unsqueeze(0), name=f"{self.name}[{index}]",
                       stdevs=None if self.stdevs is None else self.stdevs[pick],
                       values=None if self.values is None else self.values[pick],
                       meta={**self.meta, "component": index})

    def scaled(self, scale: str, where: str = "") -> StyleGANDirection:
        """Unit vectors ("unit"), or each vector times its stdev ("stdev", so strength 1 = one standard deviation)."""
        prefix = f"{where}: " if where else ""
        if scale not in SCALES:
            raise ValueError(f"{prefix}scale {scale!r} is invalid; expected one of {SCALES}.")
        if scale == "unit":
            return self
        if self.stdevs is None:
            raise ValueError(f"{prefix}scale 'stdev' needs the spread of W along each direction, which "
                             f"{self.name!r} ({self.source}) does not carry; only GANSpace directions do. "
                             f"Use scale 'unit'.")
        shape = [-1] + [1] * (self.vectors.ndim - 1)
        return replace(self, vectors=self.vectors * self.stdevs.reshape(shape), meta={**self.meta, "scale": "stdev"})

    def check_shape(self, num_ws: int, w_dim: int, what: str, where: str = "") -> None:
        """Raise DirectionShapeError unless the direction fits a W space of `num_ws` layers x `w_dim`."""
        prefix = f"{where}: " if where else ""
        expected = f"[{w_dim}] per direction (or [{num_ws}, {w_dim}] per layer)"
        got = f"{list(self.vectors.shape[1:])} per direction"
        if self.w_dim != w_dim:
            raise DirectionShapeError(f"{prefix}direction {self.name!r} has width {self.w_dim} but the {what} has "
                                      f"width {w_dim}: the direction is {got}, the {what} expects {expected}. "
                                      f"Use a direction made for this generator.")
        if self.num_ws is not None and self.num_ws != num_ws:
            raise DirectionShapeError(f"{prefix}direction {self.name!r} has {self.num_ws} layers but the {what} has "
                                      f"{num_ws}: the direction is {got}, the {what} expects {expected}. "
                                      f"Use a direction made for this generator.")

    def check_latent(self, latent: StyleGANLatent, where: str = "") -> None:
        """Raise unless the direction fits `latent`: shapes, and the fingerprint when both are known."""
        self.check_shape(latent.num_ws, latent.w_dim, "latent", where)
        if self.fingerprint is not None and self.fingerprint != latent.fingerprint:
            prefix = f"{where}: " if where else ""
            raise LatentMismatchError(f"{prefix}direction {self.name!r} was made for generator "
                                      f"{self.fingerprint[:12]} but the latent comes from generator "
                                      f"{latent.fingerprint[:12]}. Use a direction of the latent's generator.")

    def for_generator(self, generator, where: str = "") -> StyleGANDirection:
        """Check the direction against `generator` and return it with the generator's fingerprint."""
        self.check_shape(generator.num_ws, generator.w_dim, "generator", where)
        if self.fingerprint is not None and self.fingerprint != generator.fingerprint:
            prefix = f"{where}: " if where else ""
            raise LatentMismatchError(f"{prefix}direction {self.name!r} was made for generator "
                                      f"{self.fingerprint[:12]}, not the connected generator "
                                      f"{generator.fingerprint[:12]}. Connect the generator it was made for.")
        return replace(self, fingerprint=generator.fingerprint)


def canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so that its largest-magnitude entry is positive; eigenvector signs are otherwise arbitrary."""
    flat = vectors.reshape(vectors.shape[0], -1)
    peak = flat.abs().argmax(dim=1)
    signs = torch.sign(flat.gather(1, peak.unsqueeze(1))).squeeze(1)
    signs[signs == 0] = 1
    return vectors * signs.reshape([-1] + [1] * (vectors.ndim - 1))


# ---------------------------------------------------------------------------------------------------------------------
# Files.


def _vectors_from_array(array: np.ndarray | torch.Tensor, path: Path) -> torch.Tensor:
    """Lay out a raw array as [K, w_dim] or [K, num_ws, w_dim] (see the module docstring)."""
    tensor = torch.as_tensor(np.asarray(array) if isinstance(array, np.ndarray) else array).float()
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim not in (2, 3):
        raise DirectionShapeError(f"{path}: a direction array must be [w_dim], [K, w_dim] or [K, num_ws, w_dim], "
                                  f"got {list(tensor.shape)}.")
    return tensor


def _read_numpy(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        return load_numpy_file(path)
    except NumpyFileError as error:
        raise ValueError(f"{path} is not a valid direction file: {error.reason}.") from None


def _read_npy(path: Path) -> dict:
    array = _read_numpy(path)
    vectors = _vectors_from_array(array, path)
    source = "interfacegan" if array.ndim == 2 and array.shape[0] == 1 else "array"
    return {"vectors": vectors, "source": source}


def _read_npz(path: Path) -> dict:
    data = _read_numpy(path)
    keys = sorted(data)
    if "lat_comp" not in keys:
        raise ValueError(f"{path} is not a GANSpace component file: it has the arrays {keys}, but GANSpace files "
                         f"have lat_comp, lat_mean and lat_stdev.")
    components = torch.from_numpy(data["lat_comp"]).float()
    stdevs = torch.from_numpy(data["lat_stdev"]).float().flatten() if "lat_stdev" in keys else None
    values = torch.from_numpy(data["var_ratio"]).float().flatten() if "var_ratio" in keys else None
    if components.ndim == 3 and components.shape[1] == 1:
        components = components[:, 0]  # [K, 1, w_dim] -> [K, w_dim]: GANSpace stores W components with a layer axis
    vectors = _vectors_from_array(components, path)
    if values is not None and values.shape[0] != vectors.shape[0]:
        values = None  # var_ratio of an activation-space decomposition can have another length
    return {"vectors": vectors, "source": "ganspace", "stdevs": stdevs, "values": values}


def _read_torch(path: Path) -> dict:
    try:
        data = load_torch_data(path)
    except TorchFileError as error:
        raise ValueError(f"{error}. Direction .pt files must hold only tensors and plain values, as "
                         f"closed_form_factorization.py writes.") from None
    if isinstance(data, torch.Tensor):
        return {"vectors": _vectors_from_array(data, path), "source": "array"}
    if isinstance(data, dict) and isinstance(data.get("eigvec"), torch.Tensor):
        eigvec = data["eigvec"]
        if eigvec.ndim != 2:
            raise DirectionShapeError(f"{path}: 'eigvec' must be [w_dim, K], got {list(eigvec.shape)}.")
        return {"vectors": eigvec.t().float().contiguous(), "source": "rosinality-sefa",
                "meta": {"ckpt": str(data.get("ckpt", ""))}}
    keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path} is not a direction file: expected a tensor or a dict with 'eigvec' [w_dim, K] "
                     f"(rosinality closed_form_factorization.py), got {keys}.")


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        names = list(handle.keys())
        tensors = {name: handle.get_tensor(name) for name in names}
    if metadata.get("format") == FORMAT_NAME:
        if "vectors" not in tensors:
            raise ValueError(f"{path} has StyleBridge direction metadata but no 'vectors' tensor; the file is "
                             f"damaged. Save the direction again.")
        return {"vectors": tensors["vectors"].float(), "source": metadata.get("source", "stylebridge"),
                "stdevs": tensors.get("stdevs"), "values": tensors.get("values"),
                "fingerprint": metadata.get("fingerprint") or None, "name": metadata.get("name"),
                "meta": json.loads(metadata.get("meta", "{}"))}
    if len(tensors) == 1:
        return {"vectors": _vectors_from_array(next(iter(tensors.values())), path), "source": "array"}
    raise ValueError(f"{path} is not a direction file: it has the tensors {sorted(tensors)} and no StyleBridge "
                     f"direction metadata. Save directions with SaveStyleGANDirection, or store one tensor.")


_READERS = {".npy": _read_npy, ".npz": _read_npz, ".pt": _read_torch, ".pth": _read_torch,
            ".safetensors": _read_safetensors}


def load_direction(path: str | os.PathLike, generator=None, where: str = "") -> StyleGANDirection:
    """Read a direction file (see the module docstring for the formats).

    With `generator`, the direction is checked against its W space and takes its fingerprint. Without one, the
    fingerprint is the file's, which is None for formats that do not record it.

    Raises:
        ValueError: for an unknown suffix or a file whose content is not a direction.
        DirectionShapeError: when the direction does not fit `generator`, with both shapes in the message.
        LatentMismatchError: when the file records another generator's fingerprint.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown direction file type {path.suffix!r}; expected one of "
                         f"{', '.join(DIRECTION_SUFFIXES)}.")
    fields = reader(path)
    direction = StyleGANDirection(
        vectors=fields["vectors"], name=fields.get("name") or path.stem, source=fields["source"],
        fingerprint=fields.get("fingerprint"), stdevs=fields.get("stdevs"), values=fields.get("values"),
        meta={**fields.get("meta", {}), "file": path.name})
    logger.info("Loaded %d %s direction(s) %s from %s", direction.count, direction.source,
                list(direction.vectors.shape), path)
    if generator is not None:
        direction = direction.for_generator(generator, where)
    return direction


def save_direction(direction: StyleGANDirection, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a direction as StyleBridge safetensors; an existing file raises FileExistsError unless `overwrite`."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path}: directions are saved as .safetensors; change the file name's suffix.")
    tensors = {"vectors": direction.vectors.detach().float().cpu().contiguous()}
    for label in ("stdevs", "values"):
        extra = getattr(direction, label)
        if extra is not None:
            tensors[label] = extra.detach().float().cpu().contiguous()
    metadata = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": direction.name, "source": direction.source,
                "fingerprint": direction.fingerprint or "", "space": direction.space,
                "meta": json.dumps(direction.meta, default=str)}
    payload = save(tensors, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb" if overwrite else "xb") as handle:
        handle.write(payload)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# SeFa: closed-form factorisation of the style affine weights (Shen & Zhou, "Closed-Form Factorization of Latent
# Semantics in GANs", CVPR 2021).


def style_affine_weights(generator, layers: list[int] | None = None) -> list[tuple[int, str, torch.Tensor]]:
    """List (W+ index, module name, affine weight [channels, w_dim]) for the layers that W+ indices `layers` drive.

    StyleGAN2: W+ index i drives convolution i. The last index drives only the final ToRGB layer, so its affine
    stands for that index, as in genforce's SeFa; the ToRGB layers of lower blocks are left out. StyleGAN3 (a
    synthesis network with `layer_names`): index 0 drives the input transform, which is left out, and index
    i >= 1 drives layer i - 1.
    """
    synthesis = generator.synthesis
    entries: list[tuple[int, str, torch.Tensor]] = []
    if hasattr(synthesis, "block_resolutions"):
        conv_index = 0
        for res in synthesis.block_resolutions:
            block = getattr(synthesis, f"b{res}")
            for name in ("conv0", "conv1"):
                layer = getattr(block, name, None)
                if layer is not None:
                    entries.append((conv_index, f"synthesis.b{res}.{name}", layer.affine.weight))
                    conv_index += 1
        last = getattr(synthesis, f"b{synthesis.block_resolutions[-1]}")
        entries.append((generator.num_ws - 1, f"synthesis.b{synthesis.block_resolutions[-1]}.torgb",
                        last.torgb.affine.weight))
    elif hasattr(synthesis, "layer_names"):
        for position, name in enumerate(synthesis.layer_names):
            entries.append((position + 1, f"synthesis.{name}", getattr(synthesis, name).affine.weight))
    else:
        raise ValueError(f"{type(generator).__name__} has no StyleGAN2 blocks or StyleGAN3 layers, so its style "
                         f"affine weights cannot be found for SeFa.")
    if layers is None:
        return entries
    selected = [entry for entry in entries if entry[0] in set(layers)]
    if not selected:
        available = ", ".join(str(entry[0]) for entry in entries)
        raise ValueError(f"W+ layers {layers} drive no style affine of this generator; SeFa can use the indices "
                         f"{available}.")
    return selected


@torch.no_grad()
def compute_sefa(generator, layers: list[int] | None = None, num_components: int | None = None) -> StyleGANDirection:
    """Compute SeFa directions: the eigenvectors of A^T A, strongest eigenvalue first.

    A stacks the selected layers' affine weights row by row, and each row (one style channel) is scaled to unit
    norm. Returns unit directions [K, w_dim] with the eigenvalues in `values`. Signs are made canonical, so the
    result is deterministic. `num_components` None keeps all w_dim.
    """
    entries = style_affine_weights(generator, layers)
    weight = torch.cat([w.detach().to("cpu", torch.float64) for _, _, w in entries])  # [sum channels, w_dim]
    weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    eigenvalues, eigenvectors = torch.linalg.eigh(weight.t() @ weight)  # ascending
    order = torch.argsort(eigenvalues, descending=True)
    count = generator.w_dim if num_components is None else num_components
    if not 1 <= count <= generator.w_dim:
        raise ValueError(f"num_components {num_components} is out of range; expected 1..{generator.w_dim}.")
    order = order[:count]
    vectors = canonical_signs(eigenvectors[:, order].t())  # [K, w_dim]
    used = [index for index, _, _ in entries]
    meta = {"layers": used, "modules": [name for _, name, _ in entries]}
    return StyleGANDirection(vectors.float().contiguous(), name=f"sefa-{len(used)}-layers", source="sefa",
                             fingerprint=generator.fingerprint, values=eigenvalues[order].float(), meta=meta)


# ---------------------------------------------------------------------------------------------------------------------
# GANSpace: principal components of sampled W (Härkönen et al., "GANSpace: Discovering Interpretable GAN
# Controls", NeurIPS 2020).


def _mapped_w_chunks(generator, num_samples: int, seed: int, class_index: int):
    """Yield W chunks [n, w_dim] (float64, CPU) for z drawn from numpy RandomState(seed), without truncation."""
    from .sampling import class_label

    device = generator.mapping.fc0.weight.device
    random_state = np.random.RandomState(seed)
    for start in range(0, num_samples, MAPPING_CHUNK):
        # Drawing chunk by chunk gives the same z as one draw of [num_samples, z_dim] (row-major order).
        count = min(MAPPING_CHUNK, num_samples - start)
        z = torch.from_numpy(random_state.randn(count, generator.z_dim)).to(device)
        c = class_label(generator, class_index, count)
        c = c.to(device) if c is not None else None
        ws = generator.mapping(z, c)
        yield (ws[:, 0] if ws.ndim == 3 else ws).to("cpu", torch.float64)


@torch.no_grad()
def sample_w_batch(generator, num_samples: int, seed: int, class_index: int = 0) -> torch.Tensor:
    """Map z drawn from numpy RandomState(seed) to W [N, w_dim] (float64, CPU), without truncation."""
    return torch.cat(list(_mapped_w_chunks(generator, num_samples, seed, class_index)))


@torch.no_grad()
def compute_ganspace(generator, num_samples: int = 10_000, seed: int = 0, num_components: int = 32,
                     class_index: int = 0) -> StyleGANDirection:
    """Compute GANSpace directions: the principal components of `num_samples` W latents mapped from seeded z.

    Returns unit directions [K, w_dim], largest variance first, with the standard deviation of the samples along
    each one in `stdevs` and the explained variance ratio in `values`. The same generator, seed and sample count
    give the same directions (signs made canonical). Fewer samples give noisier components.
    """
    if not 2 <= num_samples <= MAX_GANSPACE_SAMPLES:
        raise ValueError(f"num_samples {num_samples} is out of range; expected 2..{MAX_GANSPACE_SAMPLES}.")
    limit = min(generator.w_dim, num_samples - 1)
    if not 1 <= num_components <= limit:
        raise ValueError(f"num_components {num_components} is out of range; expected 1..{limit} (at most w_dim and "
                         f"num_samples - 1).")

    # Accumulate the covariance chunk by chunk, so memory stays at one chunk whatever num_samples is. Sums are
    # taken around the first chunk's mean, which keeps float64 cancellation small.
    shift = None
    total = torch.zeros(generator.w_dim, dtype=torch.float64)
    scatter = torch.zeros(generator.w_dim, generator.w_dim, dtype=torch.float64)
    for chunk in _mapped_w_chunks(generator, num_samples, seed, class_index):
        if shift is None:
            shift = chunk.mean(dim=0)
        centred = chunk - shift
        total += centred.sum(dim=0)
        scatter += centred.t() @ centred
    mean_offset = total / num_samples
    covariance = (scatter - num_samples * torch.outer(mean_offset, mean_offset)) / (num_samples - 1)

    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    order = torch.argsort(eigenvalues, descending=True)
    variances = eigenvalues[order].clamp_min(0)
    vectors = canonical_signs(eigenvectors[:, order[:num_components]].t())  # [K, w_dim]
    stdevs = variances[:num_components].sqrt()
    ratios = variances[:num_components] / variances.sum()
    meta = {"num_samples": num_samples, "seed": seed, "class_index": class_index if generator.c_dim else None,
            "mean_norm": float((shift + mean_offset).norm())}
    return StyleGANDirection(vectors.float().contiguous(), name=f"ganspace-n{num_samples}-seed{seed}",
                             source="ganspace", fingerprint=generator.fingerprint, stdevs=stdevs.float(),
                             values=ratios.float(), meta=meta)
