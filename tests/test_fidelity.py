"""Fidelity fixture: every loader renders the committed generator to the golden images.

The golden images agree with the official stylegan3 code within 3.3e-6 (bench/fidelity.py, docs/fidelity.md).
Set STYLEBRIDGE_OFFICIAL_STYLEGAN3 to a local NVlabs/stylegan3 checkout to rerun that comparison here.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from stylebridge.models.checkpoint_writers import write_nvidia_pickle
from stylebridge.models.checkpoints import read_generator, save_safetensors

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_golden  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def golden():
    return np.load(FIXTURES / "sg2_fixture_images.npz")["images"]


@pytest.fixture(scope="module")
def fixture_generator():
    return read_generator(FIXTURES / "sg2_fixture.safetensors")


def test_fixture_config_is_the_documented_one(fixture_generator):
    assert fixture_generator.config == make_golden.CONFIG


def test_safetensors_fixture_matches_golden(fixture_generator, golden):
    assert np.abs(make_golden.render(fixture_generator) - golden).max() <= TOLERANCE


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_nvidia_pickle_matches_golden(protocol, fixture_generator, golden, tmp_path):
    path = write_nvidia_pickle(fixture_generator, tmp_path / f"fixture-p{protocol}.pkl", protocol=protocol)
    assert np.abs(make_golden.render(read_generator(path)) - golden).max() <= TOLERANCE


def test_converted_safetensors_matches_golden(fixture_generator, golden, tmp_path):
    pickle_path = write_nvidia_pickle(fixture_generator, tmp_path / "fixture.pkl")
    converted = save_safetensors(read_generator(pickle_path), tmp_path / "converted.safetensors")
    assert np.abs(make_golden.render(read_generator(converted)) - golden).max() <= TOLERANCE


@pytest.mark.skipif(not os.environ.get("STYLEBRIDGE_OFFICIAL_STYLEGAN3"),
                    reason="set STYLEBRIDGE_OFFICIAL_STYLEGAN3 to a local NVlabs/stylegan3 checkout")
def test_matches_official_implementation():
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import fidelity

    official = fidelity._import_official(Path(os.environ["STYLEBRIDGE_OFFICIAL_STYLEGAN3"]))
    rows = fidelity.check_fixture(official) + fidelity.check_pickles(official)
    worst = max(value for _, value in rows)
    assert worst <= 1e-4, rows
