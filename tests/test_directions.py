"""Direction files (InterFaceGAN, GANSpace, rosinality SeFa, StyleBridge) and SeFa / GANSpace computed in place."""

import numpy as np
import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator
from stylebridge.models.directions import (
    DirectionShapeError,
    compute_ganspace,
    compute_sefa,
    load_direction,
    save_direction,
    style_affine_weights,
)
from stylebridge.models.latents import LatentMismatchError
from stylebridge.models.stylegan2 import StyleGAN2Config
from stylebridge.models.stylegan3 import Generator as StyleGAN3Generator
from stylebridge.models.stylegan3 import StyleGAN3Config
from stylebridge.nodes.latent import LoadStyleGANDirection, StyleGANGANSpaceDirections, StyleGANSeFaDirections


class NotATensor:
    """A class outside torch's weights_only allow-list, to check that loading it is rejected."""


@pytest.fixture
def directions_folder(stylebridge_home):
    folder = stylebridge_home / "models" / "directions"
    folder.mkdir(parents=True)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Files.


def test_interfacegan_boundary_loads_as_one_w_direction(tmp_path, tiny_generator):
    boundary = np.random.RandomState(0).randn(1, tiny_generator.w_dim).astype(np.float32)
    np.save(tmp_path / "smile.npy", boundary)
    direction = load_direction(tmp_path / "smile.npy")
    assert direction.source == "interfacegan"
    assert direction.space == "W"
    assert direction.count == 1
    assert direction.fingerprint is None
    assert torch.equal(direction.vectors, torch.from_numpy(boundary))


def test_loading_with_generator_adopts_fingerprint(tmp_path, tiny_generator):
    np.save(tmp_path / "smile.npy", np.ones((1, tiny_generator.w_dim), np.float32))
    direction = load_direction(tmp_path / "smile.npy", tiny_generator)
    assert direction.fingerprint == tiny_generator.fingerprint


def test_wrong_width_boundary_rejected_with_shapes(tmp_path, tiny_generator):
    np.save(tmp_path / "age.npy", np.ones((1, 512), np.float32))
    with pytest.raises(DirectionShapeError, match=r"Load: direction 'age' has width 512 but the generator has width "
                                                  r"32: the direction is \[512\] per direction, the generator "
                                                  r"expects \[32\] per direction \(or \[8, 32\] per layer\)"):
        load_direction(tmp_path / "age.npy", tiny_generator, where="Load")


def test_wrong_layer_count_rejected_with_shapes(tmp_path, tiny_generator):
    np.save(tmp_path / "pose.npy", np.ones((1, 18, 32), np.float32))
    with pytest.raises(DirectionShapeError, match=r"has 18 layers but the generator has 8: the direction is "
                                                  r"\[18, 32\] per direction, the generator expects"):
        load_direction(tmp_path / "pose.npy", tiny_generator)


def test_ganspace_npz_loads_components_and_stdevs(tmp_path):
    components = np.linalg.qr(np.random.RandomState(1).randn(8, 8))[0][:3].astype(np.float32)  # [3, 8]
    stdevs = np.array([3.0, 2.0, 1.0], np.float32)
    np.savez(tmp_path / "ganspace.npz", lat_comp=components[:, None, :], lat_mean=np.zeros((1, 8), np.float32),
             lat_stdev=stdevs, var_ratio=np.array([0.5, 0.3, 0.1], np.float32))
    direction = load_direction(tmp_path / "ganspace.npz")
    assert direction.source == "ganspace"
    assert direction.vectors.shape == (3, 8)
    assert torch.equal(direction.stdevs, torch.from_numpy(stdevs))
    second = direction.select(1)
    assert second.count == 1
    assert torch.equal(second.vectors[0], torch.from_numpy(components[1]))
    scaled = second.scaled("stdev")
    assert torch.allclose(scaled.vectors[0], 2.0 * torch.from_numpy(components[1]))


def test_npz_without_lat_comp_names_its_arrays(tmp_path):
    np.savez(tmp_path / "other.npz", w=np.zeros((1, 8)))
    with pytest.raises(ValueError, match=r"has the arrays \['w'\], but GANSpace files have lat_comp"):
        load_direction(tmp_path / "other.npz")


def test_rosinality_factor_file_loads_columns_as_directions(tmp_path):
    eigvec = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(2)))[0]  # [w_dim, K]
    torch.save({"ckpt": "stylegan2-ffhq.pt", "eigvec": eigvec}, tmp_path / "factor.pt")
    direction = load_direction(tmp_path / "factor.pt")
    assert direction.source == "rosinality-sefa"
    assert direction.count == 8
    assert torch.equal(direction.vectors[3], eigvec[:, 3])
    assert direction.meta["ckpt"] == "stylegan2-ffhq.pt"


def test_npz_object_array_rejected(tmp_path):
    path = tmp_path / "components.npz"
    np.savez(path, lat_comp=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match=f"{path} is not a valid direction file: it contains an object array, "
                                         f"which only pickle can load"):
        load_direction(path)


def test_text_file_named_npy_rejected(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("hello world")
    with pytest.raises(ValueError, match=f"{path} is not a valid direction file: it is not a NumPy .npy file"):
        load_direction(path)


def test_pt_with_arbitrary_object_rejected(tmp_path):
    torch.save({"eigvec": torch.zeros(8, 2), "payload": NotATensor()}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError) as error:
        load_direction(tmp_path / "unsafe.pt")
    assert "unsafe.pt contains a reference to test_directions.NotATensor, which is code, not tensors" in \
        str(error.value)
    assert "weights_only=False" not in str(error.value)


def test_safetensors_round_trip_keeps_fields(tmp_path, tiny_generator):
    direction = compute_ganspace(tiny_generator, num_samples=200, seed=3, num_components=4)
    path = save_direction(direction, tmp_path / "ganspace.safetensors")
    loaded = load_direction(path)
    assert torch.equal(loaded.vectors, direction.vectors)
    assert torch.equal(loaded.stdevs, direction.stdevs)
    assert torch.equal(loaded.values, direction.values)
    assert loaded.fingerprint == tiny_generator.fingerprint
    assert loaded.source == "ganspace"
    assert loaded.name == direction.name


def test_save_direction_never_overwrites(tmp_path, tiny_generator):
    direction = compute_sefa(tiny_generator, num_components=2)
    save_direction(direction, tmp_path / "sefa.safetensors")
    with pytest.raises(FileExistsError):
        save_direction(direction, tmp_path / "sefa.safetensors")


def test_direction_of_other_generator_rejected(tmp_path, tiny_generator, tiny_config):
    other = make_generator(tiny_config, seed=7)
    save_direction(compute_sefa(other, num_components=2), tmp_path / "other.safetensors")
    with pytest.raises(LatentMismatchError, match="not the connected generator"):
        load_direction(tmp_path / "other.safetensors", tiny_generator)


def test_unknown_suffix_lists_formats(tmp_path):
    (tmp_path / "dir.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"unknown direction file type '.txt'; expected one of .npy, .npz, .pt"):
        load_direction(tmp_path / "dir.txt")


def test_stdev_scale_needs_stdevs(tiny_generator):
    with pytest.raises(ValueError, match="scale 'stdev' needs the spread of W .* only GANSpace directions do"):
        compute_sefa(tiny_generator, num_components=2).scaled("stdev")


# ---------------------------------------------------------------------------------------------------------------------
# SeFa.


def test_sefa_vectors_are_orthonormal(tiny_generator):
    direction = compute_sefa(tiny_generator)
    gram = direction.vectors.double() @ direction.vectors.double().t()
    assert direction.count == tiny_generator.w_dim
    assert torch.allclose(gram, torch.eye(tiny_generator.w_dim, dtype=torch.float64), atol=1e-5)


def test_sefa_is_deterministic(tiny_generator):
    first = compute_sefa(tiny_generator, num_components=5)
    second = compute_sefa(tiny_generator, num_components=5)
    assert torch.equal(first.vectors, second.vectors)
    assert torch.equal(first.values, second.values)


def test_sefa_eigenvalues_measure_normalised_weight_response(tiny_generator):
    direction = compute_sefa(tiny_generator, num_components=4)
    weights = torch.cat([w.detach().double() for _, _, w in style_affine_weights(tiny_generator)])
    weights = weights / weights.norm(dim=1, keepdim=True)
    responses = (weights @ direction.vectors.double().t()).square().sum(dim=0)  # |A v|^2 per direction
    assert torch.allclose(responses, direction.values.double(), rtol=1e-4)
    assert torch.all(direction.values[:-1] >= direction.values[1:])


def test_sefa_uses_conv_affines_and_final_torgb(tiny_generator):
    entries = style_affine_weights(tiny_generator)
    assert [index for index, _, _ in entries] == list(range(8))
    assert entries[0][1] == "synthesis.b4.conv1"
    assert entries[-1][1] == "synthesis.b32.torgb"


def test_sefa_layer_range_changes_directions(tiny_generator):
    coarse = compute_sefa(tiny_generator, layers=[0, 1, 2, 3], num_components=3)
    every = compute_sefa(tiny_generator, num_components=3)
    assert coarse.meta["layers"] == [0, 1, 2, 3]
    assert not torch.allclose(coarse.vectors, every.vectors)


def test_sefa_node_rejects_layer_range_beyond_generator(tiny_generator):
    with pytest.raises(ValueError, match="StyleGANSeFaDirections layers: layer range '0-8' is outside this "
                                         "generator's W\\+ layers 0-7"):
        StyleGANSeFaDirections().compute(tiny_generator, "0-8", 4)


def test_sefa_node_rejects_more_components_than_w_dim(tiny_generator):
    with pytest.raises(ValueError, match="num_components 64 exceeds this generator's w_dim; use 1..32"):
        StyleGANSeFaDirections().compute(tiny_generator, "all", 64)


def test_sefa_resnet_generator_uses_last_torgb():
    config = StyleGAN2Config(z_dim=8, w_dim=8, img_resolution=16, channels=[16, 16, 8], architecture="resnet",
                             conv_clamp=None, num_fp16_res=0, mapping_layers=2)
    generator = make_generator(config, seed=0)
    entries = style_affine_weights(generator)
    assert [index for index, _, _ in entries] == list(range(generator.num_ws))
    assert entries[-1][1] == "synthesis.b16.torgb"


def tiny_stylegan3():
    config = StyleGAN3Config(z_dim=8, w_dim=8, img_resolution=16, num_layers=4, num_critical=1, channel_base=256,
                             channel_max=16, mapping_layers=2, num_fp16_res=0)
    torch.manual_seed(0)
    return StyleGAN3Generator(config)


def test_sefa_stylegan3_uses_layer_affines_without_input():
    generator = tiny_stylegan3()
    entries = style_affine_weights(generator)
    assert [index for index, _, _ in entries] == [1, 2, 3, 4, 5]
    assert entries[0][1] == "synthesis.L0_36_16"
    direction = compute_sefa(generator, num_components=3)
    gram = direction.vectors.double() @ direction.vectors.double().t()
    assert torch.allclose(gram, torch.eye(3, dtype=torch.float64), atol=1e-5)


def test_sefa_stylegan3_input_layer_alone_is_rejected():
    with pytest.raises(ValueError, match=r"W\+ layers \[0\] drive no style affine of this generator; SeFa can use "
                                         "the indices 1, 2, 3, 4, 5"):
        compute_sefa(tiny_stylegan3(), layers=[0])


# ---------------------------------------------------------------------------------------------------------------------
# GANSpace.


def test_ganspace_is_deterministic_per_seed(tiny_generator):
    first = compute_ganspace(tiny_generator, num_samples=500, seed=11, num_components=4)
    second = compute_ganspace(tiny_generator, num_samples=500, seed=11, num_components=4)
    other = compute_ganspace(tiny_generator, num_samples=500, seed=12, num_components=4)
    assert torch.equal(first.vectors, second.vectors)
    assert torch.equal(first.stdevs, second.stdevs)
    assert not torch.equal(first.vectors, other.vectors)


def test_ganspace_components_are_orthonormal_and_sorted(tiny_generator):
    direction = compute_ganspace(tiny_generator, num_samples=500, seed=0, num_components=6)
    gram = direction.vectors.double() @ direction.vectors.double().t()
    assert torch.allclose(gram, torch.eye(6, dtype=torch.float64), atol=1e-5)
    assert torch.all(direction.stdevs[:-1] >= direction.stdevs[1:])


def test_ganspace_stdev_matches_projection_spread(tiny_generator):
    from stylebridge.models.directions import sample_w_batch

    direction = compute_ganspace(tiny_generator, num_samples=400, seed=5, num_components=2)
    samples = sample_w_batch(tiny_generator, 400, 5)
    spread = (samples @ direction.vectors[0].double()).std()
    assert torch.isclose(spread, direction.stdevs[0].double(), rtol=1e-4)


def test_ganspace_runs_on_stylegan3():
    generator = tiny_stylegan3()
    direction = compute_ganspace(generator, num_samples=100, seed=0, num_components=3)
    assert direction.vectors.shape == (3, 8)
    assert direction.fingerprint == generator.fingerprint


def test_ganspace_independent_of_mapping_chunk(tiny_generator, monkeypatch):
    from stylebridge.models import directions

    whole = compute_ganspace(tiny_generator, num_samples=300, seed=4, num_components=3)
    whole_samples = directions.sample_w_batch(tiny_generator, 300, 4)
    monkeypatch.setattr(directions, "MAPPING_CHUNK", 64)
    chunked_samples = directions.sample_w_batch(tiny_generator, 300, 4)
    chunked = compute_ganspace(tiny_generator, num_samples=300, seed=4, num_components=3)
    assert torch.allclose(chunked_samples, whole_samples, atol=1e-6)
    assert torch.allclose(chunked.vectors, whole.vectors, atol=1e-5)
    assert torch.allclose(chunked.stdevs, whole.stdevs, rtol=1e-5)


def test_ganspace_rejects_too_many_components(tiny_generator):
    with pytest.raises(ValueError, match="num_components 20 is out of range; expected 1..9"):
        compute_ganspace(tiny_generator, num_samples=10, seed=0, num_components=20)


def test_ganspace_node_scales_by_stdev(tiny_generator):
    (direction,) = StyleGANGANSpaceDirections().compute(tiny_generator, 300, 0, 3, "stdev", 0)
    assert torch.allclose(direction.vectors.norm(dim=1), direction.stdevs, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Node.


def test_load_direction_node_lists_folder_and_selects_component(directions_folder, tiny_generator):
    np.save(directions_folder / "smile.npy", np.ones((1, tiny_generator.w_dim), np.float32))
    save_direction(compute_sefa(tiny_generator, num_components=3), directions_folder / "sefa.safetensors")
    (directions_folder / "readme.txt").write_text("not a direction")
    choices = LoadStyleGANDirection.INPUT_TYPES()["required"]["direction_name"][0]
    assert choices == ["sefa.safetensors", "smile.npy"]
    (direction,) = LoadStyleGANDirection().load("sefa.safetensors", 2, "unit")
    assert direction.count == 1
    assert direction.meta["component"] == 2
    (adopted,) = LoadStyleGANDirection().load("smile.npy", -1, "unit", generator=tiny_generator)
    assert adopted.fingerprint == tiny_generator.fingerprint


def test_load_direction_node_component_out_of_range(directions_folder, tiny_generator):
    save_direction(compute_sefa(tiny_generator, num_components=3), directions_folder / "sefa.safetensors")
    with pytest.raises(ValueError, match="LoadStyleGANDirection component: direction index 5 is out of range; "
                                         "'sefa-8-layers' has 3 direction\\(s\\), so use 0..2"):
        LoadStyleGANDirection().load("sefa.safetensors", 5, "unit")
