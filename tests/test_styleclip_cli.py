"""Messages, streams and exit codes of `stylebridge styleclip-fs3`, run in-process on the demo models."""

import pytest

from stylebridge.cli import main as cli_main
from stylebridge.models import checkpoints, cli_styleclip, clip_models
from stylebridge.models.checkpoints import clear_cache
from stylebridge.models.clip_writers import DEMO_CLIP_FOLDER

DEMO_CLIP_NAME = f"{DEMO_CLIP_FOLDER}/open_clip_model.safetensors"
# The 4 px layer of the demo StyleGAN2 generator has 128 channels. With one image per channel and 64 images per
# batch, a chunk contains 32 channels, so the run saves its progress 4 times.
SMALL_SETTINGS = ["--num-images", "1", "--num-samples", "500", "--max-resolution", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def demo_home(make_demo_home):
    return make_demo_home("styleclip_cli_home")


@pytest.fixture
def home(demo_home, tmp_path, monkeypatch):
    """The demo models, with a cache folder of the test's own, so no test reuses another test's fs3 progress."""
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(demo_home))
    monkeypatch.setenv("STYLEBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()
    return demo_home


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the command loads the generator or CLIP."""
    def fail(*args, **kwargs):
        raise AssertionError("the command loaded a model before rejecting its arguments")

    monkeypatch.setattr(checkpoints, "load_stylegan", fail)
    monkeypatch.setattr(clip_models, "load_clip", fail)


def fs3_arguments(output, *extra, generator="demo-untrained-sg2-64.pkl"):
    return ["styleclip-fs3", generator, DEMO_CLIP_NAME, "-o", str(output), *SMALL_SETTINGS, *extra]


def interrupt_after_first_report(monkeypatch):
    """Make the progress callback raise KeyboardInterrupt, as Ctrl-C does, after the first saved chunk."""
    class InterruptingPrinter(cli_styleclip.ProgressPrinter):
        def __call__(self, done, total):
            super().__call__(done, total)
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_styleclip, "ProgressPrinter", InterruptingPrinter)


@pytest.mark.parametrize(("arguments", "expected"), [
    pytest.param(["--num-images", "0"], "--num-images must be between 1 and 10000, got 0.", id="num-images-low"),
    pytest.param(["--num-images", "10001"], "--num-images must be between 1 and 10000, got 10001.",
                 id="num-images-high"),
    pytest.param(["--num-samples", "1"], "--num-samples must be between 2 and 10000000, got 1.", id="num-samples-low"),
    pytest.param(["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1.", id="seed-negative"),
    pytest.param(["--truncation-psi", "5"], "--truncation-psi must be between 0.0 and 1.0, got 5.0.",
                 id="truncation-psi-high"),
    pytest.param(["--truncation-psi", "-0.1"], "--truncation-psi must be between 0.0 and 1.0, got -0.1.",
                 id="truncation-psi-negative"),
    pytest.param(["--truncation-psi", "nan"], "--truncation-psi must be between 0.0 and 1.0, got nan.",
                 id="truncation-psi-nan"),
    pytest.param(["--max-resolution", "5000"], "--max-resolution must be between 0 and 4096, got 5000.",
                 id="max-resolution-high"),
    pytest.param(["--batch-size", "1"], "--batch-size must be between 2 and 4096, got 1.", id="batch-size-low"),
    pytest.param(["--num-images", "600", "--num-samples", "500"],
                 "--num-images 600 is larger than --num-samples 500.", id="num-images-above-num-samples"),
    pytest.param(["--device", "gpu0"], "--device 'gpu0' is invalid. Expected auto, cpu, cuda or cuda:N",
                 id="device-gpu0"),
    pytest.param(["--device", "cuda:first"], "--device 'cuda:first' is invalid.", id="device-cuda-no-index"),
])
def test_invalid_argument_rejected_before_loading(arguments, expected, tmp_path, capsys, no_model_loading):
    command = ["styleclip-fs3", "missing.pkl", "missing.pt", "-o", str(tmp_path / "out"),
               "--num-images", "1", "--num-samples", "500", "--max-resolution", "4", *arguments]
    assert cli_main(command) == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert captured.err.startswith("error: ")
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_output_file_rejected(tmp_path, capsys, no_model_loading):
    output = tmp_path / "fs3.npy"
    output.write_text("not a folder")
    assert cli_main(["styleclip-fs3", "missing.pkl", "missing.pt", "-o", str(output), *SMALL_SETTINGS]) == 2
    captured = capsys.readouterr()
    assert f"--output {output} is a file, but the output must be a folder" in captured.err
    assert "FileExistsError" not in captured.err
    assert captured.out == ""


def test_output_below_file_rejected(tmp_path, capsys, no_model_loading):
    blocker = tmp_path / "file"
    blocker.write_text("")
    output = blocker / "fs3"
    assert cli_main(["styleclip-fs3", "missing.pkl", "missing.pt", "-o", str(output), *SMALL_SETTINGS]) == 2
    assert f"because {blocker} is a file" in capsys.readouterr().err


def test_missing_cuda_device_rejected(tmp_path, capsys, no_model_loading):
    # cuda:99 fails on every machine: without CUDA because CUDA is missing, with CUDA because no 100th GPU exists.
    arguments = ["styleclip-fs3", "missing.pkl", "missing.pt", "-o", str(tmp_path / "out"), "--device", "cuda:99"]
    assert cli_main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: --device cuda:99")
    assert "Traceback" not in captured.err


def test_missing_generator_reported_on_stderr(home, tmp_path, capsys):
    assert cli_main(fs3_arguments(tmp_path / "out", generator="missing.pkl")) == 2
    captured = capsys.readouterr()
    assert "stylegan model 'missing.pkl' not found" in captured.err
    assert captured.out == ""


def test_max_resolution_below_stylegan3_layers(home, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("CLIP was loaded before the generator's layers were checked")

    monkeypatch.setattr(clip_models, "load_clip", fail)
    arguments = fs3_arguments(tmp_path / "out", "--max-resolution", "8", generator="demo-untrained-sg3-t-64.pkl")
    assert cli_main(arguments) == 2
    captured = capsys.readouterr()
    assert "demo-untrained-sg3-t-64.pkl: --max-resolution 8 selects no layer" in captured.err
    assert "lowest convolution layer is 16 px" in captured.err


def test_existing_fs3_files_reported_on_stderr(home, tmp_path, capsys, no_model_loading):
    output = tmp_path / "out"
    output.mkdir()
    (output / "fs3.npy").write_bytes(b"")
    assert cli_main(fs3_arguments(output)) == 2
    captured = capsys.readouterr()
    assert "pass --overwrite" in captured.err
    assert captured.out == ""


def test_ctrl_c_prints_one_line_and_resumes(home, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after_first_report(patch)
        assert cli_main(fs3_arguments(output)) == 130
    captured = capsys.readouterr()
    assert captured.err == cli_styleclip.INTERRUPTED_MESSAGE + "\n"
    assert "fs3: 32/128 channels" in captured.out
    assert len(list((tmp_path / "cache" / "styleclip").glob("fs3-*.partial.safetensors"))) == 1

    assert cli_main(fs3_arguments(output)) == 0
    captured = capsys.readouterr()
    first_line = captured.out.splitlines()[0]
    assert first_line.startswith("fs3: 64/128 channels (50.0%)")
    assert "min left" not in first_line
    assert "Wrote" in captured.out
    assert {path.name for path in output.iterdir()} == {"fs3.npy", "S_mean_std", "fs3.safetensors"}


def test_damaged_progress_file_restarts(home, tmp_path, capsys, monkeypatch, caplog):
    output = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after_first_report(patch)
        assert cli_main(fs3_arguments(output)) == 130
    (partial,) = (tmp_path / "cache" / "styleclip").glob("fs3-*.partial.safetensors")
    partial.write_bytes(partial.read_bytes()[:100])
    capsys.readouterr()

    assert cli_main(fs3_arguments(output)) == 0
    assert f"The fs3 progress file {partial} is damaged" in caplog.text
    assert "starting the computation over" in caplog.text
    assert (output / "fs3.npy").is_file()


def test_time_left_ignores_resumed_channels(monkeypatch, capsys):
    clock = [1000.0]
    monkeypatch.setattr(cli_styleclip.time, "monotonic", lambda: clock[0])
    printer = cli_styleclip.ProgressPrinter()

    clock[0] += 10
    printer(372, 736)
    clock[0] += 60
    printer(380, 736)

    first, second = capsys.readouterr().out.splitlines()
    assert first == "fs3: 372/736 channels (50.5%), 0.2 min elapsed"
    # 8 channels in 60 s leaves 356 channels for 2670 s.
    assert second == "fs3: 380/736 channels (51.6%), 1.2 min elapsed, about 44.5 min left"


def test_time_left_throttled_to_two_seconds(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(cli_styleclip.time, "monotonic", lambda: clock[0])
    printer = cli_styleclip.ProgressPrinter()

    for done in (10, 20, 30):
        clock[0] += 1
        printer(done, 40)
    clock[0] += 1
    printer(40, 40)

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" channels")[0] for line in lines] == ["fs3: 10/40", "fs3: 30/40", "fs3: 40/40"]
    assert "min left" not in lines[-1]


def test_damaged_finished_result_recomputed(home, tmp_path, caplog):
    assert cli_main(fs3_arguments(tmp_path / "first")) == 0
    (finished,) = (tmp_path / "cache" / "styleclip").glob("fs3-*.safetensors")
    finished.write_bytes(b"damaged")

    assert cli_main(fs3_arguments(tmp_path / "second")) == 0
    assert f"The cached fs3 {finished} is damaged" in caplog.text
    assert (tmp_path / "first" / "fs3.npy").read_bytes() == (tmp_path / "second" / "fs3.npy").read_bytes()
