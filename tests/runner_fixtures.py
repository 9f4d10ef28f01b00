"""Small node classes with ComfyUI's V1 contract, and helpers to build UI workflows, for the runner tests.

The node classes are real (the executor calls them); they record each call in CALLS so tests can check which
nodes ran.
"""

from __future__ import annotations

import copy

import torch

from stylebridge.runtime import core_nodes, host

# (class name, unique id, inputs) for every node function call, in call order.
CALLS: list[tuple[str, str, dict]] = []


def reset_calls() -> None:
    CALLS.clear()


def called_ids() -> list[str]:
    return [unique_id for _, unique_id, _ in CALLS]


class MakeNumber:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("number",)
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, value, unique_id=None):
        CALLS.append(("MakeNumber", unique_id, {"value": value}))
        return (value,)


class AddNumbers:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}),
                             "b": ("INT", {"default": 0, "min": -100, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "add"
    CATEGORY = "test"

    def add(self, a, b, unique_id=None):
        CALLS.append(("AddNumbers", unique_id, {"a": a, "b": b}))
        return (a + b,)


class ShowNumber:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})},
                "optional": {"label": ("STRING", {"default": ""})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def show(self, value, label="", unique_id=None):
        CALLS.append(("ShowNumber", unique_id, {"value": value, "label": label}))
        return {"ui": {"numbers": [value], "labels": [label]}}


class FakeSampler:
    """A node shaped like KSampler: a link-only model socket, a seed with control_after_generate, a COMBO."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("NUMBER_MODEL",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 100}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.5}),
                "sampler_name": (["euler", "ddim", "dpmpp_2m"],),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}),
            },
            "optional": {
                "mask": ("MASK",),
                "note": ("STRING", {"default": "", "multiline": True}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "sample"
    CATEGORY = "test"

    def sample(self, model, seed, steps, cfg, sampler_name, denoise, mask=None, note="", unique_id=None):
        CALLS.append(("FakeSampler", unique_id, {"seed": seed, "steps": steps}))
        return (model + seed + steps,)


class ModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["small", "large"], {"default": "small"})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("NUMBER_MODEL",)
    FUNCTION = "load"
    CATEGORY = "test"

    def load(self, name, unique_id=None):
        CALLS.append(("ModelLoader", unique_id, {"name": name}))
        return (1 if name == "small" else 100,)


class SolidImage:
    """IMAGE [batch, height, width, 3] filled with one colour."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 8, "min": 1, "max": 512}),
            "height": ("INT", {"default": 8, "min": 1, "max": 512}),
            "red": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
            "green": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
            "blue": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 8}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, width, height, red, green, blue, batch_size, unique_id=None):
        CALLS.append(("SolidImage", unique_id, {"width": width, "height": height}))
        colour = torch.tensor([red, green, blue], dtype=torch.float32)
        return (colour.expand(batch_size, height, width, 3).clone(),)


class CountSteps:
    """Reports progress through host.ProgressBar; interrupts itself at step `interrupt_at` (0 = never)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "steps": ("INT", {"default": 3, "min": 1, "max": 1000}),
                             "interrupt_at": ("INT", {"default": 0, "min": 0, "max": 1000})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    CATEGORY = "test"

    def count(self, value, steps, interrupt_at, unique_id=None):
        CALLS.append(("CountSteps", unique_id, {"steps": steps}))
        bar = host.ProgressBar(steps)
        for step in range(1, steps + 1):
            if step == interrupt_at:
                host.interrupt()
            host.check_interrupted()
            bar.update(1)
        return (value + steps,)


class Explode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "explode"
    CATEGORY = "test"

    def explode(self, value, unique_id=None):
        CALLS.append(("Explode", unique_id, {"value": value}))
        raise ValueError(f"boom at value {value}")


class Volatile:
    """IS_CHANGED returns NaN: runs every time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    CATEGORY = "test"

    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    def make(self, value, unique_id=None):
        CALLS.append(("Volatile", unique_id, {"value": value}))
        return (value,)


class Versioned:
    """IS_CHANGED returns the class attribute VERSION: changing it re-runs the node."""

    VERSION = 1

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    CATEGORY = "test"

    @classmethod
    def IS_CHANGED(cls, value):
        return cls.VERSION

    def make(self, value, unique_id=None):
        CALLS.append(("Versioned", unique_id, {"value": value}))
        return (value * 10,)


class WrongArity:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT", "INT")
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self):
        return (1,)


class ListInput:
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, value):
        return (value[0],)


class Impure:
    NOT_IDEMPOTENT = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, value, unique_id=None):
        CALLS.append(("Impure", unique_id, {"value": value}))
        return (value,)


class RecordPrompt:
    """Output node that returns the hidden PROMPT and UNIQUE_ID it received."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})},
                "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    FUNCTION = "record"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def __init__(self):
        self.calls = 0

    def record(self, value, prompt=None, unique_id=None, extra_pnginfo=None):
        self.calls += 1
        return {"ui": {"unique_id": [unique_id], "node_ids": [sorted(prompt)], "instance_calls": [self.calls],
                       "instance_id": [id(self)], "has_pnginfo": [extra_pnginfo is not None]}}


TEST_NODES = {cls.__name__: cls for cls in (
    MakeNumber, AddNumbers, ShowNumber, FakeSampler, ModelLoader, SolidImage, CountSteps, Explode, Volatile,
    Versioned, WrongArity, ListInput, Impure, RecordPrompt,
)}


def make_registry(with_core: bool = True) -> dict[str, type]:
    """The test node classes, plus the standalone core image nodes unless `with_core` is False."""
    registry = dict(TEST_NODES)
    if with_core:
        registry.update(core_nodes.NODE_CLASS_MAPPINGS)
    return registry


# ---------------------------------------------------------------------------------------------------------------------
# UI workflow builders, producing the editor's JSON layout.


def ui_node(node_id: int, node_type: str, *, inputs=(), outputs=(), widgets_values=None, mode: int = 0,
            title: str | None = None, order: int = 0, properties: dict | None = None) -> dict:
    """One entry of a UI workflow's `nodes` list, with the fields the editor writes."""
    node = {
        "id": node_id,
        "type": node_type,
        "pos": [100 * node_id, 100],
        "size": [315, 98],
        "flags": {},
        "order": order,
        "mode": mode,
        "inputs": [dict(entry) for entry in inputs],
        "outputs": [dict(entry) for entry in outputs],
        "properties": properties if properties is not None else {"Node name for S&R": node_type},
    }
    if widgets_values is not None:
        node["widgets_values"] = copy.deepcopy(widgets_values)
    if title is not None:
        node["title"] = title
    return node


def ui_workflow(nodes: list[dict], links: list[list], **extra) -> dict:
    """A version 0.4 UI workflow document around `nodes` and `links`."""
    document = {
        "last_node_id": max((node["id"] for node in nodes), default=0),
        "last_link_id": max((link[0] for link in links), default=0),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }
    document.update(extra)
    return document
