"""The shipped hybrid workflow runs headless on the demo models, and re-runs only what a change affects."""

import json
from pathlib import Path

import pytest
from PIL import Image

from stylebridge.nodes import NODE_CLASS_MAPPINGS
from stylebridge.runtime.executor import Executor
from stylebridge.runtime.runner import default_registry, run_workflow
from stylebridge.runtime.workflow import to_api_prompt

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "stylegan_to_diffusion.json"
COMFYUI_CORE_NODES = {"LoadImage", "SaveImage", "PreviewImage"}


@pytest.fixture(scope="module")
def demo_home(make_demo_home):
    return make_demo_home("demo_home")


@pytest.fixture
def home(demo_home, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(demo_home))
    return demo_home


def test_workflow_uses_only_stylebridge_and_core_nodes():
    workflow = json.loads(WORKFLOW.read_text())
    types = {node["type"] for node in workflow["nodes"]}
    assert types <= set(NODE_CLASS_MAPPINGS) | COMFYUI_CORE_NODES


def test_workflow_converts_to_expected_prompt(home):
    prompt, _ = to_api_prompt(json.loads(WORKFLOW.read_text()), default_registry())
    assert prompt["2"]["inputs"]["seed"] == 42
    assert prompt["2"]["inputs"]["truncation_psi"] == 0.7
    assert prompt["5"]["inputs"]["strength"] == 0.35
    assert prompt["5"]["inputs"]["image"] == ["3", 0]
    assert prompt["6"]["inputs"]["filename_prefix"] == "StyleBridge/hybrid"


def test_hybrid_workflow_writes_refined_images(home):
    result = run_workflow(WORKFLOW)
    assert [p.name for p in result.saved_files] == ["hybrid_00001_.png", "hybrid_00002_.png"]
    assert all(p.parent == home / "output" / "StyleBridge" for p in result.saved_files)
    assert len(result.preview_files) == 2
    with Image.open(result.saved_files[0]) as image:
        assert image.size == (64, 64)
        assert json.loads(image.text["prompt"])["5"]["class_type"] == "DiffusionSample"
        assert "nodes" in json.loads(image.text["workflow"])


def test_second_run_with_new_diffusion_seed_reruns_only_downstream(home):
    runner = Executor(default_registry())
    first = run_workflow(WORKFLOW, runner=runner)
    assert set(first.executed) == {"1", "2", "3", "4", "5", "6", "7"}
    second = run_workflow(WORKFLOW, runner=runner, overrides={"5.seed": 8})
    assert set(second.executed) == {"5", "6"}
    assert set(second.cached) == {"1", "2", "3", "4", "7"}
    assert len(second.saved_files) == 2
    assert not set(second.saved_files) & set(first.saved_files)


def test_runs_never_overwrite_earlier_images(home):
    first = run_workflow(WORKFLOW)
    before = {path: path.read_bytes() for path in first.saved_files}
    second = run_workflow(WORKFLOW, overrides={"5.seed": 99})
    assert not set(second.saved_files) & set(before)
    assert all(path.read_bytes() == data for path, data in before.items())
