"""Execution of a validated API prompt, with a cache that persists across runs in one process.

Semantics follow ComfyUI's executor (comfyanonymous/ComfyUI, execution.py and comfy_execution/caching.py) where
they matter to node authors:

- Only the nodes that output nodes (OUTPUT_NODE = True) depend on run, each after its inputs.
- A node's cache key ("signature") is its class, its literal inputs, the signatures of the nodes it links from
  (with the output slot) and the value of its IS_CHANGED classmethod. A node whose signature is cached does not
  run, so changing an input re-runs that node and everything downstream of it and nothing else. IS_CHANGED
  returning NaN means "always run". Nodes with NOT_IDEMPOTENT = True also key on their node id.
- One instance of each node class is kept per node id across runs, as ComfyUI's object storage does.
- Nodes run once per call with plain values: ComfyUI's list mapping (INPUT_IS_LIST / OUTPUT_IS_LIST) is not
  supported, and such nodes are rejected before anything runs.
- An exception in a node stops the run and is reported in ComfyUI's `execution_error` shape. An
  `InterruptedByUser` stops it as `execution_interrupted`.

Events use ComfyUI's websocket message names (execution_start, execution_cached, executing, progress, executed,
execution_success, execution_error, execution_interrupted). Unlike ComfyUI, `executed` is sent for every node
that ran, with "output" set to its UI output or None, so that a listener can time each node.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import host
from .validation import NodeRegistry, check_prompt, is_link_value, iter_input_specs

logger = logging.getLogger(__name__)

# Hidden input kinds that the standalone runner can supply. Others (API keys for ComfyUI's cloud nodes) are
# left out, so the node function's default applies.
_HIDDEN_PROMPT = "PROMPT"
_HIDDEN_EXTRA_PNGINFO = "EXTRA_PNGINFO"
_HIDDEN_UNIQUE_ID = "UNIQUE_ID"


@dataclass
class ExecutionEvent:
    """A progress or status message; `type` uses ComfyUI's websocket message names."""

    type: str
    data: dict


EventCallback = Callable[[ExecutionEvent], None]


@dataclass
class ExecutionResult:
    """Outcome of one `Executor.execute` call.

    Attributes:
        status: "success", "error" or "interrupted".
        prompt_id: id of this run, also sent in every event.
        executed: ids of the nodes that ran, in execution order.
        cached: ids of the needed nodes whose outputs came from the cache, in execution order.
        ui_outputs: node id -> UI output dict ({"images": [...]}) for every needed node that has one, cached or not.
        values: node id -> output tuple for every needed node that ran or was cached.
        timings: node id -> seconds spent in the node's function.
        total_seconds: wall time of the whole call.
        error: ComfyUI's execution_error or execution_interrupted message when status is not "success".
    """

    status: str
    prompt_id: str
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    ui_outputs: dict[str, dict] = field(default_factory=dict)
    values: dict[str, tuple] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    error: dict | None = None


class NodeExecutionError(RuntimeError):
    """Raised by callers that turn a failed ExecutionResult into an exception (see runner.run_workflow).

    Attributes:
        details: ComfyUI's execution_error message (node_id, node_type, exception_message, exception_type,
            traceback, ...).
        result: the ExecutionResult of the failed run (what ran before the failure), when known.
    """

    def __init__(self, details: dict, result: ExecutionResult | None = None):
        self.details = details
        self.result = result
        # The details keep the full exception type path, as ComfyUI reports it; the message names the class only.
        short_type = str(details.get("exception_type")).rsplit(".", 1)[-1]
        super().__init__(f"Node {details.get('node_id')} ({details.get('node_type')}) failed: "
                         f"{short_type}: {details.get('exception_message')}")


@dataclass
class _CacheEntry:
    values: tuple
    ui: dict | None


class _Plan:
    """Per-node data computed once per run: class, literal inputs and links."""

    __slots__ = ("class_def", "class_type", "hidden", "links", "literals", "node_id", "signature")

    def __init__(self, node_id: str, class_type: str, class_def: type):
        self.node_id = node_id
        self.class_type = class_type
        self.class_def = class_def
        self.literals: dict[str, Any] = {}
        self.links: list[tuple[str, str, int]] = []  # (input name, source node id, output slot)
        self.hidden: dict[str, str] = {}
        self.signature: Any = None


def _freeze(value: Any) -> Any:
    """Turn a literal input into a hashable, type-tagged key (so 1, 1.0 and True stay distinct)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_freeze(item) for item in value))
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(key), _freeze(item)) for key, item in value.items())))
    try:
        hash(value)
    except TypeError:
        # An unhashable object (a tensor passed through the Python API) keys on its identity.
        return ("id", type(value).__name__, id(value))
    return (type(value).__name__, value)


class _AlwaysChanged:
    """IS_CHANGED marker that never equals a cached signature (ComfyUI treats NaN this way)."""

    __slots__ = ()


def _format_value(value: Any) -> Any:
    """Summarize an input or output for error messages without dumping whole tensors."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={list(value.shape)}, dtype={value.dtype}, device={value.device})"
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _full_type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Executor:
    """Runs API prompts with the node classes of `registry`, keeping node outputs cached between runs.

    Args:
        registry: node class name -> node class.
        keep_previous: how many signatures that the latest run did not use stay cached (least recently used
            first out). 0, the default, keeps only what the latest run used, as ComfyUI's default cache does,
            so a changed model loader releases its old model.

    One Executor runs one prompt at a time (a lock serializes `execute`).
    NOTE: progress reaches the executor through the process-wide host.progress_listener, so two Executors
    running at once in different threads would receive each other's progress events.
    """

    def __init__(self, registry: NodeRegistry, *, keep_previous: int = 0):
        self.registry = registry
        self.keep_previous = keep_previous
        self._lock = threading.Lock()
        self._cache: dict[Any, _CacheEntry] = {}  # signature -> outputs, in least recently used order
        self._signature_ids: dict[tuple, int] = {}
        self._next_signature_id = 0
        self._objects: dict[tuple[str, str], Any] = {}

    # Public API.

    def clear_cache(self) -> None:
        """Forget all cached outputs and node instances."""
        self._cache.clear()
        self._signature_ids.clear()
        self._objects.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def execute(self, prompt: Mapping[str, Any], *, outputs: list[str] | None = None, validate: bool = True,
                extra_pnginfo: dict | None = None, on_event: EventCallback | None = None,
                prompt_id: str | None = None) -> ExecutionResult:
        """Run the output nodes of `prompt` and what they depend on.

        Args:
            prompt: API prompt. It is validated first unless `validate` is False, in which case it must already
                be the normalized prompt of a successful validation.
            outputs: ids of the output nodes to run. Default: all output nodes (those that passed validation).
            validate: validate (and normalize) the prompt first, raising WorkflowValidationError when invalid.
            extra_pnginfo: passed to nodes with an EXTRA_PNGINFO hidden input (SaveImage embeds it in PNGs),
                typically {"workflow": <UI workflow>}.
            on_event: called with each ExecutionEvent. Exceptions it raises are logged and ignored.
            prompt_id: id reported in events, a random UUID by default.

        Returns:
            An ExecutionResult. Node failures and interruptions are reported there, not raised.
        """
        with self._lock:
            return self._execute(prompt, outputs, validate, extra_pnginfo, on_event, prompt_id)

    # Internals.

    def _execute(self, prompt: Mapping[str, Any], outputs: list[str] | None, validate: bool,
                 extra_pnginfo: dict | None, on_event: EventCallback | None, prompt_id: str | None) -> ExecutionResult:
        prompt_id = prompt_id or str(uuid.uuid4())
        if validate:
            validation = check_prompt(prompt, self.registry)
            prompt = validation.prompt
            if outputs is None:
                outputs = validation.outputs
        elif outputs is None:
            outputs = sorted((node_id for node_id, node in prompt.items()
                              if getattr(self.registry[node["class_type"]], "OUTPUT_NODE", False) is True),
                             key=_node_sort_key)
        unknown = [node_id for node_id in outputs if node_id not in prompt]
        if unknown:
            raise ValueError(f"Output node ids {', '.join(map(str, unknown))} are not in the prompt; pass ids of "
                             f"output nodes that the prompt contains.")
        emitter = _Emitter(on_event, prompt_id)
        started = time.perf_counter()
        result = ExecutionResult(status="success", prompt_id=prompt_id)
        host.clear_interrupt()  # a stale interrupt request must not stop the next run (ComfyUI does the same)

        previous_listener, previous_node = host.progress_listener, host.current_node_id
        host.progress_listener = emitter.on_progress
        try:
            with torch.inference_mode():
                self._run(prompt, outputs, extra_pnginfo, emitter, result)
        finally:
            host.progress_listener, host.current_node_id = previous_listener, previous_node
            result.total_seconds = time.perf_counter() - started
        return result

    def _run(self, prompt: Mapping[str, Any], outputs: list[str], extra_pnginfo: dict | None,
             emitter: _Emitter, result: ExecutionResult) -> None:
        emitter.emit("execution_start", {})

        # 1. Order the needed nodes so that each comes after its inputs.
        order = _topological_order(prompt, outputs)
        class_inputs: dict[type, tuple[set, dict]] = {}
        plans = [self._plan(node_id, prompt[node_id], class_inputs) for node_id in order]
        unsupported = [plan for plan in plans if getattr(plan.class_def, "INPUT_IS_LIST", False)
                       or any(getattr(plan.class_def, "OUTPUT_IS_LIST", ()) or ())]
        if unsupported:
            plan = unsupported[0]
            exc = NotImplementedError(f"Node class {plan.class_type} uses INPUT_IS_LIST or OUTPUT_IS_LIST, which "
                                      f"the standalone runner does not support. Run this workflow in ComfyUI.")
            self._fail(plan, exc, prompt, result, emitter, inputs={})
            return

        # Node instances of ids that left the prompt, or changed class, are dropped (ComfyUI does the same).
        self._objects = {key: instance for key, instance in self._objects.items()
                         if key[0] in prompt and prompt[key[0]].get("class_type") == key[1]}

        # 2. Signatures, then drop cache entries this run will not use.
        signatures = {}
        for plan in plans:
            plan.signature = self._signature(plan, signatures)
            signatures[plan.node_id] = plan.signature
        self._evict({plan.signature for plan in plans})
        predicted_cached = [plan.node_id for plan in plans if plan.signature in self._cache]
        emitter.emit("execution_cached", {"nodes": predicted_cached,
                                          "to_execute": [plan.node_id for plan in plans
                                                         if plan.signature not in self._cache]})

        # 3. Run or reuse each node.
        values = result.values
        for plan in plans:
            entry = self._cache.get(plan.signature)
            if entry is not None:
                self._touch(plan.signature)
                values[plan.node_id] = entry.values
                if entry.ui is not None:
                    result.ui_outputs[plan.node_id] = entry.ui
                result.cached.append(plan.node_id)
                continue
            if not self._run_node(plan, prompt, extra_pnginfo, emitter, result):
                return
        emitter.emit("execution_success", {})

    def _plan(self, node_id: str, node: Mapping[str, Any], class_inputs: dict[type, tuple[set, dict]]) -> _Plan:
        class_type = node["class_type"]
        class_def = self.registry[class_type]
        plan = _Plan(node_id, class_type, class_def)
        known = class_inputs.get(class_def)
        if known is None:
            # INPUT_TYPES can be slow (LoadImage lists a folder), so it is read once per class and run.
            input_types = class_def.INPUT_TYPES()
            hidden = {name: kind for name, kind in (input_types.get("hidden") or {}).items()
                      if kind in (_HIDDEN_PROMPT, _HIDDEN_EXTRA_PNGINFO, _HIDDEN_UNIQUE_ID)}
            known = class_inputs[class_def] = ({spec.name for spec in iter_input_specs(input_types)}, hidden)
        declared, plan.hidden = known
        for name, value in (node.get("inputs") or {}).items():
            if is_link_value(value):
                plan.links.append((name, str(value[0]), value[1]))
            elif name in declared:  # ComfyUI drops undeclared literal inputs
                plan.literals[name] = value
        return plan

    def _signature(self, plan: _Plan, signatures: Mapping[str, Any]) -> Any:
        """Return a hashable signature; upstream signatures are interned ints, so keys stay flat."""
        is_changed = None
        if hasattr(plan.class_def, "IS_CHANGED"):
            arguments = dict(plan.literals)
            for name, _, _ in plan.links:
                arguments[name] = None  # ComfyUI passes None for linked inputs
            try:
                is_changed = plan.class_def.IS_CHANGED(**arguments)
            except Exception as exc:  # noqa: BLE001 - treated as "changed", as ComfyUI does
                logger.warning("IS_CHANGED of node %s (%s) raised %s: %s; the node will run.", plan.node_id,
                               plan.class_type, type(exc).__name__, exc)
                return _AlwaysChanged()
            if isinstance(is_changed, float) and math.isnan(is_changed):
                return _AlwaysChanged()
        parts = [plan.class_type,
                 tuple(sorted((name, _freeze(value)) for name, value in plan.literals.items())),
                 tuple(sorted((name, signatures[source], slot) for name, source, slot in plan.links)),
                 _freeze(is_changed)]
        if getattr(plan.class_def, "NOT_IDEMPOTENT", False):
            parts.append(("node_id", plan.node_id))
        if getattr(plan.class_def, "OUTPUT_NODE", False) is True:
            # Output nodes write files: the same inputs saved into another folder are a different result.
            parts.append(("folders", str(host.output_dir()), str(host.temp_dir())))
        key = tuple(parts)
        if any(isinstance(signatures[source], _AlwaysChanged) for _, source, _ in plan.links):
            return _AlwaysChanged()
        signature = self._signature_ids.get(key)
        if signature is None:
            signature = self._signature_ids[key] = self._next_signature_id
            self._next_signature_id += 1
        return signature

    def _evict(self, keep: set) -> None:
        stale = [signature for signature in self._cache if signature not in keep]
        extra = len(stale) - self.keep_previous
        for signature in stale[:max(extra, 0)]:
            del self._cache[signature]
        live = set(self._cache) | keep
        if len(self._signature_ids) > 4 * max(len(live), 64):
            # Interned keys whose entries are gone can be forgotten: ids are never reused, so no stale hit.
            self._signature_ids = {key: value for key, value in self._signature_ids.items() if value in live}

    def _touch(self, signature: Any) -> None:
        entry = self._cache.pop(signature)
        self._cache[signature] = entry

    def _run_node(self, plan: _Plan, prompt: Mapping[str, Any], extra_pnginfo: dict | None,
                  emitter: _Emitter, result: ExecutionResult) -> bool:
        """Run one node; return False when the run must stop (error or interruption)."""
        node_id = plan.node_id
        values = result.values
        inputs = dict(plan.literals)
        for name, source, slot in plan.links:
            inputs[name] = values[source][slot]
        for name, kind in plan.hidden.items():
            if kind == _HIDDEN_PROMPT:
                inputs[name] = prompt
            elif kind == _HIDDEN_EXTRA_PNGINFO:
                inputs[name] = extra_pnginfo
            else:
                inputs[name] = node_id

        host.current_node_id = node_id
        emitter.emit("executing", {"node": node_id, "class_type": plan.class_type})
        started = time.perf_counter()
        try:
            host.check_interrupted()
            instance = self._objects.get((node_id, plan.class_type))
            if instance is None:
                instance = self._objects[(node_id, plan.class_type)] = plan.class_def()
            returned = getattr(instance, plan.class_def.FUNCTION)(**inputs)
            output_values, ui = _split_return(plan, returned)
        except host.InterruptedByUser:
            logger.info("Run interrupted at node %s (%s).", node_id, plan.class_type)
            result.status = "interrupted"
            result.error = {"prompt_id": emitter.prompt_id, "node_id": node_id, "node_type": plan.class_type,
                            "executed": list(result.executed)}
            emitter.emit("execution_interrupted", result.error)
            return False
        except Exception as exc:  # noqa: BLE001 - reported as the run's execution_error, naming the node
            self._fail(plan, exc, prompt, result, emitter, inputs)
            return False
        finally:
            host.current_node_id = None
        elapsed = time.perf_counter() - started

        self._cache[plan.signature] = _CacheEntry(output_values, ui)
        values[node_id] = output_values
        if ui is not None:
            result.ui_outputs[node_id] = ui
        result.executed.append(node_id)
        result.timings[node_id] = elapsed
        emitter.emit("executed", {"node": node_id, "class_type": plan.class_type, "output": ui, "seconds": elapsed})
        return True

    def _fail(self, plan: _Plan, exc: BaseException, prompt: Mapping[str, Any], result: ExecutionResult,
              emitter: _Emitter, inputs: Mapping[str, Any]) -> None:
        logger.error("Node %s (%s) failed: %s: %s", plan.node_id, plan.class_type, type(exc).__name__, exc,
                     extra={"node_failure": True})
        logger.debug("Traceback of node %s:", plan.node_id, exc_info=exc)
        result.status = "error"
        result.error = {
            "prompt_id": emitter.prompt_id,
            "node_id": plan.node_id,
            "node_type": plan.class_type,
            "executed": list(result.executed),
            "exception_message": str(exc),
            "exception_type": _full_type_name(type(exc)),
            "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": {name: [_format_value(value)] for name, value in inputs.items()
                               if name not in plan.hidden},
            "current_outputs": {node_id: [[_format_value(value)] for value in values]
                                for node_id, values in result.values.items()},
        }
        emitter.emit("execution_error", result.error)


def _split_return(plan: _Plan, returned: Any) -> tuple[tuple, dict | None]:
    """Separate a node's return value into (output tuple, UI dict or None) and check the output count."""
    ui = None
    values = returned
    if isinstance(returned, dict):
        ui = returned.get("ui")
        values = returned.get("result", ())
    if values is None:
        values = ()
    if not isinstance(values, (tuple, list)):
        raise TypeError(f"{plan.class_type}.{plan.class_def.FUNCTION} returned {type(values).__name__}; a node "
                        f"function must return a tuple with one value per RETURN_TYPES entry, or a dict with "
                        f"'ui' and 'result'.")
    expected = len(plan.class_def.RETURN_TYPES)
    if len(values) != expected and not (expected == 0 and not values):
        raise ValueError(f"{plan.class_type}.{plan.class_def.FUNCTION} returned {len(values)} values but "
                         f"RETURN_TYPES declares {expected} ({', '.join(map(str, plan.class_def.RETURN_TYPES))}).")
    return tuple(values), ui


def _node_sort_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _topological_order(prompt: Mapping[str, Any], outputs: list[str]) -> list[str]:
    """Depth-first post-order from each output: inputs before the nodes that use them, each node once.

    The prompt must be acyclic, which validation guarantees. The walk is iterative to handle deep graphs.
    """
    order: list[str] = []
    done: set[str] = set()
    for output_id in sorted(outputs, key=_node_sort_key):
        if output_id in done:
            continue
        stack = [(output_id, False)]
        while stack:
            node_id, expanded = stack.pop()
            if node_id in done:
                continue
            if expanded:
                done.add(node_id)
                order.append(node_id)
                continue
            stack.append((node_id, True))
            sources = [str(value[0]) for value in (prompt[node_id].get("inputs") or {}).values()
                       if is_link_value(value)]
            for source in reversed(sources):
                if source not in done:
                    stack.append((source, False))
    return order


class _Emitter:
    """Sends ExecutionEvents to the caller's callback and turns host.ProgressBar updates into events."""

    def __init__(self, callback: EventCallback | None, prompt_id: str):
        self.callback = callback
        self.prompt_id = prompt_id
        self.callback_failures = 0

    def emit(self, event_type: str, data: dict) -> None:
        if self.callback is None:
            return
        data.setdefault("prompt_id", self.prompt_id)
        try:
            self.callback(ExecutionEvent(event_type, data))
        except Exception:  # a broken progress display must not abort a long run
            self.callback_failures += 1
            if self.callback_failures == 1:
                logger.exception("The progress callback raised on a %s event; later failures are counted, not "
                                 "logged.", event_type)

    def on_progress(self, event: host.ProgressEvent) -> None:
        self.emit("progress", {"node": event.node_id, "value": event.value, "max": event.total})
