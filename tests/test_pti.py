"""Pivotal tuning improves the pivot's reconstruction on a copy and never touches the input generator."""


import pytest
import torch
from model_helpers import state_hash

from stylebridge.models.projector import project
from stylebridge.models.pti import pivotal_tuning
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.runtime import host

# One torch thread for the whole module; see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pivot(tiny_generator):
    """A short W projection of an image the generator cannot make exactly (two seeds blended in pixels)."""
    images = generate_images(tiny_generator, sample_w(tiny_generator, 1, batch_size=2))
    target = (images[0] + images[1]) / 2
    result = project(tiny_generator, target, space="W", steps=20, noise="const")
    return result.latent, target.unsqueeze(0)


def test_tuning_improves_reconstruction(tiny_generator, pivot):
    latent, target = pivot
    result = pivotal_tuning(tiny_generator, latent, target, steps=30, learning_rate=3e-3)
    assert result.psnr_after[0] > result.psnr_before[0] + 1
    assert result.steps_run == 30
    assert not result.interrupted


def test_original_generator_untouched(tiny_generator, pivot):
    latent, target = pivot
    before = state_hash(tiny_generator)
    requires_grad = [parameter.requires_grad for parameter in tiny_generator.parameters()]
    result = pivotal_tuning(tiny_generator, latent, target, steps=5, learning_rate=3e-3, locality_weight=0.1)
    assert state_hash(tiny_generator) == before
    assert [parameter.requires_grad for parameter in tiny_generator.parameters()] == requires_grad
    assert all(parameter.grad is None for parameter in tiny_generator.parameters())
    assert result.generator is not tiny_generator
    assert state_hash(result.generator) != before


def test_tuned_copy_keeps_w_space(tiny_generator, pivot):
    latent, target = pivot
    result = pivotal_tuning(tiny_generator, latent, target, steps=3, learning_rate=3e-3)
    tuned = result.generator
    assert tuned.fingerprint == tiny_generator.fingerprint
    tuned.reset_fingerprint()
    assert tuned.fingerprint == tiny_generator.fingerprint
    assert tuned.source["tuned"]["method"] == "pivotal tuning"
    assert not any(parameter.requires_grad for parameter in tuned.parameters())
    assert torch.allclose(generate_images(tuned, latent), result.reconstruction, atol=1e-6)


def test_interrupt_returns_copy_tuned_so_far(tiny_generator, pivot, monkeypatch):
    latent, target = pivot

    def listener(event):
        if event.value == 4:
            host.interrupt()

    monkeypatch.setattr(host, "progress_listener", listener)
    result = pivotal_tuning(tiny_generator, latent, target, steps=50, learning_rate=3e-3)
    assert result.interrupted
    assert result.steps_run == 4
    assert result.generator is not tiny_generator


def test_batch_size_mismatch_rejected(tiny_generator, pivot):
    latent, target = pivot
    with pytest.raises(ValueError, match="contains 1 latents but 2 images"):
        pivotal_tuning(tiny_generator, latent, target.repeat(2, 1, 1, 1), steps=1)


def test_learning_rate_out_of_range_rejected(tiny_generator, pivot):
    latent, target = pivot
    with pytest.raises(ValueError, match="learning_rate 1.0 is out of range"):
        pivotal_tuning(tiny_generator, latent, target, steps=1, learning_rate=1.0)
