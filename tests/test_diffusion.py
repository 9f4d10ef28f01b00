"""Stable Diffusion loading, sampling and nodes, run on the tiny untrained pipeline from models.demo_diffusion."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline

from stylebridge.models import diffusion
from stylebridge.models.demo_diffusion import write_tiny_sd_pipeline
from stylebridge.nodes.diffusion import NODE_CLASS_MAPPINGS, DiffusionSample, LoadDiffusionModel
from stylebridge.runtime import host

SIZE = 64  # px; the tiny pipeline's native size.
STEPS = 4


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return write_tiny_sd_pipeline(tmp_path_factory.mktemp("diffusers") / "tiny-sd", seed=0)


@pytest.fixture(scope="module")
def pipeline(tiny_folder):
    diffusion.clear_pipeline_cache()
    return diffusion.load_pipeline(tiny_folder, device="cpu", dtype="fp32")


def random_image(seed: int, height: int = SIZE, width: int = SIZE, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, 3, generator=generator)  # IMAGE layout [B, H, W, C]


def text_to_image(pipeline, **overrides) -> torch.Tensor:
    arguments = {"prompt": "a red fox in the snow", "seed": 1, "steps": STEPS, "width": SIZE, "height": SIZE}
    return diffusion.sample(pipeline, **{**arguments, **overrides})


def image_to_image(pipeline, image, **overrides) -> torch.Tensor:
    arguments = {"prompt": "a red fox in the snow", "seed": 1, "steps": STEPS, "image": image, "strength": 0.5}
    return diffusion.sample(pipeline, **{**arguments, **overrides})


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


def test_folder_loads_with_diffusers_directly(tiny_folder):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder, local_files_only=True)
    assert pipe.vae_scale_factor == 8
    assert pipe.safety_checker is None
    assert isinstance(pipe.scheduler, PNDMScheduler)


def test_load_pipeline_disables_safety_checker(pipeline, tiny_folder):
    assert pipeline.text_to_image.safety_checker is None
    assert pipeline.path == tiny_folder
    assert pipeline.device == torch.device("cpu")
    assert pipeline.dtype == torch.float32


def test_load_pipeline_returns_cached_object(tiny_folder):
    first = diffusion.load_pipeline(tiny_folder, device="cpu", dtype="fp32")
    second = diffusion.load_pipeline(str(tiny_folder), device=torch.device("cpu"), dtype="fp32")
    assert second is first


def test_cache_reuses_pipeline_still_referenced(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(diffusion, "MAX_CACHED_PIPELINES", 1)
    other_folder = shutil.copytree(tiny_folder, tmp_path / "other-sd")
    first = diffusion.load_pipeline(tiny_folder, device="cpu")
    diffusion.load_pipeline(other_folder, device="cpu")  # Drops `first` from the cache; `first` is still alive.
    assert diffusion.load_pipeline(tiny_folder, device="cpu") is first


def test_image_to_image_shares_models(pipeline):
    image_to_image_pipe = pipeline.image_to_image
    assert image_to_image_pipe.unet is pipeline.text_to_image.unet
    assert image_to_image_pipe.vae is pipeline.text_to_image.vae
    assert image_to_image_pipe.text_encoder is pipeline.text_to_image.text_encoder
    assert pipeline.image_to_image is image_to_image_pipe


def test_load_missing_folder_names_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        diffusion.load_pipeline(missing, device="cpu")


def test_load_folder_without_model_index(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        diffusion.load_pipeline(tmp_path, device="cpu")


def test_load_rejects_unsupported_pipeline_class(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionXLPipeline"):
        diffusion.load_pipeline(tmp_path, device="cpu")


def test_load_rejects_invalid_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="Invalid model_index.json"):
        diffusion.load_pipeline(tmp_path, device="cpu")


def test_load_reports_missing_component(tiny_folder, tmp_path):
    broken = shutil.copytree(tiny_folder, tmp_path / "broken-sd")
    shutil.rmtree(broken / "vae")
    with pytest.raises(FileNotFoundError, match="vae"):
        diffusion.load_pipeline(broken, device="cpu")


def test_load_reports_missing_weights(tiny_folder, tmp_path):
    broken = shutil.copytree(tiny_folder, tmp_path / "no-weights-sd")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OSError, match="no-weights-sd"):
        diffusion.load_pipeline(broken, device="cpu")


def test_load_rejects_unknown_dtype(tiny_folder):
    with pytest.raises(ValueError, match="bf16"):
        diffusion.load_pipeline(tiny_folder, device="cpu", dtype="bf16")


def test_load_rejects_fp16_on_cpu(tiny_folder):
    with pytest.raises(ValueError, match="fp16"):
        diffusion.load_pipeline(tiny_folder, device="cpu", dtype="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only where 'auto' resolves to the CPU")
def test_load_auto_fp16_falls_back_to_fp32(tiny_folder, caplog):
    with caplog.at_level(logging.WARNING, logger=diffusion.__name__):
        loaded = diffusion.load_pipeline(tiny_folder, device="auto", dtype="fp16")
    assert loaded.dtype == torch.float32
    assert "fp32" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_on_cuda_samples(tiny_folder):
    loaded = diffusion.load_pipeline(tiny_folder, device="cuda", dtype="fp16")
    assert loaded.text_to_image.unet.dtype == torch.float16
    images = text_to_image(loaded)
    assert images.device.type == "cpu"
    assert images.dtype == torch.float32
    assert torch.isfinite(images).all()
    assert torch.equal(images, text_to_image(loaded))


# ---------------------------------------------------------------------------------------------------------------------
# Schedulers.
def test_dpmpp_2m_fixes_solver_variant():
    base = diffusion.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=3)
    scheduler = diffusion.create_scheduler("dpmpp_2m", base)
    assert scheduler.config.algorithm_type == "dpmsolver++"
    assert scheduler.config.solver_order == 2


def test_default_scheduler_is_fresh_copy(pipeline):
    base = pipeline.text_to_image.scheduler
    scheduler = diffusion.create_scheduler("default", base)
    assert type(scheduler) is type(base)
    assert scheduler is not base


# ---------------------------------------------------------------------------------------------------------------------
# Text-to-image.


def test_text_to_image_shape_and_range(pipeline):
    images = text_to_image(pipeline, width=80, height=48, batch_size=2)
    assert images.shape == (2, 48, 80, 3)
    assert images.dtype == torch.float32
    assert images.device.type == "cpu"
    assert images.min() >= 0
    assert images.max() <= 1


def test_same_seed_gives_same_images(pipeline):
    assert torch.equal(text_to_image(pipeline, seed=7), text_to_image(pipeline, seed=7))


def test_different_seed_gives_different_images(pipeline):
    assert not torch.allclose(text_to_image(pipeline, seed=7), text_to_image(pipeline, seed=8))


def test_largest_seed_is_accepted(pipeline):
    images = text_to_image(pipeline, seed=diffusion.MAX_SEED)
    assert images.shape == (1, SIZE, SIZE, 3)


def test_prompt_changes_images(pipeline):
    assert not torch.allclose(text_to_image(pipeline, prompt="a cat"), text_to_image(pipeline, prompt="a ship"))


def test_non_ascii_prompt_is_tokenized(pipeline):
    prompt = "naïve café, 東京 at night 🌃"
    tokenizer = pipeline.text_to_image.tokenizer
    ids = tokenizer(prompt).input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == prompt.replace(" ", "")


@pytest.mark.parametrize("scheduler", diffusion.SCHEDULER_NAMES)
def test_each_scheduler_runs(pipeline, scheduler):
    text_images = text_to_image(pipeline, scheduler=scheduler, steps=3)
    image_images = image_to_image(pipeline, random_image(0), scheduler=scheduler, steps=4, strength=0.5)
    assert text_images.shape == (1, SIZE, SIZE, 3)
    assert torch.isfinite(text_images).all()
    assert image_images.shape == (1, SIZE, SIZE, 3)
    assert torch.isfinite(image_images).all()


def test_scheduler_choice_changes_images(pipeline):
    assert not torch.allclose(text_to_image(pipeline, scheduler="ddim"), text_to_image(pipeline, scheduler="euler"))


def test_sampling_leaves_pipeline_scheduler(pipeline):
    text_to_image(pipeline, scheduler="euler_ancestral")
    assert isinstance(pipeline.text_to_image.scheduler, PNDMScheduler)


def test_progress_reaches_total(pipeline, monkeypatch):
    events = []
    monkeypatch.setattr(host, "progress_listener", events.append)
    text_to_image(pipeline, scheduler="euler", steps=5)
    assert [event.value for event in events] == [1, 2, 3, 4, 5]
    assert events[-1].total == 5


def test_interrupt_stops_sampling(pipeline, monkeypatch):
    events = []

    def interrupt_on_first_step(event):
        events.append(event)
        host.interrupt()

    monkeypatch.setattr(host, "progress_listener", interrupt_on_first_step)
    with pytest.raises(host.InterruptedByUser):
        text_to_image(pipeline, scheduler="euler", steps=5)
    assert len(events) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Image-to-image.


def test_image_to_image_keeps_size(pipeline):
    images = image_to_image(pipeline, random_image(0, height=48, width=80))
    assert images.shape == (1, 48, 80, 3)
    assert images.min() >= 0
    assert images.max() <= 1


def test_image_to_image_resizes_to_multiple_of_8(pipeline, caplog):
    with caplog.at_level(logging.INFO, logger=diffusion.__name__):
        images = image_to_image(pipeline, random_image(0, height=45, width=61))
    assert images.shape == (1, 48, 64, 3)
    assert "61x45" in caplog.text
    assert "64x48" in caplog.text


def test_image_to_image_strength_zero_returns_input(pipeline):
    image = random_image(3)
    assert torch.equal(image_to_image(pipeline, image, strength=0.0), image)


def test_image_to_image_zero_steps_returns_input(pipeline):
    # int(4 * 0.2) = 0 denoising steps.
    image = random_image(3)
    assert torch.equal(image_to_image(pipeline, image, steps=4, strength=0.2), image)


def test_image_to_image_same_seed_gives_same_images(pipeline):
    image = random_image(4)
    assert torch.equal(image_to_image(pipeline, image, seed=5), image_to_image(pipeline, image, seed=5))


def test_input_matters_less_at_higher_strength(pipeline):
    # The tiny model is untrained, so its outputs are noise-like and cannot be compared with the input itself.
    # What strength controls is still visible: at low strength two different inputs give clearly different
    # outputs, and at strength 1 the outputs are mostly the shared seeded noise.
    first, second = random_image(10), random_image(11)

    def output_gap(strength: float) -> float:
        outputs = [image_to_image(pipeline, image, seed=2, steps=8, strength=strength) for image in (first, second)]
        return (outputs[0] - outputs[1]).abs().mean().item()

    assert output_gap(0.25) > 2 * output_gap(1.0)


def test_image_to_image_batch_order(pipeline):
    # Strength 0 returns inputs unchanged, which shows the order: each input repeated batch_size times in a row.
    images = random_image(6, batch=2)
    outputs = image_to_image(pipeline, images, strength=0.0, batch_size=2)
    assert outputs.shape == (4, SIZE, SIZE, 3)
    assert torch.equal(outputs[0], images[0])
    assert torch.equal(outputs[1], images[0])
    assert torch.equal(outputs[2], images[1])
    assert torch.equal(outputs[3], images[1])


def test_image_to_image_batch_runs(pipeline):
    outputs = image_to_image(pipeline, random_image(6, batch=2), batch_size=2)
    assert outputs.shape == (4, SIZE, SIZE, 3)
    assert not torch.allclose(outputs[0], outputs[1])


# ---------------------------------------------------------------------------------------------------------------------
# Input checks.


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 65}, "65"),
        ({"height": 100}, "100"),
        ({"width": 4104}, "4104"),
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "1001"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "-1"),
        ({"seed": diffusion.MAX_SEED + 1}, "seed"),
        ({"guidance_scale": float("nan")}, "nan"),
        ({"guidance_scale": 101.0}, "101"),
        ({"scheduler": "heun"}, "heun"),
    ],
)
def test_text_to_image_rejects_invalid_input(pipeline, overrides, message):
    with pytest.raises(ValueError, match=message):
        text_to_image(pipeline, **overrides)


def test_unknown_scheduler_lists_choices(pipeline):
    with pytest.raises(ValueError, match="euler_ancestral"):
        text_to_image(pipeline, scheduler="heun")


def test_width_error_suggests_multiple(pipeline):
    with pytest.raises(ValueError, match="Use 64"):
        text_to_image(pipeline, width=65)


@pytest.mark.parametrize(
    ("image", "overrides", "message"),
    [
        (random_image(0), {"strength": 1.5}, "1.5"),
        (random_image(0), {"strength": -0.1}, "-0.1"),
        (torch.rand(1, SIZE, SIZE, 4), {}, r"\[1, 64, 64, 4\]"),
        (torch.rand(SIZE, SIZE, 3), {}, "B, H, W, 3"),
        (torch.zeros(1, 4100, 8, 3), {}, "4100"),
        (torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8), {}, "uint8"),
        (torch.zeros(0, SIZE, SIZE, 3), {}, "empty"),
    ],
)
def test_image_to_image_rejects_invalid_input(pipeline, image, overrides, message):
    with pytest.raises(ValueError, match=message):
        image_to_image(pipeline, image, **overrides)


def test_prompt_must_be_string(pipeline):
    with pytest.raises(TypeError, match="prompt"):
        text_to_image(pipeline, prompt=None)


def test_sample_rejects_raw_diffusers_pipeline(pipeline):
    with pytest.raises(TypeError, match="StableDiffusionPipeline"):
        diffusion.sample(pipeline.text_to_image, "a fox")


# ---------------------------------------------------------------------------------------------------------------------
# Nodes.


@pytest.fixture
def models_home(tiny_folder, stylebridge_home, monkeypatch):
    """STYLEBRIDGE_HOME (set by conftest to a fresh folder) with the tiny pipeline in models/diffusers/tiny-sd."""
    monkeypatch.setattr(host, "_comfy_detected", False)
    shutil.copytree(tiny_folder, stylebridge_home / "models" / "diffusers" / "tiny-sd")
    return stylebridge_home


def sample_node_inputs(pipeline, **overrides) -> dict:
    inputs = {"pipeline": pipeline, "prompt": "a fox", "negative_prompt": "blurry", "seed": 3, "steps": STEPS,
              "guidance": 7.5, "scheduler": "default", "strength": 0.5, "width": SIZE, "height": SIZE, "batch_size": 1}
    return {**inputs, **overrides}


def test_nodes_are_registered():
    assert NODE_CLASS_MAPPINGS["LoadDiffusionModel"] is LoadDiffusionModel
    assert NODE_CLASS_MAPPINGS["DiffusionSample"] is DiffusionSample


def test_node_inputs_have_tooltips(models_home):
    for node_class in (LoadDiffusionModel, DiffusionSample):
        declared = node_class.INPUT_TYPES()
        for section in declared.values():
            for name, (_, options) in section.items():
                assert options.get("tooltip"), f"{node_class.__name__}.{name} has no tooltip"


def test_node_categories():
    assert LoadDiffusionModel.CATEGORY == "StyleBridge/diffusion"
    assert DiffusionSample.CATEGORY == "StyleBridge/diffusion"


def test_load_node_lists_model_folder(models_home):
    choices = LoadDiffusionModel.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["tiny-sd"]


def test_sample_node_declares_schedulers():
    choices = DiffusionSample.INPUT_TYPES()["required"]["scheduler"][0]
    assert choices == list(diffusion.SCHEDULER_NAMES)


def test_nodes_run_text_to_image(models_home):
    (loaded,) = LoadDiffusionModel().load("tiny-sd", "cpu", "fp32")
    (images,) = DiffusionSample().sample(**sample_node_inputs(loaded, batch_size=2, width=72))
    assert images.shape == (2, SIZE, 72, 3)
    assert images.dtype == torch.float32
    assert images.min() >= 0
    assert images.max() <= 1


def test_nodes_run_image_to_image(models_home):
    (loaded,) = LoadDiffusionModel().load("tiny-sd", "cpu", "fp32")
    (images,) = DiffusionSample().sample(**sample_node_inputs(loaded), image=random_image(1, height=40, width=56))
    assert images.shape == (1, 40, 56, 3)
    assert images.dtype == torch.float32


def test_load_node_unknown_model_names_it(models_home):
    with pytest.raises(FileNotFoundError, match="missing-sd"):
        LoadDiffusionModel().load("missing-sd", "cpu", "fp32")

