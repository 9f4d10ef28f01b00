"""StyleGAN2 building blocks against direct definitions written out in the tests."""

import math

import pytest
import torch
import torch.nn.functional as F

from stylebridge.models.filters import setup_filter, upfirdn2d, upfirdn2d_reference, upsample2d
from stylebridge.models.stylegan2 import StyleGAN2Config, bias_act, channels_for, modulated_conv2d


@pytest.mark.parametrize("up,down,padding", [(1, 1, 0), (2, 1, [2, 1, 2, 1]), (1, 2, 1), (2, 2, [1, 2, 0, 3]),
                                             (1, 1, [-1, 2, 1, -1])])
@pytest.mark.parametrize("separable", [True, False])
def test_upfirdn2d_matches_reference(up, down, padding, separable):
    x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    f = setup_filter([1, 3, 3, 1])
    fast = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=up * up, separable=separable)
    reference = upfirdn2d_reference(x, f, up=up, down=down, padding=padding, gain=up * up)
    assert fast.shape == reference.shape
    assert torch.allclose(fast, reference, atol=1e-6)


def test_upsample2d_doubles_size_and_keeps_constant():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full([1, 1, 6, 6], 2.0)
    y = upsample2d(x, f)
    assert y.shape == (1, 1, 12, 12)
    # Away from the zero-padded border, a constant image stays constant.
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 2.0))


def test_setup_filter_rejects_2d_taps():
    with pytest.raises(ValueError, match="1-D"):
        setup_filter([[1, 2], [3, 4]])


def test_bias_act_in_place_path_equals_autograd_path():
    x = torch.randn(4, 5, 3, 3, generator=torch.Generator().manual_seed(4))
    bias = torch.randn(5)
    with torch.no_grad():
        in_place = bias_act(x, bias, "lrelu", gain=1.7, clamp=0.8)
    graph_input = x.clone().requires_grad_(True)
    with_grad = bias_act(graph_input, bias, "lrelu", gain=1.7, clamp=0.8)
    with_grad.sum().backward()
    assert torch.equal(in_place, with_grad.detach())
    assert graph_input.grad is not None


def test_bias_act_lrelu_gain_and_clamp():
    x = torch.tensor([[-1.0, 0.5, 10.0]])
    out = bias_act(x, torch.tensor([0.0, 0.0, 0.0]), "lrelu", clamp=5.0, dim=0)
    expected = torch.tensor([[-0.2 * math.sqrt(2), 0.5 * math.sqrt(2), 5.0]])
    assert torch.allclose(out, expected)


def _per_sample_modulated_conv(x, weight, styles, demodulate, up=1, f=None):
    """Direct definition: build each sample's modulated weights and convolve one sample at a time."""
    outputs = []
    for i in range(x.shape[0]):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xi = x[i:i + 1]
        if up == 1:
            outputs.append(F.conv2d(xi, w, padding=weight.shape[-1] // 2))
        else:
            # Zero insertion, full convolution with the (flipped) kernel, then the 2-D filter.
            z = torch.zeros(1, xi.shape[1], xi.shape[2] * 2, xi.shape[3] * 2)
            z[:, :, ::2, ::2] = xi
            y = F.conv2d(F.pad(z, [2, 2, 2, 2]), w.flip([2, 3]))
            outputs.append(upfirdn2d_reference(y, f, padding=[1, 0, 1, 0], gain=4))
    return torch.cat(outputs)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_modulated_conv2d_matches_per_sample_weights(demodulate, batch_size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, 8, 6, 6, generator=g)
    weight = torch.randn(5, 8, 3, 3, generator=g)
    styles = torch.randn(batch_size, 8, generator=g)
    out = modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate)
    assert torch.allclose(out, _per_sample_modulated_conv(x, weight, styles, demodulate), atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_modulated_conv2d_upsampling_matches_direct_definition(batch_size):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch_size, 4, 5, 5, generator=g)
    weight = torch.randn(6, 4, 3, 3, generator=g)
    styles = torch.randn(batch_size, 4, generator=g)
    f = setup_filter([1, 3, 3, 1])
    out = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f)
    reference = _per_sample_modulated_conv(x, weight, styles, True, up=2, f=f)
    assert out.shape == (batch_size, 6, 10, 10)
    assert reference.shape == out.shape
    assert torch.allclose(out, reference, atol=1e-5)


def test_channels_for_config_f():
    assert channels_for(1024) == [512, 512, 512, 512, 512, 256, 128, 64, 32]


def test_config_num_ws_for_1024():
    assert StyleGAN2Config(img_resolution=1024).num_ws == 18


@pytest.mark.parametrize("field,value,message", [
    ("img_resolution", 48, "power of two"),
    ("architecture", "progressive", "architecture"),
    ("channels", [512, 512], "channels must list"),
    ("mapping_activation", "gelu", "activation"),
])
def test_config_rejects_invalid_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        StyleGAN2Config(**{"img_resolution": 64, field: value})


def test_config_round_trips_through_json(tiny_config):
    import json

    assert StyleGAN2Config.from_dict(json.loads(tiny_config.to_json())) == tiny_config


def test_config_from_dict_rejects_unknown_field():
    with pytest.raises(ValueError, match="Unknown StyleGAN2 config fields"):
        StyleGAN2Config.from_dict({"img_resolution": 64, "bogus": 1})


def test_generator_output_shape_and_noise_modes(tiny_generator):
    z = torch.randn(2, tiny_generator.z_dim, generator=torch.Generator().manual_seed(0))
    const = tiny_generator(z, None, noise_mode="const")
    none = tiny_generator(z, None, noise_mode="none")
    assert const.shape == (2, 3, 32, 32)
    assert not torch.allclose(const, none)
    random_a = tiny_generator(z, None, noise_mode="random", noise_generator=torch.Generator().manual_seed(3))
    random_b = tiny_generator(z, None, noise_mode="random", noise_generator=torch.Generator().manual_seed(3))
    assert torch.equal(random_a, random_b)


def test_truncation_psi_zero_gives_w_avg(tiny_generator):
    z = torch.randn(2, tiny_generator.z_dim)
    ws = tiny_generator.mapping(z, None, truncation_psi=0)
    assert torch.allclose(ws, tiny_generator.mapping.w_avg.expand_as(ws))


def test_truncation_cutoff_truncates_first_layers_only(tiny_generator):
    z = torch.randn(1, tiny_generator.z_dim)
    plain = tiny_generator.mapping(z, None)
    ws = tiny_generator.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    expected = tiny_generator.mapping.w_avg + 0.5 * (plain[:, :2] - tiny_generator.mapping.w_avg)
    assert torch.allclose(ws[:, :2], expected, atol=1e-6)
    assert torch.equal(ws[:, 2:], plain[:, 2:])


def test_synthesis_rejects_wrong_ws_shape(tiny_generator):
    with pytest.raises(AssertionError, match="ws must be"):
        tiny_generator.synthesis(torch.zeros(1, tiny_generator.num_ws + 1, tiny_generator.w_dim))


def test_fingerprint_ignores_synthesis_weights(tiny_config):
    from stylebridge.models.checkpoint_writers import make_generator

    a = make_generator(tiny_config, seed=0)
    b = make_generator(tiny_config, seed=0)
    with torch.no_grad():
        b.synthesis.b4.const.add_(1)
    assert a.fingerprint == b.fingerprint
    c = make_generator(tiny_config, seed=1)
    assert c.fingerprint != a.fingerprint
