"""Shared test setup: every test gets its own STYLEBRIDGE_HOME, and nothing reaches a model hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("STYLEBRIDGE_STANDALONE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def stylebridge_home(tmp_path, monkeypatch):
    """A fresh STYLEBRIDGE_HOME (models/, input/, output/) under the test's tmp_path."""
    home = tmp_path / "stylebridge_home"
    home.mkdir()
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_config():
    from stylebridge.models.stylegan2 import StyleGAN2Config

    return StyleGAN2Config(z_dim=32, w_dim=32, img_resolution=32, channels=[64, 64, 32, 16], architecture="skip",
                           conv_clamp=None, num_fp16_res=0, mapping_layers=3)


@pytest.fixture(scope="session")
def tiny_generator(tiny_config):
    from stylebridge.models.checkpoint_writers import make_generator

    return make_generator(tiny_config, seed=0)
