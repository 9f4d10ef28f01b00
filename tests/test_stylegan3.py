"""StyleGAN3: filtered leaky ReLU fast path, layer geometry, checkpoint round trips, input transform, bad files."""

import json
import math

import pytest
import torch

from stylebridge.models import stylegan3
from stylebridge.models.checkpoint_writers import (
    _official_stylegan3_kwargs,
    _record,
    make_stylegan3_generator,
    write_nvidia_pickle,
)
from stylebridge.models.checkpoints import CheckpointError, load_stylegan, read_generator, save_safetensors
from stylebridge.models.safe_pickle import dump_persistent
from stylebridge.models.stylegan3 import (
    StyleGAN3Config,
    design_lowpass_filter,
    filtered_lrelu,
    filtered_lrelu_reference,
    modulated_conv2d,
    set_input_transform,
    synthesis_specs,
)

SMALL = {"z_dim": 16, "w_dim": 16, "img_resolution": 16, "channel_base": 128, "channel_max": 16}


def _small_config(variant: str, **fields) -> StyleGAN3Config:
    return StyleGAN3Config.for_variant(variant, **{**SMALL, **fields})


@pytest.fixture(scope="module", params=["t", "r"])
def generator(request):
    return make_stylegan3_generator(_small_config(request.param, c_dim=3), seed=1)


def _inputs(generator, batch=2, seed=0):
    z = torch.randn(batch, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    c = None
    if generator.c_dim:
        c = torch.nn.functional.one_hot(torch.arange(batch) % generator.c_dim, generator.c_dim).float()
    return z, c


def _render(generator, **kwargs):
    z, c = _inputs(generator)
    return generator(z, c, truncation_psi=0.7, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Filtered leaky ReLU and filters.


FILTERED_LRELU_CASES = [
    # up, down, up taps, down taps, padding, radial down filter
    (2, 2, 12, 12, [9, 8, 9, 8], False),        # Official layer at a constant sampling rate.
    (4, 2, 24, 12, [21, 20, 21, 20], False),    # Official layer that doubles the sampling rate.
    (2, 2, 12, 12, [9, 8, 9, 8], True),         # StyleGAN3-R radial downsampling filter.
    (1, 1, 1, 1, [0, 0, 0, 0], False),          # ToRGB: no filters.
    (2, 2, 12, 12, [-3, 2, 1, -4], False),      # Negative padding crops.
    (3, 1, 7, 1, [2, 3, 0, 1], False),          # Odd factor and taps, asymmetric padding.
    (2, 3, 5, 9, [7, 1, -2, 6], True),
    (1, 2, 1, 5, [1, 1, 1, 1], False),          # Downsampling only.
    (2, 1, 1, 1, [0, 1, 0, 1], False),          # Zero insertion with the identity filter.
]


@pytest.mark.parametrize("up,down,up_taps,down_taps,padding,radial", FILTERED_LRELU_CASES)
@pytest.mark.parametrize("gain,slope,clamp", [(math.sqrt(2), 0.2, None), (math.sqrt(2), 0.2, 0.4), (1, 1, 0.5)])
def test_filtered_lrelu_fast_matches_reference(up, down, up_taps, down_taps, padding, radial, gain, slope, clamp):
    x = torch.randn(2, 5, 17, 15, generator=torch.Generator().manual_seed(up * 10 + down))
    bias = torch.randn(5, generator=torch.Generator().manual_seed(3))
    fu = design_lowpass_filter(up_taps, cutoff=1.0, width=1.0, fs=4.0 * up)
    fd = design_lowpass_filter(down_taps, cutoff=1.0, width=1.0, fs=4.0 * down, radial=radial)
    reference = filtered_lrelu_reference(x, fu, fd, bias, up, down, padding, gain, slope, clamp)
    fast = filtered_lrelu(x, fu, fd, bias, up, down, padding, gain, slope, clamp)
    assert fast.shape == reference.shape
    assert torch.allclose(fast, reference, rtol=0, atol=1e-5 * reference.abs().max().item())


@pytest.mark.parametrize("clamp", [None, 0.4])
def test_filtered_lrelu_fast_gradient_matches_reference(clamp):
    x = torch.randn(2, 5, 17, 15, generator=torch.Generator().manual_seed(4))
    fu = design_lowpass_filter(12, cutoff=1.0, width=1.0, fs=8.0)
    fd = design_lowpass_filter(12, cutoff=1.0, width=1.0, fs=8.0)
    gradients = []
    for implementation in (filtered_lrelu, filtered_lrelu_reference):
        leaf = x.clone().requires_grad_(True)
        implementation(leaf, fu, fd, None, 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, clamp).square().sum().backward()
        gradients.append(leaf.grad)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=1e-4 * gradients[1].abs().max().item())


def test_filtered_lrelu_rejects_wrong_bias_shape():
    with pytest.raises(ValueError, match=r"bias must have shape \[4\]"):
        filtered_lrelu(torch.zeros(1, 4, 8, 8), None, None, torch.zeros(3))


def test_lowpass_filter_matches_scipy_firwin():
    signal = pytest.importorskip("scipy.signal")
    for numtaps, cutoff, width, fs in [(12, 2.0, 1.3, 16), (24, 5.3, 2.1, 32), (13, 3.0, 1.0, 10)]:
        expected = torch.as_tensor(signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs))
        designed = design_lowpass_filter(numtaps, cutoff, width, fs).double()
        assert torch.allclose(designed, expected, atol=1e-7)


def test_radial_filter_is_symmetric_and_normalised():
    taps = design_lowpass_filter(12, cutoff=3.0, width=2.0, fs=16, radial=True)
    assert taps.shape == (12, 12)
    assert torch.allclose(taps, taps.t())
    assert torch.allclose(taps, taps.flip(0))
    assert taps.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_identity_filter_is_none():
    assert design_lowpass_filter(1, cutoff=1.0, width=1.0, fs=4.0) is None


def test_modulated_conv2d_batch_equals_single_samples():
    x = torch.randn(3, 4, 9, 9, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    styles = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    bias = torch.randn(6, generator=torch.Generator().manual_seed(3))
    batch = modulated_conv2d(x, weight, styles, padding=2, input_gain=torch.tensor(0.7), bias=bias)
    # The style pre-normalisation uses the whole batch, so each single-sample call gets the batch's scale.
    scale = styles.square().mean().rsqrt()
    for index in range(3):
        single = modulated_conv2d(x[index:index + 1], weight, styles[index:index + 1] * scale, padding=2,
                                  input_gain=torch.tensor(0.7), bias=bias)
        assert torch.allclose(batch[index:index + 1], single, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration and geometry.


def test_official_t_1024_geometry():
    # Layer names and paddings of the official StyleGAN3-T 1024 px network (networks_stylegan3.py defaults).
    _, specs = synthesis_specs(StyleGAN3Config())
    assert [spec.name for spec in specs] == [
        "L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512", "L6_148_512",
        "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51", "L12_1044_32", "L13_1024_32",
        "L14_1024_3"]
    assert [spec.padding for spec in specs[:3]] == [[9, 8, 9, 8], [9, 8, 9, 8], [-6, -9, -6, -9]]
    assert [(spec.up_factor, spec.down_factor) for spec in specs[:3]] == [(2, 2), (2, 2), (4, 2)]
    assert not any(spec.down_radial for spec in specs)


def test_official_r_256_geometry():
    _, specs = synthesis_specs(StyleGAN3Config.for_variant("r", img_resolution=256))
    assert [spec.name for spec in specs] == [
        "L0_36_1024", "L1_36_1024", "L2_36_1024", "L3_52_1024", "L4_52_1024", "L5_84_1024", "L6_84_1024",
        "L7_148_1024", "L8_148_1024", "L9_148_724", "L10_276_512", "L11_276_362", "L12_276_256", "L13_256_256",
        "L14_256_3"]
    assert [spec.padding for spec in specs[2:4]] == [[11, 10, 11, 10], [-2, -5, -2, -5]]
    # Radial filters only where the layer is not critically sampled; ToRGB uses a 1x1 kernel anyway.
    assert [spec.down_radial for spec in specs] == [True] * 12 + [False] * 3
    assert {spec.conv_kernel for spec in specs} == {1}


def test_variant_r_doubles_channels_and_uses_1x1_radial():
    config = StyleGAN3Config.for_variant("r", img_resolution=256)
    assert (config.channel_base, config.channel_max) == (65536, 1024)
    assert config.conv_kernel == 1
    assert config.use_radial_filters is True


def test_variant_rejects_unknown_name():
    with pytest.raises(ValueError, match="variant 'x' is invalid"):
        StyleGAN3Config.for_variant("x")


def test_config_json_round_trip():
    config = _small_config("r", c_dim=2)
    assert StyleGAN3Config.from_dict(json.loads(config.to_json())) == config


def test_config_rejects_unknown_field():
    with pytest.raises(ValueError, match=r"Unknown StyleGAN3 config fields \['architecture'\]"):
        StyleGAN3Config.from_dict({"architecture": "skip"})


def test_config_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="channels must list 15 layers"):
        StyleGAN3Config(channels=[8, 3])


# ---------------------------------------------------------------------------------------------------------------------
# Generator.


def test_generator_shapes(generator):
    z, c = _inputs(generator, batch=3)
    ws = generator.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
    image = generator.synthesis(ws)
    assert generator.num_ws == generator.config.num_layers + 2
    assert ws.shape == (3, generator.num_ws, generator.w_dim)
    assert image.shape == (3, 3, 16, 16)
    assert image.dtype == torch.float32
    assert torch.isfinite(image).all()


# image[:, :, 6, 4:12:2] and mean |image| that StyleBridge renders for the `generator` fixture with the inputs
# of _render(). When recorded, they agreed with the official networks_stylegan3.py Generator on the same weights
# to within 2e-6 (the comparison is described in docs/fidelity.md); this test keeps the numbers from drifting.
GOLDEN_VALUES = {
    "t": ([[[-0.10135, -0.097238, -0.099196, -0.109462], [0.080796, 0.082961, 0.089544, 0.093942],
            [0.155871, 0.153951, 0.160593, 0.179116]],
           [[-0.11552, -0.111343, -0.109228, -0.105413], [0.10313, 0.101695, 0.099805, 0.097949],
            [0.149217, 0.138546, 0.131792, 0.116133]]], 0.109245),
    "r": ([[[0.13693, 0.10854, 0.09837, 0.091175], [-0.005578, -0.007236, -0.005957, -0.004903],
            [-0.066814, -0.053068, -0.047655, -0.046283]],
           [[0.009896, 0.010739, 0.009161, 0.007115], [0.012223, 0.014013, 0.013877, 0.01127],
            [-0.001176, -0.001558, -0.001661, -0.001659]]], 0.035725),
}


def test_generator_matches_golden_values(generator):
    variant = "r" if generator.config.use_radial_filters else "t"
    samples, mean_abs = GOLDEN_VALUES[variant]
    image = _render(generator)
    assert torch.allclose(image[:, :, 6, 4:12:2], torch.tensor(samples), atol=2e-5)
    assert image.abs().mean().item() == pytest.approx(mean_abs, abs=2e-5)


def test_generator_fast_path_matches_reference_path(generator):
    fast = _render(generator)
    reference = _render(generator, filter_impl="reference")
    assert torch.allclose(fast, reference, atol=1e-5)


def test_noise_modes_are_accepted_and_ignored(generator):
    const = _render(generator, noise_mode="const")
    assert torch.equal(_render(generator, noise_mode="random"), const)
    assert torch.equal(_render(generator, noise_mode="none"), const)


def test_synthesis_rejects_unknown_arguments(generator):
    ws = generator.mapping(*_inputs(generator))
    with pytest.raises(ValueError, match="noise_mode 'loud' is invalid"):
        generator.synthesis(ws, noise_mode="loud")
    with pytest.raises(TypeError, match="Unexpected synthesis arguments: \\['bogus'\\]"):
        generator.synthesis(ws, bogus=1)
    with pytest.raises(ValueError, match=r"ws must be \[N, 16, 16\], got \[2, 15, 16\]"):
        generator.synthesis(ws[:, 1:])


def test_fingerprint_depends_on_mapping_only(generator):
    changed = make_stylegan3_generator(generator.config, seed=1)
    with torch.no_grad():
        changed.synthesis.input.weight.add_(1)
    assert changed.fingerprint == generator.fingerprint
    with torch.no_grad():
        changed.mapping.fc0.bias.add_(1)
    changed.reset_fingerprint()
    assert changed.fingerprint != generator.fingerprint


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints.


def test_nvidia_pickle_round_trip(generator, tmp_path):
    loaded = read_generator(write_nvidia_pickle(generator, tmp_path / "g.pkl"))
    assert isinstance(loaded, stylegan3.Generator)
    assert loaded.config == generator.config
    assert loaded.source["format"] == "nvidia-pickle"
    assert loaded.fingerprint == generator.fingerprint
    assert torch.equal(_render(loaded), _render(generator))


def test_safetensors_round_trip(generator, tmp_path):
    loaded = read_generator(save_safetensors(generator, tmp_path / "g.safetensors"))
    assert isinstance(loaded, stylegan3.Generator)
    assert loaded.config == generator.config
    assert torch.equal(_render(loaded), _render(generator))


def test_load_stylegan_marks_fp32(generator, tmp_path):
    loaded = load_stylegan(save_safetensors(generator, tmp_path / "g.safetensors"), use_cache=False)
    assert loaded.synthesis.force_fp32_default is True


def _write_record(generator, path, edit):
    """Write `generator` as an NVIDIA pickle after `edit(g_ema_state)` changed its G_ema record."""
    record = _record(generator, init_kwargs=_official_stylegan3_kwargs(generator.config), stylegan3_layout=True)
    edit(record.state)
    with open(path, "wb") as file:
        dump_persistent({"G_ema": record}, file)
    return path


def test_pickle_missing_tensor_is_named(generator, tmp_path):
    layer = generator.synthesis.layer_names[2]

    def drop_bias(state):
        del state["_modules"]["synthesis"].state["_modules"][layer].state["_modules"]["affine"].state[
            "_parameters"]["bias"]

    path = _write_record(generator, tmp_path / "missing.pkl", drop_bias)
    with pytest.raises(CheckpointError, match=rf"missing tensors \['synthesis\.{layer}\.affine\.bias'\]"):
        read_generator(path)


def test_pickle_with_changed_geometry_is_rejected(generator, tmp_path):
    layer = generator.synthesis.layer_names[1]

    def change_padding(state):
        state["_modules"]["synthesis"].state["_modules"][layer].state["padding"] = [0, 0, 0, 0]

    path = _write_record(generator, tmp_path / "geometry.pkl", change_padding)
    with pytest.raises(CheckpointError, match=rf"{layer}\.padding: stored \[0, 0, 0, 0\]"):
        read_generator(path)


def test_safetensors_missing_tensor_is_named(generator, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in generator.state_dict().items() if k != "synthesis.input.freqs"}
    path = tmp_path / "missing.safetensors"
    save_file(state, str(path), metadata={"format": "stylebridge", "architecture": "stylegan3",
                                          "config": generator.config.to_json()})
    with pytest.raises(CheckpointError, match=r"missing tensors \['synthesis\.input\.freqs'\]"):
        read_generator(path)


# ---------------------------------------------------------------------------------------------------------------------
# Input transform.


@pytest.fixture(scope="module")
def generator_32px():
    generators = {}
    for variant in "tr":
        config = _small_config(variant, img_resolution=32, channel_base=128, channel_max=16)
        generators[variant] = make_stylegan3_generator(config, seed=0)
    return generators


def test_identity_transform_equals_default(generator):
    moved = set_input_transform(generator, 0.0, 0.0, 0.0)
    assert torch.equal(_render(moved), _render(generator))


def test_transform_changes_image_and_keeps_original(generator):
    before = _render(generator)
    moved = set_input_transform(generator, 0.25, -0.1, 30.0)
    assert not torch.allclose(_render(moved), before, atol=1e-3)
    assert torch.equal(_render(generator), before)
    assert torch.equal(generator.synthesis.input.transform, torch.eye(3))
    assert moved.synthesis.input.weight is generator.synthesis.input.weight
    assert moved.source["input_transform"] == [0.25, -0.1, 30.0]


@pytest.mark.parametrize("variant", ["t", "r"])
def test_translation_moves_content_by_pixels(variant, generator_32px):
    generator = generator_32px[variant]
    ws = generator.mapping(*_inputs(generator))
    image = generator.synthesis(ws)
    right = set_input_transform(generator, 4 / 32, 0.0, 0.0).synthesis(ws)
    down = set_input_transform(generator, 0.0, 4 / 32, 0.0).synthesis(ws)
    # Both configs are translation-equivariant, so the content moves by 4 pixels with only small edge effects.
    tolerance = 0.02 * image.abs().mean().item()
    assert (right[..., 4:] - image[..., :-4]).abs().mean().item() < tolerance
    assert (down[..., 4:, :] - image[..., :-4, :]).abs().mean().item() < tolerance


def test_rotation_by_90_degrees_turns_r_image(generator_32px):
    generator = generator_32px["r"]
    ws = generator.mapping(*_inputs(generator))
    image = generator.synthesis(ws)
    rotated = set_input_transform(generator, 0.0, 0.0, 90.0).synthesis(ws)
    # Positive angles turn the content counterclockwise as displayed (rows downward).
    assert torch.allclose(rotated, torch.rot90(image, 1, dims=(2, 3)), atol=1e-4)


def test_transform_rejects_stylegan2(tiny_generator):
    with pytest.raises(TypeError, match="needs a StyleGAN3 generator"):
        set_input_transform(tiny_generator, 0.1, 0.0, 0.0)


def test_transform_rejects_non_finite_values(generator):
    with pytest.raises(ValueError, match="rotate_degrees must be a finite number"):
        set_input_transform(generator, 0.0, 0.0, float("nan"))


def test_input_transform_matrix_inverts_forward():
    matrix = stylegan3.input_transform_matrix(0.2, -0.3, 45.0)
    angle = math.radians(45.0)
    forward = torch.tensor([[math.cos(angle), math.sin(angle), 0.2], [-math.sin(angle), math.cos(angle), -0.3],
                            [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(torch.as_tensor(matrix) @ forward, torch.eye(3, dtype=torch.float64), atol=1e-12)
