"""InvertImage and PivotalTuning as nodes, and the shipped invert-and-refine workflow run headless.

The workflow test inverts scikit-image's public-domain astronaut photo (a portrait with the torso visible) into the
untrained demo generator, so it checks the code path and the reported numbers, not the likeness.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylebridge.models.encoder_networks import BackboneConfig
from stylebridge.models.encoders import load_encoder, write_encoder_checkpoint
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.nodes import NODE_CLASS_MAPPINGS
from stylebridge.nodes.inversion import InvertImage, PivotalTuning
from stylebridge.runtime import host
from stylebridge.runtime.runner import run_workflow

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "invert_and_refine.json"
COMFYUI_CORE_NODES = {"LoadImage", "SaveImage", "PreviewImage"}
SMALL_BACKBONE = BackboneConfig(stem_channels=4, stage_channels=(4, 8, 12, 16), stage_units=(1, 1, 2, 1),
                                se_reduction=4)


# One torch thread for the whole module; see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_home(make_demo_home):
    from skimage import data

    home = make_demo_home("invert_home")
    (home / "input").mkdir()
    Image.fromarray(data.astronaut()).save(home / "input" / "astronaut.png")
    return home


@pytest.fixture
def home(demo_home, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(demo_home))
    return demo_home


@pytest.fixture(scope="module")
def e4e_encoder(tmp_path_factory, tiny_generator):
    path = tmp_path_factory.mktemp("encoders") / "e4e.pt"
    write_encoder_checkpoint("e4e", tiny_generator, path, seed=1, backbone=SMALL_BACKBONE)
    return load_encoder(path)


def invert(generator, image, **options):
    inputs = dict(method="projector W+", steps=5, align="center_crop", noise_mode="const", loss="auto", seed=0,
                  on_interrupt="return best so far")
    inputs.update(options)
    return InvertImage().invert(generator, image, **inputs)


def own_image(generator, seed=3):
    return generate_images(generator, sample_w(generator, seed, truncation_psi=0.5))


# ---------------------------------------------------------------------------------------------------------------------
# Workflow.


def test_workflow_uses_only_stylebridge_and_core_nodes():
    workflow = json.loads(WORKFLOW.read_text())
    types = {node["type"] for node in workflow["nodes"]}
    assert types <= set(NODE_CLASS_MAPPINGS) | COMFYUI_CORE_NODES


def test_workflow_inverts_astronaut_headless(home):
    result = run_workflow(WORKFLOW, overrides={"3.steps": 8, "6.steps": 2})
    assert [path.name for path in result.saved_files] == ["inverted_00001_.png"]
    with Image.open(result.saved_files[0]) as image:
        assert image.size == (64, 64)
    report = result.outputs["3"]["text"]
    assert report[0].startswith("image 0: PSNR ")
    assert "8/8 steps" in report[0]
    latent, reconstruction, aligned, generator = result.values["3"]
    assert latent.space == "W+"
    assert latent.fingerprint == generator.fingerprint
    assert tuple(reconstruction.shape) == (1, 64, 64, 3)
    assert tuple(aligned.shape) == (1, 64, 64, 3)
    assert len(result.preview_files) == 1


# ---------------------------------------------------------------------------------------------------------------------
# InvertImage.


def test_invert_reports_psnr_in_ui(tiny_generator):
    returned = invert(tiny_generator, own_image(tiny_generator), align="none")
    latent, reconstruction, aligned, generator = returned["result"]
    assert generator is tiny_generator
    assert latent.batch_size == 1
    assert returned["ui"]["text"][0].startswith("image 0: PSNR")
    assert "LPIPS unavailable" in returned["ui"]["text"][-1]


def test_invert_batch_gives_one_latent_per_image(tiny_generator):
    images = generate_images(tiny_generator, sample_w(tiny_generator, 0, batch_size=2))
    latent, reconstruction, _, _ = invert(tiny_generator, images, method="projector W", steps=3,
                                          align="none")["result"]
    assert latent.space == "W"
    assert latent.batch_size == 2
    assert tuple(reconstruction.shape) == (2, 32, 32, 3)


def test_encoder_method_without_encoder_rejected(tiny_generator):
    with pytest.raises(ValueError, match="needs the encoder input connected"):
        invert(tiny_generator, own_image(tiny_generator), method="encoder")


def test_encoder_only_renders_encoder_latent(tiny_generator, e4e_encoder):
    returned = invert(tiny_generator, own_image(tiny_generator), method="encoder", encoder=e4e_encoder)
    latent, reconstruction, _, _ = returned["result"]
    assert latent.space == "W+"
    assert latent.meta["encoder"] == "e4e"
    assert torch.allclose(generate_images(tiny_generator, latent), reconstruction)
    assert "encoder only" in returned["ui"]["text"][0]


def test_encoder_then_projector_improves_on_encoder(tiny_generator, e4e_encoder):
    image = own_image(tiny_generator)
    encoder_only = invert(tiny_generator, image, method="encoder", encoder=e4e_encoder, align="none")
    hybrid = invert(tiny_generator, image, method="encoder + projector", steps=20, encoder=e4e_encoder,
                    align="none")
    psnr_encoder = float(encoder_only["ui"]["text"][0].split("PSNR ")[1].split(" dB")[0])
    psnr_hybrid = float(hybrid["ui"]["text"][0].split("PSNR ")[1].split(" dB")[0])
    assert psnr_hybrid > psnr_encoder
    assert hybrid["result"][0].space == "W+"


def test_grayscale_and_rgba_inputs_converted(tiny_generator):
    gray = torch.rand(1, 40, 48, 1)
    rgba = torch.cat([torch.rand(1, 40, 48, 3), torch.ones(1, 40, 48, 1)], dim=-1)
    for image in (gray, rgba):
        aligned = invert(tiny_generator, image, steps=1)["result"][2]
        assert tuple(aligned.shape) == (1, 32, 32, 3)


def test_non_square_image_rejected_without_alignment(tiny_generator):
    with pytest.raises(ValueError, match="align 'none' needs a square image"):
        invert(tiny_generator, torch.rand(1, 40, 48, 3), align="none")


def test_tiny_image_rejected_with_limit(tiny_generator):
    with pytest.raises(ValueError, match="at least 8 px"):
        invert(tiny_generator, torch.rand(1, 4, 4, 3))


def test_noise_optimisation_needs_single_image(tiny_generator):
    images = torch.rand(2, 32, 32, 3)
    with pytest.raises(ValueError, match="one image at a time"):
        invert(tiny_generator, images, noise_mode="optimize", align="none")


def test_interrupt_returns_partial_result(tiny_generator, monkeypatch):
    def listener(event):
        if event.value == 3:
            host.interrupt()

    monkeypatch.setattr(host, "progress_listener", listener)
    changed_before = InvertImage.IS_CHANGED()
    returned = invert(tiny_generator, own_image(tiny_generator), steps=20, align="none")
    assert "3/20 steps, interrupted" in returned["ui"]["text"][0]
    assert InvertImage.IS_CHANGED() != changed_before


def test_interrupt_can_stop_workflow(tiny_generator, monkeypatch):
    def listener(event):
        if event.value == 2:
            host.interrupt()

    image = own_image(tiny_generator)
    monkeypatch.setattr(host, "progress_listener", listener)
    with pytest.raises(host.InterruptedByUser):
        invert(tiny_generator, image, steps=20, align="none", on_interrupt="stop workflow")


# ---------------------------------------------------------------------------------------------------------------------
# PivotalTuning.


def test_pivotal_tuning_node_returns_tuned_copy(tiny_generator):
    image = own_image(tiny_generator, seed=8)
    latent = invert(tiny_generator, image, method="projector W", steps=5, align="none")["result"][0]
    returned = PivotalTuning().tune(tiny_generator, latent, image, steps=5, learning_rate=3e-3, loss="auto",
                                    locality_weight=0.0, noise_mode="const", on_interrupt="return best so far")
    tuned, reconstruction = returned["result"]
    assert tuned is not tiny_generator
    assert tuned.fingerprint == latent.fingerprint
    assert tuple(reconstruction.shape) == (1, 32, 32, 3)
    assert " -> " in returned["ui"]["text"][0]
