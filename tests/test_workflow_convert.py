"""UI workflow -> API prompt conversion (runtime.workflow)."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from runner_fixtures import make_registry, ui_node, ui_workflow

from stylebridge.runtime.workflow import (
    WorkflowConversionError,
    WorkflowFormatError,
    detect_format,
    load_workflow,
    map_widget_values,
    ui_to_api,
)

REGISTRY = make_registry()

# A graph as the ComfyUI editor saves it: ModelLoader -> FakeSampler -> ShowNumber, with the sampler's seed
# widget carrying its control_after_generate value, a title, and an unconnected optional MASK socket.
SAMPLER_WORKFLOW = {
    "last_node_id": 3,
    "last_link_id": 2,
    "nodes": [
        {
            "id": 1, "type": "ModelLoader", "pos": [50, 100], "size": [315, 58], "flags": {}, "order": 0,
            "mode": 0, "inputs": [],
            "outputs": [{"name": "NUMBER_MODEL", "type": "NUMBER_MODEL", "links": [1], "slot_index": 0}],
            "properties": {"Node name for S&R": "ModelLoader"},
            "widgets_values": ["large"],
        },
        {
            "id": 2, "type": "FakeSampler", "pos": [400, 100], "size": [315, 262], "flags": {}, "order": 1,
            "mode": 0, "title": "My sampler",
            "inputs": [
                {"name": "model", "type": "NUMBER_MODEL", "link": 1},
                {"name": "mask", "type": "MASK", "link": None},
            ],
            "outputs": [{"name": "INT", "type": "INT", "links": [2], "slot_index": 0}],
            "properties": {"Node name for S&R": "FakeSampler"},
            "widgets_values": [156680208700286, "randomize", 25, 6.5, "ddim", 0.75, "a note"],
        },
        {
            "id": 3, "type": "ShowNumber", "pos": [800, 100], "size": [210, 58], "flags": {}, "order": 2,
            "mode": 0,
            "inputs": [{"name": "value", "type": "INT", "link": 2}],
            "outputs": [],
            "properties": {"Node name for S&R": "ShowNumber"},
            "widgets_values": ["shown"],
        },
    ],
    "links": [
        [1, 1, 0, 2, 0, "NUMBER_MODEL"],
        [2, 2, 0, 3, 0, "INT"],
    ],
    "groups": [],
    "config": {},
    "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
    "version": 0.4,
}

NUMBER_OUT = {"name": "number", "type": "INT", "links": [], "slot_index": 0}
INT_OUT = {"name": "INT", "type": "INT", "links": [], "slot_index": 0}


def make_add_chain(mode_of_add: int = 0) -> dict:
    """MakeNumber(1) -> AddNumbers(2) -> ShowNumber(3)."""
    return ui_workflow(
        [
            ui_node(1, "MakeNumber", outputs=[NUMBER_OUT], widgets_values=[5]),
            ui_node(2, "AddNumbers", mode=mode_of_add,
                    inputs=[{"name": "a", "type": "INT", "link": 1}], outputs=[INT_OUT], widgets_values=[3]),
            ui_node(3, "ShowNumber", inputs=[{"name": "value", "type": "INT", "link": 2}], widgets_values=[""]),
        ],
        [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]],
    )


def test_detect_format_ui_and_api():
    assert detect_format(SAMPLER_WORKFLOW) == "ui"
    assert detect_format({"1": {"class_type": "MakeNumber", "inputs": {"value": 1}}}) == "api"


@pytest.mark.parametrize("data", [[], {}, {"foo": 1}, {"1": {"inputs": {}}}])
def test_detect_format_rejects_other_json(data):
    with pytest.raises(WorkflowFormatError, match="workflow"):
        detect_format(data)


def test_sampler_widgets_map_in_input_order():
    prompt = ui_to_api(SAMPLER_WORKFLOW, REGISTRY)

    assert set(prompt) == {"1", "2", "3"}
    assert prompt["1"] == {"inputs": {"name": "large"}, "class_type": "ModelLoader", "_meta": {"title": "ModelLoader"}}
    sampler = prompt["2"]
    assert sampler["class_type"] == "FakeSampler"
    assert sampler["_meta"] == {"title": "My sampler"}
    # The "randomize" control value after the seed is skipped; the unconnected MASK socket is left out.
    assert sampler["inputs"] == {"model": ["1", 0], "seed": 156680208700286, "steps": 25, "cfg": 6.5,
                                 "sampler_name": "ddim", "denoise": 0.75, "note": "a note"}
    assert prompt["3"]["inputs"] == {"value": ["2", 0], "label": "shown"}


def test_display_names_give_default_titles():
    prompt = ui_to_api(SAMPLER_WORKFLOW, REGISTRY, display_names={"ModelLoader": "Load Model"})
    assert prompt["1"]["_meta"]["title"] == "Load Model"
    assert prompt["2"]["_meta"]["title"] == "My sampler"


def test_seed_without_control_value():
    workflow = json.loads(json.dumps(SAMPLER_WORKFLOW))
    workflow["nodes"][1]["widgets_values"] = [42, 25, 6.5, "ddim", 0.75, ""]  # saved before control widgets
    inputs = ui_to_api(workflow, REGISTRY)["2"]["inputs"]
    assert inputs["seed"] == 42
    assert inputs["steps"] == 25
    assert inputs["sampler_name"] == "ddim"
    assert inputs["note"] == ""


def test_control_after_generate_option_on_int():
    spec = {"required": {"count": ("INT", {"default": 1, "control_after_generate": True}),
                         "name": ("STRING", {"default": ""})}}
    assert map_widget_values(spec, [7, "increment", "abc"]) == {"count": 7, "name": "abc"}


def test_control_after_generate_false_on_seed():
    spec = {"required": {"seed": ("INT", {"default": 1, "control_after_generate": False}),
                         "name": ("STRING", {"default": ""})}}
    # Without a control widget, "fixed" is the STRING widget's own value.
    assert map_widget_values(spec, [7, "fixed"]) == {"seed": 7, "name": "fixed"}


def test_noise_seed_gets_control_value():
    spec = {"required": {"noise_seed": ("INT", {"default": 0}), "steps": ("INT", {"default": 1})}}
    assert map_widget_values(spec, [9, "fixed", 30]) == {"noise_seed": 9, "steps": 30}


def test_combo_control_adds_mode_and_filter():
    spec = {"required": {"choice": (["a", "b", "c"], {"control_after_generate": True}),
                         "amount": ("FLOAT", {"default": 1.0})}}
    assert map_widget_values(spec, ["b", "increment", "", 0.5]) == {"choice": "b", "amount": 0.5}
    # Without the filter text (older editors), the FLOAT still lands on "amount".
    assert map_widget_values(spec, ["b", "increment", 0.5]) == {"choice": "b", "amount": 0.5}


def test_load_image_upload_value_skipped():
    workflow = ui_workflow(
        [
            ui_node(10, "LoadImage", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                                              {"name": "MASK", "type": "MASK", "links": None}],
                    widgets_values=["photo.png", "image"]),
            ui_node(11, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 1}],
                    widgets_values=["faces/out"]),
        ],
        [[1, 10, 0, 11, 0, "IMAGE"]],
    )
    prompt = ui_to_api(workflow, REGISTRY)
    assert prompt["10"]["inputs"] == {"image": "photo.png"}
    assert prompt["11"]["inputs"] == {"images": ["10", 0], "filename_prefix": "faces/out"}


def test_upload_widget_sits_after_required_inputs():
    spec = {"required": {"image": (["a.png", "b.png"], {"image_upload": True}),
                         "scale": ("FLOAT", {"default": 1.0})},
            "optional": {"label": ("STRING", {"default": ""})}}
    assert map_widget_values(spec, ["b.png", 2.0, "image", "hello"]) == {"image": "b.png", "scale": 2.0,
                                                                        "label": "hello"}


def test_converted_widget_takes_link():
    workflow = ui_workflow(
        [
            ui_node(1, "MakeNumber", outputs=[NUMBER_OUT], widgets_values=[8]),
            ui_node(2, "ModelLoader", outputs=[{"name": "NUMBER_MODEL", "type": "NUMBER_MODEL", "links": [2]}],
                    widgets_values=["small"]),
            # The seed widget was converted to an input and linked; its old value stays in widgets_values.
            ui_node(3, "FakeSampler",
                    inputs=[{"name": "model", "type": "NUMBER_MODEL", "link": 2},
                            {"name": "seed", "type": "INT", "link": 1,
                             "widget": {"name": "seed", "config": ["INT", {"default": 0}]}}],
                    outputs=[INT_OUT], widgets_values=[123, "fixed", 10, 7.0, "euler", 1.0, ""]),
        ],
        [[1, 1, 0, 3, 1, "INT"], [2, 2, 0, 3, 0, "NUMBER_MODEL"]],
    )
    inputs = ui_to_api(workflow, REGISTRY)["3"]["inputs"]
    assert inputs["seed"] == ["1", 0]
    assert inputs["steps"] == 10  # the converted widget still counts in widgets_values
    assert inputs["sampler_name"] == "euler"


def test_unlinked_widget_input_keeps_value():
    # Newer editors list every widget as an input slot; an unlinked one keeps its widget value.
    workflow = ui_workflow(
        [ui_node(1, "MakeNumber", inputs=[{"name": "value", "type": "INT", "link": None, "widget": {"name": "value"}}],
                 outputs=[NUMBER_OUT], widgets_values=[12]),
         ui_node(2, "ShowNumber", inputs=[{"name": "value", "type": "INT", "link": 1}])],
        [[1, 1, 0, 2, 0, "INT"]],
    )
    prompt = ui_to_api(workflow, REGISTRY)
    assert prompt["1"]["inputs"] == {"value": 12}
    assert prompt["2"]["inputs"] == {"value": ["1", 0]}


def test_reroutes_are_followed():
    workflow = ui_workflow(
        [
            ui_node(1, "MakeNumber", outputs=[NUMBER_OUT], widgets_values=[5]),
            ui_node(4, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
                    outputs=[{"name": "", "type": "INT", "links": [2]}], properties={"showOutputText": False}),
            ui_node(5, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}],
                    outputs=[{"name": "", "type": "INT", "links": [3]}], properties={"showOutputText": False}),
            ui_node(3, "ShowNumber", inputs=[{"name": "value", "type": "INT", "link": 3}], widgets_values=[""]),
        ],
        [[1, 1, 0, 4, 0, "*"], [2, 4, 0, 5, 0, "INT"], [3, 5, 0, 3, 0, "INT"]],
    )
    prompt = ui_to_api(workflow, REGISTRY)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["value"] == ["1", 0]


def test_primitive_node_feeds_widget():
    workflow = ui_workflow(
        [
            ui_node(7, "PrimitiveNode", title="Seed",
                    outputs=[{"name": "INT", "type": "INT", "links": [1, 2],
                              "widget": {"name": "seed"}}],
                    widgets_values=[777, "fixed"], properties={"Run widget replace on values": False}),
            ui_node(8, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}],
                    outputs=[{"name": "", "type": "INT", "links": [3]}]),
            ui_node(1, "ModelLoader", outputs=[{"name": "NUMBER_MODEL", "type": "NUMBER_MODEL", "links": [4, 5]}],
                    widgets_values=["small"]),
            ui_node(2, "FakeSampler",
                    inputs=[{"name": "model", "type": "NUMBER_MODEL", "link": 4},
                            {"name": "seed", "type": "INT", "link": 1, "widget": {"name": "seed"}}],
                    outputs=[INT_OUT], widgets_values=[1, "randomize", 10, 7.0, "euler", 1.0, ""]),
            ui_node(3, "FakeSampler",
                    inputs=[{"name": "model", "type": "NUMBER_MODEL", "link": 5},
                            {"name": "seed", "type": "INT", "link": 3, "widget": {"name": "seed"}}],
                    outputs=[INT_OUT], widgets_values=[2, "randomize", 10, 7.0, "euler", 1.0, ""]),
        ],
        [[1, 7, 0, 2, 1, "INT"], [2, 7, 0, 8, 0, "INT"], [3, 8, 0, 3, 1, "INT"],
         [4, 1, 0, 2, 0, "NUMBER_MODEL"], [5, 1, 0, 3, 0, "NUMBER_MODEL"]],
    )
    prompt = ui_to_api(workflow, REGISTRY)
    assert "7" not in prompt
    assert "8" not in prompt
    assert prompt["2"]["inputs"]["seed"] == 777
    assert prompt["3"]["inputs"]["seed"] == 777  # through the reroute


def test_notes_are_ignored():
    workflow = make_add_chain()
    workflow["nodes"].append(ui_node(20, "Note", widgets_values=["remember the seed"]))
    workflow["nodes"].append(ui_node(21, "MarkdownNote", widgets_values=["# Read me"]))
    prompt = ui_to_api(workflow, REGISTRY)
    assert set(prompt) == {"1", "2", "3"}


def test_muted_node_and_its_links_removed():
    prompt = ui_to_api(make_add_chain(mode_of_add=2), REGISTRY)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"] == {"label": ""}  # the link to the muted node is dropped


def test_bypassed_node_passes_its_input_through():
    prompt = ui_to_api(make_add_chain(mode_of_add=4), REGISTRY)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["value"] == ["1", 0]


def test_bypass_picks_input_of_matching_type():
    image_out = {"name": "IMAGE", "type": "IMAGE", "links": [2]}
    workflow = ui_workflow(
        [
            ui_node(1, "SolidImage", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
                    widgets_values=[8, 8, 0.1, 0.2, 0.3, 1]),
            ui_node(2, "MakeNumber", outputs=[{"name": "number", "type": "INT", "links": [3]}], widgets_values=[4]),
            # A bypassed node whose slot-0 input is an INT: its IMAGE output passes through the IMAGE input.
            ui_node(5, "ImageFilter", mode=4,
                    inputs=[{"name": "strength", "type": "INT", "link": 3},
                            {"name": "image", "type": "IMAGE", "link": 1}],
                    outputs=[image_out]),
            ui_node(6, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 2}],
                    widgets_values=["out"]),
        ],
        [[1, 1, 0, 5, 1, "IMAGE"], [2, 5, 0, 6, 0, "IMAGE"], [3, 2, 0, 5, 0, "INT"]],
    )
    # ImageFilter is not in the registry: a bypassed node needs only its saved slot types.
    prompt = ui_to_api(workflow, REGISTRY)
    assert "5" not in prompt
    assert prompt["6"]["inputs"]["images"] == ["1", 0]


def test_bypass_without_matching_input_drops_link():
    workflow = ui_workflow(
        [
            ui_node(2, "MakeNumber", outputs=[{"name": "number", "type": "INT", "links": [3]}], widgets_values=[4]),
            ui_node(5, "ImageFilter", mode=4, inputs=[{"name": "strength", "type": "INT", "link": 3}],
                    outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}]),
            ui_node(6, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 2}],
                    widgets_values=["out"]),
        ],
        [[2, 5, 0, 6, 0, "IMAGE"], [3, 2, 0, 5, 0, "INT"]],
    )
    prompt = ui_to_api(workflow, REGISTRY)
    assert prompt["6"]["inputs"] == {"filename_prefix": "out"}


def test_bypass_chain_and_reroute():
    workflow = ui_workflow(
        [
            ui_node(1, "MakeNumber", outputs=[NUMBER_OUT], widgets_values=[5]),
            ui_node(2, "AddNumbers", mode=4, inputs=[{"name": "a", "type": "INT", "link": 1}], outputs=[INT_OUT],
                    widgets_values=[3]),
            ui_node(3, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}],
                    outputs=[{"name": "", "type": "INT", "links": [3]}]),
            ui_node(4, "AddNumbers", mode=4, inputs=[{"name": "a", "type": "INT", "link": 3}], outputs=[INT_OUT],
                    widgets_values=[3]),
            ui_node(6, "ShowNumber", inputs=[{"name": "value", "type": "INT", "link": 4}], widgets_values=[""]),
        ],
        [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"], [3, 3, 0, 4, 0, "INT"], [4, 4, 0, 6, 0, "INT"]],
    )
    prompt = ui_to_api(workflow, REGISTRY)
    assert set(prompt) == {"1", "6"}
    assert prompt["6"]["inputs"]["value"] == ["1", 0]


def test_widgets_values_as_dict():
    workflow = make_add_chain()
    workflow["nodes"][1]["widgets_values"] = {"b": 9, "videopreview": {"hidden": False}}
    assert ui_to_api(workflow, REGISTRY)["2"]["inputs"] == {"a": ["1", 0], "b": 9}


def test_list_widget_value_is_wrapped():
    workflow = make_add_chain()
    workflow["nodes"][2]["widgets_values"] = [["x", "y"]]
    assert ui_to_api(workflow, REGISTRY)["3"]["inputs"]["label"] == {"__value__": ["x", "y"]}


def test_links_as_objects():
    workflow = make_add_chain()
    workflow["version"] = 1
    workflow["links"] = [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "INT"},
                         {"id": 2, "origin_id": 2, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "INT"}]
    prompt = ui_to_api(workflow, REGISTRY)
    assert prompt["2"]["inputs"]["a"] == ["1", 0]
    assert prompt["3"]["inputs"]["value"] == ["2", 0]


def test_unknown_node_types_listed_at_once():
    workflow = make_add_chain()
    workflow["nodes"].append(ui_node(30, "FancyUpscaler", title="Upscale x4"))
    workflow["nodes"].append(ui_node(31, "OtherMissing"))
    workflow["nodes"].append(ui_node(32, "MutedMissing", mode=2))
    with pytest.raises(WorkflowConversionError) as caught:
        ui_to_api(workflow, REGISTRY)
    error = caught.value
    assert set(error.node_errors) == {"30", "31"}
    assert error.node_errors["30"]["class_type"] == "FancyUpscaler"
    assert error.error["type"] == "invalid_prompt"
    message = str(error)
    assert "node 30 'Upscale x4' (FancyUpscaler)" in message
    assert "Install the node pack" in message


def test_subgraph_instance_rejected():
    workflow = make_add_chain()
    subgraph_id = "a1b2c3d4-0000-4000-8000-000000000000"
    workflow["definitions"] = {"subgraphs": [{"id": subgraph_id, "name": "Inner", "nodes": [], "links": []}]}
    workflow["nodes"].append(ui_node(40, subgraph_id))
    with pytest.raises(WorkflowConversionError, match="Subgraphs"):
        ui_to_api(workflow, REGISTRY)


def test_reroute_loop_is_an_error():
    workflow = ui_workflow(
        [
            ui_node(4, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}],
                    outputs=[{"name": "", "type": "INT", "links": [1, 3]}]),
            ui_node(5, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
                    outputs=[{"name": "", "type": "INT", "links": [2]}]),
            ui_node(3, "ShowNumber", inputs=[{"name": "value", "type": "INT", "link": 3}], widgets_values=[""]),
        ],
        [[1, 4, 0, 5, 0, "INT"], [2, 5, 0, 4, 0, "INT"], [3, 4, 0, 3, 0, "INT"]],
    )
    with pytest.raises(WorkflowConversionError, match="Circular link"):
        ui_to_api(workflow, REGISTRY)


def test_missing_link_is_unconnected():
    workflow = make_add_chain()
    workflow["links"] = [link for link in workflow["links"] if link[0] != 2]
    assert "value" not in ui_to_api(workflow, REGISTRY)["3"]["inputs"]


def test_load_workflow_sources(tmp_path):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(SAMPLER_WORKFLOW))
    assert load_workflow(path) == SAMPLER_WORKFLOW
    assert load_workflow(str(path)) == SAMPLER_WORKFLOW
    assert load_workflow(json.dumps(SAMPLER_WORKFLOW)) == SAMPLER_WORKFLOW
    api = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}}}
    assert load_workflow({"prompt": api, "client_id": "x"}) == api


def test_load_workflow_from_png(tmp_path):
    api = {"1": {"class_type": "MakeNumber", "inputs": {"value": 1}}}
    info = PngInfo()
    info.add_text("prompt", json.dumps(api))
    info.add_text("workflow", json.dumps(SAMPLER_WORKFLOW))
    path = tmp_path / "saved.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    assert load_workflow(path) == api


def test_load_workflow_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_workflow(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [}')
    with pytest.raises(WorkflowFormatError, match="line 1"):
        load_workflow(bad)
