"""Standalone SaveAnimatedWEBP and SaveAnimatedPNG: frames, timing, embedded prompt and workflow, no overwrite."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from stylebridge.runtime import core_nodes
from stylebridge.runtime.core_nodes import SaveAnimatedPNG, SaveAnimatedWEBP

PROMPT = {"1": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": "x"}}}
WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture
def output(stylebridge_home):
    return stylebridge_home / "output"


def frames(count: int = 3) -> torch.Tensor:
    """Build an IMAGE batch [count, 6, 8, 3] of distinct frames on the 8-bit grid, so lossless saving is exact."""
    values = torch.arange(count * 6 * 8 * 3, dtype=torch.float32).reshape(count, 6, 8, 3)
    return (values * 7 % 256) / 255.0


def saved_frames(path) -> list[np.ndarray]:
    with Image.open(path) as animation:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(animation)]


def expected_frames(images: torch.Tensor) -> list[np.ndarray]:
    return [np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8) for image in images]


def png_chunks(path) -> list[tuple[bytes, bytes]]:
    """Return (type, data) of every chunk of a PNG file, checking each CRC."""
    data = path.read_bytes()[8:]
    chunks = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        chunk_type, body = data[4:8], data[8:8 + length]
        assert struct.unpack(">I", data[8 + length:12 + length])[0] == zlib.crc32(chunk_type + body)
        chunks.append((chunk_type, body))
        data = data[12 + length:]
    return chunks


def test_webp_holds_every_frame_losslessly(output):
    images = frames()
    result = SaveAnimatedWEBP().save_images(images, 6.0, "sweep")
    assert result == {"ui": {"images": [{"filename": "sweep_00001_.webp", "subfolder": "", "type": "output"}],
                             "animated": (True,)}}
    decoded = saved_frames(output / "sweep_00001_.webp")
    assert len(decoded) == 3
    for got, expected in zip(decoded, expected_frames(images), strict=True):
        assert np.array_equal(got, expected)


def test_webp_frame_duration_follows_fps(output):
    SaveAnimatedWEBP().save_images(frames(), 8.0, "timing")
    with Image.open(output / "timing_00001_.webp") as animation:
        durations = []
        for frame in ImageSequence.Iterator(animation):
            frame.load()
            durations.append(frame.info["duration"])
    assert durations == [125, 125, 125]


def test_webp_embeds_prompt_and_workflow_in_exif(output):
    SaveAnimatedWEBP().save_images(frames(2), 6.0, "meta", prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW})
    with Image.open(output / "meta_00001_.webp") as animation:
        exif = animation.getexif()
    assert exif[0x0110] == "prompt:" + json.dumps(PROMPT)
    assert exif[0x010F] == "workflow:" + json.dumps(WORKFLOW)


def test_webp_lossy_quality_is_used(output):
    node = SaveAnimatedWEBP()
    noisy = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    node.save_images(noisy, 6.0, "lossless", lossless=True)
    node.save_images(noisy, 6.0, "lossy", lossless=False, quality=10)
    assert (output / "lossy_00001_.webp").stat().st_size < (output / "lossless_00001_.webp").stat().st_size


def test_webp_rejects_unknown_method(output):
    with pytest.raises(ValueError, match=r"method 'best' is invalid; expected one of \['default', 'fastest', "
                                         r"'slowest'\]"):
        SaveAnimatedWEBP().save_images(frames(), 6.0, "x", method="best")


def test_apng_holds_every_frame(output):
    images = frames()
    result = SaveAnimatedPNG().save_images(images, 4.0, 4, "sweep")
    assert result["ui"]["images"] == [{"filename": "sweep_00001_.png", "subfolder": "", "type": "output"}]
    decoded = saved_frames(output / "sweep_00001_.png")
    assert len(decoded) == 3
    for got, expected in zip(decoded, expected_frames(images), strict=True):
        assert np.array_equal(got, expected)


def test_apng_embeds_prompt_and_workflow_after_image_data(output):
    SaveAnimatedPNG().save_images(frames(2), 6.0, 1, "meta", prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW})
    chunks = png_chunks(output / "meta_00001_.png")
    types = [chunk_type for chunk_type, _ in chunks]
    comf = [body for chunk_type, body in chunks if chunk_type == b"comf"]
    assert comf == [b"prompt\0" + json.dumps(PROMPT).encode(), b"workflow\0" + json.dumps(WORKFLOW).encode()]
    assert types.index(b"comf") > types.index(b"IDAT")


def test_animation_never_overwrites(output, monkeypatch):
    # Another process creates the file between the folder scan and the write: the counter must move on.
    output.mkdir()
    existing = output / "sweep_00001_.webp"
    existing.write_bytes(b"someone else's file")
    monkeypatch.setattr(core_nodes, "_next_counter", lambda folder, name: 1)
    result = SaveAnimatedWEBP().save_images(frames(), 6.0, "sweep")
    assert existing.read_bytes() == b"someone else's file"
    assert result["ui"]["images"][0]["filename"] == "sweep_00002_.webp"


@pytest.mark.parametrize("fps", [0.0, -1.0, 1001.0])
def test_animation_rejects_fps_out_of_range(output, fps):
    with pytest.raises(ValueError, match=f"fps {fps} is out of range; use 0.01 to 1000"):
        SaveAnimatedPNG().save_images(frames(), fps, 4, "x")


def test_animation_rejects_prefix_outside_output(output):
    with pytest.raises(ValueError, match="points outside the output folder"):
        SaveAnimatedWEBP().save_images(frames(), 6.0, "../escape")
