"""run_workflow (runtime.runner) and the run / validate / convert-workflow commands (runtime.cli_run)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys

import pytest
from PIL import Image
from runner_fixtures import CALLS, make_registry, reset_calls, ui_node, ui_workflow

from stylebridge.runtime import cli_run, host
from stylebridge.runtime.executor import Executor, NodeExecutionError
from stylebridge.runtime.runner import OverrideError, WorkflowInterrupted, run_workflow
from stylebridge.runtime.validation import WorkflowValidationError
from stylebridge.runtime.workflow import ui_to_api

REGISTRY = make_registry()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "input").mkdir(parents=True)
    Image.new("RGB", (4, 3), (200, 100, 50)).save(tmp_path / "home" / "input" / "photo.png")
    reset_calls()
    return tmp_path / "home"


def image_workflow(image: str = "photo.png", prefix: str = "cli/result") -> dict:
    """LoadImage 1 -> SaveImage 2 ("Saver"), as the editor saves it."""
    return ui_workflow(
        [
            ui_node(1, "LoadImage", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0},
                                             {"name": "MASK", "type": "MASK", "links": None, "slot_index": 1}],
                    widgets_values=[image, "image"]),
            ui_node(2, "SaveImage", title="Saver", inputs=[{"name": "images", "type": "IMAGE", "link": 1}],
                    widgets_values=[prefix]),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"]],
    )


def number_workflow() -> dict:
    """MakeNumber 1 ("Start") -> AddNumbers 2 -> ShowNumber 3 ("Show", label widget)."""
    return ui_workflow(
        [
            ui_node(1, "MakeNumber", title="Start",
                    outputs=[{"name": "number", "type": "INT", "links": [1]}], widgets_values=[5]),
            ui_node(2, "AddNumbers", inputs=[{"name": "a", "type": "INT", "link": 1}],
                    outputs=[{"name": "INT", "type": "INT", "links": [2]}], widgets_values=[3]),
            ui_node(3, "ShowNumber", title="Show", inputs=[{"name": "value", "type": "INT", "link": 2}],
                    widgets_values=["first"]),
        ],
        [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]],
    )


def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def output_files(folder) -> list:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------------------------------------
# run_workflow.


def test_run_ui_workflow_file(home, tmp_path):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    result = run_workflow(path, registry=REGISTRY)
    assert result.executed == ["1", "2"]
    assert result.cached == []
    assert result.saved_files == [home / "output" / "cli" / "result_00001_.png"]
    assert result.saved_files[0].is_file()
    assert result.outputs == {"2": {"images": [{"filename": "result_00001_.png", "subfolder": "cli",
                                                "type": "output"}]}}
    assert result.values["1"][0].shape == (1, 3, 4, 3)
    assert set(result.timings) == {"1", "2"}


def test_saved_png_carries_prompt_and_workflow(home, tmp_path):
    workflow = image_workflow()
    result = run_workflow(workflow, registry=REGISTRY)
    with Image.open(result.saved_files[0]) as saved:
        assert json.loads(saved.text["workflow"]) == workflow
        assert json.loads(saved.text["prompt"]) == result.prompt


def test_run_api_prompt_dict(home):
    prompt = ui_to_api(number_workflow(), REGISTRY)
    result = run_workflow(prompt, registry=REGISTRY)
    assert result.outputs["3"] == {"numbers": [8], "labels": ["first"]}
    assert result.saved_files == []


def test_overrides_by_id_and_title(home):
    result = run_workflow(number_workflow(), registry=REGISTRY,
                          overrides={"Start.value": "7", "2.b": 10, "Show.label": "123"})
    assert result.prompt["1"]["inputs"]["value"] == 7
    assert result.outputs["3"] == {"numbers": [17], "labels": ["123"]}  # STRING input keeps "123" as text


def test_override_by_unique_class_name(home):
    result = run_workflow(number_workflow(), registry=REGISTRY, overrides={"AddNumbers.b": 1})
    assert result.outputs["3"]["numbers"] == [6]


def test_override_replaces_link(home):
    result = run_workflow(number_workflow(), registry=REGISTRY, overrides={"2.a": "40"})
    assert result.outputs["3"]["numbers"] == [43]
    assert result.executed == ["2", "3"]  # node 1 no longer feeds an output


@pytest.mark.parametrize(("overrides", "message"), [
    ({"value": 1}, "must have the form NODE_ID.INPUT"),
    ({"9.value": 1}, "is not a node id, a node title or a class name"),
    ({"1.size": 1}, "has no input 'size'; its inputs are: value"),
])
def test_override_errors(home, overrides, message):
    with pytest.raises(OverrideError, match=message):
        run_workflow(number_workflow(), registry=REGISTRY, overrides=overrides)


def test_override_ambiguous_title(home):
    workflow = number_workflow()
    workflow["nodes"][1]["title"] = "Start"
    with pytest.raises(OverrideError, match="matches the titles of nodes 1, 2"):
        run_workflow(workflow, registry=REGISTRY, overrides={"Start.value": 1})


def test_output_dir_override(home, tmp_path):
    target = tmp_path / "elsewhere"
    result = run_workflow(image_workflow(), registry=REGISTRY, output_dir=target)
    assert result.saved_files == [target / "cli" / "result_00001_.png"]
    assert result.saved_files[0].is_file()
    assert not (home / "output").exists()
    assert host.output_dir() == home / "output"  # restored after the run


def test_runner_reuses_cache(home):
    runner = Executor(REGISTRY)
    run_workflow(number_workflow(), runner=runner)
    reset_calls()
    result = run_workflow(number_workflow(), runner=runner, overrides={"Show.label": "second"})
    assert result.executed == ["3"]
    assert result.cached == ["1", "2"]
    assert [name for name, _, _ in CALLS] == ["ShowNumber"]


def test_runner_and_registry_conflict(home):
    with pytest.raises(ValueError, match="either registry or runner"):
        run_workflow(number_workflow(), runner=Executor(REGISTRY), registry=dict(REGISTRY))


def test_invalid_workflow_runs_nothing(home):
    workflow = image_workflow(image="missing.png")
    workflow["nodes"].append(ui_node(3, "MakeNumber", outputs=[], widgets_values=[1]))
    with pytest.raises(WorkflowValidationError) as caught:
        run_workflow(workflow, registry=REGISTRY)
    assert "node 1 (LoadImage), input 'image'" in str(caught.value)
    assert "missing.png" in str(caught.value)
    assert not (home / "output").exists()
    assert CALLS == []


def test_node_failure_raises_with_details(home):
    (home / "input" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(NodeExecutionError) as caught:
        run_workflow(image_workflow(image="broken.png"), registry=REGISTRY)
    details = caught.value.details
    assert details["node_id"] == "1"
    assert details["node_type"] == "LoadImage"
    assert details["exception_type"] == "PIL.UnidentifiedImageError"
    assert "Node 1 (LoadImage) failed" in str(caught.value)
    assert caught.value.result.executed == []


def test_interruption_raises(home):
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "2": {"class_type": "CountSteps", "inputs": {"value": ["1", 0], "steps": 4, "interrupt_at": 2}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    with pytest.raises(WorkflowInterrupted) as caught:
        run_workflow(prompt, registry=REGISTRY)
    assert isinstance(caught.value, host.InterruptedByUser)
    assert caught.value.result.executed == ["1"]


def test_progress_callback_gets_events(home):
    events = []
    run_workflow(number_workflow(), registry=REGISTRY, progress=events.append)
    assert [event.data["node"] for event in events if event.type == "executing"] == ["1", "2", "3"]
    assert events[-1].type == "execution_success"


# ---------------------------------------------------------------------------------------------------------------------
# Commands.


def run_cli(argv: list[str]) -> int:
    """Parse and dispatch like `stylebridge` does, with only this module's commands."""
    parser = argparse.ArgumentParser(prog="stylebridge")
    cli_run.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_run_prints_saved_files(home, tmp_path, capsys):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    assert run_cli(["run", path]) == cli_run.EXIT_OK
    captured = capsys.readouterr()
    saved = home / "output" / "cli" / "result_00001_.png"
    assert captured.out.strip() == str(saved)
    assert saved.is_file()
    assert "[1/2] node 1 LoadImage" in captured.err
    assert "[2/2] node 2 SaveImage" in captured.err


def test_cli_run_set_and_output_dir(home, tmp_path, capsys):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    target = tmp_path / "out"
    code = run_cli(["run", path, "--set", "Saver.filename_prefix=batch/x", "--output-dir", str(target)])
    assert code == cli_run.EXIT_OK
    assert output_files(target) == ["batch/x_00001_.png"]
    assert capsys.readouterr().out.strip() == str(target / "batch" / "x_00001_.png")


def test_cli_run_json(home, tmp_path, capsys):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    assert run_cli(["run", path, "--json"]) == cli_run.EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["executed"] == ["1", "2"]
    assert report["saved_files"] == [str(home / "output" / "cli" / "result_00001_.png")]
    assert report["outputs"]["2"]["images"][0]["filename"] == "result_00001_.png"


def test_cli_run_invalid_exits_2(home, tmp_path, capsys):
    path = write_json(tmp_path / "workflow.json", image_workflow(image="missing.png"))
    assert run_cli(["run", path]) == cli_run.EXIT_INVALID
    captured = capsys.readouterr()
    assert "node 1 'Load Image' (LoadImage), input 'image'" in captured.err
    assert captured.out == ""
    assert not (home / "output").exists()


def test_cli_run_bad_prefix_writes_nothing(home, tmp_path, capsys):
    path = write_json(tmp_path / "workflow.json", image_workflow(prefix="../../escape"))
    assert run_cli(["run", path]) == cli_run.EXIT_INVALID
    assert "node 2 'Saver' (SaveImage), input 'filename_prefix'" in capsys.readouterr().err
    assert output_files(tmp_path) == ["home/input/photo.png", "workflow.json"]


def test_cli_run_unknown_node_exits_2(home, tmp_path, capsys):
    workflow = image_workflow()
    workflow["nodes"].append(ui_node(5, "NotInstalledNode"))
    path = write_json(tmp_path / "workflow.json", workflow)
    assert run_cli(["run", path]) == cli_run.EXIT_INVALID
    assert "node 5 (NotInstalledNode)" in capsys.readouterr().err


def test_cli_run_node_failure_exits_1(home, tmp_path, capsys):
    (home / "input" / "broken.png").write_bytes(b"not a png")
    path = write_json(tmp_path / "workflow.json", image_workflow(image="broken.png"))
    assert run_cli(["run", path]) == cli_run.EXIT_NODE_FAILED
    assert "Node 1 (LoadImage) failed" in capsys.readouterr().err


def test_cli_run_node_failure_reported_once(home, tmp_path, capsys, caplog):
    (home / "input" / "broken.png").write_bytes(b"not a png")
    path = write_json(tmp_path / "workflow.json", image_workflow(image="broken.png"))
    with caplog.at_level(logging.INFO):
        run_cli(["run", path])
    assert not [record for record in caplog.records if record.levelno == logging.ERROR]
    assert "failed: UnidentifiedImageError: " in capsys.readouterr().err


def test_cli_run_missing_file_exits_2(home, tmp_path, capsys):
    assert run_cli(["run", str(tmp_path / "nope.json")]) == cli_run.EXIT_INVALID
    assert "Workflow file not found" in capsys.readouterr().err


def test_cli_run_bad_set_exits_2(home, tmp_path, capsys):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    assert run_cli(["run", path, "--set", "2.filename_prefix"]) == cli_run.EXIT_INVALID
    assert "NODE_ID.INPUT=VALUE" in capsys.readouterr().err


def test_cli_validate(home, tmp_path, capsys):
    good = write_json(tmp_path / "good.json", image_workflow())
    bad = write_json(tmp_path / "bad.json", image_workflow(image="missing.png"))
    assert run_cli(["validate", good]) == cli_run.EXIT_OK
    assert "Valid UI workflow: 2 nodes, output nodes 2." in capsys.readouterr().out
    assert run_cli(["validate", bad]) == cli_run.EXIT_INVALID
    assert run_cli(["validate", good, "--set", "1.image=missing.png"]) == cli_run.EXIT_INVALID
    assert not (home / "output").exists()


def test_cli_convert_workflow(home, tmp_path, capsys):
    source = write_json(tmp_path / "ui.json", image_workflow())
    target = tmp_path / "api.json"
    assert run_cli(["convert-workflow", source, "-o", str(target)]) == cli_run.EXIT_OK
    assert json.loads(target.read_text()) == {
        "1": {"inputs": {"image": "photo.png"}, "class_type": "LoadImage", "_meta": {"title": "Load Image"}},
        "2": {"inputs": {"images": ["1", 0], "filename_prefix": "cli/result"}, "class_type": "SaveImage",
              "_meta": {"title": "Saver"}},
    }
    assert run_cli(["convert-workflow", str(target)]) == cli_run.EXIT_INVALID
    assert "already in the API format" in capsys.readouterr().err


def test_stylebridge_command_end_to_end(home, tmp_path):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    completed = subprocess.run([sys.executable, "-m", "stylebridge.cli", "run", path],
                               check=False, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "STYLEBRIDGE_HOME": str(home)})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(home / "output" / "cli" / "result_00001_.png")
    invalid = write_json(tmp_path / "invalid.json", image_workflow(image="missing.png"))
    completed = subprocess.run([sys.executable, "-m", "stylebridge.cli", "run", invalid],
                               check=False, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "STYLEBRIDGE_HOME": str(home)})
    assert completed.returncode == 2


def test_convert_workflow_refuses_existing_output(home, tmp_path):
    source = tmp_path / "ui.json"
    write_json(source, image_workflow())
    before = source.read_bytes()
    assert run_cli(["convert-workflow", str(source), "-o", str(source)]) == cli_run.EXIT_INVALID
    assert source.read_bytes() == before


def test_cli_run_rejects_binary_workflow_file(home, tmp_path, capsys):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00\x01 not text")
    assert run_cli(["run", str(path)]) == cli_run.EXIT_INVALID
    assert "Could not read" in capsys.readouterr().err


def test_cli_run_rejects_fake_png_workflow(home, tmp_path, capsys):
    path = tmp_path / "workflow.png"
    path.write_text("not an image")
    assert run_cli(["run", str(path)]) == cli_run.EXIT_INVALID
    assert "Could not read" in capsys.readouterr().err


def test_overrides_leave_ui_workflow_out_of_saved_png(home, tmp_path):
    path = write_json(tmp_path / "workflow.json", image_workflow())
    plain = run_workflow(path, registry=REGISTRY)
    overridden = run_workflow(path, registry=REGISTRY, overrides={"Saver.filename_prefix": "cli/other"})
    with Image.open(plain.saved_files[0]) as image:
        assert "workflow" in image.text
    with Image.open(overridden.saved_files[0]) as image:
        assert "workflow" not in image.text
        assert json.loads(image.text["prompt"])["2"]["inputs"]["filename_prefix"] == "cli/other"
