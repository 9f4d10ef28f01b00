"""Read the parameters and buffers of a TorchScript archive as data, without running any of its code.

`torch.jit.save` writes a zip archive with one top folder (`<name>/`) that holds:

- `data.pkl`: a pickle of the module tree. Every module is a `__torch__.<module path>.<class>` object whose state
  is a dict of attributes. Tensors are `torch._utils._rebuild_tensor_v2` calls, and their storages are persistent
  ids `("storage", torch.<Type>Storage, key, location, numel)` that point at `data/<key>`.
- `code/__torch__/...py`: the TorchScript source of each class. Its class bodies list the attribute names that
  are parameters and buffers (`__parameters__ = ["weight", "bias", ]`).

`torch.jit.load` compiles and runs that code, and `torch.load(weights_only=True)` rejects TorchScript archives
(torch 2.6 and later), so this module reads `data.pkl` with a restricted unpickler that turns every `__torch__`
object into a plain `ScriptObjectRecord`, and parses the class bodies with `ast` (parsed, never executed) to tell
parameters and buffers from other tensor attributes such as OpenAI CLIP's `attn_mask`.
"""

from __future__ import annotations

import ast
import logging
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from .safe_pickle import RestrictedUnpickler, UnsafePickleError

logger = logging.getLogger(__name__)

# Storage classes that TorchScript pickles name, and the dtype of each.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class TorchScriptArchiveError(ValueError):
    """Raised when a file is not a readable TorchScript archive, naming the file and what is wrong."""


class ScriptObjectRecord:
    """A TorchScript object kept as data: its qualified class name and its attribute dict."""

    qualified_name = "__torch__"

    def __init__(self):
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"TorchScript object {self.qualified_name} has a custom state of type "
                                    f"{type(state).__name__}; only plain modules with attribute dicts are read.")
        self.attributes = dict(state)


def archive_root(names: list[str]) -> str | None:
    """Return the top folder of a TorchScript archive ("ViT-B-32/"), or None when `names` are not one."""
    for name in names:
        path = PurePosixPath(name)
        if len(path.parts) == 2 and path.parts[1] == "data.pkl":
            root = path.parts[0] + "/"
            if any(other.startswith(root + "code/") for other in names):
                return root
    return None


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Return True when `path` is a zip file laid out as `torch.jit.save` writes it (data.pkl beside code/)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return archive_root(archive.namelist()) is not None


class _ArchiveUnpickler(RestrictedUnpickler):
    """Restricted unpickler for `data.pkl`: `__torch__` classes become records, storages are read from the zip."""

    def __init__(self, archive: zipfile.ZipFile, root: str, source: str):
        super().__init__(archive.open(root + "data.pkl"), source=source)
        self.archive = archive
        self.root = root
        self.record_classes: dict[str, type] = {}
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.record_classes:
                # A subclass per class name only labels the records; no method comes from the file.
                self.record_classes[qualified] = type(name, (ScriptObjectRecord,), {"qualified_name": qualified})
            return self.record_classes[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self.source}: unexpected persistent id {pid!r} in data.pkl; expected "
                                    f"('storage', type, key, location, numel).")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or not isinstance(key, str) or not isinstance(numel, int):
            raise UnsafePickleError(f"{self.source}: malformed storage record {pid!r} in data.pkl.")
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, dtype, numel)
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
        member = f"{self.root}data/{key}"
        try:
            raw = self.archive.read(member)
        except KeyError:
            raise TorchScriptArchiveError(f"{self.source}: storage {member} is missing from the archive; the file "
                                          f"is truncated or damaged.") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise TorchScriptArchiveError(f"{self.source}: storage {member} contains {len(raw)} bytes but needs "
                                          f"{numel * itemsize} ({numel} x {dtype}); the file is damaged.")
        if numel == 0:
            flat = torch.empty(0, dtype=dtype)
        else:
            flat = torch.frombuffer(bytearray(raw[:numel * itemsize]), dtype=dtype)
        return torch.storage.TypedStorage(wrap_storage=flat.untyped_storage(), dtype=dtype, _internal=True)


def _module_name(member: str, root: str) -> str:
    """Map `<root>code/__torch__/a/b.py` to the qualified module name `__torch__.a.b`."""
    relative = PurePosixPath(member[len(root + "code/"):])
    return ".".join(relative.with_suffix("").parts)


def _declared_lists(class_node: ast.ClassDef) -> dict[str, list[str]]:
    """Read `__parameters__` and `__buffers__` from a TorchScript class body (string lists)."""
    declared = {}
    for statement in class_node.body:
        if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
            continue
        target = statement.targets[0]
        if isinstance(target, ast.Name) and target.id in ("__parameters__", "__buffers__"):
            if isinstance(statement.value, (ast.List, ast.Tuple)):
                declared[target.id] = [element.value for element in statement.value.elts
                                       if isinstance(element, ast.Constant) and isinstance(element.value, str)]
    return declared


def _state_attribute_names(archive: zipfile.ZipFile, root: str, source: str) -> dict[str, set[str]]:
    """Map each qualified class name to the names of its parameters and buffers, from the archive's code/."""
    names: dict[str, set[str]] = {}
    for member in archive.namelist():
        if not (member.startswith(root + "code/") and member.endswith(".py")):
            continue
        text = archive.read(member).decode("utf-8", errors="replace")
        try:
            tree = ast.parse(text, filename=member)
        except SyntaxError as exc:
            logger.warning("%s: could not parse %s (%s); its classes keep every tensor attribute.", source, member,
                           exc)
            continue
        module = _module_name(member, root)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                declared = _declared_lists(node)
                if declared:
                    names[f"{module}.{node.name}"] = set(declared.get("__parameters__", [])) | set(
                        declared.get("__buffers__", []))
    return names


def _flatten(record: ScriptObjectRecord, prefix: str, declared: dict[str, set[str]],
             result: dict[str, torch.Tensor], seen: set[int]) -> None:
    if id(record) in seen:
        return
    seen.add(id(record))
    state_names = declared.get(record.qualified_name)
    for name, value in record.attributes.items():
        if isinstance(value, ScriptObjectRecord):
            _flatten(value, f"{prefix}{name}.", declared, result, seen)
        elif isinstance(value, torch.Tensor) and (state_names is None or name in state_names):
            result[prefix + name] = value


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return the parameters and buffers of a TorchScript archive by their dotted names, as `state_dict()` would.

    Raises:
        TorchScriptArchiveError: when the file is not a TorchScript archive or is damaged.
        UnsafePickleError: when data.pkl references a global outside the tensor and container allowlist.
    """
    path = Path(path)
    source = str(path)
    if not zipfile.is_zipfile(path):
        raise TorchScriptArchiveError(f"{source} is not a zip file, so it is not a TorchScript archive.")
    with zipfile.ZipFile(path) as archive:
        root = archive_root(archive.namelist())
        if root is None:
            raise TorchScriptArchiveError(f"{source} is a zip file without the <name>/data.pkl and <name>/code/ "
                                          f"entries of a TorchScript archive.")
        byteorder_member = root + "byteorder"
        if byteorder_member in archive.namelist():
            byteorder = archive.read(byteorder_member).decode("ascii", errors="replace").strip()
            if byteorder != "little":
                raise TorchScriptArchiveError(f"{source} stores tensors in {byteorder!r} byte order; only "
                                              f"little-endian archives are read.")
        top = _ArchiveUnpickler(archive, root, source).load()
        if not isinstance(top, ScriptObjectRecord):
            raise TorchScriptArchiveError(f"{source}: data.pkl contains a {type(top).__name__}, not a TorchScript "
                                          f"module.")
        declared = _state_attribute_names(archive, root, source)
    result: dict[str, torch.Tensor] = {}
    _flatten(top, "", declared, result, set())
    logger.debug("Read %d tensors from TorchScript archive %s.", len(result), source)
    return result
