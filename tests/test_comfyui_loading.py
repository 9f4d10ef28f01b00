"""The pack loads the way ComfyUI loads a custom node folder, under any folder name.

ComfyUI imports `custom_nodes/<folder>/__init__.py` with importlib under the folder's name. These tests do the
same in a child process, once without ComfyUI (standalone fallbacks) and once beside stand-ins of the two
ComfyUI modules the pack calls (`folder_paths`, `comfy.utils`/`comfy.model_management`), written here with only
the functions StyleBridge uses.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK_ITEMS = ["__init__.py", "cli.py", "nodes", "models", "runtime", "web"]

LOADER = """
import importlib.util, json, os, sys
folder = sys.argv[1]
name = os.path.basename(folder)
spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
report = {
    "nodes": sorted(module.NODE_CLASS_MAPPINGS),
    "web": module.WEB_DIRECTORY,
    "comfy_imported": "comfy" in sys.modules,
    "stylebridge_imported": "stylebridge" in sys.modules,
    "choices": module.NODE_CLASS_MAPPINGS["LoadStyleGAN"].INPUT_TYPES()["required"]["ckpt_name"][0],
}
try:
    import folder_paths
    report["registered"] = sorted(k for k in folder_paths.folder_names_and_paths if k in ("stylegan", "diffusers"))
except ImportError:
    report["registered"] = None
print(json.dumps(report))
"""

FOLDER_PATHS = """
import os
models_dir = os.environ["FAKE_COMFY_MODELS"]
folder_names_and_paths = {"diffusers": ([os.path.join(models_dir, "diffusers")], set())}
def get_folder_paths(kind):
    return folder_names_and_paths[kind][0]
def get_input_directory():
    return os.path.join(models_dir, "..", "input")
def get_output_directory():
    return os.path.join(models_dir, "..", "output")
def get_temp_directory():
    return os.path.join(models_dir, "..", "temp")
"""


@pytest.fixture
def pack(tmp_path):
    target = tmp_path / "custom_nodes" / "ComfyUI-StyleBridge-main"
    target.mkdir(parents=True)
    for item in PACK_ITEMS:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, target / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / item)
    return target


def _load(pack_folder, env_extra, extra_path=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(pack_folder.parent), **env_extra}
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    result = subprocess.run([sys.executable, "-c", LOADER, str(pack_folder)], capture_output=True, text=True,
                            env=env, cwd=pack_folder.parent, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pack_loads_standalone_under_any_folder_name(pack, tmp_path):
    report = _load(pack, {"STYLEBRIDGE_HOME": str(tmp_path / "home")})
    assert {"LoadStyleGAN", "SampleW", "StyleGANGenerate", "LoadDiffusionModel", "DiffusionSample"} <= set(
        report["nodes"])
    assert not {"LoadImage", "SaveImage", "PreviewImage"} & set(report["nodes"])
    assert report["web"] == "./web"
    assert report["stylebridge_imported"] is False
    assert report["comfy_imported"] is False
    assert report["registered"] is None


def test_pack_uses_comfyui_folders_inside_comfyui(pack, tmp_path):
    comfy_root = tmp_path / "comfy_stand_in"
    (comfy_root / "comfy").mkdir(parents=True)
    (comfy_root / "folder_paths.py").write_text(FOLDER_PATHS)
    (comfy_root / "comfy" / "__init__.py").write_text("")
    models = tmp_path / "ComfyUI" / "models"
    (models / "stylegan" / "ffhq").mkdir(parents=True)
    (models / "stylegan" / "ffhq" / "ffhq-256.pkl").write_bytes(b"\x80\x04.")
    report = _load(pack, {"FAKE_COMFY_MODELS": str(models)}, extra_path=comfy_root)
    assert report["registered"] == ["diffusers", "stylegan"]
    assert report["choices"] == ["ffhq/ffhq-256.pkl"]
    # Loading the pack must not import ComfyUI's own modules at top level.
    assert report["comfy_imported"] is False


def test_pack_never_imports_comfy_at_module_level():
    offenders = []
    for path in ROOT.glob("*/*.py"):
        if path.parts[-2] in ("tests", "bench", ".venv"):
            continue
        for line in path.read_text().splitlines():
            if line.startswith(("import comfy", "from comfy", "import folder_paths", "from folder_paths")):
                offenders.append(f"{path.relative_to(ROOT)}: {line}")
    assert offenders == []
