"""The safetensors cache of pickles: written on first load, keyed by content, never stale, source untouched."""

import os

import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator, write_nvidia_pickle
from stylebridge.models.checkpoints import (
    cached_safetensors_path,
    clear_cache,
    file_sha256,
    load_stylegan,
    read_generator_cached,
)


@pytest.fixture
def pickle_path(tmp_path, tiny_generator):
    clear_cache()
    return write_nvidia_pickle(tiny_generator, tmp_path / "g.pkl")


def _render(generator):
    z = torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(0))
    return generator(z, None, noise_mode="const")


def test_first_load_writes_cache_named_by_content(pickle_path, tmp_path):
    cache = tmp_path / "cache"
    read_generator_cached(pickle_path, cache)
    assert [p.name for p in cache.iterdir()] == [f"{file_sha256(pickle_path)}.safetensors"]


def test_second_load_reads_cache_with_same_output(pickle_path, tmp_path, tiny_generator):
    cache = tmp_path / "cache"
    first = read_generator_cached(pickle_path, cache)
    second = read_generator_cached(pickle_path, cache)
    assert first.source["format"] == "nvidia-pickle"
    assert second.source["format"] == "safetensors-cache"
    assert torch.equal(_render(second), _render(tiny_generator))


def test_source_file_is_never_modified(pickle_path, tmp_path):
    before = (pickle_path.read_bytes(), pickle_path.stat().st_mtime_ns)
    read_generator_cached(pickle_path, tmp_path / "cache")
    read_generator_cached(pickle_path, tmp_path / "cache")
    assert (pickle_path.read_bytes(), pickle_path.stat().st_mtime_ns) == before


def test_replaced_source_gets_new_cache_entry(pickle_path, tmp_path, tiny_config):
    cache = tmp_path / "cache"
    read_generator_cached(pickle_path, cache)
    other = make_generator(tiny_config, seed=42)
    pickle_path.unlink()
    write_nvidia_pickle(other, pickle_path)
    loaded = read_generator_cached(pickle_path, cache)
    assert loaded.fingerprint == other.fingerprint
    assert len(list(cache.iterdir())) == 2


def test_damaged_cache_file_is_ignored(pickle_path, tmp_path, tiny_generator, caplog):
    cache = tmp_path / "cache"
    entry = cached_safetensors_path(pickle_path, cache)
    entry.parent.mkdir()
    entry.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    loaded = read_generator_cached(pickle_path, cache)
    assert loaded.fingerprint == tiny_generator.fingerprint
    assert "Ignoring damaged cache file" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_cache_folder_still_loads(pickle_path, tmp_path, tiny_generator):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    assert read_generator_cached(pickle_path, cache).fingerprint == tiny_generator.fingerprint


def test_cache_folder_that_is_a_file_still_loads(pickle_path, tmp_path, tiny_generator, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    assert read_generator_cached(pickle_path, blocker).fingerprint == tiny_generator.fingerprint
    assert "Could not write the safetensors cache" in caplog.text


def test_load_stylegan_uses_host_cache_dir(pickle_path, stylebridge_home):
    load_stylegan(pickle_path)
    entries = list((stylebridge_home / "cache" / "stylegan").iterdir())
    assert [p.suffix for p in entries] == [".safetensors"]


def test_load_stylegan_without_cache_writes_nothing(pickle_path, stylebridge_home):
    load_stylegan(pickle_path, use_cache=False)
    assert not (stylebridge_home / "cache").exists()
