"""Seeds to latents and latents to images, against the official gen_images.py conventions."""

import numpy as np
import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.latents import LatentMismatchError, StyleGANLatent
from stylebridge.models.sampling import generate_images, sample_w, seed_to_z, to_image_layout
from stylebridge.models.stylegan2 import StyleGAN2Config


def test_seed_to_z_equals_gen_images_draw():
    expected = np.random.RandomState(42).randn(1, 16)
    assert np.array_equal(seed_to_z(42, 16).numpy(), expected)


def test_seed_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="seed 4294967296 is out of range"):
        seed_to_z(2 ** 32, 8)


def test_sample_w_batch_uses_consecutive_seeds(tiny_generator):
    latent = sample_w(tiny_generator, seed=5, batch_size=3)
    for i in range(3):
        z = torch.from_numpy(np.random.RandomState(5 + i).randn(1, tiny_generator.z_dim))
        w = tiny_generator.mapping(z, None)[:, 0]
        assert torch.equal(latent.w[i], w[0])
    assert latent.meta["seeds"] == [5, 6, 7]


def test_sample_w_without_cutoff_is_w_space(tiny_generator):
    latent = sample_w(tiny_generator, seed=0, truncation_psi=0.5)
    assert latent.space == "W"
    assert latent.w.shape == (1, tiny_generator.w_dim)


def test_sample_w_with_cutoff_is_w_plus(tiny_generator):
    latent = sample_w(tiny_generator, seed=0, truncation_psi=0.5, truncation_cutoff=2)
    assert latent.space == "W+"
    assert latent.w.shape == (1, tiny_generator.num_ws, tiny_generator.w_dim)
    assert not torch.equal(latent.w[0, 0], latent.w[0, 2])


def test_sample_w_rejects_cutoff_above_layers(tiny_generator):
    with pytest.raises(ValueError, match="truncation_cutoff 99 is out of range"):
        sample_w(tiny_generator, seed=0, truncation_psi=0.5, truncation_cutoff=99)


def test_sample_w_conditional_uses_one_hot_label():
    config = StyleGAN2Config(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, channels=[8, 8], num_fp16_res=0,
                             mapping_layers=2)
    generator = make_generator(config, seed=0)
    latent = sample_w(generator, seed=1, class_index=2)
    z = torch.from_numpy(np.random.RandomState(1).randn(1, 8))
    expected = generator.mapping(z, torch.tensor([[0.0, 0.0, 1.0]]))[:, 0]
    assert torch.equal(latent.w, expected)
    with pytest.raises(ValueError, match="class_index 3 is out of range"):
        sample_w(generator, seed=1, class_index=3)


def test_to_image_layout_uses_official_quantisation():
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).repeat(1, 3, 1, 1)
    out = to_image_layout(images)
    assert out.shape == (1, 2, 2, 3)
    saved = np.clip(255.0 * out.numpy(), 0, 255).astype(np.uint8)  # What SaveImage writes.
    official = (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(saved, official)


def test_generate_images_matches_synthesis(tiny_generator):
    latent = sample_w(tiny_generator, seed=3, batch_size=3)
    images = generate_images(tiny_generator, latent, chunk_size=2)
    expected = to_image_layout(tiny_generator.synthesis(latent.ws(), noise_mode="const"))
    assert images.shape == (3, 32, 32, 3)
    assert torch.allclose(images, expected, atol=1e-6)


def test_generate_images_rejects_latent_of_other_generator(tiny_generator, tiny_config):
    other = make_generator(tiny_config, seed=99)
    latent = sample_w(other, seed=0)
    with pytest.raises(LatentMismatchError, match="StyleGANGenerate: the latent was made by generator"):
        generate_images(tiny_generator, latent, where="StyleGANGenerate")


def test_latent_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"must have shape \[B, 4, 8\]"):
        StyleGANLatent(torch.zeros(2, 8), "W+", num_ws=4, w_dim=8, fingerprint="x")


def test_latent_ws_broadcasts_w():
    latent = StyleGANLatent(torch.arange(6.0).reshape(2, 3), "W", num_ws=4, w_dim=3, fingerprint="x")
    assert latent.ws().shape == (2, 4, 3)
    assert torch.equal(latent.ws()[:, 3], latent.w)
