"""Validation of an API-format prompt before anything runs.

The checks and the error dictionaries follow ComfyUI's `execution.validate_prompt` and `validate_inputs`
(comfyanonymous/ComfyUI, execution.py), so a front end that understands ComfyUI's `/prompt` error response also
understands ours: `{"error": {...}, "node_errors": {node_id: {"errors": [...], "dependent_outputs": [...],
"class_type": ...}}}`. Beyond ComfyUI, this module also reports links to missing nodes or to output slots that
do not exist (`bad_linked_input`) and dependency cycles (`dependency_cycle`), which ComfyUI only finds when it
fails at run time.

The input-spec helpers at the top (`iter_input_specs`, `combo_options`, `types_compatible`, ...) are shared with
the UI-workflow converter and the executor.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

NodeRegistry = Mapping[str, type]

# ComfyUI leaves combo lists longer than this out of error responses (they can list thousands of model files).
COMBO_LIST_LIMIT = 20

# Socket types that carry a literal value and are converted (coerced) during validation, as ComfyUI does.
PRIMITIVE_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


# ---------------------------------------------------------------------------------------------------------------------
# Input-spec helpers.


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class: an entry of INPUT_TYPES()["required"] or ["optional"]."""

    name: str
    type: Any  # socket type string, or a list of choices for a COMBO
    options: dict
    required: bool


def iter_input_specs(input_types: Mapping[str, Any]) -> Iterator[InputSpec]:
    """Yield the required, then the optional inputs of an INPUT_TYPES() dict, in declaration order."""
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (input_types.get(section) or {}).items():
            if isinstance(spec, (list, tuple)) and spec:
                input_type = spec[0]
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            else:
                # A bare type string ("IMAGE" instead of ("IMAGE",)) is tolerated by ComfyUI too.
                input_type, options = spec, {}
            if isinstance(input_type, tuple):
                input_type = list(input_type)
            yield InputSpec(name, input_type, options, required)


def combo_options(input_type: Any, options: Mapping[str, Any]) -> list | None:
    """Return the allowed values of a COMBO input, or None when the input is not a COMBO.

    A COMBO is declared either as a list of choices (the V1 form) or as the type "COMBO" with an "options" list.
    """
    if isinstance(input_type, (list, tuple)):
        return list(input_type)
    if input_type == "COMBO":
        return list(options.get("options") or [])
    return None


def type_label(socket_type: Any) -> str:
    """Short name of a socket type for messages: COMBO lists are not spelled out."""
    if isinstance(socket_type, (list, tuple)):
        return "COMBO"
    return str(socket_type)


def types_compatible(received: Any, expected: Any) -> bool:
    """Return True when an output of type `received` may feed an input of type `expected`.

    Follows ComfyUI's `comfy_execution.validation.validate_node_input` (non-strict): equal types match, and
    comma-separated unions match when they share a member. `received != expected` is evaluated as written so
    that custom nodes' "any type" classes, which override `__ne__` to always return False, keep working.
    ComfyUI itself gives "*" no special meaning; here "*" on either side matches anything, which is what
    nodes declaring "*" intend.
    """
    if not (received != expected):  # noqa: SIM202 - honours __ne__ overrides
        return True
    if received == "*" or expected == "*":
        return True
    # An output declared as an empty COMBO list can feed any COMBO input (ComfyUI's `any_enum`).
    if isinstance(received, list) and not received and isinstance(expected, (list, tuple)):
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    received_set = {part.strip() for part in received.split(",")}
    expected_set = {part.strip() for part in expected.split(",")}
    return "*" in received_set or "*" in expected_set or bool(received_set & expected_set)


def is_link_value(value: Any) -> bool:
    """Return True when an API-prompt input value is a link ([source_node_id, output_slot])."""
    return isinstance(value, list)


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "*")


def is_widget_type(input_type: Any) -> bool:
    """True for input types that may hold a literal value: primitives, COMBO lists and the wildcard "*"."""
    return isinstance(input_type, (list, tuple)) or input_type in WIDGET_TYPES


def coerce_value(input_type: Any, value: Any) -> Any:
    """Convert a literal input value to its declared primitive type, as ComfyUI's validation does.

    INT uses int() (so 3.7 becomes 3 and "3.5" fails, as in ComfyUI), FLOAT float() and STRING str(). Other
    types are returned unchanged.

    Raises:
        ValueError, TypeError: when the value cannot be converted.
    """
    if input_type == "INT":
        return int(value)
    if input_type == "FLOAT":
        result = float(value)
        if not math.isfinite(result):
            raise ValueError(f"{value!r} is not a finite number")
        return result
    if input_type == "STRING":
        return str(value)
    if input_type == "BOOLEAN":
        # NOTE: ComfyUI applies bool(), which turns the string "false" into True. Here the strings "true" and
        # "false" map to their meaning, and every other value gets bool() as in ComfyUI.
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return bool(value)
    return value


def validate_function_arguments(class_def: type) -> tuple[list[str], bool]:
    """Return the argument names of a node class's VALIDATE_INPUTS and whether it takes **kwargs."""
    function = getattr(class_def, "VALIDATE_INPUTS", None)
    if function is None:
        return [], False
    argspec = inspect.getfullargspec(function)
    return list(argspec.args), argspec.varkw is not None


# ---------------------------------------------------------------------------------------------------------------------
# The error type.


class WorkflowValidationError(ValueError):
    """Raised when a prompt fails validation. It carries ComfyUI's `/prompt` error response.

    Attributes:
        response: {"error": {...}, "node_errors": {...}}, the body ComfyUI returns with HTTP 400.
        titles: node id -> node title, used to name nodes in the message.
    """

    def __init__(self, response: dict, titles: Mapping[str, str] | None = None):
        self.response = response
        self.titles = dict(titles or {})
        super().__init__(format_validation_errors(response, self.titles))

    @property
    def error(self) -> dict:
        return self.response["error"]

    @property
    def node_errors(self) -> dict:
        return self.response["node_errors"]


def _describe_node(node_id: str, class_type: str | None, titles: Mapping[str, str]) -> str:
    title = titles.get(node_id)
    if title and title != class_type:
        return f"node {node_id} '{title}' ({class_type})"
    return f"node {node_id} ({class_type})"


def _format_range(config: Any) -> str | None:
    if not isinstance(config, (list, tuple)) or len(config) < 2 or not isinstance(config[1], dict):
        return None
    options = config[1]
    if "min" not in options and "max" not in options:
        return None
    return f"allowed range {options.get('min', '-inf')}..{options.get('max', 'inf')}"


def _closest_choices(received: Any, choices: list) -> list[str]:
    """Up to three allowed values that look like `received`: close spellings, then names starting with it."""
    if not isinstance(received, str) or not received:
        return []
    names = [str(choice) for choice in choices]
    close = difflib.get_close_matches(received, names, n=3, cutoff=0.3)
    close += [name for name in names if name.startswith(received)]
    return list(dict.fromkeys(close))[:3]


def _format_choices(config: Any) -> str | None:
    if not isinstance(config, (list, tuple)) or not config:
        return None
    choices = combo_options(config[0], config[1] if len(config) > 1 and isinstance(config[1], dict) else {})
    if choices is None:
        return None
    shown = ", ".join(repr(choice) for choice in choices[:COMBO_LIST_LIMIT])
    more = f" and {len(choices) - COMBO_LIST_LIMIT} more" if len(choices) > COMBO_LIST_LIMIT else ""
    if not choices:
        from . import host

        return (f"the list of allowed values is empty; for a model input, put files into the model folder "
                f"(standalone: {host.home_dir() / 'models'}, set by STYLEBRIDGE_HOME) or run "
                f"`stylebridge demo-models`")
    return f"allowed values: {shown}{more}"


def _format_node_error(error: dict) -> str:
    """Format one entry of node_errors[...]["errors"] as a line: the message, the value and what is allowed."""
    kind = error.get("type")
    extra = error.get("extra_info") or {}
    config = extra.get("input_config")
    parts = [error.get("message", kind)]
    if kind == "required_input_missing":
        expected = type_label(config[0]) if isinstance(config, (list, tuple)) and config else None
        parts.append(f"Connect an output of type {expected} or set a value." if expected else
                     "Connect an output or set a value.")
    elif kind == "return_type_mismatch":
        expected = type_label(config[0]) if isinstance(config, (list, tuple)) and config else "?"
        parts.append(f"Linked output {extra.get('linked_node')} has type {type_label(extra.get('received_type'))}, "
                     f"expected {expected}.")
    elif kind == "invalid_input_type":
        expected = type_label(config[0]) if isinstance(config, (list, tuple)) and config else "?"
        reason = extra.get("exception_message")
        parts.append(f"Received {extra.get('received_value')!r}, expected a value of type {expected}"
                     + (f": {str(reason).rstrip('.')}." if reason else "."))
    elif kind in ("value_smaller_than_min", "value_bigger_than_max"):
        allowed = _format_range(config)
        parts.append(f"Received {extra.get('received_value')!r}" + (f"; {allowed}." if allowed else "."))
    elif kind == "value_not_in_list":
        choices = _format_choices(config)
        if not choices and extra.get("closest"):
            choices = f"closest allowed values: {', '.join(repr(name) for name in extra['closest'])}"
        parts.append(f"Received {extra.get('received_value')!r}; "
                     + (choices if choices else str(error.get("details"))))
    elif error.get("details"):
        parts.append(str(error["details"]))
    return " ".join(_sentence(part) for part in parts)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def format_validation_errors(response: Mapping[str, Any], titles: Mapping[str, str] | None = None) -> str:
    """Render a ComfyUI-style validation response as readable lines naming node, class, input and value."""
    titles = titles or {}
    error = response.get("error") or {}
    lines = [f"Workflow validation failed: {error.get('message', 'invalid prompt')} [{error.get('type')}]"]
    node_errors = response.get("node_errors") or {}
    if not node_errors:
        details = error.get("details")
        if details:
            lines.append(f"  {details}")
        hint = _TOP_LEVEL_HINTS.get(error.get("type"))
        if hint:
            lines.append(f"  {hint}")
    for node_id, entry in node_errors.items():
        where = _describe_node(node_id, entry.get("class_type"), titles)
        for node_error in entry.get("errors", []):
            input_name = (node_error.get("extra_info") or {}).get("input_name")
            location = f"{where}, input '{input_name}'" if input_name else where
            lines.append(f"  - {location}: {_format_node_error(node_error)}")
    return "\n".join(lines)


_TOP_LEVEL_HINTS = {
    "invalid_prompt": "Install the node pack that provides this node class, or remove the node from the workflow.",
    "prompt_no_outputs": "Add an output node (for example SaveImage or PreviewImage) and connect it.",
}


# ---------------------------------------------------------------------------------------------------------------------
# Validation.


@dataclass
class PromptValidation:
    """Result of `validate_prompt`, shaped like ComfyUI's (valid, error, good_outputs, node_errors) tuple.

    `prompt` is a normalized copy of the input: literal values coerced to their declared types, `{"__value__":
    [...]}` wrappers removed, and link node ids turned into strings. Run that copy, not the original.
    """

    valid: bool
    error: dict | None
    outputs: list[str]
    node_errors: dict
    prompt: dict = field(default_factory=dict)

    def response(self) -> dict:
        """Return the `/prompt` error response body: {"error": ..., "node_errors": ...}."""
        return {"error": self.error, "node_errors": self.node_errors}


def _error(kind: str, message: str, details: str, **extra_info: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def _exception_error(kind: str, message: str, exc: BaseException, **extra_info: Any) -> dict:
    exception_type = type(exc).__qualname__ if type(exc).__module__ == "builtins" else \
        f"{type(exc).__module__}.{type(exc).__qualname__}"
    return _error(kind, message, str(exc), exception_message=str(exc), exception_type=exception_type,
                  traceback=traceback.format_tb(exc.__traceback__), **extra_info)


def _sort_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def validate_prompt(prompt: Mapping[str, Any], registry: NodeRegistry,
                    partial_execution_targets: list[str] | None = None) -> PromptValidation:
    """Validate an API-format prompt against the node classes in `registry`, reporting problems in the result.

    Args:
        prompt: {node_id: {"class_type": str, "inputs": {name: value or [source_id, slot]}}}.
        registry: node class name -> node class (ComfyUI's NODE_CLASS_MAPPINGS).
        partial_execution_targets: when given, only these output nodes are validated (ComfyUI's option of the
            same name).

    Returns:
        A PromptValidation. `valid` is False when the prompt cannot run at all. `node_errors` may be non-empty
        while `valid` is True, when some outputs are fine and others are not (ComfyUI runs the good ones).
    """
    # 1. Every node needs a known class_type (ComfyUI stops at the first failure).
    if not isinstance(prompt, Mapping):
        return PromptValidation(False, _error("invalid_prompt", "Cannot execute because the prompt is not a "
                                              "JSON object of nodes.", f"Received {type(prompt).__name__}."),
                                [], {})
    prompt = {str(node_id): node for node_id, node in prompt.items()}
    output_ids = []
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping) or "class_type" not in node:
            return PromptValidation(False, _error("invalid_prompt", "Cannot execute because a node is missing the "
                                                  "class_type property.", f"Node ID '#{node_id}'"), [], {})
        class_def = registry.get(node["class_type"])
        if class_def is None:
            return PromptValidation(False, _error("invalid_prompt", f"Cannot execute because node "
                                                  f"{node['class_type']} does not exist.", f"Node ID '#{node_id}'"),
                                    [], {})
        is_output = getattr(class_def, "OUTPUT_NODE", False) is True
        if is_output and (partial_execution_targets is None or node_id in partial_execution_targets):
            output_ids.append(node_id)
    if not output_ids:
        return PromptValidation(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})
    output_ids.sort(key=_sort_key)

    # 2. Validate every node reachable from an output, each once.
    normalized: dict[str, dict] = {}
    node_error_lists: dict[str, list[dict]] = {}
    upstream: dict[str, list[str]] = {}
    input_types_cache: dict[type, dict] = {}
    pending = list(output_ids)
    while pending:
        node_id = pending.pop()
        if node_id in normalized:
            continue
        errors, normalized[node_id], sources = _validate_node(node_id, prompt, registry, input_types_cache)
        upstream[node_id] = sources
        if errors:
            node_error_lists[node_id] = errors
        pending.extend(source for source in sources if source not in normalized)

    # 3. Dependency cycles among the reachable nodes.
    for cycle in _find_cycles(upstream):
        path = " -> ".join(f"{node_id} ({prompt[node_id]['class_type']})" for node_id in cycle + cycle[:1])
        for node_id in cycle:
            node_error_lists.setdefault(node_id, []).append(
                _error("dependency_cycle", "Dependency cycle detected", path, cycle=list(cycle)))

    # 4. Attribute the errors to the outputs that depend on them.
    node_errors: dict[str, dict] = {}
    good_outputs = []
    for output_id in output_ids:
        failing = [node_id for node_id in _closure(output_id, upstream) if node_id in node_error_lists]
        if not failing:
            good_outputs.append(output_id)
            continue
        for node_id in sorted(failing, key=_sort_key):
            entry = node_errors.setdefault(node_id, {"errors": node_error_lists[node_id], "dependent_outputs": [],
                                                     "class_type": prompt[node_id]["class_type"]})
            entry["dependent_outputs"].append(output_id)
    node_errors = {node_id: node_errors[node_id] for node_id in sorted(node_errors, key=_sort_key)}

    if node_errors:
        for node_id, entry in node_errors.items():
            for node_error in entry["errors"]:
                logger.debug("Validation error in node %s (%s): %s: %s", node_id, entry["class_type"],
                             node_error["message"], node_error["details"])

    normalized_prompt = {node_id: normalized.get(node_id) or _copy_node(node) for node_id, node in prompt.items()}
    if not good_outputs:
        details = "\n".join(f"{node_error['message']}: {node_error['details']}"
                            for entry in node_errors.values() for node_error in entry["errors"])
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return PromptValidation(False, error, [], node_errors, normalized_prompt)
    return PromptValidation(True, None, good_outputs, node_errors, normalized_prompt)


def check_prompt(prompt: Mapping[str, Any], registry: NodeRegistry, *, strict: bool = True,
                 partial_execution_targets: list[str] | None = None) -> PromptValidation:
    """Validate a prompt and raise unless it can run.

    Args:
        strict: when True (the default), any node error fails the whole prompt, so nothing runs and nothing is
            written. When False, the prompt passes if at least one output is valid, as in ComfyUI.

    Raises:
        WorkflowValidationError: carrying the ComfyUI-style response.
    """
    result = validate_prompt(prompt, registry, partial_execution_targets)
    titles = {str(node_id): (node.get("_meta") or {}).get("title")
              for node_id, node in prompt.items() if isinstance(node, Mapping)}
    titles = {node_id: title for node_id, title in titles.items() if title}
    if not result.valid:
        raise WorkflowValidationError(result.response(), titles)
    if strict and result.node_errors:
        details = "\n".join(f"{node_error['message']}: {node_error['details']}"
                            for entry in result.node_errors.values() for node_error in entry["errors"])
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        raise WorkflowValidationError({"error": error, "node_errors": result.node_errors}, titles)
    return result


def _copy_node(node: Any) -> Any:
    if not isinstance(node, Mapping):
        return node
    copied = dict(node)
    copied["inputs"] = dict(node.get("inputs") or {})
    return copied


def _validate_node(node_id: str, prompt: Mapping[str, Any], registry: NodeRegistry,
                   input_types_cache: dict[type, dict]) -> tuple[list[dict], dict, list[str]]:
    """Check one node's inputs. Returns (errors, normalized node, ids of the nodes it links from)."""
    node = prompt[node_id]
    class_def = registry[node["class_type"]]
    inputs = node.get("inputs") or {}
    normalized_node = _copy_node(node)
    normalized_inputs = normalized_node["inputs"]
    errors: list[dict] = []
    sources: list[str] = []

    if not isinstance(inputs, Mapping):
        errors.append(_error("invalid_prompt", "Node inputs must be a JSON object", f"Received {inputs!r}"))
        normalized_node["inputs"] = {}
        return errors, normalized_node, sources

    try:
        input_types = input_types_cache.get(class_def)
        if input_types is None:
            input_types = input_types_cache[class_def] = class_def.INPUT_TYPES()
        specs = list(iter_input_specs(input_types))
        validate_arguments, validate_takes_kwargs = validate_function_arguments(class_def)
    except Exception as exc:  # noqa: BLE001 - a broken INPUT_TYPES must not stop the validation of other nodes
        errors.append(_exception_error("exception_during_validation", "Exception when validating node", exc))
        return errors, normalized_node, sources

    received_types: dict[str, Any] = {}
    declared = set()
    for spec in specs:
        declared.add(spec.name)
        config = [spec.type, spec.options]
        if spec.name not in inputs:
            if spec.required:
                errors.append(_error("required_input_missing", "Required input is missing", spec.name,
                                     input_name=spec.name, input_config=config))
            continue
        value = inputs[spec.name]

        # Linked input: the source node must exist, have that output slot, and produce a compatible type.
        if is_link_value(value):
            link_error, link = _check_link(spec.name, value, config, prompt, registry)
            if link_error is not None:
                errors.append(link_error)
                continue
            source_id, slot = link
            sources.append(source_id)
            normalized_inputs[spec.name] = [source_id, slot]
            received_type = getattr(registry[prompt[source_id]["class_type"]], "RETURN_TYPES", ())[slot]
            received_types[spec.name] = received_type
            if "input_types" not in validate_arguments and not types_compatible(received_type, spec.type):
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{spec.name}, {type_label(received_type)} != {type_label(spec.type)}",
                                     input_name=spec.name, input_config=config, received_type=received_type,
                                     linked_node=[source_id, slot]))
            continue

        # Literal value: unwrap, coerce, then check range and choices.
        if isinstance(value, Mapping) and "__value__" in value:
            value = value["__value__"]
        if not is_widget_type(spec.type) and not spec.options.get("rawLink"):
            errors.append(_error("invalid_input_type", "Input must be connected to another node's output",
                                 f"{spec.name}: an input of type {type_label(spec.type)} needs a link, got the literal "
                                 f"value {value!r}", input_name=spec.name, input_config=config,
                                 received_value=value))
            continue
        try:
            value = coerce_value(spec.type, value)
        except (TypeError, ValueError, OverflowError) as exc:
            errors.append(_error("invalid_input_type", f"Failed to convert an input value to a "
                                 f"{type_label(spec.type)} value", f"{spec.name}, {value}, {exc}",
                                 input_name=spec.name, input_config=config, received_value=value,
                                 exception_message=str(exc)))
            continue
        normalized_inputs[spec.name] = value
        if spec.name in validate_arguments:
            continue  # ComfyUI leaves range and choice checks to the node's own VALIDATE_INPUTS
        range_error = _check_range(spec, value, config)
        if range_error is not None:
            errors.append(range_error)
            continue
        choices = combo_options(spec.type, spec.options)
        if choices is not None and value not in choices:
            long_list = len(choices) > COMBO_LIST_LIMIT
            shown = f"(list of length {len(choices)})" if long_list else str(choices)
            # Like ComfyUI, a long list is not repeated in the response; the closest names stand in for it.
            errors.append(_error("value_not_in_list", "Value not in list", f"{spec.name}: '{value}' not in {shown}",
                                 input_name=spec.name, input_config=None if long_list else config,
                                 received_value=value, closest=_closest_choices(value, choices) if long_list else []))

    # Undeclared linked inputs still run as dependencies (ComfyUI passes them to nodes taking **kwargs).
    for name, value in inputs.items():
        if name in declared or not is_link_value(value):
            continue
        link_error, link = _check_link(name, value, None, prompt, registry)
        if link_error is not None:
            errors.append(link_error)
            continue
        sources.append(link[0])
        normalized_inputs[name] = list(link)

    if (validate_arguments or validate_takes_kwargs) and not errors:
        custom_error = _run_validate_inputs(class_def, specs, normalized_inputs, validate_arguments,
                                            validate_takes_kwargs, received_types)
        if custom_error is not None:
            errors.append(custom_error)
    return errors, normalized_node, sources


def _check_link(name: str, value: list, config: Any, prompt: Mapping[str, Any],
                registry: NodeRegistry) -> tuple[dict | None, tuple[str, int] | None]:
    """Check a link value; return (error, None) or (None, (source_id, slot))."""
    well_formed = (len(value) == 2 and isinstance(value[0], (str, int)) and not isinstance(value[0], bool)
                   and isinstance(value[1], int) and not isinstance(value[1], bool))
    if not well_formed:
        return _error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                      name, input_name=name, input_config=config, received_value=value), None
    source_id, slot = str(value[0]), value[1]
    source = prompt.get(source_id)
    if source is None:
        return _error("bad_linked_input", f"Bad linked input, node {source_id} does not exist in the prompt",
                      f"{name} is linked to [{source_id!r}, {slot}]; link it to an existing node or set a value",
                      input_name=name, input_config=config, received_value=value), None
    return_types = getattr(registry[source["class_type"]], "RETURN_TYPES", ())
    if not 0 <= slot < len(return_types):
        return _error("bad_linked_input", f"Bad linked input, node {source_id} ({source['class_type']}) has no "
                      f"output slot {slot}", f"{name} is linked to [{source_id!r}, {slot}]; valid slots are "
                      f"0..{len(return_types) - 1}" if return_types else f"{name}: node {source_id} has no outputs",
                      input_name=name, input_config=config, received_value=value), None
    return None, (source_id, slot)


def _check_range(spec: InputSpec, value: Any, config: list) -> dict | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    minimum, maximum = spec.options.get("min"), spec.options.get("max")
    if minimum is not None and value < minimum:
        return _error("value_smaller_than_min", f"Value {value} smaller than min of {minimum}", spec.name,
                      input_name=spec.name, input_config=config, received_value=value)
    if maximum is not None and value > maximum:
        return _error("value_bigger_than_max", f"Value {value} bigger than max of {maximum}", spec.name,
                      input_name=spec.name, input_config=config, received_value=value)
    return None


def _run_validate_inputs(class_def: type, specs: list[InputSpec], inputs: Mapping[str, Any],
                         argument_names: list[str], takes_kwargs: bool, received_types: dict) -> dict | None:
    """Call the node's VALIDATE_INPUTS with its literal inputs (linked inputs are None, as in ComfyUI)."""
    declared = {spec.name for spec in specs}
    arguments = {}
    for name, value in inputs.items():
        if name not in declared or not (takes_kwargs or name in argument_names):
            continue
        arguments[name] = None if is_link_value(value) else value
    if "input_types" in argument_names:
        arguments["input_types"] = received_types
    checked = ", ".join(name for name in arguments if name != "input_types")
    try:
        result = class_def.VALIDATE_INPUTS(**arguments)
    except Exception as exc:  # noqa: BLE001 - reported as that node's validation error
        return _exception_error("exception_during_validation", "Exception when validating node", exc,
                                input_name=checked or None)
    if result is True:
        return None
    details = checked if result is False else f"{checked} - {result}"
    single = [name for name in arguments if name != "input_types"]
    return _error("custom_validation_failed", "Custom validation failed for node", details,
                  input_name=single[0] if len(single) == 1 else checked or None,
                  received_value=arguments.get(single[0]) if len(single) == 1 else None)


def _closure(start: str, upstream: Mapping[str, list[str]]) -> set[str]:
    """Ids of `start` and every node it depends on."""
    seen = {start}
    stack = [start]
    while stack:
        for source in upstream.get(stack.pop(), ()):
            if source not in seen:
                seen.add(source)
                stack.append(source)
    return seen


def _find_cycles(upstream: Mapping[str, list[str]]) -> list[list[str]]:
    """Return one ordered cycle for each strongly connected component that contains a cycle.

    Iterative Tarjan, so deep graphs do not hit Python's recursion limit.
    """
    index_of: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(upstream, key=_sort_key):
        if root in index_of:
            continue
        work = [(root, iter(upstream.get(root, ())))]
        index_of[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node_id, children = work[-1]
            advanced = False
            for child in children:
                if child not in upstream:
                    continue
                if child not in index_of:
                    index_of[child] = lowlink[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(upstream.get(child, ()))))
                    advanced = True
                    break
                if child in on_stack:
                    lowlink[node_id] = min(lowlink[node_id], index_of[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node_id])
            if lowlink[node_id] == index_of[node_id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                if len(component) > 1 or node_id in upstream.get(node_id, ()):
                    components.append(component)
    return [_order_cycle(component, upstream) for component in components]


def _order_cycle(component: list[str], upstream: Mapping[str, list[str]]) -> list[str]:
    """Walk a cycle inside a strongly connected component, in data-flow order (source before consumer)."""
    members = set(component)
    start = min(component, key=_sort_key)
    # Follow "depends on" edges from the start until a node repeats, then reverse for data-flow order.
    path = [start]
    seen = {start: 0}
    current = start
    while True:
        current = next(source for source in upstream[current] if source in members)
        if current in seen:
            cycle = path[seen[current]:]
            break
        seen[current] = len(path)
        path.append(current)
    cycle.reverse()
    first = cycle.index(start)
    return cycle[first:] + cycle[:first]
