"""Latent files (.safetensors, .pt, .npy, projector .npz) and latents stored in PNG images."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.latent_io import (
    PNG_LATENT_KEY,
    LatentFileError,
    load_latent,
    read_png_latent,
    save_images_with_latent,
    save_latent,
    save_latent_numbered,
)
from stylebridge.models.latents import LatentMismatchError, StyleGANLatent
from stylebridge.models.sampling import generate_images, sample_w
from stylebridge.nodes.latent import LoadLatentFromImage, LoadStyleGANLatent, SaveStyleGANImage, SaveStyleGANLatent
from stylebridge.runtime.core_nodes import SaveImage


class NotATensor:
    """A class outside torch's weights_only allow-list, to check that loading it is rejected."""


def shifted(latent):
    return StyleGANLatent(latent.w + 1, latent.space, latent.num_ws, latent.w_dim, latent.fingerprint)


@pytest.fixture
def w_latent(tiny_generator):
    return sample_w(tiny_generator, seed=3, batch_size=2)


@pytest.fixture
def w_plus_latent(tiny_generator):
    return sample_w(tiny_generator, seed=4, batch_size=2, truncation_psi=0.5, truncation_cutoff=3)


# ---------------------------------------------------------------------------------------------------------------------
# Files.


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
@pytest.mark.parametrize("latent_name", ["w_latent", "w_plus_latent"])
def test_round_trip_keeps_latent_and_fingerprint(tmp_path, request, suffix, latent_name):
    latent = request.getfixturevalue(latent_name)
    path = save_latent(latent, tmp_path / f"latent{suffix}")
    loaded = load_latent(path)
    assert torch.equal(loaded.w, latent.w)
    assert loaded.space == latent.space
    assert loaded.fingerprint == latent.fingerprint
    assert (loaded.num_ws, loaded.w_dim) == (latent.num_ws, latent.w_dim)
    assert loaded.meta["seeds"] == latent.meta["seeds"]


@pytest.mark.parametrize("latent_name", ["w_latent", "w_plus_latent"])
def test_npy_round_trip_adopts_generator_fingerprint(tmp_path, request, tiny_generator, latent_name):
    latent = request.getfixturevalue(latent_name)
    path = save_latent(latent, tmp_path / "latent.npy")
    loaded = load_latent(path, tiny_generator)
    assert torch.equal(loaded.w, latent.w)
    assert loaded.space == latent.space
    assert loaded.fingerprint == tiny_generator.fingerprint


def test_npy_without_generator_asks_for_one(tmp_path, w_latent):
    path = save_latent(w_latent, tmp_path / "latent.npy")
    with pytest.raises(LatentFileError, match=r"contains a raw array \[2, 32\] without a generator fingerprint; "
                                              r"connect the generator"):
        load_latent(path)


def test_npy_of_wrong_shape_names_both_shapes(tmp_path, tiny_generator):
    np.save(tmp_path / "e4e.npy", np.zeros((1, 18, 512), np.float32))
    with pytest.raises(LatentFileError, match=r"array of shape \[1, 18, 512\], but the connected generator takes "
                                              r"\[B, 32\] \(W\) or \[B, 8, 32\] \(W\+\)"):
        load_latent(tmp_path / "e4e.npy", tiny_generator)


def test_projector_npz_loads_as_w_plus(tmp_path, tiny_generator):
    projected = np.random.RandomState(0).randn(1, tiny_generator.num_ws, tiny_generator.w_dim).astype(np.float32)
    np.savez(tmp_path / "projected_w.npz", w=projected)
    latent = load_latent(tmp_path / "projected_w.npz", tiny_generator)
    assert latent.space == "W+"
    assert torch.equal(latent.w, torch.from_numpy(projected))


def test_load_with_other_generator_is_rejected(tmp_path, w_latent, tiny_config):
    other = make_generator(tiny_config, seed=9)
    path = save_latent(w_latent, tmp_path / "latent.safetensors")
    with pytest.raises(LatentMismatchError, match="Load: the latent was made by generator"):
        load_latent(path, other, where="Load")


def test_save_latent_never_overwrites(tmp_path, w_latent):
    path = save_latent(w_latent, tmp_path / "latent.pt")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_latent(shifted(w_latent), path)
    assert path.read_bytes() == before


def test_numbered_save_picks_next_free_name(tmp_path, w_latent):
    first = save_latent_numbered(w_latent, tmp_path, "latents/walk", "safetensors")
    second = save_latent_numbered(w_latent, tmp_path, "latents/walk", "npy")
    assert first == tmp_path / "latents" / "walk_00001_.safetensors"
    assert second == tmp_path / "latents" / "walk_00002_.npy"


def test_numbered_save_rejects_prefix_outside_folder(tmp_path, w_latent):
    with pytest.raises(ValueError, match="points outside the output folder"):
        save_latent_numbered(w_latent, tmp_path, "../escape", "pt")


def test_save_rejects_unknown_suffix(tmp_path, w_latent):
    with pytest.raises(ValueError, match=r"latents are saved as .safetensors, .pt, .npy"):
        save_latent(w_latent, tmp_path / "latent.json")


def test_npy_with_nan_rejected(tmp_path, tiny_generator):
    path = tmp_path / "nan.npy"
    np.save(path, np.full((1, tiny_generator.w_dim), np.nan, dtype=np.float32))
    with pytest.raises(LatentFileError, match=f"{path} contains {tiny_generator.w_dim} NaN or infinite values"):
        load_latent(path, tiny_generator)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_pt_rejected_with_path(tmp_path, fraction):
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(1, 32)}, whole)
    data = whole.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(LatentFileError, match=f"{path} is not a readable PyTorch checkpoint"):
        load_latent(path)


def test_npy_object_array_rejected(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"w": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LatentFileError) as error:
        load_latent(path)
    assert f"{path} is not a valid latent file: it contains an object array, which only pickle can load" in \
        str(error.value)
    assert "allow_pickle=True" not in str(error.value)


def test_pt_with_arbitrary_object_rejected(tmp_path):
    torch.save({"w": torch.zeros(1, 32), "payload": NotATensor()}, tmp_path / "unsafe.pt")
    with pytest.raises(LatentFileError) as error:
        load_latent(tmp_path / "unsafe.pt")
    assert "unsafe.pt contains a reference to test_latent_io.NotATensor, which is code, not tensors" in \
        str(error.value)
    assert "weights_only=False" not in str(error.value)


def test_damaged_safetensors_is_reported(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(LatentFileError, match="is not a valid safetensors latent"):
        load_latent(tmp_path / "broken.safetensors")


# ---------------------------------------------------------------------------------------------------------------------
# Nodes for files.


def test_save_and_load_latent_nodes(stylebridge_home, w_plus_latent, tiny_generator):
    result = SaveStyleGANLatent().save(w_plus_latent, "latents/portrait", "safetensors")
    entry = result["ui"]["latents"][0]
    assert entry == {"filename": "portrait_00001_.safetensors", "subfolder": "latents", "type": "output"}
    name = "latents/portrait_00001_.safetensors [output]"
    assert LoadStyleGANLatent.VALIDATE_INPUTS(name) is True
    (loaded,) = LoadStyleGANLatent().load(name, generator=tiny_generator)
    assert torch.equal(loaded.w, w_plus_latent.w)


def test_load_latent_node_lists_input_files(stylebridge_home, w_latent):
    input_folder = stylebridge_home / "input"
    save_latent(w_latent, input_folder / "a.pt")
    save_latent(w_latent, input_folder / "sub" / "b.npy")
    (input_folder / "photo.png").write_bytes(b"")
    choices = LoadStyleGANLatent.INPUT_TYPES()["required"]["latent_file"][0]
    assert choices == ["a.pt", "sub/b.npy"]


def test_load_latent_node_reports_missing_file(stylebridge_home):
    message = LoadStyleGANLatent.VALIDATE_INPUTS("absent.pt")
    assert message.startswith("LoadStyleGANLatent latent_file: Latent file not found:")


# ---------------------------------------------------------------------------------------------------------------------
# PNG images.


def test_png_round_trip_per_image(stylebridge_home, tiny_generator, w_plus_latent):
    images = generate_images(tiny_generator, w_plus_latent)
    result = SaveStyleGANImage().save(images, w_plus_latent, "faces", prompt={"1": {}})
    names = [entry["filename"] for entry in result["ui"]["images"]]
    assert names == ["faces_00001_.png", "faces_00002_.png"]
    for index, name in enumerate(names):
        (loaded,) = LoadLatentFromImage().load(f"{name} [output]", generator=tiny_generator)
        assert torch.equal(loaded.w[0], w_plus_latent.w[index])
        assert loaded.space == "W+"
        assert loaded.fingerprint == tiny_generator.fingerprint
    with Image.open(stylebridge_home / "output" / names[0]) as picture:
        assert json.loads(picture.text["prompt"]) == {"1": {}}
        record = json.loads(picture.text[PNG_LATENT_KEY])
        assert record["encoding"] == "safetensors+base64"


def test_png_saved_pixels_match_images(stylebridge_home, tiny_generator, w_latent):
    images = generate_images(tiny_generator, w_latent)
    entries = save_images_with_latent(images, w_latent, "pixels", stylebridge_home / "output")
    with Image.open(stylebridge_home / "output" / entries[1]["filename"]) as picture:
        saved = np.asarray(picture)
    expected = np.clip(255.0 * images[1].numpy(), 0, 255).astype(np.uint8)
    assert np.array_equal(saved, expected)


def test_png_single_latent_is_stored_with_every_image(stylebridge_home, tiny_generator):
    latent = sample_w(tiny_generator, seed=8)
    images = torch.zeros(3, 8, 8, 3)
    entries = save_images_with_latent(images, latent, "shared", stylebridge_home / "output")
    for entry in entries:
        loaded = read_png_latent(stylebridge_home / "output" / entry["filename"])
        assert torch.equal(loaded.w, latent.w)


def test_png_latent_batch_mismatch_rejected(stylebridge_home, w_latent):
    with pytest.raises(ValueError, match="SaveStyleGANImage: 3 images but 2 latents"):
        SaveStyleGANImage().save(torch.zeros(3, 8, 8, 3), w_latent, "bad")


def test_png_without_latent_gives_clear_error(stylebridge_home):
    SaveImage().save_images(torch.zeros(1, 8, 8, 3), "plain")
    with pytest.raises(LatentFileError, match="LoadLatentFromImage: plain_00001_.png carries no StyleBridge latent "
                                              "\\(no 'stylebridge_latent' text chunk\\)"):
        LoadLatentFromImage().load("plain_00001_.png [output]")


def test_png_latent_of_other_generator_rejected(stylebridge_home, w_latent, tiny_config):
    other = make_generator(tiny_config, seed=9)
    save_images_with_latent(torch.zeros(2, 8, 8, 3), w_latent, "mismatch", stylebridge_home / "output")
    with pytest.raises(LatentMismatchError, match="LoadLatentFromImage: the latent was made by generator"):
        LoadLatentFromImage().load("mismatch_00001_.png [output]", generator=other)


def test_png_save_never_overwrites(stylebridge_home, w_latent):
    output = stylebridge_home / "output"
    output.mkdir(parents=True)
    (output / "keep_00001_.png").write_bytes(b"existing")
    entries = save_images_with_latent(torch.zeros(2, 8, 8, 3), w_latent, "keep", output)
    assert [entry["filename"] for entry in entries] == ["keep_00002_.png", "keep_00003_.png"]
    assert (output / "keep_00001_.png").read_bytes() == b"existing"
