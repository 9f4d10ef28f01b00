"""Loading pickled files as data only: NVIDIA network pickles, and torch.save checkpoints.

NVIDIA's stylegan2-ada-pytorch and stylegan3 repositories save networks with `torch_utils.persistence`, which
embeds each class's Python source (`module_src`) in the pickle and executes it on load. This unpickler instead
turns every persistent object into a `PersistentRecord` holding its class name and state, and resolves only
the globals in `_ALLOWED` (containers, numpy arrays, tensor rebuild functions). Any other global, such as
`os.system` or `builtins.eval`, raises `UnsafePickleError` before anything from the file is called.

Plain torch.save checkpoints go through `load_torch_data` (torch's weights-only unpickler), and
`describe_torch_load_error` explains a rejection without torch's advice to load the file unsafely.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import io
import logging
import pickle
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .messages import error_reason

logger = logging.getLogger(__name__)


class UnsafePickleError(pickle.UnpicklingError):
    """Raised when a pickle references a global outside the allowlist."""


class TorchFileError(pickle.UnpicklingError):
    """Raised by load_torch_data when a file is not a readable torch.save checkpoint of tensors.

    The message (describe_torch_load_error) names the file and the cause, without torch's advice to load it
    unsafely.
    """


class TorchScriptArchiveError(TorchFileError):
    """Raised by load_torch_data for a TorchScript archive, whose embedded code StyleBridge never runs."""


@dataclass
class PersistentRecord:
    """An object saved by `torch_utils.persistence`, kept as data: class name, state and a hash of its source."""

    class_name: str
    state: dict
    module_src_length: int = 0
    version: int | None = None

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def modules(self) -> dict[str, PersistentRecord]:
        return dict(self.state.get("_modules") or {})

    @property
    def parameters(self) -> dict[str, torch.Tensor | None]:
        return dict(self.state.get("_parameters") or {})

    @property
    def buffers(self) -> dict[str, torch.Tensor | None]:
        return dict(self.state.get("_buffers") or {})

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flatten the parameters and buffers of this record and its submodules into a state dict."""
        result: dict[str, torch.Tensor] = {}
        for name, tensor in {**self.parameters, **self.buffers}.items():
            if tensor is not None:
                result[prefix + name] = tensor.detach() if isinstance(tensor, torch.Tensor) else tensor
        for name, module in self.modules.items():
            if isinstance(module, PersistentRecord):
                result.update(module.tensors(prefix + name + "."))
        return result


class AttrDict(dict):
    """Stand-in for `dnnlib.EasyDict`: a dict whose keys can also be read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _reconstruct_persistent_obj(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(f"Unsupported persistent object record: {type(meta).__name__} "
                                f"with type {meta.get('type') if isinstance(meta, dict) else None!r}.")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafePickleError(f"Persistent object {meta.get('class_name')!r} has a non-dict state.")
    # The embedded source is kept only as a length: it is never compiled or executed.
    return PersistentRecord(class_name=str(meta.get("class_name")), state=state,
                            module_src_length=len(meta.get("module_src") or ""), version=meta.get("version"))


def _load_storage_from_bytes(data: bytes):
    # torch pickles storages as a nested torch.save payload; weights_only=True keeps that payload code-free too.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func is not torch._utils._rebuild_tensor_v2 or new_type not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafePickleError(f"Tensor rebuild with {getattr(func, '__name__', func)!r} into "
                                f"{getattr(new_type, '__name__', new_type)!r} is not allowed.")
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


def _numpy_global(name: str):
    core = getattr(np, "_core", None) or np.core
    return {
        "_reconstruct": core.multiarray._reconstruct,
        "scalar": core.multiarray.scalar,
    }[name]


_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")}

# (module, name) -> object returned to the unpickler. Values are resolved lazily where they depend on versions.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): AttrDict,
    ("dnnlib", "EasyDict"): AttrDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): None,  # Resolved below: protocol 2 stores bytes through it.
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    for _name in ("_reconstruct", "scalar"):
        _ALLOWED[(_module, _name)] = _name
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = "_frombuffer"
for _dtype_name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "UInt8DType",
                    "BoolDType"):
    _ALLOWED[("numpy.dtypes", _dtype_name)] = _dtype_name
for _dtype_name, _dtype in _TORCH_DTYPES.items():
    _ALLOWED[("torch", _dtype_name)] = _dtype


def _resolve(module: str, name: str, value: Any) -> Any:
    if module == "_codecs":
        import codecs

        return codecs.encode
    if module.startswith("numpy.dtypes"):
        import numpy.dtypes

        return getattr(numpy.dtypes, value)
    if module.startswith("numpy") and value == "_frombuffer":
        core = getattr(np, "_core", None) or np.core
        return core.numeric._frombuffer
    if module.startswith("numpy") and isinstance(value, str):
        return _numpy_global(value)
    return value


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allowlisted globals; `source` names the file in error messages."""

    def __init__(self, file: BinaryIO, source: str = "<pickle>"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles use Python 2 names, such as __builtin__.set; map them as pickle itself does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key not in _ALLOWED:
            raise UnsafePickleError(
                f"{self.source}: the pickle references {module}.{name}, which StyleBridge does not allow in "
                f"checkpoints because loading it could run code; nothing from the file was run. If this is a "
                f"genuine StyleGAN checkpoint, report the global name so it can be reviewed for the allowlist.")
        return _resolve(module, name, _ALLOWED[key])

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in network pickles (got {pid!r}).")


def restricted_load(file: BinaryIO, source: str = "<pickle>") -> Any:
    """Unpickle `file` with RestrictedUnpickler."""
    return RestrictedUnpickler(file, source=source).load()


@dataclass
class PersistentWriterRecord:
    """Helper for writers: pickles as a `torch_utils.persistence` object, so fixtures use the real layout.

    Pickle with `dump_persistent()`, which provides the `torch_utils.persistence` module that pickle looks the
    function up in.
    """

    class_name: str
    state: dict
    module_src: str = "# Source omitted: written by StyleBridge, which stores weights only.\n"
    version: int = 6

    def __reduce__(self):
        meta = dict(type="class", version=self.version, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


@contextlib.contextmanager
def _persistence_module():
    """Make `torch_utils.persistence._reconstruct_persistent_obj` importable while pickling, then remove it.

    Pickle stores a function by module and name and checks that the name imports back to the same object. When
    the official torch_utils is already imported its function is used; otherwise a small stand-in module is
    registered for the duration of the dump, so that it never shadows a real torch_utils imported later.
    """
    if "torch_utils.persistence" in sys.modules:
        yield
        return
    added = []
    package = sys.modules.get("torch_utils")
    if package is None:
        package = types.ModuleType("torch_utils")
        package.__path__ = []
        sys.modules["torch_utils"] = package
        added.append("torch_utils")
    module = types.ModuleType("torch_utils.persistence")

    def reconstruct(meta):
        return _reconstruct_persistent_obj(meta)

    reconstruct.__module__ = "torch_utils.persistence"
    reconstruct.__qualname__ = reconstruct.__name__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = reconstruct
    sys.modules["torch_utils.persistence"] = module
    added.append("torch_utils.persistence")
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def dump_persistent(data: Any, file: BinaryIO, protocol: int = 4) -> None:
    """Pickle `data`, which may contain PersistentWriterRecord objects, into `file`."""
    with _persistence_module():
        pickle.dump(data, file, protocol=protocol)


def module_state(attributes: dict[str, Any], submodules: dict[str, Any],
                 init_kwargs: dict[str, Any] | None = None, parameters: dict[str, torch.Tensor] | None = None,
                 buffers: dict[str, torch.Tensor] | None = None) -> dict:
    """Build the `__dict__` state that a persistent torch module pickles, for writers."""
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(
            (name, torch.nn.Parameter(t.detach().clone(), requires_grad=False) if t is not None else None)
            for name, t in (parameters or {}).items()),
        "_buffers": collections.OrderedDict((name, t.detach().clone()) for name, t in (buffers or {}).items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(),
        "_state_dict_hooks": collections.OrderedDict(),
        "_load_state_dict_pre_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict(submodules),
        "_init_args": (),
        "_init_kwargs": dict(init_kwargs or {}),
    }
    state.update(attributes)
    return state


__all__ = ["PersistentRecord", "PersistentWriterRecord", "RestrictedUnpickler", "UnsafePickleError", "AttrDict",
           "restricted_load", "module_state", "dump_persistent"]


# ---------------------------------------------------------------------------------------------------------------------
# torch.save checkpoints.


def load_torch_data(path: str | Path, allowed_globals: tuple = ()) -> Any:
    """Read a torch.save file with `torch.load(weights_only=True)`, so only tensors and containers are built.

    Raises:
        TorchFileError: for any file that does not load that way, with describe_torch_load_error's message.

    Args:
        path: the file.
        allowed_globals: classes to allow besides torch's defaults, e.g. argparse.Namespace for training
            checkpoints that store their command-line options.

    torch warns about pickle protocols other than 2 and suggests filing an issue with torch. That warning
    is silenced because torch.save writes protocol 2, so only files that are not torch checkpoints cause it.
    """
    from .torchscript_archive import is_torchscript_archive

    if is_torchscript_archive(path):
        raise TorchScriptArchiveError(f"{path} is a TorchScript archive, which contains code; StyleBridge never "
                                      f"loads one, and nothing from the file was run")
    with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed_globals)):
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive", category=UserWarning)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, OSError, KeyError, EOFError, ...
            raise TorchFileError(describe_torch_load_error(path, error)) from None


def describe_torch_load_error(path: str | Path, error: BaseException) -> str:
    """Explain why `load_torch_data(path)` raised `error`, without torch's advice to load the file unsafely.

    torch (checked with 2.14) wraps every rejection of its weights-only unpickler in an UnpicklingError that
    suggests `weights_only=False`. Only the rejected global or pickle opcode is kept from that text.
    """
    text = str(error)
    if "weights_only" in text:
        if match := re.search(r"GLOBAL ([\w.]+)", text):
            return (f"{path} contains a reference to {match.group(1)}, which is code, not tensors; StyleBridge never "
                    f"loads such files, and nothing from the file was run")
        if match := re.search(r"Unsupported operand (\d+)", text):
            detail = f"the pickle uses opcode {match.group(1)}, which torch.save does not write"
        else:
            detail = "torch's weights-only loader rejected its contents"
        return (f"{path} is not a PyTorch checkpoint of tensors ({detail}); StyleBridge never loads such files, and "
                f"nothing from the file was run")
    reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return (f"{path} is not a readable PyTorch checkpoint ({reason}); the file is truncated, damaged or not a "
            f"torch.save file")


class NumpyFileError(ValueError):
    """Raised by load_numpy_file; `reason` is the cause without the path, for callers that word their own message."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


NPY_SIGNATURE = b"\x93NUMPY"
NPZ_SIGNATURE = b"PK"


def load_numpy_file(path: str | Path) -> np.ndarray | dict[str, np.ndarray]:
    """Read a .npy array, or every array of a .npz archive as a dict, without pickle.

    numpy suggests allow_pickle=True for object arrays; that advice is never followed or repeated, because
    pickled arrays can hold code.

    Raises:
        NumpyFileError: for an empty file, a file of the other kind or no NumPy file, object arrays, and
            truncated or damaged files.
    """
    path = Path(path)
    archive = path.suffix.lower() == ".npz"
    with open(path, "rb") as file:
        signature = file.read(len(NPY_SIGNATURE))
    if not signature:
        raise NumpyFileError(path, "the file is empty")
    if archive and not signature.startswith(NPZ_SIGNATURE):
        raise NumpyFileError(path, f"it is not a NumPy .npz archive (it starts with {signature!r})")
    if not archive and signature != NPY_SIGNATURE:
        if signature.startswith(NPZ_SIGNATURE):
            raise NumpyFileError(path, "it is a zip archive (an .npz file?), not a single .npy array")
        raise NumpyFileError(path, f"it is not a NumPy .npy file (it starts with {signature!r}, not "
                                   f"{NPY_SIGNATURE!r})")
    try:
        if not archive:
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, KeyError) as error:
        if "allow_pickle" in str(error):
            raise NumpyFileError(path, "it contains an object array, which only pickle can load; StyleBridge never "
                                       "unpickles NumPy data, and nothing from the file was run") from None
        raise NumpyFileError(path, f"it is truncated or damaged ({error_reason(error)})") from None
