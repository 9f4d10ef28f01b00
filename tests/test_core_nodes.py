"""Standalone LoadImage, SaveImage and PreviewImage (runtime.core_nodes)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from runner_fixtures import make_registry

from stylebridge.runtime import core_nodes, host
from stylebridge.runtime.core_nodes import LoadImage, PreviewImage, SaveImage
from stylebridge.runtime.executor import Executor


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(tmp_path))
    (tmp_path / "input").mkdir()
    return tmp_path


def load(name: str):
    images, masks = LoadImage().load_image(name)
    return images, masks


# ---------------------------------------------------------------------------------------------------------------------
# LoadImage.


def test_load_rgb_values(home):
    pixels = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)  # 1 row, 2 columns
    Image.fromarray(pixels).save(home / "input" / "rgb.png")
    images, masks = load("rgb.png")
    assert images.shape == (1, 1, 2, 3)
    assert images.dtype == torch.float32
    assert torch.allclose(images[0], torch.from_numpy(pixels.astype(np.float32) / 255.0))
    assert masks.shape == (1, 64, 64)  # no alpha: ComfyUI's 64x64 zero mask
    assert masks.abs().sum() == 0


def test_load_grayscale_becomes_rgb(home):
    Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8), mode="L").save(home / "input" / "gray.png")
    images, _ = load("gray.png")
    assert images.shape == (1, 1, 3, 3)
    assert torch.allclose(images[0, 0, :, 0], torch.tensor([0.0, 0.2, 1.0]))
    assert torch.equal(images[..., 0], images[..., 1])
    assert torch.equal(images[..., 0], images[..., 2])


def test_load_rgba_mask_is_inverted_alpha(home):
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[..., 3] = [[255, 0], [51, 255]]
    Image.fromarray(pixels, mode="RGBA").save(home / "input" / "alpha.png")
    images, masks = load("alpha.png")
    assert images.shape == (1, 2, 2, 3)
    assert masks.shape == (1, 2, 2)
    assert torch.allclose(masks[0], torch.tensor([[0.0, 1.0], [0.8, 0.0]]))


def test_load_palette_transparency_gives_mask(home):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    image.save(home / "input" / "palette.png", transparency=0)
    _, masks = load("palette.png")
    assert torch.equal(masks[0], torch.tensor([[1.0, 0.0]]))


def test_load_16bit_grayscale(home):
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(home / "input" / "deep.png")
    images, _ = load("deep.png")
    assert torch.allclose(images[0, 0, :, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_load_applies_exif_rotation(home):
    image = Image.new("RGB", (3, 2))
    image.putpixel((2, 0), (255, 0, 0))  # top right
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(home / "input" / "rotated.png", exif=exif)
    images, _ = load("rotated.png")
    assert images.shape == (1, 3, 2, 3)  # width and height swapped
    assert images[0, 2, 1, 0] == 1.0  # the red pixel is now bottom right
    assert images[..., 0].sum() == 1.0


def test_load_animation_as_batch(home):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (4, 4), colour) for colour in colours]
    frames[0].save(home / "input" / "anim.gif", save_all=True, append_images=frames[1:])
    images, masks = load("anim.gif")
    assert images.shape == (3, 4, 4, 3)
    assert masks.shape[0] == 3
    assert torch.argmax(images[:, 0, 0, :], dim=1).tolist() == [0, 1, 2]


def test_load_skips_frames_of_other_size(home):
    first, odd, third = Image.new("RGB", (4, 4)), Image.new("RGB", (2, 2)), Image.new("RGB", (4, 4), (255, 0, 0))
    first.save(home / "input" / "pages.tiff", save_all=True, append_images=[odd, third])
    images, _ = load("pages.tiff")
    assert images.shape == (2, 4, 4, 3)
    assert images[1, 0, 0, 0] == 1.0


def test_input_types_list_images(home):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (home / "input" / name).write_bytes(b"x")
    (home / "input" / "folder.png").mkdir()
    choices = LoadImage.INPUT_TYPES()["required"]["image"]
    assert choices[0] == ["a.jpg", "b.png"]
    assert choices[1]["image_upload"] is True


def test_is_changed_follows_file_content(home):
    path = home / "input" / "x.png"
    Image.new("RGB", (2, 2), (1, 2, 3)).save(path)
    first = LoadImage.IS_CHANGED("x.png")
    assert LoadImage.IS_CHANGED("x.png") == first
    Image.new("RGB", (2, 2), (9, 9, 9)).save(path)
    assert LoadImage.IS_CHANGED("x.png") != first


def test_validate_inputs(home):
    Image.new("RGB", (2, 2)).save(home / "input" / "ok.png")
    (home / "output").mkdir()
    Image.new("RGB", (2, 2)).save(home / "output" / "made.png")
    assert LoadImage.VALIDATE_INPUTS("ok.png") is True
    assert LoadImage.VALIDATE_INPUTS("made.png [output]") is True
    missing = LoadImage.VALIDATE_INPUTS("missing.png")
    assert missing.startswith("Invalid image file: Image file not found")
    assert "outside the folder" in LoadImage.VALIDATE_INPUTS("../secret.png")
    assert "absolute path" in LoadImage.VALIDATE_INPUTS(str(home / "input" / "ok.png"))


# ---------------------------------------------------------------------------------------------------------------------
# SaveImage and PreviewImage.


def gradient(batch: int = 1, height: int = 4, width: int = 6) -> torch.Tensor:
    values = torch.linspace(0, 1, height * width * 3).reshape(1, height, width, 3)
    return values.repeat(batch, 1, 1, 1)


def test_save_names_and_ui_entries(home):
    result = SaveImage().save_images(gradient(batch=2), "ComfyUI")
    assert result == {"ui": {"images": [
        {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "ComfyUI_00002_.png", "subfolder": "", "type": "output"},
    ]}}
    assert (home / "output" / "ComfyUI_00001_.png").is_file()
    assert (home / "output" / "ComfyUI_00002_.png").is_file()


def test_save_counter_continues_after_existing(home):
    (home / "output").mkdir()
    (home / "output" / "face_00007_.png").write_bytes(b"old")
    (home / "output" / "faceless_00099_.png").write_bytes(b"other prefix")
    result = SaveImage().save_images(gradient(), "face")
    assert result["ui"]["images"][0]["filename"] == "face_00008_.png"


def test_save_never_overwrites(home, monkeypatch):
    # Another process creates the file between the folder scan and the write: the counter must move on.
    (home / "output").mkdir()
    taken = home / "output" / "ComfyUI_00001_.png"
    taken.write_bytes(b"someone else's file")
    monkeypatch.setattr(core_nodes, "_next_counter", lambda folder, name: 1)
    result = SaveImage().save_images(gradient(), "ComfyUI")
    assert taken.read_bytes() == b"someone else's file"
    assert result["ui"]["images"][0]["filename"] == "ComfyUI_00002_.png"
    assert (home / "output" / "ComfyUI_00002_.png").is_file()


def test_save_subfolder_from_prefix(home):
    result = SaveImage().save_images(gradient(), "portraits/face")
    assert result["ui"]["images"] == [{"filename": "face_00001_.png", "subfolder": "portraits", "type": "output"}]
    assert (home / "output" / "portraits" / "face_00001_.png").is_file()


def test_save_prefix_variables(home):
    result = SaveImage().save_images(gradient(batch=2, height=4, width=6), "size_%width%x%height%_b%batch_num%")
    names = [entry["filename"] for entry in result["ui"]["images"]]
    assert names == ["size_6x4_b0_00001_.png", "size_6x4_b1_00002_.png"]


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/escape", "..", "a/..", ""])
def test_save_rejects_prefix_outside_output(home, prefix):
    with pytest.raises(ValueError, match="filename_prefix"):
        SaveImage().save_images(gradient(), prefix)
    assert isinstance(SaveImage.VALIDATE_INPUTS(filename_prefix=prefix), str)
    written = [path for path in home.rglob("*.png")]
    assert written == []


def test_save_rejects_symlink_out_of_output(home, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (home / "output").mkdir()
    os.symlink(outside, home / "output" / "link")
    with pytest.raises(ValueError, match="outside the output folder"):
        SaveImage().save_images(gradient(), "link/face")
    assert list(outside.iterdir()) == []


def test_save_embeds_prompt_and_workflow(home):
    prompt = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    workflow = {"nodes": [], "links": [], "version": 0.4}
    SaveImage().save_images(gradient(), "meta", prompt=prompt, extra_pnginfo={"workflow": workflow})
    with Image.open(home / "output" / "meta_00001_.png") as saved:
        assert json.loads(saved.text["prompt"]) == prompt
        assert json.loads(saved.text["workflow"]) == workflow


def test_save_pixels_match_comfyui_rounding(home):
    image = torch.tensor([[[[0.0, 0.5, 1.0], [0.999, 0.2, -1.0]]]])
    SaveImage().save_images(image, "pixels")
    with Image.open(home / "output" / "pixels_00001_.png") as saved:
        array = np.asarray(saved)
    expected = np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8)  # ComfyUI truncates
    assert np.array_equal(array, expected)


def test_save_then_load_round_trip(home):
    image = torch.rand(1, 5, 7, 3)
    SaveImage().save_images(image, "round")
    (home / "input" / "round.png").write_bytes((home / "output" / "round_00001_.png").read_bytes())
    loaded, _ = load("round.png")
    assert loaded.shape == image.shape
    assert torch.max(torch.abs(loaded - image)) <= 1.0 / 255.0 + 1e-6


def test_save_rejects_bad_shape(home):
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        SaveImage().save_images(torch.zeros(1, 4, 4, 2), "bad")


def test_preview_writes_temp_files(home):
    node = PreviewImage()
    result = node.save_images(gradient())
    entry = result["ui"]["images"][0]
    assert entry["type"] == "temp"
    assert entry["subfolder"] == ""
    assert entry["filename"].startswith("ComfyUI_temp_")
    assert (home / "temp" / entry["filename"]).is_file()
    assert not (home / "output").exists()


def test_load_save_through_executor(home):
    Image.new("RGB", (3, 3), (10, 200, 30)).save(home / "input" / "in.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "out"}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    executor = Executor(make_registry())
    result = executor.execute(prompt)
    assert result.status == "success"
    assert result.ui_outputs["2"]["images"][0]["filename"] == "out_00001_.png"
    assert result.ui_outputs["3"]["images"][0]["type"] == "temp"

    # Unchanged file: nothing runs again. A changed file (same name) re-runs the loader and the savers.
    assert executor.execute(prompt).executed == []
    Image.new("RGB", (3, 3), (0, 0, 0)).save(home / "input" / "in.png")
    assert executor.execute(prompt).executed == ["1", "2", "3"]
    assert host.output_dir() == home / "output"
