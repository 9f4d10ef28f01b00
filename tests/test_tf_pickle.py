"""TF-era StyleGAN2 pickles: conversion without TensorFlow, safe loading and clear rejection of other networks."""

import builtins
import dataclasses
import os
import pickletools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.checkpoints import CheckpointError, read_generator
from stylebridge.models.filters import setup_filter
from stylebridge.models.safe_pickle import UnsafePickleError
from stylebridge.models.stylegan2 import modulated_conv2d
from stylebridge.models.tf_pickle import (
    TFNetworkWriterRecord,
    dump_tf_networks,
    load_tf_networks,
    tf_networks,
    to_torch_layout,
    write_tf_pickle,
)


def _render(generator, seed=0):
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    c = None
    if generator.c_dim:
        c = F.one_hot(torch.tensor([0, 1, 2]) % generator.c_dim, generator.c_dim).float()
    return generator(z, c, truncation_psi=0.7, noise_mode="const")


def _assert_same_generator(loaded, source):
    assert sorted(loaded.state_dict()) == sorted(source.state_dict())
    for key, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)
    torch.testing.assert_close(_render(loaded), _render(source), rtol=0, atol=1e-5)


def _global_names(data: bytes) -> list[str]:
    """Module-qualified globals in a pickle stream, for GLOBAL and STACK_GLOBAL alike."""
    names, strings = [], []
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            names.append(argument.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            names.append(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(argument, str):
            strings.append(argument)
    return names


@pytest.fixture(scope="module")
def generators(tiny_config):
    conditional = dataclasses.replace(tiny_config, c_dim=4, conv_clamp=256.0, num_fp16_res=2,
                                      mapping_embed_features=16, mapping_layer_features=48)
    return {
        ("stylegan2", "skip"): make_generator(tiny_config, seed=1),
        ("stylegan2", "resnet"): make_generator(dataclasses.replace(tiny_config, architecture="resnet"), seed=2),
        ("stylegan2", "orig"): make_generator(dataclasses.replace(tiny_config, architecture="orig"), seed=3),
        ("stylegan2-ada", "skip"): make_generator(conditional, seed=4),
        ("stylegan2-ada", "resnet"): make_generator(dataclasses.replace(conditional, architecture="resnet"), seed=5),
        ("stylegan2-ada", "orig"): make_generator(dataclasses.replace(conditional, architecture="orig"), seed=6),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Conversion.


@pytest.mark.parametrize("flavor,architecture", [("stylegan2", "skip"), ("stylegan2", "resnet"), ("stylegan2", "orig"),
                                                 ("stylegan2-ada", "skip"), ("stylegan2-ada", "resnet"),
                                                 ("stylegan2-ada", "orig")])
def test_round_trip_equals_source(flavor, architecture, generators, tmp_path):
    source = generators[(flavor, architecture)]
    path = write_tf_pickle(source, tmp_path / "network.pkl", flavor=flavor)
    loaded = read_generator(path)
    _assert_same_generator(loaded, source)
    assert loaded.config.architecture == architecture
    assert loaded.config.channels == source.config.channels
    assert loaded.config.c_dim == source.config.c_dim
    assert loaded.config.conv_clamp == source.config.conv_clamp
    assert loaded.config.mapping_embed_features == source.config.mapping_embed_features
    assert loaded.config.mapping_layer_features == source.config.mapping_layer_features
    assert loaded.source["format"] == "tf-pickle"
    assert loaded.source["flavor"] == flavor
    assert loaded.source["path"] == str(path)


def test_stylegan2_flavor_reads_without_fp16_settings(generators, tmp_path):
    # The original TF networks run in fp32 and store no num_fp16_res, so the converter must not invent one.
    path = write_tf_pickle(generators[("stylegan2", "skip")], tmp_path / "network.pkl")
    assert read_generator(path).config.num_fp16_res == 0


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("numpy_prefix", ["numpy.core", "numpy._core"])
def test_protocols_and_numpy_module_names(protocol, numpy_prefix, generators, tmp_path):
    source = generators[("stylegan2", "skip")]
    path = write_tf_pickle(source, tmp_path / "network.pkl", protocol=protocol, numpy_prefix=numpy_prefix)
    data = path.read_bytes()
    assert data[1] == protocol
    names = _global_names(data)
    assert "dnnlib.tflib.network.Network" in names
    numpy_names = [name for name in names if name.startswith("numpy.") and name.count(".") > 1]
    assert numpy_names
    assert all(name.startswith(numpy_prefix + ".") for name in numpy_names)
    _assert_same_generator(read_generator(path), source)


def test_conv_up_kernel_matches_tf_upsample_conv(tmp_path):
    # TF's upsample_conv_2d (dnnlib/tflib/ops/upfirdn_2d.py in NVlabs stylegan2), written out directly: flip
    # the [k, k, in, out] kernel, scatter it with stride 2 (tf.nn.conv2d_transpose, VALID), then apply the
    # 4-tap filter (gain 4) with padding 1 on both sides.
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 6, generator=rng)
    kernel = torch.randn(3, 3, 5, 7, generator=rng)
    flipped = kernel.flip(0, 1)
    scattered = torch.zeros(2, 7, 13, 13)
    for a in range(3):
        for b in range(3):
            scattered[:, :, a:a + 11:2, b:b + 11:2] += torch.einsum("nihw,io->nohw", x, flipped[a, b])
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    fir = torch.outer(taps, taps) / taps.sum() ** 2 * 4
    expected = F.conv2d(F.pad(scattered, [1, 1, 1, 1]), fir.expand(7, 1, 4, 4), groups=7)

    def ours(layout):
        weight = torch.from_numpy(to_torch_layout(kernel.numpy(), layout).copy())
        return modulated_conv2d(x, weight, torch.ones(2, 5), up=2, padding=1, demodulate=False,
                                resample_filter=setup_filter([1, 3, 3, 1]))

    assert expected.shape == (2, 7, 12, 12)
    torch.testing.assert_close(ours("conv_up"), expected, rtol=0, atol=1e-4)
    assert (ours("conv") - expected).abs().max() > 0.1  # Without the flip the result differs.


# ---------------------------------------------------------------------------------------------------------------------
# Safety.


def test_build_module_src_is_never_executed(generators, tmp_path, monkeypatch):
    marker = tmp_path / "build_module_src_ran"
    payload = f"open({str(marker)!r}, 'w').close()\n"
    path = write_tf_pickle(generators[("stylegan2", "skip")], tmp_path / "network.pkl", build_module_src=payload)
    assert payload.encode() in path.read_bytes()

    def forbidden(*args, **kwargs):
        raise AssertionError("loading a TF pickle called exec, eval or compile")

    for name in ("exec", "eval", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    loaded = read_generator(path)
    monkeypatch.undo()

    assert not marker.exists()
    assert loaded.source["format"] == "tf-pickle"
    with open(path, "rb") as file:
        networks = load_tf_networks(file)
    assert networks[2].build_module_src_length == len(payload)
    assert not hasattr(networks[2], "build_module_src")


class _Exploit:
    def __init__(self, func, argument):
        self.func, self.argument = func, argument

    def __reduce__(self):
        return self.func, (self.argument,)


def test_extra_disallowed_global_is_rejected_and_not_run(generators, tmp_path):
    marker = tmp_path / "pwned"
    g, d, gs = tf_networks(generators[("stylegan2", "skip")])
    gs.static_kwargs["fused_modconv"] = _Exploit(os.system, f"touch {marker}")
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as file:
        dump_tf_networks((g, d, gs), file)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        read_generator(path)
    assert not marker.exists()


def test_other_tflib_global_is_rejected(tmp_path):
    path = tmp_path / "tf.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\n_reconstruct_network\nq\x00.")
    with pytest.raises(UnsafePickleError, match="dnnlib.tflib.network._reconstruct_network"):
        read_generator(path)


def test_network_called_with_arguments_is_rejected(tmp_path):
    # REDUCE calls the class with arguments, which no genuine TF pickle does.
    path = tmp_path / "tf.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00X\x01\x00\x00\x00x\x85R.")
    with pytest.raises(UnsafePickleError, match="called with arguments"):
        read_generator(path)


# ---------------------------------------------------------------------------------------------------------------------
# Networks that are not StyleGAN2 config E/F.


def _write(networks, path):
    with open(path, "wb") as file:
        dump_tf_networks(networks, file)
    return path


def _stylegan1_networks():
    """A small StyleGAN1 (G_style) generator: AdaIN StyleMod layers and progressive-growing ToRGB_lod layers."""
    rng = np.random.default_rng(0)

    def variable(name, shape):
        return name, rng.standard_normal(shape).astype(np.float32)

    synthesis_variables = [("lod", np.float32(0)), variable("noise0", [1, 1, 4, 4]), variable("noise1", [1, 1, 4, 4])]
    for layer in ("4x4/Const", "4x4/Conv"):
        synthesis_variables += [variable(f"{layer}/Noise/weight", [16]), variable(f"{layer}/bias", [16]),
                                variable(f"{layer}/StyleMod/weight", [16, 32]), variable(f"{layer}/StyleMod/bias", [32])]
    synthesis_variables += [variable("4x4/Const/const", [1, 16, 4, 4]), variable("4x4/Conv/weight", [3, 3, 16, 16]),
                            variable("ToRGB_lod0/weight", [1, 1, 16, 3]), variable("ToRGB_lod0/bias", [3])]
    synthesis = TFNetworkWriterRecord("G_synthesis", "G_synthesis", {"resolution": 4}, synthesis_variables,
                                      version=3)
    mapping = TFNetworkWriterRecord("G_mapping", "G_mapping", {}, [variable("Dense0/weight", [16, 16]),
                                                                   variable("Dense0/bias", [16])], version=3)
    gs = TFNetworkWriterRecord("Gs", "G_style", {"resolution": 4}, [("lod", np.float32(0)),
                                                                    variable("dlatent_avg", [16])],
                               components={"synthesis": synthesis, "mapping": mapping}, version=3)
    return gs, gs, gs


def test_stylegan1_pickle_is_rejected(tmp_path):
    path = _write(_stylegan1_networks(), tmp_path / "karras2019stylegan.pkl")
    with pytest.raises(CheckpointError) as error:
        read_generator(path)
    message = str(error.value)
    assert "StyleBridge converts StyleGAN2 config E/F TF pickles" in message
    assert "StyleGAN1 generator (G_style" in message
    assert "config A" in message
    assert str(path) in message


def test_progressive_config_b_to_d_pickle_is_rejected(generators, tmp_path):
    # Configs B-D build the synthesis network with G_synthesis_stylegan_revised: the same modulated layers,
    # but progressive growing with one ToRGB_lod<N> layer per level of detail and a 'lod' variable.
    g, d, gs = tf_networks(generators[("stylegan2", "orig")])
    synthesis = gs.components["synthesis"]
    synthesis.build_func_name = "G_synthesis_stylegan_revised"
    synthesis.variables = [(name.replace("32x32/ToRGB/", "ToRGB_lod0/"), value) for name, value in synthesis.variables]
    synthesis.variables.insert(0, ("lod", np.float32(0)))
    gs.static_kwargs["synthesis_func"] = "G_synthesis_stylegan_revised"
    path = _write((g, d, gs), tmp_path / "stylegan2-config-d.pkl")
    with pytest.raises(CheckpointError) as error:
        read_generator(path)
    message = str(error.value)
    assert "StyleBridge converts StyleGAN2 config E/F TF pickles" in message
    assert "config B-D generator (G_synthesis_stylegan_revised with progressive growing" in message
    assert "ToRGB_lod0" in message


def test_generator_without_modulation_is_rejected(generators, tmp_path):
    g, d, gs = tf_networks(generators[("stylegan2", "skip")])
    synthesis = gs.components["synthesis"]
    synthesis.variables = [item for item in synthesis.variables if not item[0].endswith(("mod_weight", "mod_bias"))]
    path = _write((g, d, gs), tmp_path / "unmodulated.pkl")
    with pytest.raises(CheckpointError, match="converts StyleGAN2 config E/F.*without modulated convolutions"):
        read_generator(path)


def test_original_conditional_label_concat_is_rejected(generators, tmp_path):
    g, d, gs = tf_networks(generators[("stylegan2", "skip")])
    mapping = gs.components["mapping"]
    mapping.variables.insert(0, ("LabelConcat/weight", np.ones([4, 32], np.float32)))
    path = _write((g, d, gs), tmp_path / "conditional.pkl")
    with pytest.raises(CheckpointError, match="conditional generator from the original stylegan2 repository"):
        read_generator(path)


def test_declared_architecture_must_match_variables(generators, tmp_path):
    path = write_tf_pickle(generators[("stylegan2", "skip")], tmp_path / "network.pkl", architecture="resnet")
    with pytest.raises(CheckpointError, match="declare architecture 'resnet' but the variables are those of 'skip'"):
        read_generator(path)


def test_unknown_static_kwarg_is_rejected(generators, tmp_path):
    g, d, gs = tf_networks(generators[("stylegan2", "skip")])
    gs.static_kwargs["use_spectral_norm"] = True
    path = _write((g, d, gs), tmp_path / "network.pkl")
    with pytest.raises(CheckpointError, match=r"static_kwargs \['use_spectral_norm'\] are unknown"):
        read_generator(path)


def test_unconverted_variable_is_rejected(generators, tmp_path):
    g, d, gs = tf_networks(generators[("stylegan2", "skip")])
    gs.components["synthesis"].variables.append(("8x8/Conv1/weight_sn", np.ones([1, 64], np.float32)))
    path = _write((g, d, gs), tmp_path / "network.pkl")
    with pytest.raises(CheckpointError, match="synthesis/8x8/Conv1/weight_sn"):
        read_generator(path)


def test_writer_rejects_what_original_tf_networks_lack(generators, tmp_path):
    with pytest.raises(ValueError, match="flavor='stylegan2-ada'"):
        write_tf_pickle(generators[("stylegan2-ada", "skip")], tmp_path / "network.pkl", flavor="stylegan2")


def test_pickle_of_gs_alone_converts(generators, tmp_path):
    # Some exports pickle only Gs instead of the (G, D, Gs) tuple.
    source = generators[("stylegan2-ada", "resnet")]
    _, _, gs = tf_networks(source, flavor="stylegan2-ada")
    path = _write(gs, tmp_path / "gs.pkl")
    _assert_same_generator(read_generator(path), source)


def test_pickle_of_other_objects_is_rejected(generators, tmp_path):
    g, d, gs = tf_networks(generators[("stylegan2", "skip")])
    path = _write({"G": g, "D": d, "Gs": gs}, tmp_path / "dict.pkl")
    with pytest.raises(CheckpointError, match="contains a dict, not the \\(G, D, Gs\\) tuple"):
        read_generator(path)
