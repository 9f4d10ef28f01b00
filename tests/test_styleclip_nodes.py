"""StyleCLIP nodes, the shipped workflow and the styleclip-fs3 command, headless on the demo models."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylebridge.cli import main as cli_main
from stylebridge.models.arcface import backbone_from_state_dict, identity_loss, load_arcface, write_arcface
from stylebridge.models.checkpoints import clear_cache, load_stylegan
from stylebridge.models.clip_writers import DEMO_CLIP_FOLDER
from stylebridge.models.encoder_networks import BackboneConfig
from stylebridge.models.sampling import sample_w
from stylebridge.nodes import NODE_CLASS_MAPPINGS
from stylebridge.nodes.latent import StyleGANGenerateFromStyles
from stylebridge.nodes.styleclip import (
    LoadCLIP,
    LoadStyleCLIPFS3,
    StyleCLIPApplyDirection,
    StyleCLIPComputeFS3,
    StyleCLIPEdit,
)
from stylebridge.nodes.stylegan import LoadStyleGAN, SampleW, StyleGANGenerate
from stylebridge.runtime.runner import default_registry, run_workflow
from stylebridge.runtime.validation import WorkflowValidationError
from stylebridge.runtime.workflow import to_api_prompt

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
COMFYUI_CORE_NODES = {"LoadImage", "SaveImage", "PreviewImage", "SaveAnimatedWEBP"}
DEMO_CLIP_NAME = f"{DEMO_CLIP_FOLDER}/open_clip_model.safetensors"
# Small enough for the test suite: the fs3 of the first block only, from one image per channel.
SMALL_FS3 = {"4.num_images": 1, "4.max_resolution": 4, "4.num_samples": 500, "5.beta": 0.0}
SMALL_ARCFACE = BackboneConfig(stem_channels=16, stage_channels=(16, 32, 48, 64), stage_units=(1, 1, 1, 1))


def image_names(result) -> list[str]:
    """Names of the images a run saved, without the fs3 files that StyleCLIP Compute fs3 also lists."""
    return [path.name for path in result.saved_files if path.suffix in (".png", ".webp")]


@pytest.fixture(scope="module")
def demo_home(make_demo_home):
    home = make_demo_home("styleclip_home")
    (home / "input").mkdir()
    pixels = np.random.RandomState(0).randint(0, 256, size=(80, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(home / "input" / "photo.png")
    return home


@pytest.fixture
def home(demo_home, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(demo_home))
    clear_cache()
    return demo_home


@pytest.fixture
def demo_generator(home):
    return load_stylegan(home / "models" / "stylegan" / "demo-untrained-sg2-64.pkl", device="cpu")


@pytest.fixture
def demo_clip(home):
    return LoadCLIP().load(DEMO_CLIP_NAME, "auto", "cpu")[0]


@pytest.mark.parametrize("name", ["styleclip_edit.json", "photo_edit_refine.json"])
def test_workflow_uses_only_known_nodes(name):
    workflow = json.loads((WORKFLOWS / name).read_text())
    assert {node["type"] for node in workflow["nodes"]} <= set(NODE_CLASS_MAPPINGS) | COMFYUI_CORE_NODES


def test_workflow_converts_to_expected_prompt(home):
    prompt, _ = to_api_prompt(json.loads((WORKFLOWS / "styleclip_edit.json").read_text()), default_registry())
    edit = prompt["5"]["inputs"]
    assert (edit["method"], edit["neutral_prompt"], edit["target_prompt"]) == ("global directions", "face",
                                                                               "smiling face")
    assert (edit["sweep"], edit["frames"], edit["alpha"]) == ("-strength to strength", 5, 4.1)
    assert edit["fs3"] == ["4", 0]
    assert prompt["4"]["inputs"]["seed"] == 5
    assert prompt["6"]["inputs"]["latent"] == ["5", 0]


def test_styleclip_workflow_saves_sweep_frames(home, tmp_path):
    result = run_workflow(WORKFLOWS / "styleclip_edit.json", overrides=SMALL_FS3, output_dir=tmp_path)
    frames = [f"styleclip_{i:05}_.png" for i in range(1, 6)]
    assert sorted(image_names(result)) == [*frames, "styleclip_sweep_00001_.webp"]
    assert len(result.preview_files) == 5
    with Image.open(tmp_path / "StyleBridge" / frames[0]) as image:
        assert image.size == (64, 64)
    with Image.open(tmp_path / "StyleBridge" / "styleclip_sweep_00001_.webp") as animation:
        assert animation.n_frames == 5
    fs3_folder = tmp_path / "styleclip" / "fs3_00001_"
    assert {fs3_folder / name for name in ("fs3.npy", "S_mean_std", "fs3.safetensors")} <= set(result.saved_files)


def test_empty_prompt_rejected_before_anything_runs(home, tmp_path):
    with pytest.raises(WorkflowValidationError, match="target_prompt is empty, but method 'global directions' "
                                                      "needs it"):
        run_workflow(WORKFLOWS / "styleclip_edit.json", overrides={**SMALL_FS3, "5.target_prompt": " "},
                     output_dir=tmp_path)
    assert not (tmp_path / "styleclip").exists()


def test_identical_prompts_rejected_before_anything_runs(home, tmp_path):
    with pytest.raises(WorkflowValidationError, match="neutral_prompt and target_prompt are both 'face'"):
        run_workflow(WORKFLOWS / "styleclip_edit.json", overrides={**SMALL_FS3, "5.target_prompt": "face "},
                     output_dir=tmp_path)


def test_fs3_prefix_outside_output_rejected_before_computing(home, tmp_path):
    with pytest.raises(WorkflowValidationError, match="points outside the output folder"):
        run_workflow(WORKFLOWS / "styleclip_edit.json", overrides={**SMALL_FS3, "4.filename_prefix": "../fs3"},
                     output_dir=tmp_path)


def test_latent_optimization_runs_inside_inference_mode(home, tmp_path):
    # The runner, like ComfyUI, runs nodes under torch.inference_mode(); the optimisation must still get gradients.
    overrides = {**SMALL_FS3, "5.method": "latent optimization", "5.steps": 2, "5.sweep": "off"}
    result = run_workflow(WORKFLOWS / "styleclip_edit.json", overrides=overrides, output_dir=tmp_path)
    assert sorted(image_names(result)) == ["styleclip_00001_.png", "styleclip_sweep_00001_.webp"]


def test_photo_edit_refine_runs_headless(home, tmp_path):
    overrides = {"3.steps": 2, "5.num_images": 1, "5.max_resolution": 4, "5.num_samples": 500, "6.beta": 0.0,
                 "9.steps": 1}
    result = run_workflow(WORKFLOWS / "photo_edit_refine.json", overrides=overrides, output_dir=tmp_path)
    assert image_names(result) == ["photo_edit_00001_.png"]
    assert len(result.preview_files) == 1
    assert {"3", "6", "7", "9", "10"} <= set(result.executed)


def test_computed_fs3_folder_loads_with_load_node(home, tiny_generator, demo_clip):
    compute = StyleCLIPComputeFS3().compute(tiny_generator, demo_clip, 1, 200, 5, 0.7, 4, 64, "channel", "fs3/run")
    data = compute["result"][0]
    folder = home / "output" / "fs3" / "run_00001_"
    assert sorted(path.name for path in folder.iterdir()) == ["S_mean_std", "fs3.npy", "fs3.safetensors"]
    target = home / "models" / "styleclip" / "tiny"
    shutil.copytree(folder, target)
    for name in ("tiny/fs3.npy", "tiny/fs3.safetensors"):
        loaded = LoadStyleCLIPFS3().load(name, tiny_generator)[0]
        assert torch.equal(loaded.fs3, data.fs3)


def test_edit_node_outputs_latent_styles_and_reusable_direction(home, demo_generator, demo_clip):
    latent = sample_w(demo_generator, seed=1, batch_size=2)
    edited, styles, direction = StyleCLIPEdit().edit(
        demo_generator, latent, "latent optimization", "face", "smiling face", 4.1, 0.15, 1.0, "off", 9, "W+", 2,
        0.1, 0.008, 0.0, "none", clip=demo_clip)
    assert edited.batch_size == styles.batch_size == 2
    reused, _ = StyleCLIPApplyDirection().apply(demo_generator, latent, direction, 0.5, "0 to strength", 3)
    assert reused.batch_size == 6
    torch.testing.assert_close(reused.w[2], latent.ws()[0] + 0.5 * direction.w_delta[0])


def test_edit_nodes_run_on_demo_stylegan3(home, demo_clip):
    (generator,) = LoadStyleGAN().load("demo-untrained-sg3-t-64.pkl", "cpu", "fp32")
    (latent,) = SampleW().sample(generator, 2, 1, 0.7, 0, 0)
    edited, styles, _ = StyleCLIPEdit().edit(
        generator, latent, "latent optimization", "face", "smiling face", 4.1, 0.15, 1.0, "off", 1, "S", 2,
        0.1, 0.008, 0.0, "none", clip=demo_clip)
    assert styles.layer_names[0] == "input"
    (from_latent,) = StyleGANGenerate().generate(generator, edited, "const", 0)
    (from_styles,) = StyleGANGenerateFromStyles().generate(generator, styles, "const", 0)
    assert from_latent.shape == (1, 64, 64, 3)
    torch.testing.assert_close(from_latent, from_styles, rtol=0, atol=1e-3)


def test_edit_node_uses_identity_model(home, demo_generator, demo_clip):
    write_arcface(home / "models" / "arcface" / "small_ir_se.pth", SMALL_ARCFACE, seed=0)
    latent = sample_w(demo_generator, seed=1)
    edited, _, direction = StyleCLIPEdit().edit(
        demo_generator, latent, "latent optimization", "face", "smiling face", 4.1, 0.15, 1.0, "off", 9, "W+", 2,
        0.1, 0.008, 0.5, "small_ir_se.pth", clip=demo_clip)
    assert direction.meta["id_lambda"] == 0.5
    assert edited.batch_size == 1


def test_arcface_backbone_inferred_and_identity_loss(tmp_path):
    network = load_arcface(write_arcface(tmp_path / "arcface.pth", SMALL_ARCFACE, seed=1))
    assert network.backbone == SMALL_ARCFACE
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    same = identity_loss(network, images, images)
    different = identity_loss(network, images, images.flip(0))
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-5, rtol=0)
    assert (different > 1e-4).all()


def test_ir_se50_layout_inferred():
    from stylebridge.models.arcface import ArcFace

    with torch.device("meta"):
        state = ArcFace().state_dict()
    backbone = backbone_from_state_dict(state, "model_ir_se50.pth")
    assert backbone.stage_units == (3, 4, 14, 3)
    assert backbone.stage_channels == (64, 128, 256, 512)


def test_cli_writes_official_files(home, tmp_path, capsys):
    output = tmp_path / "fs3_out"
    arguments = ["styleclip-fs3", "demo-untrained-sg2-64.pkl", DEMO_CLIP_NAME, "-o", str(output), "--num-images", "1",
                 "--num-samples", "200", "--max-resolution", "4", "--device", "cpu"]
    assert cli_main(arguments) == 0
    assert "Wrote" in capsys.readouterr().out
    assert {path.name for path in output.iterdir()} == {"fs3.npy", "S_mean_std", "fs3.safetensors"}
    assert cli_main(arguments) == 2
    assert "--overwrite" in capsys.readouterr().err
