"""Checkpoint formats: each loads to the same numbers, and bad or unsafe files get clear errors."""

import builtins
import os
import pickle
import re
import zipfile

import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator, write_nvidia_pickle, write_rosinality
from stylebridge.models.checkpoints import (
    CheckpointError,
    clear_cache,
    detect_format,
    load_stylegan,
    read_generator,
    save_safetensors,
)
from stylebridge.models.safe_pickle import PersistentWriterRecord, UnsafePickleError, dump_persistent, module_state
from stylebridge.models.stylegan2 import StyleGAN2Config


def _render(generator, seed=0):
    z = torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    c = None
    if generator.c_dim:
        c = torch.nn.functional.one_hot(torch.tensor([0, 1]), generator.c_dim).float()
    return generator(z, c, truncation_psi=0.7, noise_mode="const")


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_generator):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "pickle": write_nvidia_pickle(tiny_generator, folder / "g.pkl"),
        "pickle-protocol2": write_nvidia_pickle(tiny_generator, folder / "g2.pkl", protocol=2),
        "rosinality": write_rosinality(tiny_generator, folder / "g.pt"),
        "safetensors": save_safetensors(tiny_generator, folder / "g.safetensors"),
    }


@pytest.mark.parametrize("kind", ["pickle", "pickle-protocol2", "rosinality", "safetensors"])
def test_format_loads_identical_generator(kind, written, tiny_generator):
    loaded = read_generator(written[kind])
    assert torch.equal(_render(loaded), _render(tiny_generator))
    assert loaded.fingerprint == tiny_generator.fingerprint


@pytest.mark.parametrize("kind,expected", [("pickle", "pickle"), ("rosinality", "torch-zip"),
                                           ("safetensors", "safetensors")])
def test_detect_format_reads_content_not_name(kind, expected, written, tmp_path):
    disguised = tmp_path / "checkpoint.bin"
    disguised.write_bytes(written[kind].read_bytes())
    assert detect_format(disguised) == expected


def test_rosinality_legacy_torch_file(tmp_path, tiny_generator):
    from stylebridge.models.checkpoint_writers import rosinality_state_dict

    path = tmp_path / "legacy.pt"
    torch.save({"g_ema": rosinality_state_dict(tiny_generator), "latent_avg": tiny_generator.mapping.w_avg},
               path, _use_new_zipfile_serialization=False)
    assert detect_format(path) == "torch-legacy"
    assert torch.equal(_render(read_generator(path)), _render(tiny_generator))


@pytest.mark.parametrize("key", ["style.1.bias", "convs.0.conv.weight", "noises.noise_0"])
def test_rosinality_missing_tensor_named(tmp_path, tiny_generator, key):
    from stylebridge.models.checkpoint_writers import rosinality_state_dict

    state = rosinality_state_dict(tiny_generator)
    del state[key]
    path = tmp_path / "incomplete.pt"
    torch.save({"g_ema": state, "latent_avg": tiny_generator.mapping.w_avg}, path)
    with pytest.raises(CheckpointError, match=f"rosinality generator is missing tensor '{key}'"):
        read_generator(path)


def test_rosinality_training_checkpoint_with_namespace(tmp_path, tiny_generator):
    path = write_rosinality(tiny_generator, tmp_path / "train.pt", training_checkpoint=True)
    loaded = read_generator(path)
    z = torch.randn(1, loaded.z_dim)
    assert torch.equal(loaded(z, None, noise_mode="const"), tiny_generator(z, None, noise_mode="const"))
    assert loaded.source["w_avg_estimated"] is True


def test_rosinality_estimated_w_avg_is_close_to_mean(tmp_path, tiny_generator):
    loaded = read_generator(write_rosinality(tiny_generator, tmp_path / "train.pt", training_checkpoint=True))
    z = torch.randn(20000, loaded.z_dim, generator=torch.Generator().manual_seed(9))
    mean = loaded.mapping(z, None)[:, 0].mean(0)
    assert torch.allclose(loaded.mapping.w_avg, mean, atol=0.05 * mean.abs().max().item())


def test_conditional_resnet_clamped_generator_round_trips(tmp_path):
    config = StyleGAN2Config(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, channels=[32, 32, 16],
                             architecture="resnet", conv_clamp=0.5, num_fp16_res=1, mapping_layers=2,
                             mapping_embed_features=8, mapping_layer_features=24)
    generator = make_generator(config, seed=3)
    loaded = read_generator(write_nvidia_pickle(generator, tmp_path / "cond.pkl"))
    assert loaded.config == config
    assert torch.equal(_render(loaded), _render(generator))


def test_orig_architecture_round_trips(tmp_path):
    config = StyleGAN2Config(z_dim=16, w_dim=16, img_resolution=16, channels=[16, 16, 16], architecture="orig",
                             num_fp16_res=0, mapping_layers=2)
    generator = make_generator(config, seed=4)
    loaded = read_generator(save_safetensors(generator, tmp_path / "orig.safetensors"))
    assert torch.equal(_render(loaded), _render(generator))


def test_load_stylegan_caches_by_file(written):
    clear_cache()
    first = load_stylegan(written["safetensors"])
    assert load_stylegan(written["safetensors"]) is first
    assert load_stylegan(written["safetensors"], use_cache=False) is not first


def test_load_stylegan_rejects_unknown_dtype(written):
    with pytest.raises(ValueError, match="dtype 'bf16' is invalid"):
        load_stylegan(written["safetensors"], dtype="bf16")


def test_save_safetensors_refuses_to_overwrite(written, tiny_generator):
    before = written["safetensors"].read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        save_safetensors(tiny_generator, written["safetensors"])
    assert written["safetensors"].read_bytes() == before


# ---------------------------------------------------------------------------------------------------------------------
# Bad input.


def test_missing_file_names_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*missing.pkl"):
        read_generator(tmp_path / "missing.pkl")


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_generator(path)


@pytest.mark.parametrize("kind", ["pickle", "rosinality", "safetensors"])
def test_truncated_file_is_rejected(kind, written, tmp_path):
    data = written[kind].read_bytes()
    path = tmp_path / ("truncated" + written[kind].suffix)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|damaged|not a recognised"):
        read_generator(path)


def test_unknown_format_lists_supported_formats(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"GIF89a not a checkpoint at all")
    with pytest.raises(CheckpointError, match="Supported formats: NVIDIA network pickle"):
        read_generator(path)


def test_pickle_without_g_ema_is_rejected(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    with pytest.raises(CheckpointError, match="no 'G_ema'"):
        read_generator(path)


def test_torch_file_of_unknown_layout_is_rejected(tmp_path):
    path = tmp_path / "classifier.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="unknown layout"):
        read_generator(path)


def test_safetensors_without_metadata_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="stylebridge convert"):
        read_generator(path)


def test_safetensors_with_wrong_shapes_is_rejected(tmp_path, tiny_generator):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    state["synthesis.b4.const"] = torch.zeros(1, 4, 4)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"format": "stylebridge", "architecture": "stylegan2",
                                          "config": tiny_generator.config.to_json()})
    with pytest.raises(CheckpointError, match="synthesis.b4.const has shape"):
        read_generator(path)


class _Exploit:
    def __init__(self, func, argument):
        self.func, self.argument = func, argument

    def __reduce__(self):
        return self.func, (self.argument,)


@pytest.mark.parametrize("func_name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_pickle_with_code_global_is_rejected_and_not_run(func_name, tmp_path):
    import subprocess

    marker = tmp_path / "pwned"
    funcs = {"os.system": os.system, "builtins.eval": builtins.eval, "builtins.exec": builtins.exec,
             "subprocess.call": subprocess.call}
    argument = f"touch {marker}" if func_name in ("os.system", "subprocess.call") else \
        f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Exploit(funcs[func_name], argument)}, protocol=4))
    with pytest.raises(UnsafePickleError, match=func_name.split(".")[1]):
        read_generator(path)
    assert not marker.exists()


def test_exploit_nested_inside_persistent_state_is_rejected(tmp_path):
    marker = tmp_path / "pwned"
    record = PersistentWriterRecord("Generator", module_state({"z_dim": _Exploit(os.system, f"touch {marker}")}, {}))
    path = tmp_path / "nested.pkl"
    with open(path, "wb") as file:
        dump_persistent({"G_ema": record}, file)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        read_generator(path)
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path, tiny_generator):
    marker = tmp_path / "source_ran"
    path = write_nvidia_pickle(tiny_generator, tmp_path / "g.pkl")
    data = path.read_bytes()
    placeholder = PersistentWriterRecord.module_src.encode()
    payload = f"open({str(marker)!r}, 'w').close()\n".ljust(len(placeholder)).encode()[: len(placeholder)]
    assert placeholder in data
    tampered = tmp_path / "tampered.pkl"
    tampered.write_bytes(data.replace(placeholder, payload))
    loaded = read_generator(tampered)
    assert loaded.fingerprint == tiny_generator.fingerprint
    assert not marker.exists()


def test_torch_file_with_code_is_rejected(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Exploit(os.system, f"touch {marker}")}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt contains a reference to posix.system, which is code, not "
                                              r"tensors; StyleBridge never loads such files, and nothing from the "
                                              r"file was run"):
        read_generator(path)
    assert not marker.exists()


def test_torchscript_archive_rejected_without_torch_advice(tmp_path, recwarn):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(path))
    with pytest.raises(CheckpointError) as error:
        read_generator(path)
    message = str(error.value)
    assert f"{path} is a TorchScript archive, which contains code; StyleBridge never loads one" in message
    assert "weights_only" not in message
    assert not [warning for warning in recwarn if "TorchScript" in str(warning.message)]


def test_unsupported_tf_pickle_gets_clear_message(tmp_path):
    # StyleGAN1 generators (G_style) come in the same TF-era pickle layout as the StyleGAN2 ones that convert.
    from stylebridge.models.tf_pickle import TFNetworkWriterRecord, dump_tf_networks

    gs = TFNetworkWriterRecord("Gs", "G_style", {"resolution": 1024}, [])
    path = tmp_path / "tf.pkl"
    with open(path, "wb") as file:
        dump_tf_networks((gs, gs, gs), file)
    expected = f"StyleBridge converts StyleGAN2 config E/F TF pickles .*; {re.escape(str(path))} is a StyleGAN1"
    with pytest.raises(CheckpointError, match=expected):
        read_generator(path)


def test_zip_that_is_not_torch_is_rejected(tmp_path):
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError):
        read_generator(path)


def test_load_stylegan_finds_bare_name_in_model_folder(stylebridge_home, tiny_generator):
    folder = stylebridge_home / "models" / "stylegan"
    folder.mkdir(parents=True)
    save_safetensors(tiny_generator, folder / "named.safetensors")
    assert load_stylegan("named.safetensors").fingerprint == tiny_generator.fingerprint


def test_load_stylegan_unknown_name_says_where_it_looked(stylebridge_home):
    with pytest.raises(CheckpointError, match="neither a file nor a model in the stylegan folder"):
        load_stylegan("nowhere.pkl")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_stylegan_cuda_without_cuda_is_clear(written):
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_stylegan(written["safetensors"], device="cuda")


def test_safetensors_with_wrongly_typed_config_names_file(tmp_path, tiny_generator):
    import json as json_module

    from safetensors.torch import save_file

    config = json_module.loads(tiny_generator.config.to_json())
    config["z_dim"] = "x"
    path = tmp_path / "typed.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_generator.state_dict().items()}, str(path),
              metadata={"format": "stylebridge", "architecture": "stylegan2", "config": json_module.dumps(config)})
    with pytest.raises(CheckpointError, match=r"typed.safetensors: invalid architecture metadata: z_dim must be"):
        read_generator(path)


@pytest.mark.parametrize("writer", [write_nvidia_pickle, write_rosinality])
def test_writers_never_replace_files_or_leave_partials(writer, tmp_path, tiny_generator):
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "existing.bin"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="already exists"):
        writer(tiny_generator, path)
    assert path.read_bytes() == b"user data"
    writer(tiny_generator, folder / "new.bin")
    assert sorted(p.name for p in folder.iterdir()) == ["existing.bin", "new.bin"]


def test_pickle_cannot_allocate_through_bytearray(tmp_path):
    path = tmp_path / "big.pkl"
    # GLOBAL builtins.bytearray, then call it with 1.5e9: a tiny file asking for a huge allocation.
    path.write_bytes(b"\x80\x04cbuiltins\nbytearray\nJ\x00/hY\x85R.")
    with pytest.raises(UnsafePickleError, match="builtins.bytearray"):
        read_generator(path)


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("numpy_module", [b"numpy._core", b"numpy.core"])
def test_stylegan3_pickle_from_numpy_1_or_2(protocol, numpy_module, tmp_path):
    """Official StyleGAN3 pickles hold numpy arrays; numpy 1.x names their module numpy.core, 2.x numpy._core.

    Protocols 2 and 3 store the module name as newline-terminated text, so it can be swapped in the bytes;
    tests/test_tf_pickle.py covers protocols 4 and 5 with a pickler that writes either name.
    """
    from stylebridge.models.checkpoint_writers import make_stylegan3_generator
    from stylebridge.models.stylegan3 import StyleGAN3Config

    config = StyleGAN3Config(z_dim=16, w_dim=16, img_resolution=16, channel_base=512, channel_max=32, num_layers=4,
                             num_critical=1, mapping_layers=2)
    generator = make_stylegan3_generator(config, seed=0)
    written = write_nvidia_pickle(generator, tmp_path / "sg3.pkl", protocol=protocol).read_bytes()
    assert b"numpy._core" in written
    # The module name is stored as text in the pickle; swapping it emulates a file written under numpy 1.x.
    variant = tmp_path / "variant.pkl"
    variant.write_bytes(written.replace(b"numpy._core", numpy_module))
    assert numpy_module in variant.read_bytes()
    loaded = read_generator(variant)
    z = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(z, None), generator(z, None))
