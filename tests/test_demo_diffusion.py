"""The tiny untrained Stable Diffusion folder: deterministic, small, marked untrained, with a working tokenizer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from stylebridge.models.demo_diffusion import BOS_TOKEN, EOS_TOKEN, MAX_TOKENS, write_tiny_sd_pipeline

WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {
        "first": write_tiny_sd_pipeline(root / "first", seed=0),
        "again": write_tiny_sd_pipeline(root / "again", seed=0),
        "other": write_tiny_sd_pipeline(root / "other", seed=1),
    }


@pytest.mark.parametrize("name", WEIGHT_FILES)
def test_same_seed_gives_identical_files(written, name):
    assert (written["first"] / name).read_bytes() == (written["again"] / name).read_bytes()


def test_same_seed_gives_identical_folders(written):
    first_files = sorted(p.relative_to(written["first"]) for p in written["first"].rglob("*") if p.is_file())
    again_files = sorted(p.relative_to(written["again"]) for p in written["again"].rglob("*") if p.is_file())
    assert first_files == again_files
    for relative in first_files:
        assert (written["first"] / relative).read_bytes() == (written["again"] / relative).read_bytes(), relative


@pytest.mark.parametrize("name", WEIGHT_FILES)
def test_other_seed_gives_other_weights(written, name):
    first = load_file(written["first"] / name)
    other = load_file(written["other"] / name)
    assert first.keys() == other.keys()
    assert any(not torch.equal(first[key], other[key]) for key in first if first[key].numel() > 1)


def test_folder_is_small(written):
    total_bytes = sum(p.stat().st_size for p in written["first"].rglob("*") if p.is_file())
    assert total_bytes < 8 * 2**20


def test_folder_has_sd_layout(written):
    index = json.loads((written["first"] / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (written["first"] / component).is_dir(), component


def test_readme_marks_untrained(written):
    readme = (written["first"] / "README.md").read_text()
    assert "UNTRAINED" in readme
    assert "seed 0" in readme


def test_writing_keeps_global_random_state(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    write_tiny_sd_pipeline(tmp_path / "tiny", seed=5)
    assert torch.equal(torch.rand(4), expected)


def test_merges_file_has_only_header(written):
    assert (written["first"] / "tokenizer" / "merges.txt").read_text() == "#version: 0.2\n"


def test_vocabulary_has_bytes_and_special_tokens(written):
    vocabulary = json.loads((written["first"] / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocabulary) == 2 * 256 + 2
    assert vocabulary[BOS_TOKEN] == 512
    assert vocabulary[EOS_TOKEN] == 513
    assert "a</w>" in vocabulary


def test_tokenizer_from_vocab_files_alone(written, tmp_path):
    # Loaders that ignore tokenizer.json build the tokenizer from vocab.json and merges.txt; both must agree.
    files_only = shutil.copytree(written["first"] / "tokenizer", tmp_path / "tokenizer")
    (files_only / "tokenizer.json").unlink()
    from_files = CLIPTokenizer.from_pretrained(files_only)
    from_json = CLIPTokenizer.from_pretrained(written["first"] / "tokenizer")
    prompt = "A watercolor of Zürich, 2024 — naïve style 🎨"
    assert from_files(prompt).input_ids == from_json(prompt).input_ids


def test_tokenizer_pads_to_clip_length(written):
    tokenizer = CLIPTokenizer.from_pretrained(written["first"] / "tokenizer")
    ids = tokenizer("a fox", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert tokenizer.model_max_length == MAX_TOKENS
    assert len(ids) == MAX_TOKENS
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1:6] == tokenizer.convert_tokens_to_ids(["a</w>", "f", "o", "x</w>", EOS_TOKEN])
