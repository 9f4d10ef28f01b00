"""The shipped latent workflows run headless on the demo generator, and every latent node keeps the V1 contract."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylebridge.models.checkpoints import clear_cache, load_stylegan
from stylebridge.models.demo import write_demo_stylegan
from stylebridge.models.latent_ops import interpolate, mix_layers, parse_layers
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.nodes import NODE_CLASS_MAPPINGS
from stylebridge.nodes.latent import NODE_CLASS_MAPPINGS as LATENT_NODES
from stylebridge.runtime.runner import run_workflow

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
COMFYUI_CORE_NODES = {"LoadImage", "SaveImage", "PreviewImage"}


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("latent_home")
    write_demo_stylegan(home / "models" / "stylegan")
    return home


@pytest.fixture
def home(demo_home, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(demo_home))
    clear_cache()
    return demo_home


@pytest.fixture
def demo_generator(demo_home):
    return load_stylegan(demo_home / "models" / "stylegan" / "demo-untrained-sg2-64.pkl", device="cpu")


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def to_png_bytes(images: torch.Tensor) -> np.ndarray:
    return np.clip(255.0 * images.numpy(), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["latent_walk.json", "style_mixing.json"])
def test_workflow_uses_only_known_nodes(name):
    workflow = json.loads((WORKFLOWS / name).read_text())
    types = {node["type"] for node in workflow["nodes"]}
    assert types <= set(NODE_CLASS_MAPPINGS) | COMFYUI_CORE_NODES


def test_latent_walk_writes_one_png_per_frame(home, tmp_path, demo_generator):
    result = run_workflow(WORKFLOWS / "latent_walk.json", output_dir=tmp_path)
    assert [path.name for path in result.saved_files] == [f"latent_walk_{i:05}_.png" for i in range(1, 9)]

    # The frames are the slerp between seeds 1 and 2 at truncation 0.7, rendered with constant noise.
    start = sample_w(demo_generator, 1, truncation_psi=0.7)
    end = sample_w(demo_generator, 2, truncation_psi=0.7)
    expected = generate_images(demo_generator, interpolate(start, end, 8, "slerp"))
    for index, path in enumerate(result.saved_files):
        assert np.array_equal(read_png(path), to_png_bytes(expected[index])), path.name


def test_latent_walk_frames_override(home, tmp_path):
    result = run_workflow(WORKFLOWS / "latent_walk.json", overrides={"4.frames": 3}, output_dir=tmp_path)
    assert len(result.saved_files) == 3


def test_style_mixing_takes_fine_layers_from_seed_b(home, tmp_path, demo_generator):
    result = run_workflow(WORKFLOWS / "style_mixing.json", output_dir=tmp_path)
    assert [path.name for path in result.saved_files] == ["style_mixing_00001_.png"]
    first = sample_w(demo_generator, 1, truncation_psi=0.7)
    second = sample_w(demo_generator, 2, truncation_psi=0.7)
    mixed = mix_layers(first, second, parse_layers("fine", demo_generator.num_ws))
    assert np.array_equal(read_png(result.saved_files[0]), to_png_bytes(generate_images(demo_generator, mixed)[0]))


def test_style_mixing_preset_override(home, tmp_path):
    result = run_workflow(WORKFLOWS / "style_mixing.json", overrides={"4.layers": "coarse"}, output_dir=tmp_path)
    assert len(result.saved_files) == 1


@pytest.mark.parametrize("name", sorted(LATENT_NODES))
def test_latent_node_declares_v1_contract(name, home):
    node = LATENT_NODES[name]
    inputs = node.INPUT_TYPES()
    assert "required" in inputs
    assert isinstance(node.RETURN_TYPES, tuple)
    assert callable(getattr(node, node.FUNCTION))
    assert node.CATEGORY.startswith("StyleBridge")
    for section in ("required", "optional"):
        for input_name, (input_type, options) in inputs.get(section, {}).items():
            assert "tooltip" in options, f"{name}.{input_name} has no tooltip"
            if input_type in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], f"{name}.{input_name} default"


def test_png_latent_round_trip_through_runner(home, tmp_path):
    save_prompt = {
        "1": {"class_type": "LoadStyleGAN", "inputs": {"ckpt_name": "demo-untrained-sg2-64.pkl", "device": "cpu",
                                                      "dtype": "fp32"}},
        "2": {"class_type": "SampleW", "inputs": {"generator": ["1", 0], "seed": 5, "batch_size": 2,
                                                  "truncation_psi": 0.7, "truncation_cutoff": 4, "class_index": 0}},
        "3": {"class_type": "StyleGANGenerate", "inputs": {"generator": ["1", 0], "latent": ["2", 0],
                                                           "noise_mode": "const", "noise_seed": 0}},
        "4": {"class_type": "SaveStyleGANImage", "inputs": {"images": ["3", 0], "latent": ["2", 0],
                                                            "filename_prefix": "faces"}},
    }
    saved = run_workflow(save_prompt, output_dir=tmp_path)
    assert [path.name for path in saved.saved_files] == ["faces_00001_.png", "faces_00002_.png"]

    # Load the second image's latent back and render it: the pixels equal the saved PNG.
    load_prompt = {
        "1": save_prompt["1"],
        "2": {"class_type": "LoadLatentFromImage", "inputs": {"image": "faces_00002_.png [output]",
                                                              "generator": ["1", 0]}},
        "3": {"class_type": "StyleGANGenerate", "inputs": {"generator": ["1", 0], "latent": ["2", 0],
                                                           "noise_mode": "const", "noise_seed": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "reloaded"}},
    }
    reloaded = run_workflow(load_prompt, output_dir=tmp_path)
    latent = reloaded.values["2"][0]
    assert latent.space == "W+"
    assert torch.equal(latent.w[0], saved.values["2"][0].w[1])
    assert np.array_equal(read_png(reloaded.saved_files[0]), read_png(saved.saved_files[1]))
