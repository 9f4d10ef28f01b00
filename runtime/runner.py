"""Python API for running a ComfyUI workflow headless: `run_workflow`.

    from stylebridge import run_workflow
    result = run_workflow("portrait.json", overrides={"3.seed": 42}, output_dir="out")
    print(result.saved_files)

A workflow may be a path, a JSON string or a dict, in the editor's UI format or the API format. Steps: load,
convert UI to API, apply overrides, validate the whole prompt (nothing runs if it is invalid), execute.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import host
from .executor import EventCallback, ExecutionResult, Executor, NodeExecutionError
from .validation import NodeRegistry, PromptValidation, check_prompt, combo_options, iter_input_specs
from .workflow import load_workflow, to_api_prompt

logger = logging.getLogger(__name__)


class OverrideError(ValueError):
    """Raised when an override names a node or input that does not exist, or is malformed."""


class WorkflowInterrupted(host.InterruptedByUser):
    """Raised by run_workflow when the run was interrupted. `result` contains what ran before."""

    def __init__(self, message: str, result: ExecutionResult):
        super().__init__(message)
        self.result = result


@dataclass
class RunResult:
    """Outputs, saved files and timing of one run_workflow call.

    Attributes:
        prompt: the validated API prompt that ran (after conversion, overrides and type coercion).
        outputs: node id -> UI output ({"images": [{"filename", "subfolder", "type"}]}) of every needed node
            that has one, including output nodes whose result came from the cache.
        saved_files: files of type "output" listed by the nodes that ran in this call.
        preview_files: files of type "temp" (PreviewImage) listed by the nodes that ran in this call.
        executed: ids of the nodes that ran, in execution order.
        cached: ids of the needed nodes whose outputs came from the runner's cache.
        timings: node id -> seconds spent in the node's function.
        total_seconds: wall time of the execution, validation excluded.
        values: node id -> output tuple (tensors, models, ...) of every needed node.
        prompt_id: id of the run, as sent in progress events.
    """

    prompt: dict
    outputs: dict[str, dict] = field(default_factory=dict)
    saved_files: list[Path] = field(default_factory=list)
    preview_files: list[Path] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    values: dict[str, tuple] = field(default_factory=dict)
    prompt_id: str = ""

    def to_json(self) -> dict:
        """Return a JSON-serializable summary (without `values`)."""
        return {
            "prompt_id": self.prompt_id,
            "outputs": self.outputs,
            "saved_files": [str(path) for path in self.saved_files],
            "preview_files": [str(path) for path in self.preview_files],
            "executed": self.executed,
            "cached": self.cached,
            "timings": self.timings,
            "total_seconds": self.total_seconds,
        }


@dataclass
class PreparedWorkflow:
    """A workflow turned into an API prompt with overrides applied, before validation."""

    prompt: dict
    ui_workflow: dict | None  # the editor workflow it came from, embedded into saved PNGs
    source_format: str  # "ui" or "api"


# ---------------------------------------------------------------------------------------------------------------------
# Registry.


def default_registry() -> dict[str, type]:
    """StyleBridge's node classes plus the standalone LoadImage, SaveImage and PreviewImage."""
    from ..nodes import NODE_CLASS_MAPPINGS
    from . import core_nodes

    registry = dict(core_nodes.NODE_CLASS_MAPPINGS)
    for name, class_def in NODE_CLASS_MAPPINGS.items():
        if name in registry:
            logger.warning("StyleBridge node class %s has the name of a ComfyUI core node; the StyleBridge class "
                           "is used.", name)
        registry[name] = class_def
    return registry


def default_display_names() -> dict[str, str]:
    from ..nodes import NODE_DISPLAY_NAME_MAPPINGS
    from . import core_nodes

    return {**core_nodes.NODE_DISPLAY_NAME_MAPPINGS, **NODE_DISPLAY_NAME_MAPPINGS}


# ---------------------------------------------------------------------------------------------------------------------
# Overrides.


def _find_node(prompt: Mapping[str, Any], target: str) -> str:
    """Return the id of the node named by `target`: a node id, else a unique title, else a unique class name."""
    if target in prompt:
        return target
    for field_name, read in (("titles", lambda node: (node.get("_meta") or {}).get("title")),
                             ("class names", lambda node: node.get("class_type"))):
        matches = [node_id for node_id, node in prompt.items() if read(node) == target]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise OverrideError(f"Override target {target!r} matches the {field_name} of nodes {', '.join(matches)}; "
                                f"use one of these node ids instead.")
    known = ", ".join(f"{node_id} ({(node.get('_meta') or {}).get('title') or node.get('class_type')})"
                      for node_id, node in list(prompt.items())[:30])
    raise OverrideError(f"Override target {target!r} is not a node id, a node title or a class name used by exactly "
                        f"one node. Nodes: {known}.")


def parse_override_value(text: str, input_type: Any = None, options: Mapping[str, Any] | None = None) -> Any:
    """Parse a command-line value: JSON when it parses, else the text itself.

    For STRING inputs and COMBOs of strings the text is kept as is (so "123" stays a string), unless it is a
    JSON string literal in double quotes.
    """
    choices = combo_options(input_type, options or {}) if input_type is not None else None
    text_input = input_type == "STRING" or (choices is not None and all(isinstance(c, str) for c in choices))
    if text_input and not (len(text) >= 2 and text.startswith('"') and text.endswith('"')):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: dict, overrides: Mapping[str, Any], registry: NodeRegistry) -> dict:
    """Set inputs of an API prompt in place from {"NODE_ID.INPUT": value} and return the prompt.

    NODE_ID may also be a node title, or a class name, that exactly one node has. String values are parsed with
    `parse_override_value`, and other values are used as given. Setting a linked input replaces the link.

    Raises:
        OverrideError: for a malformed key, an unknown node or an input the node class does not declare.
    """
    for key, raw_value in overrides.items():
        if not isinstance(key, str) or "." not in key:
            raise OverrideError(f"Override {key!r} must have the form NODE_ID.INPUT (or TITLE.INPUT), for example "
                                f"'3.seed'.")
        target, input_name = key.rsplit(".", 1)
        node_id = _find_node(prompt, target)
        node = prompt[node_id]
        class_def = registry.get(node.get("class_type"))
        spec = None
        if class_def is not None:
            specs = {spec.name: spec for spec in iter_input_specs(class_def.INPUT_TYPES())}
            spec = specs.get(input_name)
            if spec is None:
                raise OverrideError(f"Node {node_id} ({node['class_type']}) has no input {input_name!r}; its inputs "
                                    f"are: {', '.join(specs) or 'none'}.")
        if isinstance(raw_value, str):
            value = parse_override_value(raw_value, spec.type if spec else None, spec.options if spec else None)
        else:
            value = raw_value
        node.setdefault("inputs", {})[input_name] = value
        logger.debug("Override: node %s input %s = %r", node_id, input_name, value)
    return prompt


# ---------------------------------------------------------------------------------------------------------------------
# Running.


def prepare_prompt(workflow: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                   registry: NodeRegistry | None = None,
                   display_names: Mapping[str, str] | None = None) -> PreparedWorkflow:
    """Load a workflow, convert it to an API prompt and apply overrides (no validation yet)."""
    if registry is None:
        registry = default_registry()
        if display_names is None:
            display_names = default_display_names()
    data = load_workflow(workflow)
    prompt, ui_workflow = to_api_prompt(data, registry, display_names)
    if overrides:
        apply_overrides(prompt, overrides, registry)
    return PreparedWorkflow(prompt, ui_workflow, "ui" if ui_workflow is not None else "api")


def validate_workflow(workflow: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                      registry: NodeRegistry | None = None, output_dir: str | Path | None = None) -> PromptValidation:
    """Convert and validate a workflow without running it.

    Raises:
        WorkflowValidationError: when the workflow cannot run, with ComfyUI's error response attached.
    """
    display_names = None
    if registry is None:
        registry, display_names = default_registry(), default_display_names()
    prepared = prepare_prompt(workflow, overrides=overrides, registry=registry, display_names=display_names)
    with use_output_dir(output_dir):
        return check_prompt(prepared.prompt, registry)


_output_dir_lock = threading.RLock()


@contextmanager
def use_output_dir(output_dir: str | Path | None) -> Iterator[None]:
    """Make host.output_dir() return `output_dir` inside the block (no change when it is None).

    NOTE: this rebinds the module-level function host.output_dir for the whole process, serialized by a lock,
    so concurrent runs in other threads see the same folder while the block is active.
    """
    if output_dir is None:
        yield
        return
    folder = Path(output_dir).expanduser().resolve()
    with _output_dir_lock:
        original = host.output_dir
        host.output_dir = lambda: folder
        try:
            yield
        finally:
            host.output_dir = original


def _listed_files(ui: Mapping[str, Any], folder_type: str, folder: Path) -> list[Path]:
    """Paths of the {"filename", "subfolder", "type"} entries of a UI output with the given type."""
    paths = []
    for entries in ui.values():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("type") == folder_type and entry.get("filename"):
                paths.append(folder / (entry.get("subfolder") or "") / entry["filename"])
    return paths


def run_workflow(workflow: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                 output_dir: str | Path | None = None, registry: NodeRegistry | None = None,
                 runner: Executor | None = None, progress: EventCallback | None = None) -> RunResult:
    """Run a ComfyUI workflow headless and return what it produced.

    Args:
        workflow: a path (.json, or a PNG saved by SaveImage), a JSON string or a dict, in UI or API format.
        overrides: {"NODE_ID.INPUT": value}, applied after UI-to-API conversion. NODE_ID may be a unique node
            title or class name. String values are parsed as JSON when they parse (see `parse_override_value`).
        output_dir: folder for SaveImage during this run instead of host.output_dir().
        registry: node class name -> class. Default: StyleBridge's nodes plus the core image nodes.
        runner: an Executor to reuse, so that unchanged nodes come from its cache. Default: a new one.
        progress: called with each ExecutionEvent (ComfyUI's message names: executing, progress, executed, ...).

    Returns:
        A RunResult.

    Raises:
        WorkflowValidationError: the workflow is invalid. Nothing ran and nothing was written.
        NodeExecutionError: a node raised. `details` has ComfyUI's execution_error fields.
        WorkflowInterrupted: the run was interrupted (host.interrupt()).
        FileNotFoundError, WorkflowFormatError, OverrideError: the input could not be read or applied.
    """
    # 1. Registry and executor.
    display_names = None
    if runner is not None:
        if registry is not None and registry is not runner.registry:
            raise ValueError("Pass either registry or runner, not both: the runner already has a registry.")
        registry = runner.registry
    else:
        if registry is None:
            registry = default_registry()
            display_names = default_display_names()
        runner = Executor(registry)

    # 2. Convert and override, then validate everything before running anything.
    prepared = prepare_prompt(workflow, overrides=overrides, registry=registry, display_names=display_names)
    with use_output_dir(output_dir):
        validation = check_prompt(prepared.prompt, registry)

        # 3. Execute.
        # Overrides change widget values that the UI workflow still holds, so it is embedded in saved images only
        # when it matches the prompt that ran; the API prompt is always embedded.
        embed_ui = prepared.ui_workflow is not None and not overrides
        extra_pnginfo = {"workflow": prepared.ui_workflow} if embed_ui else None
        result = runner.execute(validation.prompt, outputs=validation.outputs, validate=False,
                                extra_pnginfo=extra_pnginfo, on_event=progress)
        output_folder, temp_folder = host.output_dir(), host.temp_dir()

    if result.status == "error":
        raise NodeExecutionError(result.error, result)
    if result.status == "interrupted":
        raise WorkflowInterrupted(f"Run interrupted at node {result.error['node_id']} "
                                  f"({result.error['node_type']}).", result)

    # 4. Collect the files written by the nodes that ran.
    saved, previews = [], []
    for node_id in result.executed:
        ui = result.ui_outputs.get(node_id)
        if ui:
            saved.extend(_listed_files(ui, "output", output_folder))
            previews.extend(_listed_files(ui, "temp", temp_folder))
    return RunResult(prompt=validation.prompt, outputs=dict(result.ui_outputs), saved_files=saved,
                     preview_files=previews, executed=list(result.executed), cached=list(result.cached),
                     timings=dict(result.timings), total_seconds=result.total_seconds, values=dict(result.values),
                     prompt_id=result.prompt_id)
