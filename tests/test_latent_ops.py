"""Interpolation, style mixing, layer specs and direction arithmetic on STYLEGAN_LATENT values."""

import pytest
import torch

from stylebridge.models.directions import DirectionShapeError, StyleGANDirection
from stylebridge.models.latent_ops import (
    add_direction,
    format_layers,
    interpolate,
    mean_latent,
    mix_layers,
    parse_layers,
    preset_layers,
    slerp,
    sweep_direction,
)
from stylebridge.models.latents import LatentMismatchError, StyleGANLatent
from stylebridge.models.sampling import sample_w
from stylebridge.nodes.latent import StyleGANStyleMix

NUM_WS, W_DIM = 8, 4


def make_latent(values, space="W", fingerprint="gen-a", num_ws=NUM_WS):
    return StyleGANLatent(torch.as_tensor(values, dtype=torch.float32), space, num_ws, W_DIM, fingerprint)


def random_latent(batch, space="W", seed=0, fingerprint="gen-a"):
    generator = torch.Generator().manual_seed(seed)
    shape = [batch, W_DIM] if space == "W" else [batch, NUM_WS, W_DIM]
    return make_latent(torch.randn(shape, generator=generator), space, fingerprint)


# ---------------------------------------------------------------------------------------------------------------------
# Interpolation.


@pytest.mark.parametrize("method", ["lerp", "slerp"])
@pytest.mark.parametrize("space", ["W", "W+"])
def test_interpolate_end_points_equal_inputs(method, space):
    a, b = random_latent(1, space, seed=1), random_latent(1, space, seed=2)
    result = interpolate(a, b, frames=7, method=method)
    assert result.batch_size == 7
    assert result.space == space
    assert torch.equal(result.w[0], a.w[0])
    assert torch.equal(result.w[-1], b.w[0])


def test_slerp_keeps_norm_of_equal_norm_latents():
    a = make_latent([[3.0, 0.0, 0.0, 0.0]])
    b = make_latent([[0.0, 3.0, 0.0, 0.0]])
    result = interpolate(a, b, frames=5, method="slerp")
    assert torch.allclose(result.w.norm(dim=1), torch.full([5], 3.0), atol=1e-6)
    # The midpoint lies on the arc at 45 degrees.
    assert torch.allclose(result.w[2], torch.tensor([3.0, 3.0, 0.0, 0.0]) / 2 ** 0.5, atol=1e-6)


def test_lerp_shrinks_norm_between_orthogonal_latents():
    a = make_latent([[3.0, 0.0, 0.0, 0.0]])
    b = make_latent([[0.0, 3.0, 0.0, 0.0]])
    result = interpolate(a, b, frames=3, method="lerp")
    assert torch.allclose(result.w[1], torch.tensor([1.5, 1.5, 0.0, 0.0]))
    assert result.w[1].norm() < 3.0


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = torch.tensor([[1.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.25]], dtype=torch.float64)
    assert torch.allclose(slerp(a, 2 * a, t), 1.25 * a)


def test_slerp_interpolates_each_w_plus_layer():
    a, b = random_latent(1, "W+", seed=3), random_latent(1, "W+", seed=4)
    result = interpolate(a, b, frames=3, method="slerp")
    for layer in range(NUM_WS):
        expected = slerp(a.w[:, layer].double(), b.w[:, layer].double(), torch.tensor([[0.5]], dtype=torch.float64))
        assert torch.allclose(result.w[1, layer].double(), expected[0], atol=1e-6)


def test_interpolate_w_with_w_plus_broadcasts():
    a, b = random_latent(1, "W", seed=5), random_latent(1, "W+", seed=6)
    result = interpolate(a, b, frames=4, method="lerp")
    assert result.space == "W+"
    assert result.w.shape == (4, NUM_WS, W_DIM)
    assert torch.equal(result.w[0], a.ws()[0])


def test_interpolate_batch_is_pair_major():
    a = random_latent(2, "W", seed=7)
    b = random_latent(1, "W", seed=8)
    result = interpolate(a, b, frames=3, method="lerp")
    assert result.batch_size == 6
    assert torch.equal(result.w[0], a.w[0])
    assert torch.equal(result.w[2], b.w[0])
    assert torch.equal(result.w[3], a.w[1])
    assert torch.equal(result.w[5], b.w[0])


def test_interpolate_rejects_unequal_batches():
    with pytest.raises(ValueError, match="latent batch sizes 2 and 3 differ"):
        interpolate(random_latent(2), random_latent(3), frames=3)


def test_interpolate_rejects_latents_of_two_generators():
    a = random_latent(1, fingerprint="aaaaaaaaaaaaaaaa")
    b = random_latent(1, fingerprint="bbbbbbbbbbbbbbbb")
    with pytest.raises(LatentMismatchError, match="Interp: the two latents come from different generators: "
                                                  "aaaaaaaaaaaa .* and bbbbbbbbbbbb"):
        interpolate(a, b, frames=3, where="Interp")


def test_interpolate_rejects_one_frame():
    with pytest.raises(ValueError, match="frames must be at least 2"):
        interpolate(random_latent(1), random_latent(1), frames=1)


def test_interpolate_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"interpolation 'cubic' is invalid; expected one of \('lerp', 'slerp'\)"):
        interpolate(random_latent(1), random_latent(1), frames=3, method="cubic")


# ---------------------------------------------------------------------------------------------------------------------
# Layer specs and presets.


@pytest.mark.parametrize("num_ws, preset, expected", [
    (8, "coarse", [0, 1, 2, 3]),
    (8, "middle", [4, 5, 6, 7]),
    (8, "fine", []),
    (10, "coarse", [0, 1, 2, 3]),
    (10, "middle", [4, 5, 6, 7]),
    (10, "fine", [8, 9]),
    (18, "coarse", [0, 1, 2, 3]),
    (18, "middle", [4, 5, 6, 7]),
    (18, "fine", list(range(8, 18))),
])
def test_preset_layers_follow_block_resolutions(num_ws, preset, expected):
    assert preset_layers(preset, num_ws) == expected


def test_parse_layers_accepts_ranges_and_lists():
    mask = parse_layers("0-2, 5,7", 8)
    assert mask.tolist() == [True, True, True, False, False, True, False, True]


def test_parse_layers_all_and_empty_select_everything():
    assert parse_layers("all", 8).all()
    assert parse_layers("", 8).all()


def test_parse_layers_rejects_index_beyond_generator():
    with pytest.raises(ValueError, match="Node layers: layer range '4-9' is outside this generator's W\\+ layers "
                                         "0-7; use 'all', a preset \\(coarse = 0-3, middle = 4-7, fine = none\\)"):
        parse_layers("4-9", 8, where="Node layers")


def test_parse_layers_rejects_reversed_range():
    with pytest.raises(ValueError, match="layer range '5-2' is reversed; write it as '2-5'"):
        parse_layers("5-2", 8)


def test_parse_layers_rejects_text():
    with pytest.raises(ValueError, match="layers 'eyes' is invalid at 'eyes'"):
        parse_layers("eyes", 8)


def test_parse_layers_rejects_empty_preset():
    with pytest.raises(ValueError, match="layer preset 'fine' selects no layers of this 8-layer generator \\(32 px"):
        parse_layers("fine", 8)


def test_format_layers_inverts_parse():
    for spec in ("all", "0-3", "0-2,5,7", "1,3"):
        assert format_layers(parse_layers(spec, 8)) == spec


# ---------------------------------------------------------------------------------------------------------------------
# Style mixing.


def test_mix_copies_selected_layers_exactly():
    a, b = random_latent(1, "W", seed=9), random_latent(1, "W+", seed=10)
    result = mix_layers(a, b, parse_layers("coarse", NUM_WS))
    assert result.space == "W+"
    assert torch.equal(result.w[0, :4], b.w[0, :4])
    assert torch.equal(result.w[0, 4:], a.ws()[0, 4:])


def test_mix_with_half_strength_blends():
    a, b = random_latent(1, "W+", seed=11), random_latent(1, "W+", seed=12)
    result = mix_layers(a, b, parse_layers("0", NUM_WS), strength=0.5)
    assert torch.allclose(result.w[0, 0], (a.w[0, 0] + b.w[0, 0]) / 2)
    assert torch.equal(result.w[0, 1:], a.w[0, 1:])


def test_mix_rejects_empty_selection():
    a, b = random_latent(1), random_latent(1)
    with pytest.raises(ValueError, match="the layer selection is empty"):
        mix_layers(a, b, torch.zeros(NUM_WS, dtype=torch.bool))


def test_style_mix_node_custom_range_checked_against_layers(tiny_generator):
    a, b = sample_w(tiny_generator, 1), sample_w(tiny_generator, 2)
    with pytest.raises(ValueError, match="StyleGANStyleMix custom_layers: layer range '6-12' is outside this "
                                         "generator's W\\+ layers 0-7"):
        StyleGANStyleMix().mix(a, b, "custom", "6-12", 1.0)


def test_style_mix_node_fine_preset_on_32px_generator_names_presets(tiny_generator):
    a, b = sample_w(tiny_generator, 1), sample_w(tiny_generator, 2)
    with pytest.raises(ValueError, match="coarse = 0-3, middle = 4-7, fine = none"):
        StyleGANStyleMix().mix(a, b, "fine", "", 1.0)


def test_style_mix_node_coarse_preset(tiny_generator):
    a, b = sample_w(tiny_generator, 1), sample_w(tiny_generator, 2)
    (result,) = StyleGANStyleMix().mix(a, b, "coarse", "", 1.0)
    assert torch.equal(result.w[0, :4], b.ws()[0, :4])
    assert torch.equal(result.w[0, 4:], a.ws()[0, 4:])


# ---------------------------------------------------------------------------------------------------------------------
# Directions and means.


def make_direction(vectors, fingerprint=None, name="test"):
    return StyleGANDirection(torch.as_tensor(vectors, dtype=torch.float32), name=name, source="array",
                             fingerprint=fingerprint)


def test_add_direction_strength_zero_is_identity():
    latent = random_latent(3, "W", seed=13)
    direction = make_direction(torch.ones(1, W_DIM))
    result = add_direction(latent, direction, 0.0)
    assert result.space == "W"
    assert torch.equal(result.w, latent.w)


def test_add_direction_strength_zero_with_mask_is_identity():
    latent = random_latent(2, "W", seed=14)
    result = add_direction(latent, make_direction(torch.ones(1, W_DIM)), 0.0, layers=parse_layers("0-3", NUM_WS))
    assert result.space == "W+"
    assert torch.equal(result.w, latent.ws())


def test_add_direction_moves_only_masked_layers():
    latent = random_latent(1, "W+", seed=15)
    direction = make_direction(torch.ones(1, W_DIM))
    result = add_direction(latent, direction, 2.0, layers=parse_layers("2-3", NUM_WS))
    assert torch.allclose(result.w[0, 2:4], latent.w[0, 2:4] + 2.0)
    assert torch.equal(result.w[0, :2], latent.w[0, :2])
    assert torch.equal(result.w[0, 4:], latent.w[0, 4:])


def test_add_per_layer_direction_gives_w_plus():
    latent = random_latent(1, "W", seed=16)
    vectors = torch.zeros(1, NUM_WS, W_DIM)
    vectors[0, 5] = 1.0
    result = add_direction(latent, make_direction(vectors), 1.5)
    assert result.space == "W+"
    assert torch.allclose(result.w[0, 5], latent.w[0] + 1.5)
    assert torch.equal(result.w[0, 4], latent.w[0])


def test_add_direction_selects_index():
    latent = random_latent(1, "W", seed=17)
    vectors = torch.eye(W_DIM)[:2]
    result = add_direction(latent, make_direction(vectors), 1.0, index=1)
    assert torch.allclose(result.w[0], latent.w[0] + vectors[1])
    with pytest.raises(ValueError, match=r"direction index 2 is out of range; 'test' has 2 direction\(s\), "
                                         r"so use 0..1"):
        add_direction(latent, make_direction(vectors), 1.0, index=2)


def test_add_direction_rejects_wrong_width_with_both_shapes():
    latent = random_latent(1)
    with pytest.raises(DirectionShapeError, match=r"has width 6 but the latent has width 4: the direction is \[6\] "
                                                  r"per direction, the latent expects \[4\] per direction "
                                                  r"\(or \[8, 4\] per layer\)"):
        add_direction(latent, make_direction(torch.ones(1, 6)), 1.0)


def test_add_direction_rejects_wrong_layer_count_with_both_shapes():
    latent = random_latent(1)
    with pytest.raises(DirectionShapeError, match=r"has 6 layers but the latent has 8: the direction is \[6, 4\] "
                                                  r"per direction, the latent expects"):
        add_direction(latent, make_direction(torch.ones(1, 6, W_DIM)), 1.0)


def test_add_direction_rejects_other_generator():
    latent = random_latent(1, fingerprint="aaaaaaaaaaaaaaaa")
    direction = make_direction(torch.ones(1, W_DIM), fingerprint="cccccccccccccccc")
    with pytest.raises(LatentMismatchError, match="made for generator cccccccccccc but the latent comes from "
                                                  "generator aaaaaaaaaaaa"):
        add_direction(latent, direction, 1.0)


def test_sweep_spans_minus_to_plus_strength():
    latent = random_latent(2, "W", seed=18)
    direction = make_direction(torch.eye(W_DIM)[:1])
    result = sweep_direction(latent, direction, max_strength=2.0, steps=5)
    assert result.batch_size == 10
    assert torch.allclose(result.w[0], latent.w[0] - 2.0 * direction.vectors[0])
    assert torch.equal(result.w[2], latent.w[0])
    assert torch.allclose(result.w[4], latent.w[0] + 2.0 * direction.vectors[0])
    assert torch.equal(result.w[7], latent.w[1])
    assert result.meta["strengths"] == [-2.0, -1.0, 0.0, 1.0, 2.0]


def test_sweep_rejects_one_step():
    with pytest.raises(ValueError, match="steps must be at least 2"):
        sweep_direction(random_latent(1), make_direction(torch.ones(1, W_DIM)), 1.0, steps=1)


def test_mean_latent_averages_batch():
    latent = make_latent([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]])
    result = mean_latent(latent)
    assert result.batch_size == 1
    assert torch.equal(result.w[0], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    assert result.space == "W"
