"""Prompt execution (runtime.executor): order, caching across runs, events, errors and interruption."""

from __future__ import annotations

import time

import pytest
import runner_fixtures
from runner_fixtures import CALLS, called_ids, make_registry, reset_calls

from stylebridge.runtime import host
from stylebridge.runtime.executor import Executor
from stylebridge.runtime.validation import WorkflowValidationError

REGISTRY = make_registry(with_core=False)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(tmp_path))
    reset_calls()
    yield
    host.clear_interrupt()


def two_branch_prompt(b: int = 3, label: str = "") -> dict:
    """1 MakeNumber -> 2 AddNumbers(b) -> 3 ShowNumber(label); 4 MakeNumber feeds nothing."""
    return {
        "1": {"class_type": "MakeNumber", "inputs": {"value": 5}},
        "2": {"class_type": "AddNumbers", "inputs": {"a": ["1", 0], "b": b}},
        "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0], "label": label}},
        "4": {"class_type": "MakeNumber", "inputs": {"value": 9}},
    }


def test_runs_needed_nodes_in_order():
    result = Executor(REGISTRY).execute(two_branch_prompt())
    assert result.status == "success"
    assert result.executed == ["1", "2", "3"]  # node 4 feeds no output node
    assert called_ids() == ["1", "2", "3"]
    assert result.values["2"] == (8,)
    assert result.ui_outputs == {"3": {"numbers": [8], "labels": [""]}}
    assert set(result.timings) == {"1", "2", "3"}


def test_second_identical_run_is_all_cached():
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt())
    reset_calls()
    result = executor.execute(two_branch_prompt())
    assert result.executed == []
    assert result.cached == ["1", "2", "3"]
    assert CALLS == []
    assert result.ui_outputs == {"3": {"numbers": [8], "labels": [""]}}  # UI output comes from the cache
    assert result.values["2"] == (8,)


def test_downstream_change_reruns_only_downstream():
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt())
    reset_calls()
    result = executor.execute(two_branch_prompt(label="changed"))
    assert result.executed == ["3"]
    assert result.cached == ["1", "2"]
    assert called_ids() == ["3"]


def test_middle_change_reruns_middle_and_below():
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt())
    reset_calls()
    result = executor.execute(two_branch_prompt(b=4))
    assert result.executed == ["2", "3"]
    assert result.cached == ["1"]
    assert result.ui_outputs["3"]["numbers"] == [9]


def test_changing_back_reruns_by_default():
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt(b=3))
    executor.execute(two_branch_prompt(b=4))
    result = executor.execute(two_branch_prompt(b=3))
    assert result.executed == ["2", "3"]


def test_keep_previous_reuses_older_results():
    executor = Executor(REGISTRY, keep_previous=4)
    executor.execute(two_branch_prompt(b=3))
    executor.execute(two_branch_prompt(b=4))
    result = executor.execute(two_branch_prompt(b=3))
    assert result.executed == []
    assert result.cached == ["1", "2", "3"]


def test_cache_holds_only_latest_run_by_default():
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt(b=3))
    assert executor.cache_size == 3
    executor.execute(two_branch_prompt(b=4))
    assert executor.cache_size == 3


def test_identical_nodes_share_one_run():
    prompt = {
        "1": {"class_type": "MakeNumber", "inputs": {"value": 5}},
        "2": {"class_type": "MakeNumber", "inputs": {"value": 5}},
        "3": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}},
    }
    result = Executor(REGISTRY).execute(prompt)
    assert result.executed == ["1", "3"]
    assert result.cached == ["2", "4"]
    assert result.ui_outputs["4"] == {"numbers": [5], "labels": [""]}


def test_not_idempotent_nodes_do_not_share():
    prompt = {
        "1": {"class_type": "Impure", "inputs": {"value": 5}},
        "2": {"class_type": "Impure", "inputs": {"value": 5}},
        "3": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}},
    }
    result = Executor(REGISTRY).execute(prompt)
    assert "1" in result.executed
    assert "2" in result.executed


def test_is_changed_nan_always_reruns():
    prompt = {"1": {"class_type": "Volatile", "inputs": {"value": 2}},
              "2": {"class_type": "AddNumbers", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    executor = Executor(REGISTRY)
    executor.execute(prompt)
    reset_calls()
    result = executor.execute(prompt)
    assert result.executed == ["1", "2", "3"]
    assert called_ids() == ["1", "2", "3"]


def test_is_changed_value_controls_rerun(monkeypatch):
    prompt = {"1": {"class_type": "Versioned", "inputs": {"value": 2}},
              "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}
    executor = Executor(REGISTRY)
    executor.execute(prompt)
    assert executor.execute(prompt).executed == []
    monkeypatch.setattr(runner_fixtures.Versioned, "VERSION", 2)
    assert executor.execute(prompt).executed == ["1", "2"]


def test_node_instance_kept_per_node_id():
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "2": {"class_type": "RecordPrompt", "inputs": {"value": ["1", 0]}}}
    executor = Executor(REGISTRY)
    first = executor.execute(prompt).ui_outputs["2"]
    prompt["1"]["inputs"]["value"] = 2
    second = executor.execute(prompt).ui_outputs["2"]
    assert second["instance_id"] == first["instance_id"]
    assert second["instance_calls"] == [2]


def test_node_instance_dropped_with_node():
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "2": {"class_type": "RecordPrompt", "inputs": {"value": ["1", 0]}}}
    executor = Executor(REGISTRY)
    first = executor.execute(prompt).ui_outputs["2"]
    executor.execute({"1": prompt["1"], "3": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}})
    prompt["1"]["inputs"]["value"] = 2
    second = executor.execute(prompt).ui_outputs["2"]
    assert second["instance_calls"] == [1]  # a new instance after node 2 left the prompt
    assert first["instance_calls"] == [1]


def test_unknown_output_id_is_rejected():
    with pytest.raises(ValueError, match="Output node ids 9 are not in the prompt"):
        Executor(REGISTRY).execute(two_branch_prompt(), outputs=["9"])


def test_hidden_inputs_are_supplied():
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "7": {"class_type": "RecordPrompt", "inputs": {"value": ["1", 0]}}}
    ui = Executor(REGISTRY).execute(prompt, extra_pnginfo={"workflow": {}}).ui_outputs["7"]
    assert ui["unique_id"] == ["7"]
    assert ui["node_ids"] == [["1", "7"]]
    assert ui["has_pnginfo"] == [True]


def test_invalid_prompt_raises_before_running():
    with pytest.raises(WorkflowValidationError):
        Executor(REGISTRY).execute(two_branch_prompt(b=1000))
    assert CALLS == []


def test_events_follow_comfyui_names():
    events = []
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "2": {"class_type": "CountSteps", "inputs": {"value": ["1", 0], "steps": 3, "interrupt_at": 0}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    result = Executor(REGISTRY).execute(prompt, on_event=events.append, prompt_id="p1")
    kinds = [event.type for event in events]
    assert kinds == ["execution_start", "execution_cached",
                     "executing", "executed",
                     "executing", "progress", "progress", "progress", "executed",
                     "executing", "executed",
                     "execution_success"]
    progress = [event.data for event in events if event.type == "progress"]
    assert [(data["node"], data["value"], data["max"]) for data in progress] == [("2", 1, 3), ("2", 2, 3),
                                                                                  ("2", 3, 3)]
    assert all(event.data["prompt_id"] == "p1" for event in events)
    assert events[1].data["to_execute"] == ["1", "2", "3"]
    assert events[-2].data["output"] == {"numbers": [4], "labels": [""]}
    assert result.prompt_id == "p1"
    assert host.progress_listener is None  # restored after the run
    assert host.current_node_id is None


def test_cached_nodes_reported_in_event():
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt())
    events = []
    executor.execute(two_branch_prompt(label="x"), on_event=events.append)
    cached_event = next(event for event in events if event.type == "execution_cached")
    assert cached_event.data["nodes"] == ["1", "2"]
    assert cached_event.data["to_execute"] == ["3"]


def test_failing_progress_callback_does_not_stop_run():
    def broken(event):
        raise RuntimeError("display closed")

    result = Executor(REGISTRY).execute(two_branch_prompt(), on_event=broken)
    assert result.status == "success"
    assert result.executed == ["1", "2", "3"]


def test_interruption_stops_cleanly():
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "2": {"class_type": "CountSteps", "inputs": {"value": ["1", 0], "steps": 5, "interrupt_at": 2}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    events = []
    executor = Executor(REGISTRY)
    result = executor.execute(prompt, on_event=events.append)
    assert result.status == "interrupted"
    assert result.executed == ["1"]
    assert result.error["node_id"] == "2"
    assert result.error["node_type"] == "CountSteps"
    assert result.error["executed"] == ["1"]
    assert events[-1].type == "execution_interrupted"
    assert called_ids() == ["1", "2"]  # ShowNumber never ran
    assert host.progress_listener is None

    # The next run starts clean, and node 1 comes from the cache.
    prompt["2"]["inputs"]["interrupt_at"] = 0
    result = executor.execute(prompt)
    assert result.status == "success"
    assert result.cached == ["1"]
    assert result.executed == ["2", "3"]


def test_stale_interrupt_request_is_cleared():
    host.interrupt()
    result = Executor(REGISTRY).execute(two_branch_prompt())
    assert result.status == "success"


def test_node_exception_becomes_execution_error():
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 4}},
              "2": {"class_type": "Explode", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    events = []
    executor = Executor(REGISTRY)
    result = executor.execute(prompt, on_event=events.append)
    assert result.status == "error"
    error = result.error
    assert error["node_id"] == "2"
    assert error["node_type"] == "Explode"
    assert error["exception_type"] == "ValueError"
    assert error["exception_message"] == "boom at value 4"
    assert error["executed"] == ["1"]
    assert any("explode" in line for line in error["traceback"])
    assert error["current_inputs"] == {"value": [4]}
    assert events[-1].type == "execution_error"
    assert result.executed == ["1"]

    # What ran before the failure stays cached.
    prompt["2"] = {"class_type": "AddNumbers", "inputs": {"a": ["1", 0], "b": 1}}
    assert executor.execute(prompt).cached == ["1"]


def test_wrong_return_count_is_an_error():
    prompt = {"1": {"class_type": "WrongArity", "inputs": {}},
              "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 1]}}}
    result = Executor(REGISTRY).execute(prompt)
    assert result.status == "error"
    assert result.error["node_id"] == "1"
    assert "returned 1 values but RETURN_TYPES declares 2" in result.error["exception_message"]


def test_list_nodes_are_rejected():
    prompt = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}},
              "2": {"class_type": "ListInput", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    result = Executor(REGISTRY).execute(prompt)
    assert result.status == "error"
    assert result.error["node_id"] == "2"
    assert "INPUT_IS_LIST" in result.error["exception_message"]
    assert CALLS == []


def test_output_folder_is_part_of_output_node_key(tmp_path, monkeypatch):
    executor = Executor(REGISTRY)
    executor.execute(two_branch_prompt())
    monkeypatch.setenv("STYLEBRIDGE_HOME", str(tmp_path / "other"))
    result = executor.execute(two_branch_prompt())
    assert result.executed == ["3"]  # the output node writes elsewhere now


def test_cached_run_overhead_is_small():
    # A 300-node chain: a fully cached run must cost well under 1 ms per node.
    prompt = {"0": {"class_type": "MakeNumber", "inputs": {"value": 1}}}
    for index in range(1, 300):
        prompt[str(index)] = {"class_type": "AddNumbers", "inputs": {"a": [str(index - 1), 0], "b": 1}}
    prompt["300"] = {"class_type": "ShowNumber", "inputs": {"value": ["299", 0]}}
    executor = Executor(REGISTRY)
    first = executor.execute(prompt)
    assert first.values["299"] == (300,)

    started = time.perf_counter()
    result = executor.execute(prompt)
    per_node = (time.perf_counter() - started) / len(prompt)
    assert len(result.cached) == 301
    assert per_node < 1e-3, f"{per_node * 1e6:.0f} us per cached node"
