"""Prompt validation (runtime.validation): ComfyUI's error types and shapes, plus links and cycles."""

from __future__ import annotations

import copy

import pytest
from runner_fixtures import make_registry

from stylebridge.runtime.validation import (
    WorkflowValidationError,
    check_prompt,
    types_compatible,
    validate_prompt,
)

REGISTRY = make_registry(with_core=False)


def chain_prompt(**overrides) -> dict:
    """MakeNumber 1 -> AddNumbers 2 -> ShowNumber 3."""
    prompt = {
        "1": {"class_type": "MakeNumber", "inputs": {"value": 5}, "_meta": {"title": "Start"}},
        "2": {"class_type": "AddNumbers", "inputs": {"a": ["1", 0], "b": 3}},
        "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}},
    }
    for key, value in overrides.items():
        node_id, name = key.split("_", 1)
        prompt[node_id]["inputs"][name] = value
    return prompt


def only_error(result, node_id: str) -> dict:
    errors = result.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_prompt_passes():
    result = validate_prompt(chain_prompt(), REGISTRY)
    assert result.valid
    assert result.error is None
    assert result.outputs == ["3"]
    assert result.node_errors == {}


def test_unknown_class_is_invalid_prompt():
    prompt = chain_prompt()
    prompt["9"] = {"class_type": "NoSuchNode", "inputs": {}}
    result = validate_prompt(prompt, REGISTRY)
    assert not result.valid
    assert result.error["type"] == "invalid_prompt"
    assert result.error["message"] == "Cannot execute because node NoSuchNode does not exist."
    assert result.error["details"] == "Node ID '#9'"


def test_missing_class_type_is_invalid_prompt():
    prompt = chain_prompt()
    prompt["9"] = {"inputs": {}}
    result = validate_prompt(prompt, REGISTRY)
    assert result.error["type"] == "invalid_prompt"
    assert "missing the class_type" in result.error["message"]


def test_prompt_without_outputs():
    prompt = chain_prompt()
    del prompt["3"]
    result = validate_prompt(prompt, REGISTRY)
    assert result.error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                            "extra_info": {}}


def test_required_input_missing():
    prompt = chain_prompt()
    del prompt["2"]["inputs"]["b"]
    result = validate_prompt(prompt, REGISTRY)
    assert not result.valid
    assert result.error["type"] == "prompt_outputs_failed_validation"
    error = only_error(result, "2")
    assert error["type"] == "required_input_missing"
    assert error["details"] == "b"
    assert error["extra_info"]["input_name"] == "b"
    assert result.node_errors["2"]["dependent_outputs"] == ["3"]
    assert result.node_errors["2"]["class_type"] == "AddNumbers"


def test_optional_input_may_be_missing():
    assert validate_prompt(chain_prompt(), REGISTRY).valid  # ShowNumber's optional label is absent


@pytest.mark.parametrize("link", [["1"], ["1", 0, 0], ["1", "0"], [None, 0], ["1", True]])
def test_malformed_link_is_bad_linked_input(link):
    result = validate_prompt(chain_prompt(**{"2_a": link}), REGISTRY)
    error = only_error(result, "2")
    assert error["type"] == "bad_linked_input"
    assert error["extra_info"]["received_value"] == link


def test_link_to_missing_node():
    result = validate_prompt(chain_prompt(**{"2_a": ["7", 0]}), REGISTRY)
    error = only_error(result, "2")
    assert error["type"] == "bad_linked_input"
    assert "node 7 does not exist" in error["message"]


def test_link_to_missing_output_slot():
    result = validate_prompt(chain_prompt(**{"2_a": ["1", 1]}), REGISTRY)
    error = only_error(result, "2")
    assert error["type"] == "bad_linked_input"
    assert "has no output slot 1" in error["message"]
    assert "0..0" in error["details"]


def test_integer_link_ids_are_accepted():
    result = validate_prompt(chain_prompt(**{"2_a": [1, 0]}), REGISTRY)
    assert result.valid
    assert result.prompt["2"]["inputs"]["a"] == ["1", 0]


def test_return_type_mismatch():
    prompt = chain_prompt()
    prompt["4"] = {"class_type": "ModelLoader", "inputs": {"name": "small"}}
    prompt["2"]["inputs"]["a"] = ["4", 0]
    error = only_error(validate_prompt(prompt, REGISTRY), "2")
    assert error["type"] == "return_type_mismatch"
    assert error["message"] == "Return type mismatch between linked nodes"
    assert error["details"] == "a, NUMBER_MODEL != INT"
    assert error["extra_info"]["received_type"] == "NUMBER_MODEL"
    assert error["extra_info"]["linked_node"] == ["4", 0]


@pytest.mark.parametrize(("received", "expected", "compatible"), [
    ("INT", "INT", True),
    ("INT", "FLOAT", False),
    ("*", "IMAGE", True),
    ("IMAGE", "*", True),
    ("INT", "FLOAT,INT", True),
    ("STRING,BOOLEAN", "INT,STRING", True),
    ("STRING,BOOLEAN", "INT", False),
    ([], ["a", "b"], True),
    (["a"], ["b"], False),
])
def test_types_compatible(received, expected, compatible):
    assert types_compatible(received, expected) is compatible


def test_any_type_class_matches():
    class AnyType(str):
        def __ne__(self, other):
            return False

    assert types_compatible(AnyType("*"), "LATENT")


@pytest.mark.parametrize(("value", "coerced"), [("7", 7), (7.9, 7), (True, 1)])
def test_int_coercion(value, coerced):
    result = validate_prompt(chain_prompt(**{"2_b": value}), REGISTRY)
    assert result.valid
    assert result.prompt["2"]["inputs"]["b"] == coerced
    assert type(result.prompt["2"]["inputs"]["b"]) is int


def test_coercion_does_not_modify_input():
    prompt = chain_prompt(**{"2_b": "7"})
    original = copy.deepcopy(prompt)
    validate_prompt(prompt, REGISTRY)
    assert prompt == original


def test_string_and_boolean_coercion():
    class Flags:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"text": ("STRING", {}), "flag": ("BOOLEAN", {"default": True})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

    registry = {"Flags": Flags}
    result = validate_prompt({"1": {"class_type": "Flags", "inputs": {"text": 12, "flag": "false"}}}, registry)
    assert result.prompt["1"]["inputs"] == {"text": "12", "flag": False}


@pytest.mark.parametrize("value", ["abc", None, [1, 2, 3]])
def test_invalid_input_type(value):
    result = validate_prompt(chain_prompt(**{"1_value": value}), REGISTRY)
    error = only_error(result, "1")
    if isinstance(value, list):
        assert error["type"] == "bad_linked_input"
        return
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Failed to convert an input value to a INT value"
    assert error["extra_info"]["received_value"] == value


def test_wrapped_list_value_is_unwrapped():
    result = validate_prompt(chain_prompt(**{"3_label": {"__value__": ["a", "b"]}}), REGISTRY)
    assert result.valid
    assert result.prompt["3"]["inputs"]["label"] == "['a', 'b']"  # a STRING input turns the list into text


def test_value_smaller_than_min():
    error = only_error(validate_prompt(chain_prompt(**{"2_b": -101}), REGISTRY), "2")
    assert error["type"] == "value_smaller_than_min"
    assert error["message"] == "Value -101 smaller than min of -100"
    assert error["extra_info"]["received_value"] == -101


def test_value_bigger_than_max():
    error = only_error(validate_prompt(chain_prompt(**{"1_value": 101}), REGISTRY), "1")
    assert error["type"] == "value_bigger_than_max"
    assert error["message"] == "Value 101 bigger than max of 100"


def test_value_not_in_list():
    prompt = {"1": {"class_type": "ModelLoader", "inputs": {"name": "medium"}},
              "2": {"class_type": "FakeSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 1.0,
                                                            "sampler_name": "euler", "denoise": 1.0}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    error = only_error(validate_prompt(prompt, REGISTRY), "1")
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "name: 'medium' not in ['small', 'large']"
    assert error["extra_info"]["input_config"][0] == ["small", "large"]


def test_long_combo_list_left_out():
    class ManyChoices:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"choice": ([f"model_{index}.safetensors" for index in range(50)],)}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

    result = validate_prompt({"1": {"class_type": "ManyChoices", "inputs": {"choice": "other"}}},
                             {"ManyChoices": ManyChoices})
    error = only_error(result, "1")
    assert error["details"] == "choice: 'other' not in (list of length 50)"
    assert error["extra_info"]["input_config"] is None


def test_combo_declared_with_options_key():
    class NewStyleCombo:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"mode": ("COMBO", {"options": ["fast", "slow"]})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

    registry = {"NewStyleCombo": NewStyleCombo}
    assert validate_prompt({"1": {"class_type": "NewStyleCombo", "inputs": {"mode": "slow"}}}, registry).valid
    error = only_error(validate_prompt({"1": {"class_type": "NewStyleCombo", "inputs": {"mode": "warp"}}}, registry),
                       "1")
    assert error["type"] == "value_not_in_list"


class Checked:
    """VALIDATE_INPUTS owns the check of `size`: range and choice checks are skipped for it, as in ComfyUI."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 4, "min": 0, "max": 8}),
                             "kind": (["a", "b"],)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def VALIDATE_INPUTS(cls, size):
        if size % 2:
            return f"size must be even, got {size}"
        if size == 666:
            raise RuntimeError("validator crashed")
        return True


def test_custom_validation_failed():
    result = validate_prompt({"1": {"class_type": "Checked", "inputs": {"size": 3, "kind": "a"}}},
                             {"Checked": Checked})
    error = only_error(result, "1")
    assert error["type"] == "custom_validation_failed"
    assert error["message"] == "Custom validation failed for node"
    assert error["details"] == "size - size must be even, got 3"
    assert error["extra_info"]["input_name"] == "size"


def test_custom_validation_replaces_range_check():
    result = validate_prompt({"1": {"class_type": "Checked", "inputs": {"size": 20, "kind": "a"}}},
                             {"Checked": Checked})
    assert result.valid  # 20 > max 8, but VALIDATE_INPUTS declared `size` and accepted it


def test_exception_in_validate_inputs():
    result = validate_prompt({"1": {"class_type": "Checked", "inputs": {"size": 666, "kind": "a"}}},
                             {"Checked": Checked})
    error = only_error(result, "1")
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "validator crashed"
    assert error["extra_info"]["exception_type"] == "RuntimeError"


def test_cycle_names_its_nodes():
    prompt = chain_prompt()
    prompt["4"] = {"class_type": "AddNumbers", "inputs": {"a": ["5", 0], "b": 1}}
    prompt["5"] = {"class_type": "AddNumbers", "inputs": {"a": ["4", 0], "b": 1}}
    prompt["2"]["inputs"]["a"] = ["5", 0]
    result = validate_prompt(prompt, REGISTRY)
    assert not result.valid
    assert set(result.node_errors) == {"4", "5"}
    error = only_error(result, "4")
    assert error["type"] == "dependency_cycle"
    assert error["details"] == "4 (AddNumbers) -> 5 (AddNumbers) -> 4 (AddNumbers)"
    assert error["extra_info"]["cycle"] == ["4", "5"]


def test_cycle_is_reported_in_data_flow_order():
    prompt = chain_prompt()
    prompt["4"] = {"class_type": "AddNumbers", "inputs": {"a": ["6", 0], "b": 1}}
    prompt["5"] = {"class_type": "AddNumbers", "inputs": {"a": ["4", 0], "b": 1}}
    prompt["6"] = {"class_type": "AddNumbers", "inputs": {"a": ["5", 0], "b": 1}}
    prompt["2"]["inputs"]["a"] = ["6", 0]
    result = validate_prompt(prompt, REGISTRY)
    assert set(result.node_errors) == {"4", "5", "6"}
    assert only_error(result, "6")["details"] == \
        "4 (AddNumbers) -> 5 (AddNumbers) -> 6 (AddNumbers) -> 4 (AddNumbers)"


def test_self_loop_is_a_cycle():
    prompt = chain_prompt(**{"2_a": ["2", 0]})
    error = only_error(validate_prompt(prompt, REGISTRY), "2")
    assert error["type"] == "dependency_cycle"


def test_unreachable_nodes_are_not_validated():
    prompt = chain_prompt()
    prompt["8"] = {"class_type": "MakeNumber", "inputs": {"value": 1000}}  # out of range, but feeds nothing
    assert validate_prompt(prompt, REGISTRY).valid


def test_dependent_outputs_and_partial_validity():
    prompt = chain_prompt(**{"1_value": 500})
    prompt["4"] = {"class_type": "MakeNumber", "inputs": {"value": 2}}
    prompt["5"] = {"class_type": "ShowNumber", "inputs": {"value": ["4", 0]}}
    prompt["6"] = {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}
    result = validate_prompt(prompt, REGISTRY)
    assert result.valid  # output 5 is fine, so ComfyUI would run it
    assert result.outputs == ["5"]
    assert result.node_errors["1"]["dependent_outputs"] == ["3", "6"]

    with pytest.raises(WorkflowValidationError) as caught:
        check_prompt(prompt, REGISTRY)  # strict: any error stops the run
    assert caught.value.error["type"] == "prompt_outputs_failed_validation"
    assert check_prompt(prompt, REGISTRY, strict=False).outputs == ["5"]


def test_partial_execution_targets():
    prompt = chain_prompt(**{"1_value": 500})
    prompt["4"] = {"class_type": "MakeNumber", "inputs": {"value": 2}}
    prompt["5"] = {"class_type": "ShowNumber", "inputs": {"value": ["4", 0]}}
    result = validate_prompt(prompt, REGISTRY, partial_execution_targets=["5"])
    assert result.outputs == ["5"]
    assert result.node_errors == {}


def test_exception_in_input_types():
    class Broken:
        @classmethod
        def INPUT_TYPES(cls):
            raise OSError("model folder unreadable")

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

    result = validate_prompt({"1": {"class_type": "Broken", "inputs": {}}}, {"Broken": Broken})
    error = only_error(result, "1")
    assert error["type"] == "exception_during_validation"
    assert error["extra_info"]["exception_type"] == "OSError"


def test_error_message_is_readable():
    prompt = chain_prompt(**{"1_value": 101})
    del prompt["2"]["inputs"]["b"]
    with pytest.raises(WorkflowValidationError) as caught:
        check_prompt(prompt, REGISTRY)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[0] == "Workflow validation failed: Prompt outputs failed validation [prompt_outputs_failed_validation]"
    assert "  - node 1 'Start' (MakeNumber), input 'value': Value 101 bigger than max of 100. Received 101; " \
           "allowed range 0..100." in lines
    assert "  - node 2 (AddNumbers), input 'b': Required input is missing. Connect an output of type INT or set " \
           "a value." in lines


def test_error_message_lists_combo_choices():
    prompt = {"1": {"class_type": "ModelLoader", "inputs": {"name": "huge"}},
              "2": {"class_type": "FakeSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 1.0,
                                                            "sampler_name": "euler", "denoise": 1.0}},
              "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}
    with pytest.raises(WorkflowValidationError) as caught:
        check_prompt(prompt, REGISTRY)
    assert "input 'name': Value not in list. Received 'huge'; allowed values: 'small', 'large'." in str(caught.value)


class _FolderLoader:
    """A loader whose model list is longer than the error message shows."""

    @classmethod
    def INPUT_TYPES(cls):
        names = [f"face-{index:02}.pkl" for index in range(30)] + ["demo64/fs3.npy"]
        return {"required": {"name": (names,)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    OUTPUT_NODE = True


def test_error_message_names_closest_choices_of_long_list():
    registry = {**REGISTRY, "FolderLoader": _FolderLoader}
    with pytest.raises(WorkflowValidationError) as caught:
        check_prompt({"1": {"class_type": "FolderLoader", "inputs": {"name": "demo64"}}}, registry)
    assert "Received 'demo64'; closest allowed values: 'demo64/fs3.npy'" in str(caught.value)


def test_error_response_shape():
    with pytest.raises(WorkflowValidationError) as caught:
        check_prompt(chain_prompt(**{"2_b": "x"}), REGISTRY)
    response = caught.value.response
    assert set(response) == {"error", "node_errors"}
    assert set(response["error"]) == {"type", "message", "details", "extra_info"}
    entry = response["node_errors"]["2"]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert set(entry["errors"][0]) == {"type", "message", "details", "extra_info"}
    assert entry["errors"][0]["extra_info"]["input_config"] == ["INT", {"default": 0, "min": -100, "max": 100}]


def test_literal_value_on_socket_input_is_rejected():
    class Render:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE", {})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

    result = validate_prompt({"3": {"class_type": "Render", "inputs": {"images": 7}}}, {"Render": Render})
    error = only_error(result, "3")
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Input must be connected to another node's output"
    assert "needs a link, got the literal value 7" in error["details"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan"])
def test_non_finite_float_is_rejected(value):
    class Scale:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"factor": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0})}}

        RETURN_TYPES = ("FLOAT",)
        FUNCTION = "run"
        OUTPUT_NODE = True

    result = validate_prompt({"1": {"class_type": "Scale", "inputs": {"factor": value}}}, {"Scale": Scale})
    error = only_error(result, "1")
    assert error["type"] == "invalid_input_type"
    assert "not a finite number" in error["details"]


def test_empty_choice_list_names_model_folder(stylebridge_home):
    class Loader:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"ckpt_name": ([], {})}}

        RETURN_TYPES = ("MODEL",)
        FUNCTION = "run"
        OUTPUT_NODE = True

    with pytest.raises(WorkflowValidationError) as raised:
        check_prompt({"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.pkl"}}}, {"Loader": Loader})
    assert str(stylebridge_home / "models") in str(raised.value)
    assert "stylebridge demo-models" in str(raised.value)
