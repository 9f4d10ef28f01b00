"""Loading workflow files and converting ComfyUI's UI workflow format to the API prompt format.

The ComfyUI editor saves a *UI workflow*: `nodes` (id, type, mode, inputs, outputs, widgets_values, ...) and
`links` ([id, origin_id, origin_slot, target_id, target_slot, type]). The server runs an *API prompt*:
`{node_id: {"class_type", "inputs": {name: value or [source_id, slot]}, "_meta": {"title"}}}`. The editor does
this conversion in the browser (`graphToPrompt` in Comfy-Org/ComfyUI_frontend, src/utils/executionUtil.ts, with
link resolution in src/lib/litegraph/src/subgraph/ExecutableNodeDTO.ts). `ui_to_api` reproduces it:

- widgets_values are mapped onto the widget inputs in INPUT_TYPES order (required, then optional), skipping
  link-only sockets. The editor also stores values that are not inputs, and these are skipped:
  - the control_after_generate mode after an INT seed widget (an input named seed or noise_seed, or one whose
    options set control_after_generate),
  - the control mode and the filter text after a COMBO widget with control_after_generate,
  - the upload button of an input with image_upload, placed after the last required input.
- A linked input takes the link, followed through Reroute nodes and bypassed nodes (mode 4: the output passes
  through the input chosen by the editor's `_getBypassSlotIndex` rule). A link from a PrimitiveNode sets the
  target widget to the primitive's value.
- Muted nodes (mode 2) are dropped, and so are inputs linked to them. Note and MarkdownNote are ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .validation import PRIMITIVE_TYPES, NodeRegistry, WorkflowValidationError, combo_options, iter_input_specs

logger = logging.getLogger(__name__)

# Node types that exist only in the editor: they never reach the server.
FRONTEND_ONLY_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})

# litegraph node modes (LGraphEventMode).
MODE_NEVER = 2  # "muted"
MODE_BYPASS = 4

# Values of the editor's control_after_generate widget ("increment-wrap" exists for COMBO targets only).
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
# INT inputs with these names get a control_after_generate widget unless their options set it to False.
SEED_INPUT_NAMES = ("seed", "noise_seed")
# Input options that make the editor add an upload button widget.
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")


class WorkflowFormatError(ValueError):
    """Raised when a file or object is neither a UI workflow nor an API prompt, or is not valid JSON."""


class WorkflowConversionError(WorkflowValidationError):
    """Raised when a UI workflow cannot be converted: unknown node types, subgraphs, or link loops.

    Its `response` has ComfyUI's `/prompt` error shape with one `node_errors` entry per offending node.
    """


# ---------------------------------------------------------------------------------------------------------------------
# Loading and format detection.


def load_workflow(source: str | Path | Mapping[str, Any]) -> dict:
    """Read a workflow from a dict, a JSON string, a .json file or a ComfyUI PNG's embedded metadata.

    A JSON object of the form {"prompt": {...}} (a `/prompt` request body) is unwrapped to its prompt.

    Raises:
        FileNotFoundError: when a path does not exist.
        WorkflowFormatError: when the text is not valid JSON or the PNG carries no workflow.
    """
    if isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        data = _parse_json(source, "the JSON string")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Workflow file not found: {path}. Pass the path of a workflow .json file "
                                    f"(UI or API format).")
        try:
            if path.suffix.lower() == ".png":
                data = _read_png_workflow(path)
            else:
                data = _parse_json(path.read_text(encoding="utf-8"), str(path))
        except (UnicodeDecodeError, OSError) as exc:  # PIL's UnidentifiedImageError is an OSError.
            raise WorkflowFormatError(f"Could not read {path} as a workflow ({type(exc).__name__}: {exc}). Pass a "
                                      f"UTF-8 .json file or a PNG saved by SaveImage.") from exc
    if isinstance(data, Mapping) and isinstance(data.get("prompt"), Mapping) and "nodes" not in data:
        data = dict(data["prompt"])
    return data


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"Invalid JSON in {where}: {exc.msg} at line {exc.lineno}, column {exc.colno}."
                                  ) from exc


def _read_png_workflow(path: Path) -> Any:
    """Return the API prompt embedded by SaveImage (the exact graph that ran), else the UI workflow."""
    from PIL import Image

    with Image.open(path) as image:
        text_chunks = dict(getattr(image, "text", {}) or {})
    for key in ("prompt", "workflow"):
        if key in text_chunks:
            return _parse_json(text_chunks[key], f"the '{key}' text chunk of {path}")
    raise WorkflowFormatError(f"{path} has no 'prompt' or 'workflow' text chunk. Only PNGs saved by ComfyUI's "
                              f"or StyleBridge's SaveImage carry a workflow.")


def detect_format(data: Any) -> str:
    """Return "ui" for an editor workflow (has a `nodes` list) or "api" for an API prompt.

    Raises:
        WorkflowFormatError: naming what was found instead.
    """
    if not isinstance(data, Mapping):
        raise WorkflowFormatError(f"A workflow must be a JSON object, got {type(data).__name__}.")
    if isinstance(data.get("nodes"), list):
        return "ui"
    if data and all(isinstance(node, Mapping) for node in data.values()) and \
            any("class_type" in node for node in data.values()):
        return "api"
    keys = ", ".join(sorted(map(str, data))[:8]) or "none"
    raise WorkflowFormatError(f"Unrecognized workflow format (top-level keys: {keys}). Expected a UI workflow "
                              f"with a 'nodes' list, or an API prompt mapping node ids to objects with "
                              f"'class_type' and 'inputs'.")


# ---------------------------------------------------------------------------------------------------------------------
# Widget layout: which widgets_values entry belongs to which input.


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of a node's widgets_values: an input's value, or an editor-only extra."""

    input_name: str
    kind: str  # "value", or an extra: "control", "filter" (COMBO control filter text), "upload"


def _has_widget(input_type: Any, options: Mapping[str, Any]) -> bool:
    if options.get("forceInput"):
        return False
    return combo_options(input_type, options) is not None or input_type in PRIMITIVE_TYPES


def widget_layout(input_types: Mapping[str, Any]) -> list[WidgetSlot]:
    """Return the widget slots the editor creates for a node class, in widgets_values order."""
    slots: list[WidgetSlot] = []
    uploads: list[WidgetSlot] = []
    required_done = False
    for spec in iter_input_specs(input_types):
        if not spec.required and not required_done:
            # The editor appends the upload button after the required inputs.
            slots.extend(uploads)
            uploads, required_done = [], True
        if not _has_widget(spec.type, spec.options):
            continue
        slots.append(WidgetSlot(spec.name, "value"))
        control = spec.options.get("control_after_generate")
        is_combo = combo_options(spec.type, spec.options) is not None
        if spec.type == "INT":
            if control is None:
                control = spec.name in SEED_INPUT_NAMES
            if control:
                slots.append(WidgetSlot(spec.name, "control"))
        elif spec.type == "FLOAT" and control:
            slots.append(WidgetSlot(spec.name, "control"))
        elif is_combo and control:
            slots.append(WidgetSlot(spec.name, "control"))
            slots.append(WidgetSlot(spec.name, "filter"))
        if is_combo and any(spec.options.get(option) for option in UPLOAD_OPTIONS):
            uploads.append(WidgetSlot(spec.name, "upload"))
    slots.extend(uploads)
    return slots


def _extra_matches(slot: WidgetSlot, value: Any) -> bool:
    if slot.kind == "control":
        return isinstance(value, str) and value in CONTROL_VALUES
    if slot.kind == "filter":
        return isinstance(value, str)
    return value is None or value == "image"  # the upload button's value


def map_widget_values(input_types: Mapping[str, Any], widgets_values: Any) -> dict[str, Any]:
    """Map a node's saved widgets_values onto its input names.

    A list is matched against `widget_layout`. The editor-only extras are skipped when the list has room for
    them and the value looks like one (a control mode, a filter string, the upload button's "image"), so that
    workflows saved before a given extra existed still map correctly. A dict (saved by some custom nodes) is
    taken by name.
    """
    layout = widget_layout(input_types)
    if isinstance(widgets_values, Mapping):
        names = {slot.input_name for slot in layout if slot.kind == "value"}
        return {name: value for name, value in widgets_values.items() if name in names}
    if not isinstance(widgets_values, list):
        return {}

    values: dict[str, Any] = {}
    value_count = sum(1 for slot in layout if slot.kind == "value")
    surplus = len(widgets_values) - value_count  # how many extras the saved list can contain
    position = 0
    for slot in layout:
        if position >= len(widgets_values):
            break
        if slot.kind == "value":
            values[slot.input_name] = widgets_values[position]
            position += 1
        elif surplus > 0 and _extra_matches(slot, widgets_values[position]):
            position += 1
            surplus -= 1
    return values


# ---------------------------------------------------------------------------------------------------------------------
# UI -> API conversion.


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass(frozen=True)
class _PrimitiveValue:
    """A link that ends at a PrimitiveNode: the target widget takes this value."""

    value: Any


def _parse_links(raw_links: Any) -> dict[Any, _Link]:
    links: dict[Any, _Link] = {}
    for raw in raw_links or []:
        if isinstance(raw, Mapping):  # workflow schema version 1 stores links as objects
            link_id = raw.get("id")
            fields = (raw.get("origin_id"), raw.get("origin_slot"), raw.get("target_id"), raw.get("target_slot"),
                      raw.get("type"))
        elif isinstance(raw, (list, tuple)) and len(raw) >= 5:
            link_id, fields = raw[0], (*raw[1:5], raw[5] if len(raw) > 5 else None)
        else:
            logger.warning("Ignoring malformed link entry %r in the workflow's links list.", raw)
            continue
        origin_id, origin_slot, target_id, target_slot, link_type = fields
        if None in (link_id, origin_id, origin_slot, target_id, target_slot):
            logger.warning("Ignoring incomplete link entry %r in the workflow's links list.", raw)
            continue
        links[link_id] = _Link(str(origin_id), int(origin_slot), str(target_id), int(target_slot), link_type)
    return links


def _valid_connection(type_a: Any, type_b: Any) -> bool:
    """litegraph's `LiteGraph.isValidConnection`: "*" or empty matches anything; comparison ignores case."""
    type_a = None if type_a in ("", "*", 0) else type_a
    type_b = None if type_b in ("", "*", 0) else type_b
    if not type_a or not type_b or type_a == type_b:
        return True
    lower_a, lower_b = str(type_a).lower(), str(type_b).lower()
    if "," not in lower_a and "," not in lower_b:
        return lower_a == lower_b
    return any(_valid_connection(a, b) for a in lower_a.split(",") for b in lower_b.split(","))


def _wrap_list(value: Any) -> Any:
    # A list in an API prompt means a link, so the editor wraps list-valued widgets as {"__value__": [...]}.
    return {"__value__": value} if isinstance(value, list) else value


class _Converter:
    def __init__(self, workflow: Mapping[str, Any], registry: NodeRegistry, display_names: Mapping[str, str]):
        self.registry = registry
        self.display_names = display_names
        self.nodes: dict[str, dict] = {}
        for node in workflow.get("nodes") or []:
            if isinstance(node, Mapping) and node.get("id") is not None:
                self.nodes[str(node["id"])] = dict(node)
        self.links = _parse_links(workflow.get("links"))
        definitions = workflow.get("definitions") or {}
        self.subgraph_ids = {str(subgraph.get("id")) for subgraph in definitions.get("subgraphs") or []
                             if isinstance(subgraph, Mapping)}
        self.group_node_names = set(((workflow.get("extra") or {}).get("groupNodes") or {}).keys())
        self.input_types_cache: dict[type, dict] = {}

    def convert(self) -> dict:
        self._check_node_types()
        prompt: dict[str, dict] = {}
        for node_id, node in self.nodes.items():
            if node.get("type") in FRONTEND_ONLY_TYPES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
                continue
            prompt[node_id] = self._convert_node(node_id, node)

        # Like the editor: drop inputs linked to nodes that are not in the prompt (muted nodes).
        for node_id, api_node in prompt.items():
            for name, value in list(api_node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                    logger.info("Node %s input '%s': dropped its link to node %s, which is muted.",
                                node_id, name, value[0])
                    del api_node["inputs"][name]
        return prompt

    def _check_node_types(self) -> None:
        node_errors: dict[str, dict] = {}
        for node_id, node in self.nodes.items():
            node_type = node.get("type")
            if node_type in FRONTEND_ONLY_TYPES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
                continue
            if node_type in self.subgraph_ids or node_type in self.group_node_names or \
                    str(node_type).startswith(("workflow>", "workflow/")):
                # TODO: expand subgraphs and legacy group nodes into their inner nodes.
                message = "Subgraphs and group nodes are not supported by the standalone runner"
                details = ("Unpack the subgraph (or convert the group node back to nodes) in ComfyUI and save "
                           "the workflow again, or export it with 'Export (API)'")
            elif node_type not in self.registry:
                message = f"Node type {node_type} is not available"
                details = "Install the node pack that provides it, or remove or mute the node in ComfyUI"
            else:
                continue
            error = {"type": "invalid_prompt", "message": message, "details": details, "extra_info": {}}
            node_errors[node_id] = {"errors": [error], "dependent_outputs": [], "class_type": node_type}
        if node_errors:
            types = ", ".join(sorted({str(entry["class_type"]) for entry in node_errors.values()}))
            error = {"type": "invalid_prompt", "message": f"Cannot convert the workflow: unsupported node types "
                     f"{types}", "details": f"Node IDs {', '.join(node_errors)}", "extra_info": {}}
            raise WorkflowConversionError({"error": error, "node_errors": node_errors}, self._titles())

    def _titles(self) -> dict[str, str]:
        return {node_id: node["title"] for node_id, node in self.nodes.items() if node.get("title")}

    def _convert_node(self, node_id: str, node: Mapping[str, Any]) -> dict:
        class_type = node["type"]
        class_def = self.registry[class_type]
        input_types = self.input_types_cache.get(class_def)
        if input_types is None:
            input_types = self.input_types_cache[class_def] = class_def.INPUT_TYPES()

        # 1. Widget values first, then links override them (the editor's order).
        inputs: dict[str, Any] = {name: _wrap_list(value)
                                  for name, value in map_widget_values(input_types, node.get("widgets_values")).items()}
        for index, slot in enumerate(node.get("inputs") or []):
            if not isinstance(slot, Mapping) or slot.get("link") is None or not slot.get("name"):
                continue
            resolved = self._resolve_input(node_id, index, None, set())
            if resolved is None:
                continue  # unresolved: a widget input keeps its widget value, a socket stays unconnected
            if isinstance(resolved, _PrimitiveValue):
                widget_name = (slot.get("widget") or {}).get("name") or slot["name"]
                if resolved.value is not None:
                    inputs[widget_name] = _wrap_list(resolved.value)
                continue
            inputs[slot["name"]] = list(resolved)

        # 2. Declared inputs come first, in INPUT_TYPES order, then undeclared (dynamic) ones.
        declared = [spec.name for spec in iter_input_specs(input_types)]
        ordered = {name: inputs[name] for name in declared if name in inputs}
        ordered.update((name, value) for name, value in inputs.items() if name not in ordered)
        title = node.get("title") or self.display_names.get(class_type) or class_type
        return {"inputs": ordered, "class_type": class_type, "_meta": {"title": title}}

    # Link resolution, after ExecutableNodeDTO.resolveInput / resolveOutput.

    def _resolve_input(self, node_id: str, index: int, target_type: Any, visited: set) -> Any:
        """Follow the link into input `index` of a node to a real output: (node_id, slot), a primitive, or None."""
        key = (node_id, "input", index)
        if key in visited:
            self._raise_loop(visited)
        visited.add(key)
        slots = self.nodes[node_id].get("inputs") or []
        if index >= len(slots):
            return None
        slot = slots[index]
        link_id = slot.get("link")
        if link_id is None:
            return None
        link = self.links.get(link_id)
        if link is None:
            logger.warning("Node %s input '%s' refers to link %s, which is not in the links list; treating the "
                           "input as unconnected.", node_id, slot.get("name"), link_id)
            return None
        return self._resolve_output(link.origin_id, link.origin_slot, target_type or slot.get("type"), visited)

    def _resolve_output(self, node_id: str, slot: int, target_type: Any, visited: set) -> Any:
        key = (node_id, "output", slot)
        if key in visited:
            self._raise_loop(visited)
        visited.add(key)
        node = self.nodes.get(node_id)
        if node is None:
            logger.warning("A link starts at node %s, which is not in the workflow; treating it as unconnected.",
                           node_id)
            return None
        if node.get("type") == "PrimitiveNode":
            return self._primitive_value(node_id, node)
        if node.get("mode", 0) == MODE_BYPASS:
            index = self._bypass_input_index(node, slot, target_type)
            if index == -1:
                logger.info("Bypassed node %s has no input of type %s to pass through output %d; the link is "
                            "dropped.", node_id, target_type, slot)
                return None
            return self._resolve_input(node_id, index, None, visited)
        if node.get("type") in FRONTEND_ONLY_TYPES:
            # Reroute and other virtual nodes pass output N through input N.
            if slot < len(node.get("inputs") or []):
                return self._resolve_input(node_id, slot, target_type, visited)
            return None
        return (node_id, slot)

    @staticmethod
    def _bypass_input_index(node: Mapping[str, Any], slot: int, target_type: Any) -> int:
        """The editor's `_getBypassSlotIndex`: which input a bypassed node's output `slot` passes through."""
        inputs = node.get("inputs") or []
        outputs = node.get("outputs") or []
        if target_type in ("*", "", None):
            return slot if len(inputs) > slot else 0
        output_type = outputs[slot].get("type") if slot < len(outputs) else None
        if slot < len(inputs) and _valid_connection(inputs[slot].get("type"), output_type) and \
                _valid_connection(inputs[slot].get("type"), target_type):
            return slot
        for index, candidate in enumerate(inputs):
            if candidate.get("type") == target_type:
                return index
        for index, candidate in enumerate(inputs):
            if _valid_connection(candidate.get("type"), output_type) and \
                    _valid_connection(candidate.get("type"), target_type):
                return index
        return -1

    @staticmethod
    def _primitive_value(node_id: str, node: Mapping[str, Any]) -> _PrimitiveValue | None:
        values = node.get("widgets_values")
        if not isinstance(values, list) or not values:
            return None
        if (node.get("properties") or {}).get("Run widget replace on values"):
            # NOTE: the editor then substitutes %date% and %Node.widget% patterns, but here the value is used as
            # written.
            logger.warning("PrimitiveNode %s asks for widget text replacement, which the standalone converter "
                           "does not perform; its value is used as written.", node_id)
        return _PrimitiveValue(values[0])

    def _raise_loop(self, visited: set) -> None:
        node_ids = sorted({key[0] for key in visited}, key=lambda value: (len(value), value))
        error = {"type": "invalid_prompt", "message": "Circular link through reroute or bypassed nodes",
                 "details": f"Node IDs {', '.join(node_ids)}", "extra_info": {}}
        node_errors = {node_id: {"errors": [error], "dependent_outputs": [],
                                 "class_type": self.nodes.get(node_id, {}).get("type")} for node_id in node_ids}
        raise WorkflowConversionError({"error": error, "node_errors": node_errors}, self._titles())


def ui_to_api(workflow: Mapping[str, Any], registry: NodeRegistry,
              display_names: Mapping[str, str] | None = None) -> dict:
    """Convert a UI workflow (what the ComfyUI editor saves) to an API prompt.

    Args:
        workflow: the parsed UI workflow JSON.
        registry: node class name -> node class. INPUT_TYPES gives the widget order.
        display_names: class name -> display name, used as `_meta.title` when a node has no title of its own.

    Returns:
        {node_id: {"inputs": {...}, "class_type": str, "_meta": {"title": str}}} with string node ids.

    Raises:
        WorkflowConversionError: for node types missing from `registry` (all of them listed at once), subgraphs
            and group nodes, and links that loop through reroute or bypassed nodes.
    """
    if detect_format(workflow) != "ui":
        raise WorkflowFormatError("ui_to_api expects a UI workflow (with a 'nodes' list); this is an API prompt.")
    return _Converter(workflow, registry, display_names or {}).convert()


def to_api_prompt(workflow: Mapping[str, Any], registry: NodeRegistry,
                  display_names: Mapping[str, str] | None = None) -> tuple[dict, dict | None]:
    """Return (API prompt, UI workflow or None) for a workflow in either format.

    An API prompt is copied (node ids as strings, `inputs` dicts copied) so callers may edit it freely.
    """
    if detect_format(workflow) == "ui":
        return ui_to_api(workflow, registry, display_names), dict(workflow)
    prompt = {}
    for node_id, node in workflow.items():
        copied = dict(node)
        copied["inputs"] = dict(node.get("inputs") or {})
        prompt[str(node_id)] = copied
    return prompt, None
