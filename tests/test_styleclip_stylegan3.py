"""StyleCLIP on a StyleGAN3 generator: its style space, fs3 computation, all three edit paths and the edit node."""

import pytest
import torch
from model_helpers import SMALL_CLIP_CONFIG, SMALL_FS3_SETTINGS, computed_channel_data

from stylebridge.models import styleclip
from stylebridge.models import styleclip_channels as channels
from stylebridge.models.checkpoint_writers import make_stylegan3_generator
from stylebridge.models.sampling import sample_w
from stylebridge.models.stylegan3 import StyleGAN3Config
from stylebridge.nodes.styleclip import StyleCLIPEdit

# w_dim 32 is larger than every style width (16), so each layer's affine map is onto and S edits fit W+ exactly.
SMALL_STYLEGAN3 = StyleGAN3Config.for_variant("t", z_dim=16, w_dim=32, img_resolution=16, num_layers=4,
                                              num_critical=1, channel_base=256, channel_max=16, mapping_layers=2)
CONV_CHANNELS = 4 * 16


@pytest.fixture(scope="module")
def generator():
    return make_stylegan3_generator(SMALL_STYLEGAN3, seed=3)


@pytest.fixture(scope="module")
def fs3(generator, clip, tmp_path_factory):
    return computed_channel_data(generator, clip, tmp_path_factory.mktemp("cache"))


def test_fs3_covers_convolution_layers_only(generator, fs3):
    assert fs3.fs3.shape == (CONV_CHANNELS, SMALL_CLIP_CONFIG["embed_dim"])
    assert fs3.measured == tuple(generator.synthesis.layer_names[:4])
    assert fs3.layer_names[0] == "input"


def test_fs3_matches_per_image_reference(generator, clip, fs3):
    # Layer 2 runs from the cached output of the input and the first two layers. Batches of 64 and of 1 round
    # differently (up to 1.5e-5 measured), and the difference of two close features magnifies that.
    statistics = channels.style_statistics(generator, SMALL_FS3_SETTINGS["num_samples"], num_first=2)
    layer = channels.measured_layers(generator)[2]
    reference = channels.reference_channel_rows(generator, clip, statistics, layer, range(3))
    torch.testing.assert_close(reference, fs3.fs3[32:35], rtol=0, atol=1e-4)


def test_official_layout_round_trips(generator, fs3, tmp_path):
    fs3_path, _ = channels.save_official(fs3, tmp_path)
    loaded = channels.load_channel_data(fs3_path, generator)
    assert torch.equal(loaded.fs3, fs3.fs3)
    assert loaded.measured == fs3.measured


def test_global_direction_edits_convolution_styles_only(generator, clip, fs3):
    direction = styleclip.global_direction(generator, clip, fs3, "face", "smiling face", beta=0.0)
    kinds = [layer.kind for layer in generator.synthesis.style_layout()]
    untouched = [delta for delta, kind in zip(direction.style_deltas, kinds, strict=True) if kind != "conv"]
    assert len(untouched) == 2
    assert not any(delta.any() for delta in untouched)


def test_global_direction_latent_fits_styles_exactly(generator, clip, fs3):
    latent = sample_w(generator, seed=3, batch_size=2)
    direction = styleclip.global_direction(generator, clip, fs3, "face", "smiling face", alpha=2.0, beta=0.0)
    result = styleclip.apply_direction(generator, latent, direction, 1.0)
    assert result.projection_error < 1e-4
    from_latent = generator.synthesis(result.latent.w)
    from_styles = generator.synthesis.synthesis_from_styles(list(result.styles.styles))
    torch.testing.assert_close(from_latent, from_styles, rtol=0, atol=1e-4)


@pytest.mark.parametrize("space", ["W+", "S"])
def test_optimization_in_space_lowers_loss(generator, clip, space):
    latent = sample_w(generator, seed=4, batch_size=2)
    _, report = styleclip.optimize_latent(generator, clip, latent, "a smiling face", space=space, steps=6)
    assert all(end < start for start, end in zip(report.clip_loss_start, report.clip_loss_end, strict=True))


def test_edit_node_sweeps_stylegan3_latent(generator, clip, fs3):
    latent = sample_w(generator, seed=3, batch_size=2)
    edited, styles, _ = StyleCLIPEdit().edit(
        generator, latent, "global directions", "face", "smiling face", 4.1, 0.0, 1.0, "0 to strength", 3, "W+", 1,
        0.1, 0.008, 0.0, "none", clip=clip, fs3=fs3)
    assert edited.batch_size == 6
    assert styles.batch_size == 6
    torch.testing.assert_close(edited.w[0], latent.ws()[0], rtol=0, atol=1e-5)
