"""Style space S of StyleGAN2 and StyleGAN3: W+ to S and S to images, which must equal rendering the W+ directly."""

from types import SimpleNamespace

import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator, make_stylegan3_generator
from stylebridge.models.latents import LatentMismatchError
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.models.style_space import (
    StyleGANStyles,
    edit_style_channel,
    latent_to_styles,
    require_style_space,
    styles_to_images,
)
from stylebridge.models.stylegan2 import StyleGAN2Config
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


@pytest.fixture(scope="module", params=["t", "r"])
def stylegan3_generator(request):
    config = StyleGAN3Config.for_variant(request.param, z_dim=8, w_dim=8, img_resolution=16, num_layers=4,
                                         num_critical=1, channel_base=256, channel_max=16, mapping_layers=2)
    return make_stylegan3_generator(config, seed=2)


def test_stylegan3_styles_render_same_image(stylegan3_generator):
    ws = distinct_layer_latent(stylegan3_generator).ws()
    styles = stylegan3_generator.synthesis.ws_to_styles(ws)
    expected = stylegan3_generator.synthesis(ws)
    assert torch.equal(stylegan3_generator.synthesis.synthesis_from_styles(styles), expected)


def test_stylegan3_style_layers_start_with_input_transform(stylegan3_generator):
    styles = latent_to_styles(stylegan3_generator, sample_w(stylegan3_generator, seed=0))
    assert styles.layer_names == ("input", *stylegan3_generator.synthesis.layer_names)
    assert styles.channels[0] == 4
    kinds = [layer.kind for layer in stylegan3_generator.synthesis.style_layout()]
    assert kinds == ["input", "conv", "conv", "conv", "conv", "torgb"]


def test_stylegan3_layer_style_reads_own_w(stylegan3_generator):
    ws = distinct_layer_latent(stylegan3_generator, seed=1).ws()
    styles = stylegan3_generator.synthesis.ws_to_styles(ws)
    layer = getattr(stylegan3_generator.synthesis, stylegan3_generator.synthesis.layer_names[2])
    assert torch.equal(styles[3], layer.affine(ws[:, 3]))


@pytest.mark.parametrize("split", [1, 3, 5])
def test_stylegan3_stages_resume_from_state(stylegan3_generator, split):
    synthesis = stylegan3_generator.synthesis
    styles = synthesis.ws_to_styles(distinct_layer_latent(stylegan3_generator, seed=2).ws())
    state, image = synthesis.run_style_stages(styles, 0, split)
    assert image is None
    _, resumed = synthesis.run_style_stages(styles, split, state=state)
    assert torch.equal(resumed, synthesis.synthesis_from_styles(styles))


def test_stylegan2_stages_resume_from_state(tiny_generator):
    synthesis = tiny_generator.synthesis
    styles = synthesis.ws_to_styles(distinct_layer_latent(tiny_generator, seed=2).ws())
    state, _ = synthesis.run_style_stages(styles, 0, 2, noise_mode="const")
    _, resumed = synthesis.run_style_stages(styles, 2, state=state, noise_mode="const")
    assert torch.equal(resumed, synthesis.synthesis_from_styles(styles, noise_mode="const"))


def test_stylegan3_input_style_edit_moves_image(stylegan3_generator):
    styles = latent_to_styles(stylegan3_generator, sample_w(stylegan3_generator, seed=4))
    translated = edit_style_channel(styles, layer=0, channel=2, delta=0.25)  # tx of the learned transform
    assert not torch.equal(styles_to_images(stylegan3_generator, translated),
                           styles_to_images(stylegan3_generator, styles))


def test_generator_without_style_path_rejected():
    generator = SimpleNamespace(synthesis=torch.nn.Identity(), architecture_name="custom")
    with pytest.raises(ValueError, match="Node: style space needs a StyleGAN2 or StyleGAN3 generator loaded by "
                                         "StyleBridge; the connected generator is custom"):
        require_style_space(generator, where="Node")


def test_style_nodes_render_same_pixels_as_generate(tiny_generator):
    latent = sample_w(tiny_generator, seed=6, batch_size=2)
    (styles,) = StyleGANLatentToStyles().convert(tiny_generator, latent)
    (images,) = StyleGANGenerateFromStyles().generate(tiny_generator, styles, "const", 0)
    assert torch.equal(images, generate_images(tiny_generator, latent))
    (edited,) = StyleGANStylesEditChannel().edit(styles, 0, 0, 0.0)
    assert torch.equal(edited.styles[0], styles.styles[0])
