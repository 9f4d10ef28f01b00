"""StyleCLIP's three methods on small untrained models: global directions, latent optimisation and mappers."""

import pickle
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_helpers import SMALL_CLIP_CONFIG, SMALL_FS3_SETTINGS, SMALL_STYLEGAN2, computed_channel_data

from stylebridge.models import styleclip
from stylebridge.models import styleclip_channels as channels
from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.clip_models import PromptError
from stylebridge.models.latents import LatentMismatchError
from stylebridge.models.sampling import sample_w
from stylebridge.models.styleclip_mappers import MapperCheckpointError, load_mapper, write_mapper_checkpoint
from stylebridge.runtime import host

CONV_CHANNELS = 72


@pytest.fixture(scope="module")
def generator():
    return make_generator(SMALL_STYLEGAN2, seed=1)


@pytest.fixture(scope="module")
def channel_data(generator, clip, tmp_path_factory):
    return computed_channel_data(generator, clip, tmp_path_factory.mktemp("cache"))


@pytest.fixture
def latent(generator):
    return sample_w(generator, seed=3, batch_size=2)


# ---------------------------------------------------------------------------------------------------------------------
# Global directions.


def test_alpha_zero_returns_input_latent(generator, clip, channel_data, latent):
    result, _ = styleclip.edit_latent(generator, latent, "global directions", clip=clip, channel_data=channel_data,
                                      alpha=0.0, beta=0.0)
    assert result.latent is latent
    assert result.projection_error == 0.0


def test_strength_zero_frame_equals_input(generator, clip, channel_data, latent):
    result, _ = styleclip.edit_latent(generator, latent, "global directions", clip=clip, channel_data=channel_data,
                                      beta=0.0, sweep="0 to strength", frames=3)
    assert result.latent.batch_size == 6
    assert torch.equal(result.latent.w[0], latent.ws()[0])
    assert torch.equal(result.latent.w[3], latent.ws()[1])


def test_swapped_prompts_flip_direction(clip):
    forward = styleclip.text_direction(clip, "face", "smiling face")
    backward = styleclip.text_direction(clip, "smiling face", "face")
    assert torch.equal(forward, -backward)
    assert forward.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_beta_keeps_channels_with_relevance_at_least_beta(generator, clip, channel_data):
    relevance = styleclip.channel_relevance(channel_data, styleclip.text_direction(clip, "face", "smiling face"))
    beta = float(relevance.abs().sort().values[CONV_CHANNELS // 2])  # a channel exactly at beta must be kept
    direction = styleclip.global_direction(generator, clip, channel_data, "face", "smiling face", beta=beta)
    layers = [layer for layer in channels.style_layers(generator) if layer.is_conv]
    edited = torch.cat([direction.style_deltas[layer.index][0] for layer in layers]) != 0
    assert torch.equal(edited, relevance.abs() >= beta)
    assert direction.meta["channels"] == int((relevance.abs() >= beta).sum())


def test_global_direction_leaves_torgb_styles(generator, clip, channel_data):
    direction = styleclip.global_direction(generator, clip, channel_data, "face", "smiling face", beta=0.0)
    torgb = [layer for layer in channels.style_layers(generator) if layer.kind == "torgb"]
    assert all(not direction.style_deltas[layer.index].any() for layer in torgb)


def test_beta_above_every_relevance_rejected(generator, clip, channel_data):
    with pytest.raises(ValueError, match="keeps no channel"):
        styleclip.global_direction(generator, clip, channel_data, "face", "smiling face", beta=1.0)


def test_styles_output_matches_edit_exactly(generator, clip, channel_data, latent):
    direction = styleclip.global_direction(generator, clip, channel_data, "face", "smiling face", alpha=2.0, beta=0.0)
    result = styleclip.apply_direction(generator, latent, direction, 1.0)
    base = generator.synthesis.ws_to_styles(latent.ws())
    for style, start, delta in zip(result.styles.styles, base, direction.style_deltas, strict=True):
        torch.testing.assert_close(style, start + delta, rtol=0, atol=1e-6)
    assert result.latent.space == "W+"
    assert 0 < result.projection_error < 1


# ---------------------------------------------------------------------------------------------------------------------
# fs3 computation and files.


def test_fs3_rows_are_unit_vectors(channel_data):
    assert channel_data.fs3.shape == (CONV_CHANNELS, SMALL_CLIP_CONFIG["embed_dim"])
    torch.testing.assert_close(channel_data.fs3.norm(dim=1), torch.ones(CONV_CHANNELS))


def test_fs3_same_seed_identical(generator, clip, channel_data, monkeypatch, tmp_path):
    monkeypatch.setenv("STYLEBRIDGE_CACHE_DIR", str(tmp_path / "fresh_cache"))
    again = channels.compute_channel_data(generator, clip, **SMALL_FS3_SETTINGS)
    assert torch.equal(again.fs3, channel_data.fs3)
    assert all(torch.equal(a, b) for a, b in zip(again.style_std, channel_data.style_std, strict=True))


def test_fs3_matches_per_image_reference(generator, clip, channel_data):
    statistics = channels.style_statistics(generator, SMALL_FS3_SETTINGS["num_samples"], num_first=2)
    layer = channels.measured_layers(generator)[1]
    reference = channels.reference_channel_rows(generator, clip, statistics, layer, range(3))
    torch.testing.assert_close(reference, channel_data.fs3[16:19], rtol=1e-4, atol=1e-5)


def test_fs3_resumes_after_interrupt(generator, clip, channel_data, monkeypatch, tmp_path):
    monkeypatch.setenv("STYLEBRIDGE_CACHE_DIR", str(tmp_path / "resume_cache"))
    calls = []

    def stop_after_first_chunk(done, total):
        calls.append(done)
        raise host.InterruptedByUser("stopped by the test")

    with pytest.raises(host.InterruptedByUser):
        channels.compute_channel_data(generator, clip, progress=stop_after_first_chunk, **SMALL_FS3_SETTINGS)
    partial = list((tmp_path / "resume_cache" / "styleclip").glob("*.partial.safetensors"))
    assert len(partial) == 1
    resumed_from = []
    resumed = channels.compute_channel_data(generator, clip, progress=lambda done, total: resumed_from.append(done),
                                            **SMALL_FS3_SETTINGS)
    assert resumed_from[0] > calls[0]
    assert torch.equal(resumed.fs3, channel_data.fs3)
    assert not list((tmp_path / "resume_cache" / "styleclip").glob("*.partial.safetensors"))


def test_cumulative_mean_reset_differs_after_first_channel(generator, clip, channel_data, monkeypatch, tmp_path):
    monkeypatch.setenv("STYLEBRIDGE_CACHE_DIR", str(tmp_path / "cumulative_cache"))
    cumulative = channels.compute_channel_data(generator, clip, mean_reset="cumulative", **SMALL_FS3_SETTINGS)
    # Nothing was measured before the first channel, so both modes give the same first row.
    torch.testing.assert_close(cumulative.fs3[0], channel_data.fs3[0])
    assert not torch.allclose(cumulative.fs3[1:], channel_data.fs3[1:])


def test_official_layout_round_trips(generator, channel_data, tmp_path):
    fs3_path, statistics_path = channels.save_official(channel_data, tmp_path)
    assert (fs3_path.name, statistics_path.name) == ("fs3.npy", "S_mean_std")
    assert np.load(fs3_path).shape == (CONV_CHANNELS, SMALL_CLIP_CONFIG["embed_dim"])
    with open(statistics_path, "rb") as file:
        means, stds = pickle.load(file)  # Our own file: StyleCLIP reads it with plain pickle like this.
    assert [len(std) for std in stds] == [layer.channels for layer in channels.style_layers(generator)]
    loaded = channels.load_channel_data(fs3_path, generator)
    assert torch.equal(loaded.fs3, channel_data.fs3)
    assert all(torch.equal(a, b) for a, b in zip(loaded.style_mean, channel_data.style_mean, strict=True))
    assert loaded.fingerprint is None


def test_numbered_folder_not_rewritten_for_same_data(channel_data, tmp_path):
    first = channels.save_numbered_folder(channel_data, tmp_path, "styleclip/fs3")
    again = channels.save_numbered_folder(channel_data, tmp_path, "styleclip/fs3")
    assert again == first
    assert [path.name for path in (tmp_path / "styleclip").iterdir()] == ["fs3_00001_"]


def test_numbered_folder_expands_date_variables(channel_data, tmp_path):
    target = channels.save_numbered_folder(channel_data, tmp_path, "%year%/fs3")
    assert target.parent.name == time.strftime("%Y")


def test_numbered_folder_rewritten_when_file_missing(channel_data, tmp_path):
    first = channels.save_numbered_folder(channel_data, tmp_path, "fs3")
    (first / "S_mean_std").unlink()
    assert channels.save_numbered_folder(channel_data, tmp_path, "fs3").name == "fs3_00002_"


def test_numbered_folder_rewritten_for_other_data(channel_data, tmp_path):
    channels.save_numbered_folder(channel_data, tmp_path, "fs3")
    changed = replace(channel_data, fs3=channel_data.fs3.flip(0))
    assert channels.save_numbered_folder(changed, tmp_path, "fs3").name == "fs3_00002_"


def test_safetensors_round_trips(generator, channel_data, tmp_path):
    path = channels.save_channel_data(channel_data, tmp_path / "fs3.safetensors")
    loaded = channels.load_channel_data(path, generator)
    assert torch.equal(loaded.fs3, channel_data.fs3)
    assert loaded.fingerprint == generator.fingerprint


def test_fs3_of_other_generator_rejected(generator, channel_data, tmp_path):
    np.save(tmp_path / "fs3.npy", channel_data.fs3[:50].numpy())
    channels.write_statistics(tmp_path / "S_mean_std", [m.numpy() for m in channel_data.style_mean],
                              [s.numpy() for s in channel_data.style_std])
    with pytest.raises(channels.ChannelDataError) as error:
        channels.load_channel_data(tmp_path / "fs3.npy", generator, where="LoadStyleCLIPFS3")
    assert "50 channel rows" in str(error.value)
    assert f"have {CONV_CHANNELS} channels" in str(error.value)


def test_fs3_prefix_of_layers_accepted(generator, channel_data, tmp_path):
    np.save(tmp_path / "fs3.npy", channel_data.fs3[:32].numpy())
    channels.write_statistics(tmp_path / "S_mean_std", [m.numpy() for m in channel_data.style_mean],
                              [s.numpy() for s in channel_data.style_std])
    loaded = channels.load_channel_data(tmp_path / "fs3.npy", generator)
    assert loaded.measured == ("b4.conv1", "b8.conv0")


def test_safetensors_fs3_from_other_generator_rejected(channel_data, tmp_path, tiny_generator):
    path = channels.save_channel_data(channel_data, tmp_path / "fs3.safetensors")
    with pytest.raises(channels.ChannelDataError, match="computed for generator"):
        channels.load_channel_data(path, tiny_generator)


def test_statistics_pickle_with_code_rejected(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("ran code",))

    path = tmp_path / "S_mean_std"
    path.write_bytes(pickle.dumps([[Exploit()], [np.ones(2)]]))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        channels.read_statistics(path)


# ---------------------------------------------------------------------------------------------------------------------
# Prompts and latents.


def test_empty_prompt_rejected(generator, clip, channel_data, latent):
    with pytest.raises(PromptError, match="target_prompt is empty"):
        styleclip.edit_latent(generator, latent, "global directions", clip=clip, channel_data=channel_data,
                              target_prompt="  ", where="StyleCLIPEdit")


def test_overlong_prompt_rejected(clip):
    prompt = "a very " * 40 + "smiling face"
    with pytest.raises(PromptError) as error:
        styleclip.text_direction(clip, "face", prompt, where="StyleCLIPEdit")
    message = str(error.value)
    assert message.startswith("StyleCLIPEdit: target_prompt is too long")
    assert "reads at most 77" in message
    assert f"Shorten the prompt from {len(clip.tokenizer.encode(prompt))} to at most" in message


def test_prompt_fitting_alone_but_not_in_template_rejected(clip):
    prompt = "very " * 74 + "face"  # 75 tokens + start and end = 77, but the templates add words.
    clip.check_prompt(prompt, "target_prompt")
    with pytest.raises(PromptError, match="in the prompt template"):
        clip.check_prompt(prompt, "target_prompt", templates=styleclip.IMAGENET_TEMPLATES)


def test_latent_from_other_generator_rejected(generator, clip, channel_data, tiny_generator):
    foreign = sample_w(tiny_generator, seed=0)
    with pytest.raises(LatentMismatchError, match="StyleCLIPEdit"):
        styleclip.edit_latent(generator, foreign, "global directions", clip=clip, channel_data=channel_data,
                              where="StyleCLIPEdit")


def test_direction_from_other_generator_rejected(generator, clip, channel_data, tiny_generator):
    direction = styleclip.global_direction(generator, clip, channel_data, "face", "smiling face", beta=0.0)
    with pytest.raises(LatentMismatchError, match=r"the StyleCLIP direction \(method 'global directions', target "
                                                  r"'smiling face'\) was found for generator"):
        styleclip.apply_direction(tiny_generator, sample_w(tiny_generator, seed=0), direction)


def test_sweep_beyond_output_limit_rejected(generator, clip, channel_data):
    direction = styleclip.global_direction(generator, clip, channel_data, "face", "smiling face", beta=0.0)
    latent = sample_w(generator, seed=0, batch_size=5)
    strengths = styleclip.sweep_strengths(1.0, "0 to strength", 1000)
    with pytest.raises(ValueError, match=r"the edit would make 5000 latents \(5 latents x 1000 frames\), more than "
                                         r"the limit of 4096"):
        styleclip.apply_direction(generator, latent, direction, strengths)


def test_fs3_orthogonal_to_text_rejected(generator, clip, channel_data):
    direction = styleclip.text_direction(clip, "face", "smiling face")
    orthogonal = channel_data.fs3 - (channel_data.fs3 @ direction).unsqueeze(1) * direction.unsqueeze(0)
    data = replace(channel_data, fs3=orthogonal / orthogonal.norm(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="no channel responds to 'face' -> 'smiling face'"):
        styleclip.global_direction(generator, clip, data, "face", "smiling face", beta=0.0)


def test_fs3_from_other_clip_warns(generator, clip, channel_data, caplog):
    data = replace(channel_data, clip_name="ViT-L-14 (OpenAI)")
    styleclip.global_direction(generator, clip, data, "face", "smiling face", beta=0.0)
    assert "the fs3 data was measured with CLIP ViT-L-14 (OpenAI), but the connected CLIP is" in caplog.text


def test_global_without_fs3_names_the_input(generator, clip, latent):
    with pytest.raises(ValueError, match="connect the fs3 input"):
        styleclip.edit_latent(generator, latent, "global directions", clip=clip)


# ---------------------------------------------------------------------------------------------------------------------
# Latent optimisation.


@pytest.mark.parametrize("space", ["W+", "S"])
def test_optimization_lowers_clip_loss(generator, clip, latent, space):
    direction, report = styleclip.optimize_latent(generator, clip, latent, "a smiling face", space=space, steps=6)
    assert all(end < start for start, end in zip(report.clip_loss_start, report.clip_loss_end, strict=True))
    assert direction.count == latent.batch_size


def test_optimization_direction_reapplies_to_same_batch_only(generator, clip, latent):
    direction, _ = styleclip.optimize_latent(generator, clip, latent, "a smiling face", steps=2)
    again = styleclip.apply_direction(generator, latent, direction, 1.0)
    torch.testing.assert_close(again.latent.w, latent.ws() + direction.w_delta)
    with pytest.raises(ValueError, match="contains 2 edits"):
        styleclip.apply_direction(generator, sample_w(generator, seed=0, batch_size=3), direction)


def test_learning_rate_follows_styleclip_ramp():
    assert styleclip.learning_rate(0.0, 0.1) == 0.0
    assert styleclip.learning_rate(0.5, 0.1) == pytest.approx(0.1)
    assert styleclip.learning_rate(0.9, 0.1) == pytest.approx(0.1 * (0.5 - 0.5 * np.cos(0.4 * np.pi)))


# ---------------------------------------------------------------------------------------------------------------------
# Mappers.


def test_mapper_checkpoint_in_official_layout_loads(generator, latent, tmp_path):
    path = write_mapper_checkpoint(tmp_path / "smile.pt", generator, description="a smiling face")
    stored = torch.load(path, weights_only=True)
    assert "mapper.course_mapping.mapping.1.weight" in stored["state_dict"]
    assert "decoder.style.1.weight" in stored["state_dict"]
    assert stored["opts"]["mapper_type"] == "LevelsMapper"
    mapper = load_mapper(path)
    assert (mapper.kind, mapper.description) == ("levels", "a smiling face")
    direction = styleclip.mapper_direction(generator, mapper)
    result = styleclip.apply_direction(generator, latent, direction, 1.0)
    expected = latent.ws() + 0.1 * mapper.network(latent.ws())
    torch.testing.assert_close(result.latent.w, expected)


@pytest.mark.parametrize("kind", ["single", "stylespace"])
def test_other_mapper_layouts_load(generator, latent, tmp_path, kind):
    mapper = load_mapper(write_mapper_checkpoint(tmp_path / f"{kind}.pt", generator, kind=kind))
    assert mapper.kind == kind
    result = styleclip.apply_direction(generator, latent, styleclip.mapper_direction(generator, mapper), 1.0)
    assert result.latent.batch_size == latent.batch_size


def test_coarse_only_mapper_keeps_other_layers(generator, latent, tmp_path):
    path = write_mapper_checkpoint(tmp_path / "coarse.pt", generator, levels=("course",))
    result = styleclip.apply_direction(generator, latent, styleclip.mapper_direction(generator, load_mapper(path)))
    assert torch.equal(result.latent.w[:, 4:], latent.ws()[:, 4:])
    assert not torch.equal(result.latent.w[:, :4], latent.ws()[:, :4])


def test_mapper_of_other_generator_rejected(generator, tmp_path):
    other = make_generator(SMALL_STYLEGAN2, seed=2)
    mapper = load_mapper(write_mapper_checkpoint(tmp_path / "other.pt", other))
    with pytest.raises(MapperCheckpointError, match="mapping network differs"):
        styleclip.mapper_direction(generator, mapper, where="StyleCLIPEdit")


def test_non_mapper_file_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, path)
    with pytest.raises(MapperCheckpointError, match="no mapper"):
        load_mapper(path)
