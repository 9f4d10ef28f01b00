"""Damaged and hostile StyleCLIP files: fs3.npy, S_mean_std, fs3.safetensors, mapper checkpoints and CLIP weights.

Every rejection must name the file and the cause, and none may suggest loading the file unsafely.
"""

import json
import os
import pickle
import stat

import numpy as np
import pytest
import torch
from model_helpers import SMALL_CLIP_CONFIG, SMALL_STYLEGAN2, computed_channel_data
from safetensors import safe_open
from safetensors.torch import save_file

from stylebridge.models import styleclip_channels as channels
from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.clip_models import CONFIG_FILE_NAME, CLIPLoadError, load_clip
from stylebridge.models.clip_writers import write_tiny_clip
from stylebridge.models.styleclip_mappers import MapperCheckpointError, load_mapper, write_mapper_checkpoint

FIX_HINT = "stylebridge styleclip-fs3"


class SystemCall:
    """Pickles as a call of os.system. The tests only write it, and the loaders must reject it without calling it."""

    def __reduce__(self):
        return os.system, ("echo this must never run",)


@pytest.fixture(scope="module")
def generator():
    return make_generator(SMALL_STYLEGAN2, seed=1)


@pytest.fixture(scope="module")
def channel_data(generator, clip, tmp_path_factory):
    return computed_channel_data(generator, clip, tmp_path_factory.mktemp("cache"))


@pytest.fixture
def official_folder(channel_data, tmp_path):
    """A folder with a valid fs3.npy and S_mean_std, for tests that damage one of them."""
    channels.save_official(channel_data, tmp_path)
    return tmp_path


def _statistics(channel_data):
    return [m.numpy() for m in channel_data.style_mean], [s.numpy() for s in channel_data.style_std]


def _load_error(path, generator) -> str:
    with pytest.raises(channels.ChannelDataError) as error:
        channels.load_channel_data(path, generator)
    return str(error.value)


def _mapper_error(path) -> str:
    with pytest.raises(MapperCheckpointError) as error:
        load_mapper(path)
    return str(error.value)


def _rewrite_safetensors(path, edit_tensors=None, edit_metadata=None):
    """Read a safetensors file, let the callbacks change its tensors or metadata in place, and write it back."""
    with safe_open(str(path), framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}
        metadata = dict(file.metadata())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_metadata:
        edit_metadata(metadata)
    save_file(tensors, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# fs3.npy.


def test_npy_text_file_rejected(official_folder, generator):
    path = official_folder / "fs3.npy"
    path.write_text("this is not an array\n")
    message = _load_error(path, generator)
    assert str(path) in message
    assert "not a NumPy .npy file" in message
    assert FIX_HINT in message
    assert "allow_pickle" not in message


def test_npy_truncated_rejected(official_folder, generator):
    path = official_folder / "fs3.npy"
    path.write_bytes(path.read_bytes()[:-100])
    message = _load_error(path, generator)
    assert str(path) in message
    assert "truncated or damaged" in message


def test_npy_object_array_rejected(official_folder, generator):
    path = official_folder / "fs3.npy"
    np.save(path, np.array([{"row": 1}, None], dtype=object), allow_pickle=True)
    message = _load_error(path, generator)
    assert str(path) in message
    assert "object array" in message
    assert "allow_pickle" not in message


def test_npy_empty_file_rejected(official_folder, generator):
    path = official_folder / "fs3.npy"
    path.write_bytes(b"")
    message = _load_error(path, generator)
    assert f"{path} is not a valid fs3.npy: the file is empty" in message


def test_npy_nan_rows_rejected(official_folder, channel_data, generator):
    fs3 = channel_data.fs3.numpy().copy()
    fs3[[3, 40], 5] = np.nan
    np.save(official_folder / "fs3.npy", fs3)
    message = _load_error(official_folder / "fs3.npy", generator)
    assert str(official_folder / "fs3.npy") in message
    assert "it has NaN or infinite values in rows 3, 40 (2 of 72)" in message


def test_npy_zero_rows_rejected(official_folder, channel_data, generator):
    np.save(official_folder / "fs3.npy", np.zeros_like(channel_data.fs3.numpy()))
    message = _load_error(official_folder / "fs3.npy", generator)
    assert "all 72 rows are zero" in message


def test_npy_non_unit_rows_rejected(official_folder, channel_data, generator):
    fs3 = channel_data.fs3.numpy().copy()
    fs3[7] *= 2
    np.save(official_folder / "fs3.npy", fs3)
    message = _load_error(official_folder / "fs3.npy", generator)
    assert "the norms of row 7 (1 of 72) are 2, but StyleCLIP's fs3 rows are unit vectors" in message


def test_npy_float16_rows_accepted(official_folder, channel_data, generator):
    # StyleCLIP's own fs3.npy is float16 when its CLIP ran on a GPU, so rows are unit only up to fp16 rounding.
    np.save(official_folder / "fs3.npy", channel_data.fs3.numpy().astype(np.float16))
    loaded = channels.load_channel_data(official_folder / "fs3.npy", generator)
    assert loaded.rows == 72


# ---------------------------------------------------------------------------------------------------------------------
# S_mean_std.


def test_statistics_text_file_rejected(official_folder, generator):
    path = official_folder / "S_mean_std"
    path.write_text("means and stds\n")
    message = _load_error(official_folder / "fs3.npy", generator)
    assert f"{path} is not a valid S_mean_std file: it is not a readable pickle" in message
    assert FIX_HINT in message


def test_statistics_truncated_rejected(official_folder, generator):
    path = official_folder / "S_mean_std"
    path.write_bytes(path.read_bytes()[:200])
    message = _load_error(official_folder / "fs3.npy", generator)
    assert f"{path} is not a valid S_mean_std file" in message
    assert "truncated" in message


def test_statistics_three_lists_rejected(official_folder, channel_data, generator):
    means, stds = _statistics(channel_data)
    path = official_folder / "S_mean_std"
    path.write_bytes(pickle.dumps([means, stds, stds], protocol=3))
    message = _load_error(official_folder / "fs3.npy", generator)
    assert str(path) in message
    assert "expected a pickled [means, stds] pair of lists" in message
    assert "found a list of 3" in message


def test_statistics_nan_mean_rejected(official_folder, channel_data, generator):
    means, stds = _statistics(channel_data)
    means[2] = means[2].copy()
    means[2][4] = np.nan
    channels.write_statistics(official_folder / "S_mean_std", means, stds)
    message = _load_error(official_folder / "fs3.npy", generator)
    assert str(official_folder / "S_mean_std") in message
    assert "the mean of layer 2 has NaN or infinite values in channel 4" in message


def test_statistics_negative_std_rejected(official_folder, channel_data, generator):
    means, stds = _statistics(channel_data)
    stds[1] = stds[1].copy()
    stds[1][6] = -0.5
    channels.write_statistics(official_folder / "S_mean_std", means, stds)
    message = _load_error(official_folder / "fs3.npy", generator)
    assert "the std of layer 1 is negative in channel 6 (first value -0.5)" in message


def test_statistics_infinite_std_rejected(official_folder, channel_data, generator):
    means, stds = _statistics(channel_data)
    stds[0] = stds[0].copy()
    stds[0][0] = np.inf
    channels.write_statistics(official_folder / "S_mean_std", means, stds)
    message = _load_error(official_folder / "fs3.npy", generator)
    assert "the std of layer 0 has NaN or infinite values in channel 0" in message


def test_statistics_with_code_rejected(official_folder, generator):
    path = official_folder / "S_mean_std"
    path.write_bytes(pickle.dumps([[SystemCall()], [np.ones(2)]], protocol=3))
    with pytest.raises(channels.UnsafeStatisticsError) as error:
        channels.load_channel_data(official_folder / "fs3.npy", generator)
    message = str(error.value)
    assert f"{path} is not a valid S_mean_std file" in message
    assert f"references {os.system.__module__}.system" in message
    assert "StyleGAN checkpoint" not in message
    assert isinstance(error.value, pickle.UnpicklingError)


def test_statistics_layer_mismatch_named(official_folder, channel_data, generator):
    means, stds = _statistics(channel_data)
    del means[5], stds[5]  # b16.conv0 (16 channels), so b16.conv1 (8 channels) moves to index 5.
    path = channels.write_statistics(official_folder / "S_mean_std", means, stds)
    message = _load_error(official_folder / "fs3.npy", generator)
    assert f"the style statistics in {path} do not fit" in message
    assert "they describe 7 style layers and the generator has 8" in message
    assert "layer 5 (b16.conv0): 8 channels in the file, 16 channels in the generator" in message


# ---------------------------------------------------------------------------------------------------------------------
# fs3.safetensors.


@pytest.fixture
def safetensors_path(channel_data, tmp_path):
    return channels.save_channel_data(channel_data, tmp_path / "fs3.safetensors")


def test_safetensors_garbage_rejected(tmp_path, generator):
    path = tmp_path / "fs3.safetensors"
    path.write_bytes(b"garbage" * 20)
    message = _load_error(path, generator)
    assert f"{path} is not a valid StyleBridge fs3 .safetensors file" in message
    assert "not a readable safetensors file" in message


def test_safetensors_without_measured_rejected(safetensors_path, generator):
    _rewrite_safetensors(safetensors_path, edit_metadata=lambda metadata: metadata.pop("measured"))
    message = _load_error(safetensors_path, generator)
    assert str(safetensors_path) in message
    assert "its metadata has no 'measured' entry" in message


def test_safetensors_bad_metadata_json_rejected(safetensors_path, generator):
    _rewrite_safetensors(safetensors_path, edit_metadata=lambda metadata: metadata.update(layer_names="[b4.conv1"))
    message = _load_error(safetensors_path, generator)
    assert "its metadata entry 'layer_names' is not valid JSON" in message


def test_safetensors_missing_tensor_rejected(safetensors_path, generator):
    _rewrite_safetensors(safetensors_path, edit_tensors=lambda tensors: tensors.pop("style_std.3"))
    message = _load_error(safetensors_path, generator)
    assert f"{safetensors_path} is not a valid StyleBridge fs3 .safetensors file: tensor style_std.3 is missing" \
        in message


def test_safetensors_nan_fs3_rejected(safetensors_path, generator):
    _rewrite_safetensors(safetensors_path, edit_tensors=lambda tensors: tensors["fs3"][10].fill_(float("nan")))
    message = _load_error(safetensors_path, generator)
    assert "it has NaN or infinite values in row 10 (1 of 72)" in message


def test_safetensors_statistics_mismatch_named(channel_data, tmp_path, generator):
    path = channels.save_channel_data(channel_data, tmp_path / "fs3.safetensors")

    def drop_last_layer(tensors):
        tensors.pop("style_mean.7")
        tensors.pop("style_std.7")

    def shorten_names(metadata):
        metadata["layer_names"] = json.dumps(json.loads(metadata["layer_names"])[:7])

    _rewrite_safetensors(path, drop_last_layer, shorten_names)
    message = _load_error(path, generator)
    assert f"the style statistics in {path} do not fit" in message
    assert "layer 7 (b16.torgb): missing in the file" in message


def test_saved_files_share_umask_mode(channel_data, tmp_path):
    previous = os.umask(0o022)
    try:
        folder = channels.save_numbered_folder(channel_data, tmp_path, "fs3")
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert modes == {"fs3.npy": 0o644, "S_mean_std": 0o644, "fs3.safetensors": 0o644}


# ---------------------------------------------------------------------------------------------------------------------
# Mapper checkpoints.


def _edit_mapper(path, edit):
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)
    return path


def test_mapper_nan_weights_rejected(generator, tmp_path):
    key = "mapper.course_mapping.mapping.1.weight"
    path = _edit_mapper(write_mapper_checkpoint(tmp_path / "nan.pt", generator),
                        lambda data: data["state_dict"][key].view(-1)[:3].fill_(float("nan")))
    message = _mapper_error(path)
    assert f"{path} is not a valid StyleCLIP mapper checkpoint" in message
    assert f"tensor {key} contains 3 NaN or infinite values" in message


def test_mapper_opts_list_rejected(generator, tmp_path):
    path = _edit_mapper(write_mapper_checkpoint(tmp_path / "opts.pt", generator),
                        lambda data: data.update(opts=["description", "a smiling face"]))
    message = _mapper_error(path)
    assert f"{path} is not a valid StyleCLIP mapper checkpoint: its opts entry has type list" in message


def test_mapper_state_dict_int_rejected(tmp_path):
    path = tmp_path / "five.pt"
    torch.save({"state_dict": 5, "opts": {}}, path)
    message = _mapper_error(path)
    assert f"{path} is not a valid StyleCLIP mapper checkpoint: its state_dict has type int" in message


def test_mapper_text_file_rejected(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    message = _mapper_error(path)
    assert f"{path} is not a readable PyTorch checkpoint" in message


def test_mapper_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    message = _mapper_error(path)
    assert f"{path} is not a readable PyTorch checkpoint (EOFError" in message


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_mapper_with_code_rejected(tmp_path, writer):
    path = tmp_path / "system.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(SystemCall(), protocol=2))
    else:
        torch.save({"state_dict": {"mapper.x": SystemCall()}}, path)
    message = _mapper_error(path)
    assert f"{path} contains a reference to {os.system.__module__}.system, which is code, not tensors" in message
    assert "nothing from the file was run" in message
    assert "weights_only" not in message


def test_mapper_float16_copy_accepted(generator, tmp_path):
    def halve(data):
        data["state_dict"] = {key: value.half() for key, value in data["state_dict"].items()}

    path = _edit_mapper(write_mapper_checkpoint(tmp_path / "half.pt", generator), halve)
    mapper = load_mapper(path)
    mapper.check_generator(generator)
    assert mapper.decoder_mapping["fc0.weight"].dtype == torch.float16


def test_mapper_float16_of_other_generator_rejected(generator, tmp_path):
    def halve(data):
        data["state_dict"] = {key: value.half() for key, value in data["state_dict"].items()}

    other = make_generator(SMALL_STYLEGAN2, seed=2)
    mapper = load_mapper(_edit_mapper(write_mapper_checkpoint(tmp_path / "other.pt", other), halve))
    with pytest.raises(MapperCheckpointError, match="mapping network differs"):
        mapper.check_generator(generator)


def test_mapper_decoder_missing_tensor_named(generator, tmp_path):
    path = _edit_mapper(write_mapper_checkpoint(tmp_path / "decoder.pt", generator),
                        lambda data: data["state_dict"].pop("decoder.to_rgbs.0.conv.weight"))
    message = _mapper_error(path)
    assert f"{path}: the mapper's embedded generator (decoder.*) is incomplete or malformed" in message
    assert "tensor decoder.to_rgbs.0.conv.weight is missing" in message
    assert "Supported formats" not in message


def test_mapper_decoder_missing_style_bias_named(generator, tmp_path):
    path = _edit_mapper(write_mapper_checkpoint(tmp_path / "bias.pt", generator),
                        lambda data: data["state_dict"].pop("decoder.style.2.bias"))
    message = _mapper_error(path)
    assert "tensor decoder.style.2.bias is missing" in message


def test_mapper_decoder_bad_shape_named(generator, tmp_path):
    key = "decoder.convs.0.conv.weight"
    path = _edit_mapper(write_mapper_checkpoint(tmp_path / "shape.pt", generator),
                        lambda data: data["state_dict"].update({key: data["state_dict"][key][0]}))
    message = _mapper_error(path)
    assert f"{key} has shape [16, 16, 3, 3], expected 5 dimensions" in message


# ---------------------------------------------------------------------------------------------------------------------
# CLIP files.


@pytest.mark.parametrize("text,expected", [
    ('{"model_cfg": {"embed_dim": 32,', " is not valid JSON"),
    ("[]", " contains a JSON array"),
    ('{"preprocess_cfg": {}}', " has no model_cfg with embed_dim, vision_cfg and text_cfg"),
    ('{"model_cfg": {"embed_dim": "32", "vision_cfg": {}, "text_cfg": {}}}', ": embed_dim is '32'; expected a whole"),
    ('{"model_cfg": {"embed_dim": 32, "text_cfg": {}}}', ": model_cfg.vision_cfg is missing; expected an object"),
])
def test_clip_config_damaged_rejected(tmp_path, text, expected):
    weights = write_tiny_clip(tmp_path / "tiny", seed=0, config=SMALL_CLIP_CONFIG)
    config_path = weights.parent / CONFIG_FILE_NAME
    config_path.write_text(text)
    with pytest.raises(CLIPLoadError) as error:
        load_clip(weights)
    assert f"{config_path}{expected}" in str(error.value)


def test_clip_text_file_rejected(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(CLIPLoadError) as error:
        load_clip(path)
    assert f"{path} is not a readable PyTorch checkpoint" in str(error.value)


def test_clip_with_code_rejected(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(pickle.dumps(SystemCall(), protocol=2))
    with pytest.raises(CLIPLoadError) as error:
        load_clip(path)
    message = str(error.value)
    assert f"{path} contains a reference to {os.system.__module__}.system, which is code, not tensors" in message
    assert "weights_only" not in message


def test_clip_garbage_safetensors_rejected(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"garbage" * 20)
    with pytest.raises(CLIPLoadError) as error:
        load_clip(path)
    assert f"{path} is not a valid safetensors file" in str(error.value)
