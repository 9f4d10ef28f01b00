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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one torch thread. Their networks are so small that a second thread only adds
    synchronisation: 50 projector steps on the tiny generator took 0.6 s on one thread and 1.8 s on two (2 cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_config():
    from stylebridge.models.stylegan2 import StyleGAN2Config

    return StyleGAN2Config(z_dim=32, w_dim=32, img_resolution=32, channels=[64, 64, 32, 16], architecture="skip",
                           conv_clamp=None, num_fp16_res=0, mapping_layers=3)


@pytest.fixture(scope="session")
def tiny_generator(tiny_config):
    from stylebridge.models.checkpoint_writers import make_generator

    return make_generator(tiny_config, seed=0)


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """An untrained CLIP model small enough for tests (model_helpers.SMALL_CLIP_CONFIG)."""
    from model_helpers import small_clip

    return small_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def demo_models_template(tmp_path_factory):
    """A STYLEBRIDGE_HOME with every demo model, written once per test session; copy it, never change it."""
    from stylebridge.models.demo import write_demo_models

    home = tmp_path_factory.mktemp("demo_template")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLEBRIDGE_HOME", str(home))
        write_demo_models()
    return home


@pytest.fixture(scope="session")
def make_demo_home(demo_models_template, tmp_path_factory):
    """Return a function that makes a new home named `name` holding a copy of the demo models."""
    import shutil

    def make(name: str):
        home = tmp_path_factory.mktemp(name)
        shutil.copytree(demo_models_template / "models", home / "models")
        return home

    return make
