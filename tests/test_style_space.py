"""Style space S: W+ to S and S to images, which must equal rendering the W+ directly."""

import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.latents import LatentMismatchError
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.models.style_space import StyleGANStyles, edit_style_channel, latent_to_styles, styles_to_images
from stylebridge.models.stylegan2 import StyleGAN2Config
from stylebridge.models.stylegan3 import Generator as StyleGAN3Generator
from stylebridge.models.stylegan3 import StyleGAN3Config
from stylebridge.nodes.latent import StyleGANGenerateFromStyles, StyleGANLatentToStyles, StyleGANStylesEditChannel


def distinct_layer_latent(generator, seed=0, batch_size=2):
    """A W+ latent whose layers all differ, so a layer mix-up in S would change the image."""
    latent = sample_w(generator, seed=seed, batch_size=batch_size)
    noise = torch.randn(latent.ws().shape, generator=torch.Generator().manual_seed(seed)) * 0.5
    return type(latent)(latent.ws() + noise, "W+", latent.num_ws, latent.w_dim, latent.fingerprint)


@pytest.mark.parametrize("architecture", ["skip", "orig", "resnet"])
def test_synthesis_from_styles_equals_synthesis_from_w_plus(architecture):
    config = StyleGAN2Config(z_dim=16, w_dim=16, img_resolution=16, channels=[32, 16, 16], architecture=architecture,
                             conv_clamp=256, num_fp16_res=0, mapping_layers=2)
    generator = make_generator(config, seed=1)
    ws = distinct_layer_latent(generator).ws()
    styles = generator.synthesis.ws_to_styles(ws)
    expected = generator.synthesis(ws, noise_mode="const")
    assert torch.equal(generator.synthesis.synthesis_from_styles(styles, noise_mode="const"), expected)


def test_styles_round_trip_with_random_noise(tiny_generator):
    latent = distinct_layer_latent(tiny_generator, seed=3)
    styles = latent_to_styles(tiny_generator, latent)
    expected = generate_images(tiny_generator, latent, noise_mode="random", noise_seed=5)
    assert torch.equal(styles_to_images(tiny_generator, styles, noise_mode="random", noise_seed=5), expected)


def test_style_layers_follow_synthesis_order(tiny_generator):
    styles = latent_to_styles(tiny_generator, sample_w(tiny_generator, seed=0))
    assert styles.layer_names == ("b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb", "b16.conv0",
                                  "b16.conv1", "b16.torgb", "b32.conv0", "b32.conv1", "b32.torgb")
    assert styles.channels == [64, 64, 64, 64, 64, 64, 32, 32, 32, 16, 16]
    assert styles.flat().shape == (1, sum(styles.channels))


def test_style_of_w_latent_is_affine_output(tiny_generator):
    latent = sample_w(tiny_generator, seed=2)
    styles = latent_to_styles(tiny_generator, latent)
    expected = tiny_generator.synthesis.b8.conv0.affine(latent.w)
    assert torch.allclose(styles.styles[2], expected)


def test_edit_channel_changes_image_and_only_that_channel(tiny_generator):
    styles = latent_to_styles(tiny_generator, sample_w(tiny_generator, seed=4))
    edited = edit_style_channel(styles, layer=2, channel=7, delta=5.0)
    assert torch.allclose(edited.styles[2][0, 7], styles.styles[2][0, 7] + 5.0)
    assert torch.equal(edited.styles[2][0, :7], styles.styles[2][0, :7])
    assert torch.equal(edited.styles[3], styles.styles[3])
    before = styles_to_images(tiny_generator, styles)
    after = styles_to_images(tiny_generator, edited)
    assert not torch.equal(before, after)


def test_edit_channel_out_of_range_names_limits(tiny_generator):
    styles = latent_to_styles(tiny_generator, sample_w(tiny_generator, seed=4))
    with pytest.raises(ValueError, match=r"channel 40 is out of range for style layer 9 \(b32.conv1\), which has "
                                         r"channels 0..15"):
        edit_style_channel(styles, layer=9, channel=40, delta=1.0)
    with pytest.raises(ValueError, match=r"style layer 11 is out of range; these styles have layers 0..10"):
        edit_style_channel(styles, layer=11, channel=0, delta=1.0)


def test_styles_of_other_generator_rejected(tiny_generator, tiny_config):
    other = make_generator(tiny_config, seed=12)
    styles = latent_to_styles(other, sample_w(other, seed=0))
    with pytest.raises(LatentMismatchError, match="Gen: the styles were computed with generator"):
        styles_to_images(tiny_generator, styles, where="Gen")


def test_styles_need_one_tensor_per_layer():
    with pytest.raises(ValueError, match="Styles need one tensor per layer name; got 1 tensors and 2 names"):
        StyleGANStyles((torch.zeros(1, 4),), ("b4.conv1", "b4.torgb"), "x")


def test_stylegan3_generator_has_no_style_space():
    config = StyleGAN3Config(z_dim=8, w_dim=8, img_resolution=16, num_layers=4, num_critical=1, channel_base=256,
                             channel_max=16, mapping_layers=2, num_fp16_res=0)
    generator = StyleGAN3Generator(config)
    with pytest.raises(ValueError, match="Node: style space is available for StyleGAN2 generators only; the "
                                         "connected generator is stylegan3"):
        latent_to_styles(generator, sample_w(generator, seed=0), where="Node")


def test_style_nodes_render_same_pixels_as_generate(tiny_generator):
    latent = sample_w(tiny_generator, seed=6, batch_size=2)
    (styles,) = StyleGANLatentToStyles().convert(tiny_generator, latent)
    (images,) = StyleGANGenerateFromStyles().generate(tiny_generator, styles, "const", 0)
    assert torch.equal(images, generate_images(tiny_generator, latent))
    (edited,) = StyleGANStylesEditChannel().edit(styles, 0, 0, 0.0)
    assert torch.equal(edited.styles[0], styles.styles[0])
