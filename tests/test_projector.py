"""The projector recovers latents of images the generator made, keeps the generator intact and stops cleanly.

Numbers below were measured on the conftest tiny generator (32 px, untrained, CPU): seed 1 at truncation 0.5
inverted in W with 150 steps and the pixel L1 + MS-SSIM loss reaches 34.5 dB PSNR. Untrained generators map W to
images far less smoothly than trained ones, so other seeds stop in local minima (18-35 dB at 150 steps).
"""

import logging
import math

import numpy as np
import pytest
import torch
from model_helpers import state_hash

from stylebridge.models import perceptual
from stylebridge.models.checkpoint_writers import make_stylegan3_generator
from stylebridge.models.latents import StyleGANLatent
from stylebridge.models.perceptual import (
    LPIPSDistance,
    PixelMSSSIMDistance,
    build_vgg16_features,
    load_distance,
    ms_ssim,
)
from stylebridge.models.projector import ProjectorSchedule, project, w_statistics
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.models.stylegan3 import StyleGAN3Config
from stylebridge.runtime import host

SELF_INVERSION_PSNR_FLOOR = 28.0


# One torch thread for the whole module; see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def render(generator, latent):
    return generate_images(generator, latent)[0]


def mixed_target(generator):
    """An image outside W: the coarse layers of seed 1 with the fine layers of seed 2."""
    first = sample_w(generator, 1, truncation_psi=0.5)
    second = sample_w(generator, 2, truncation_psi=0.5)
    ws = first.ws().clone()
    ws[:, generator.num_ws // 2:] = second.ws()[:, generator.num_ws // 2:]
    latent = StyleGANLatent(ws, "W+", generator.num_ws, generator.w_dim, generator.fingerprint)
    return render(generator, latent)


@pytest.fixture(scope="module")
def vgg_reference(tmp_path_factory):
    """torchvision's VGG16 features (random, seeded) and a file of their tensors in torchvision's layout."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.vgg16(weights=None).features.eval()
    state = {f"features.{name}": value for name, value in reference.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # a real file also contains the classifier, which is ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(state, path)
    return reference, path


@pytest.fixture
def vgg_file(vgg_reference, stylebridge_home):
    """The reference VGG16 weights linked into this test's lpips model folder; returns the reference features."""
    reference, path = vgg_reference
    folder = stylebridge_home / "models" / "lpips"
    folder.mkdir(parents=True)
    (folder / path.name).symlink_to(path)
    return reference


def test_self_inversion_reaches_psnr_floor(tiny_generator):
    target = render(tiny_generator, sample_w(tiny_generator, 1, truncation_psi=0.5))
    result = project(tiny_generator, target, space="W", steps=150, noise="const")
    assert result.psnr >= SELF_INVERSION_PSNR_FLOOR
    assert not result.interrupted
    assert result.steps_run == 150


def test_stylegan3_projection_lowers_loss():
    # StyleGAN3 layers clamp after the leaky ReLU, which must stay differentiable.
    config = StyleGAN3Config.for_variant("t", z_dim=8, w_dim=8, img_resolution=16, num_layers=4, num_critical=1,
                                         channel_base=256, channel_max=16, mapping_layers=2, conv_clamp=0.5)
    generator = make_stylegan3_generator(config, seed=2)
    target = render(generator, sample_w(generator, 1, truncation_psi=0.5))
    start = project(generator, target, space="W", steps=1, noise="none")
    result = project(generator, target, space="W", steps=30, noise="none")
    assert result.loss < start.loss


def test_result_latent_renders_reconstruction(tiny_generator):
    target = render(tiny_generator, sample_w(tiny_generator, 3))
    result = project(tiny_generator, target, space="W+", steps=10, noise="const")
    assert result.latent.space == "W+"
    assert result.latent.fingerprint == tiny_generator.fingerprint
    assert result.generator is tiny_generator
    assert torch.allclose(generate_images(tiny_generator, result.latent), result.reconstruction, atol=1e-6)


def test_w_plus_beats_w_at_equal_steps(tiny_generator):
    target = mixed_target(tiny_generator)
    in_w = project(tiny_generator, target, space="W", steps=100, noise="const")
    in_w_plus = project(tiny_generator, target, space="W+", steps=100, noise="const")
    assert in_w_plus.psnr >= in_w.psnr
    assert in_w_plus.loss <= in_w.loss


def test_interrupt_returns_best_latent_so_far(tiny_generator, monkeypatch):
    def listener(event):
        if event.value == 7:
            host.interrupt()

    monkeypatch.setattr(host, "progress_listener", listener)
    target = render(tiny_generator, sample_w(tiny_generator, 2))
    result = project(tiny_generator, target, space="W", steps=50, noise="const")
    assert result.interrupted
    assert result.steps_run == 7
    assert len(result.history) == 7
    assert result.loss == min(result.history)
    assert result.best_step == int(np.argmin(result.history))
    assert result.latent.fingerprint == tiny_generator.fingerprint


def test_noise_optimisation_copies_generator(tiny_generator):
    before = state_hash(tiny_generator)
    target = render(tiny_generator, sample_w(tiny_generator, 4))
    result = project(tiny_generator, target, space="W", steps=8, noise="optimize")
    assert state_hash(tiny_generator) == before
    assert result.generator is not tiny_generator
    assert result.generator.fingerprint == tiny_generator.fingerprint
    assert result.generator.source["noise"] == "optimised by the projector"
    assert torch.allclose(generate_images(result.generator, result.latent), result.reconstruction, atol=1e-6)
    for name, buffer in result.generator.synthesis.named_buffers():
        if name.endswith("noise_const"):
            assert not buffer.requires_grad
            assert abs(float(buffer.mean())) < 1e-4
            assert abs(float(buffer.square().mean()) - 1) < 1e-3


def test_start_latent_is_used(tiny_generator):
    latent = sample_w(tiny_generator, 5)
    target = render(tiny_generator, latent)
    result = project(tiny_generator, target, space="W", steps=0, start=latent, noise="const")
    assert torch.equal(result.latent.w, latent.w)
    assert math.isinf(result.psnr)


def test_w_plus_start_rejected_in_w(tiny_generator):
    latent = sample_w(tiny_generator, 5)
    w_plus = StyleGANLatent(latent.ws(), "W+", latent.num_ws, latent.w_dim, latent.fingerprint)
    with pytest.raises(ValueError, match="needs space 'W\\+'"):
        project(tiny_generator, render(tiny_generator, latent), space="W", steps=1, start=w_plus)


def test_wrong_target_size_rejected(tiny_generator):
    with pytest.raises(ValueError, match=r"\[32, 32, 3\]"):
        project(tiny_generator, torch.zeros(16, 16, 3), steps=1)


def test_invalid_space_rejected(tiny_generator):
    with pytest.raises(ValueError, match="expected one of"):
        project(tiny_generator, torch.zeros(32, 32, 3), space="Z", steps=1)


def test_preview_sent_every_few_steps(tiny_generator, monkeypatch):
    target = render(tiny_generator, sample_w(tiny_generator, 6))
    events = []
    monkeypatch.setattr(host, "progress_listener", events.append)
    project(tiny_generator, target, steps=6, noise="const", preview_every=3)
    assert [event.value for event in events] == [1, 2, 3, 4, 5, 6]
    previews = [event.preview for event in events if event.preview is not None]
    assert len(previews) == 2
    assert previews[0][0] == "JPEG"
    assert previews[0][1].size == (32, 32)


def test_w_statistics_follow_official_definition(tiny_generator):
    w_avg, w_std = w_statistics(tiny_generator, num_samples=500)
    z = torch.from_numpy(np.random.RandomState(123).randn(500, tiny_generator.z_dim))
    with torch.no_grad():
        w = tiny_generator.mapping(z, None)[:, 0]
    assert torch.allclose(w_avg, w.mean(dim=0), atol=1e-5)
    assert math.isclose(w_std, float(((w - w.mean(dim=0)).square().sum() / 500).sqrt()), rel_tol=1e-5)


def test_schedule_matches_official_ramps():
    schedule = ProjectorSchedule()
    assert schedule.learning_rate(0, 1000) == 0
    assert schedule.learning_rate(25, 1000) == pytest.approx(0.05)
    assert schedule.learning_rate(500, 1000) == pytest.approx(0.1)
    assert schedule.learning_rate(875, 1000) == pytest.approx(0.05)
    assert schedule.latent_noise_factor(0, 1000) == pytest.approx(0.05)
    assert schedule.latent_noise_factor(750, 1000) == 0


# ---------------------------------------------------------------------------------------------------------------------
# Image distances.


def test_missing_vgg_weights_warn_and_fall_back(caplog):
    with caplog.at_level(logging.WARNING, logger="stylebridge.models.perceptual"):
        choice = load_distance("auto")
    assert isinstance(choice.distance, PixelMSSSIMDistance)
    assert choice.missing.endswith("vgg16-397923af.pth")
    assert "vgg16-397923af.pth" in caplog.text


def test_missing_vgg_weights_fail_lpips_loss():
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        load_distance("lpips")


def test_nvidia_torchscript_file_not_loaded(stylebridge_home, caplog):
    folder = stylebridge_home / "models" / "lpips"
    folder.mkdir(parents=True)
    (folder / "vgg16.pt").write_bytes(b"not loaded")
    with caplog.at_level(logging.WARNING, logger="stylebridge.models.perceptual"):
        choice = load_distance("auto")
    assert isinstance(choice.distance, PixelMSSSIMDistance)
    assert "TorchScript" in caplog.text


def test_lpips_features_match_torchvision_vgg16(vgg_file):
    choice = load_distance("auto")
    assert isinstance(choice.distance, LPIPSDistance)
    assert choice.missing is None
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    normalised = ((images + 1) / 2 - choice.distance.mean) / choice.distance.std
    with torch.no_grad():
        ours = choice.distance.features[:16](normalised)
        theirs = vgg_file[:16](normalised)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_lpips_distance_zero_for_equal_images(vgg_file):
    distance = load_distance("lpips").distance
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    prepared = distance.prepare(images)
    assert torch.allclose(distance(images, prepared), torch.zeros(2), atol=1e-6)
    assert bool((distance(images.flip(0), prepared) > 0).all())


def test_lpips_channel_weights_loaded(vgg_file, stylebridge_home):
    weights = {f"lin{index}.model.1.weight": torch.full([1, channels, 1, 1], 0.5)
               for index, channels in enumerate((64, 128, 256, 512, 512))}
    torch.save(weights, stylebridge_home / "models" / "lpips" / "vgg.pth")
    distance = load_distance("lpips").distance
    assert distance.name == "LPIPS (VGG16)"
    assert torch.allclose(distance.scale0, torch.full([1, 64, 1, 1], 0.5 ** 0.5))


def test_wrong_vgg_file_rejected(stylebridge_home):
    folder = stylebridge_home / "models" / "lpips"
    folder.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(3, 3)}, folder / "vgg16-397923af.pth")
    with pytest.raises(perceptual.PerceptualWeightsError, match="not torchvision's VGG16"):
        load_distance("lpips")


def test_projector_reports_lpips_when_available(vgg_file, tiny_generator):
    distance = load_distance("lpips").distance
    target = render(tiny_generator, sample_w(tiny_generator, 7))
    result = project(tiny_generator, target, steps=3, noise="const", distance=distance)
    assert result.lpips is not None
    assert result.loss_name.startswith("VGG16 feature distance")


def test_ms_ssim_of_equal_images_is_one():
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ms_ssim(images, images), torch.ones(2), atol=1e-5)
    assert bool((ms_ssim(images, images.flip(0)) < 0.9).all())


def test_vgg16_layout_matches_torchvision_names(vgg_reference):
    ours = build_vgg16_features().state_dict()
    theirs = vgg_reference[0].state_dict()
    assert {name: value.shape for name, value in ours.items()} == {name: value.shape for name, value in theirs.items()}
