"""CLIP files load as data in every supported layout, never through torch.jit.load, and prompts are checked."""

import io
import logging
import zipfile

import pytest
import torch

from stylebridge.models import clip_models
from stylebridge.models.clip_models import CLIPLoadError, load_clip
from stylebridge.models.clip_writers import (
    make_clip,
    write_open_clip_checkpoint,
    write_openai_jit,
    write_openai_state_dict,
    write_tiny_clip,
)
from stylebridge.models.safe_pickle import UnsafePickleError
from stylebridge.models.torchscript_archive import is_torchscript_archive, read_torchscript_state_dict

# An OpenAI-architecture CLIP (QuickGELU, heads = width / 64) small enough to trace in a few seconds.
OPENAI_LIKE = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    "quick_gelu": True,
}
PROMPTS = ["a face", "a smiling face"]


@pytest.fixture(scope="module")
def source_model():
    return make_clip(OPENAI_LIKE, seed=4)


@pytest.fixture(scope="module")
def jit_file(source_model, tmp_path_factory):
    return write_openai_jit(source_model, tmp_path_factory.mktemp("openai") / "ViT-T-16.pt", image_size=32)


def _text_features(model: torch.nn.Module) -> torch.Tensor:
    tokens = clip_models.simple_tokenizer(77)(PROMPTS)
    with torch.no_grad():
        return model.encode_text(tokens)


def test_openai_jit_read_without_running_code(jit_file, source_model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load must not be called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    clip = load_clip(jit_file)
    assert clip.source["format"] == "openai-jit"
    expected = {name: tensor.half().float() for name, tensor in source_model.state_dict().items()}
    for name, tensor in clip.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_openai_jit_architecture_inferred(jit_file, source_model):
    clip = load_clip(jit_file)
    assert (clip.image_size, clip.context_length, clip.embed_dim) == (32, 77, 32)
    reference = make_clip(OPENAI_LIKE, seed=4)
    reference.load_state_dict({k: v.half().float() for k, v in source_model.state_dict().items()})
    torch.testing.assert_close(clip.encode_text(PROMPTS), _text_features(reference), rtol=1e-5, atol=1e-5)


def test_torchscript_reader_keeps_only_parameters_and_buffers(jit_file):
    state = read_torchscript_state_dict(jit_file)
    assert {"input_resolution", "context_length", "vocab_size", "visual.conv1.weight"} <= set(state)
    assert state["visual.conv1.weight"].dtype == torch.float16
    assert int(state["input_resolution"]) == 32


def test_torchscript_archive_with_code_global_rejected(tmp_path):
    path = tmp_path / "evil.pt"
    payload = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/code/__torch__.py", "class M(Module):\n  __parameters__ = []\n")
    assert is_torchscript_archive(path)
    with pytest.raises(UnsafePickleError, match="os.system"):
        read_torchscript_state_dict(path)


def test_openai_state_dict_loads_with_quickgelu_warning(source_model, tmp_path, caplog):
    path = write_openai_state_dict(source_model, tmp_path / "openai_state.pt")
    with caplog.at_level(logging.WARNING):
        clip = load_clip(path)
    assert "pass model_name" in caplog.text
    torch.testing.assert_close(clip.encode_text(PROMPTS), _text_features(source_model), rtol=1e-5, atol=1e-5)


def test_open_clip_training_checkpoint_loads(source_model, tmp_path):
    path = write_open_clip_checkpoint(source_model, tmp_path / "epoch_1.pt")
    clip = load_clip(path)
    assert clip.source["format"] == "open_clip-checkpoint"
    torch.testing.assert_close(clip.encode_text(PROMPTS), _text_features(source_model), rtol=1e-5, atol=1e-5)


def test_wrong_model_name_names_mismatched_tensors(source_model, tmp_path):
    path = write_open_clip_checkpoint(source_model, tmp_path / "epoch_1.pt")
    with pytest.raises(CLIPLoadError) as error:
        load_clip(path, model_name="ViT-B-32")
    assert "do not fit ViT-B-32" in str(error.value)
    assert "ln_final.bias is [64] in the file, [512] in ViT-B-32" in str(error.value)


def test_unknown_model_name_lists_known_names(source_model, tmp_path):
    path = write_openai_state_dict(source_model, tmp_path / "state.pt")
    with pytest.raises(CLIPLoadError, match="Unknown open_clip model_name 'ViT-Z-99'.*ViT"):
        load_clip(path, model_name="ViT-Z-99")


def test_open_clip_folder_layout_loads(tmp_path):
    weights = write_tiny_clip(tmp_path / "tiny", seed=0)
    by_file = load_clip(weights)
    by_folder = load_clip(tmp_path / "tiny")
    assert by_file.fingerprint == by_folder.fingerprint
    assert by_file.image_size == 64


def test_tiny_clip_is_deterministic(tmp_path):
    first = load_clip(write_tiny_clip(tmp_path / "a", seed=0))
    second = load_clip(write_tiny_clip(tmp_path / "b", seed=0))
    assert first.fingerprint == second.fingerprint


def test_hugging_face_tokenizer_config_rejected(tmp_path):
    weights = write_tiny_clip(tmp_path / "tiny", seed=0)
    config_path = weights.parent / clip_models.CONFIG_FILE_NAME
    document = clip_models.json.loads(config_path.read_text())
    document["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP"
    config_path.write_text(clip_models.json.dumps(document))
    with pytest.raises(CLIPLoadError, match="would have to be downloaded"):
        load_clip(weights)


def test_non_clip_file_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CLIPLoadError, match="Cannot tell the architecture"):
        load_clip(path)


def test_pickled_code_in_state_dict_rejected(tmp_path):
    path = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": print}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CLIPLoadError, match="Could not read CLIP weights"):
        load_clip(path)


def test_generator_images_preprocessed_to_clip_input():
    clip = clip_models.CLIPModel(model=torch.nn.Linear(1, 1), context_length=77, image_size=8,
                                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="stub")
    pixels = clip.preprocess_generator_images(torch.full((2, 3, 16, 12), 1.0))
    assert pixels.shape == (2, 3, 8, 8)
    torch.testing.assert_close(pixels, torch.full((2, 3, 8, 8), 2.0))
