"""pSp and e4e checkpoints in the official layout load strictly, run on the CPU and give latents of their generator."""

import copy
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from stylebridge.models import encoders
from stylebridge.models.checkpoint_writers import (
    make_generator,
    make_stylegan3_generator,
    rosinality_state_dict,
    write_rosinality,
)
from stylebridge.models.checkpoints import CheckpointError
from stylebridge.models.encoder_networks import IR_SE_50, BackboneConfig, build_encoder_network
from stylebridge.models.encoders import (
    EncoderCheckpointError,
    EncoderMismatchError,
    encode,
    load_encoder,
    prepare_input,
    write_encoder_checkpoint,
)
from stylebridge.models.stylegan2 import StyleGAN2Config
from stylebridge.models.stylegan3 import StyleGAN3Config
from stylebridge.nodes import NODE_CLASS_MAPPINGS
from stylebridge.runtime import host
from stylebridge.runtime.runner import run_workflow

# A small backbone keeps each forward pass cheap, while its structure (stages, SE units, pyramid, heads) is official.
SMALL = BackboneConfig(stem_channels=4, stage_channels=(4, 8, 12, 16), stage_units=(1, 1, 2, 1), se_reduction=4)

# Tensor count and SHA-256 of the sorted "name:[shape]" lines of the official encoders' state dicts for a 1024 px
# generator. They were computed from the IR-SE50 classes in models/encoders/psp_encoders.py of
# eladrich/pixel2style2pixel and omertov/encoder4editing, and bench/fidelity_encoders.py recomputes them.
# Encoder4Editing and GradualStyleEncoder share one layout.
OFFICIAL_LAYOUTS = {
    "Encoder4Editing": (621, "a1779738896211ef8d05dbdd50c17bb022d98db68ee4dbd17645e558000e5529"),
    "GradualStyleEncoder": (621, "a1779738896211ef8d05dbdd50c17bb022d98db68ee4dbd17645e558000e5529"),
    "SingleStyleCodeEncoder": (387, "d8f84a066cbf23e4f69ade569a16ac5f2d38aef438072f5fc0cfa3fd18c00466"),
    "BackboneEncoderUsingLastLayerIntoW": (387, "d8f84a066cbf23e4f69ade569a16ac5f2d38aef438072f5fc0cfa3fd18c00466"),
    "BackboneEncoderUsingLastLayerIntoWPlus": (394, "e3477cd5394611c3ceab9fdb5b4b63628dc7dc2fb0a6843f9d7f3a3a54dd1f55"),
}


def layout_digest(state: dict) -> str:
    lines = "\n".join(f"{name}:{list(tensor.shape)}" for name, tensor in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def random_images(count: int, height: int = 40, width: int = 48, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    return torch.from_numpy(pixels.astype(np.float32) / 255)


def rewrite(path, new_path, change):
    """Copy a checkpoint with `change(data)` applied to its dict."""
    data = torch.load(path, weights_only=False)
    change(data)
    torch.save(data, new_path)
    return new_path


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_generator):
    folder = tmp_path_factory.mktemp("encoders")
    return {kind: write_encoder_checkpoint(kind, tiny_generator, folder / f"{kind}.pt", seed=1, backbone=SMALL)
            for kind in encoders.KINDS}


@pytest.fixture(scope="module")
def e4e(files):
    return load_encoder(files["e4e"])


# ---------------------------------------------------------------------------------------------------------------------
# Loading.


@pytest.mark.parametrize("kind", encoders.KINDS)
def test_checkpoint_loads_with_official_options(files, kind):
    encoder = load_encoder(files[kind])
    assert encoder.kind == kind
    assert encoder.encoder_type == {"e4e": "Encoder4Editing", "psp": "GradualStyleEncoder"}[kind]
    assert encoder.input_size == 256
    assert encoder.start_from_latent_avg
    assert not encoder.network.training


@pytest.mark.parametrize("kind", encoders.KINDS)
def test_encode_gives_generator_latent(files, tiny_generator, kind):
    encoder = load_encoder(files[kind])
    latent = encode(encoder, tiny_generator, random_images(2))
    assert latent.space == "W+"
    assert list(latent.w.shape) == [2, tiny_generator.num_ws, tiny_generator.w_dim]
    assert latent.fingerprint == tiny_generator.fingerprint
    assert latent.meta["encoder"] == kind
    assert torch.isfinite(latent.w).all()


def test_written_file_has_official_layout(files, tiny_generator):
    data = torch.load(files["e4e"], weights_only=True)
    assert set(data) == {"state_dict", "opts", "latent_avg"}
    assert isinstance(data["opts"], dict)
    assert list(data["latent_avg"].shape) == [tiny_generator.num_ws, tiny_generator.w_dim]
    decoder_keys = {k[len("decoder."):] for k in data["state_dict"] if k.startswith("decoder.")}
    assert set(rosinality_state_dict(tiny_generator)) < decoder_keys
    assert "convs.0.conv.blur.kernel" in decoder_keys
    assert "to_rgbs.0.upsample.kernel" in decoder_keys


def test_decoder_equals_written_generator(e4e, tiny_generator):
    assert e4e.decoder_fingerprint == tiny_generator.fingerprint
    for name, tensor in tiny_generator.synthesis.state_dict().items():
        assert torch.equal(e4e.decoder.synthesis.state_dict()[name], tensor), name


def test_encoder_tensors_load_strictly(files, e4e):
    stored = torch.load(files["e4e"], weights_only=True)["state_dict"]
    expected = {k[len("encoder."):]: v for k, v in stored.items() if k.startswith("encoder.")}
    loaded = e4e.network.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("encoder_type", sorted(OFFICIAL_LAYOUTS))
def test_full_size_layout_matches_official(encoder_type):
    with torch.device("meta"):
        network = build_encoder_network(encoder_type, IR_SE_50, num_styles=18, style_dim=512)
    state = network.state_dict()
    count, digest = OFFICIAL_LAYOUTS[encoder_type]
    assert len(state) == count
    assert layout_digest(state) == digest


def test_full_size_key_shapes_spot_check():
    with torch.device("meta"):
        state = build_encoder_network("Encoder4Editing", IR_SE_50, num_styles=18, style_dim=512).state_dict()
    assert list(state["input_layer.0.weight"].shape) == [64, 3, 3, 3]
    assert list(state["body.23.res_layer.5.fc1.weight"].shape) == [32, 512, 1, 1]
    assert list(state["body.21.shortcut_layer.0.weight"].shape) == [512, 256, 1, 1]
    assert list(state["styles.17.convs.10.weight"].shape) == [512, 512, 3, 3]
    assert "styles.17.convs.12.weight" not in state
    assert list(state["styles.0.convs.6.weight"].shape) == [512, 512, 3, 3]
    assert "styles.0.convs.8.weight" not in state
    assert list(state["latlayer1.weight"].shape) == [512, 256, 1, 1]
    assert list(state["latlayer2.weight"].shape) == [512, 128, 1, 1]


def test_opts_as_namespace_loads(tmp_path, tiny_generator):
    path = write_encoder_checkpoint("psp", tiny_generator, tmp_path / "ns.pt", backbone=SMALL, opts_as_namespace=True)
    encoder = load_encoder(path)
    assert encoder.kind == "psp"
    assert encoder.opts["output_size"] == tiny_generator.img_resolution


class RunsCode:
    """Unpickling this runs a function, as a malicious checkpoint would."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_file_with_code_rejected(files, tmp_path):
    marker = tmp_path / "code_ran"
    path = rewrite(files["e4e"], tmp_path / "evil.pt", lambda data: data.update(opts=RunsCode(marker)))
    with pytest.raises(EncoderCheckpointError, match=r"evil.pt contains a reference to \w*\.?open, which is code, "
                                                     r"not tensors"):
        load_encoder(path)
    assert not marker.exists()


def test_generator_file_rejected_as_encoder(tmp_path, tiny_generator):
    path = write_rosinality(tiny_generator, tmp_path / "generator.pt")
    with pytest.raises(EncoderCheckpointError, match="LoadStyleGAN"):
        load_encoder(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pt"):
        load_encoder(tmp_path / "absent.pt")


def test_missing_encoder_tensor_named(files, tmp_path):
    path = rewrite(files["e4e"], tmp_path / "cut.pt", lambda data: data["state_dict"].pop("encoder.latlayer1.bias"))
    with pytest.raises(EncoderCheckpointError, match="latlayer1.bias"):
        load_encoder(path)


def test_wrong_backbone_shapes_rejected(files, tmp_path):
    def drop_variant(data):
        del data["opts"][encoders.BACKBONE_OPTION]  # Now the loader expects IR-SE50.

    path = rewrite(files["e4e"], tmp_path / "variant.pt", drop_variant)
    with pytest.raises(EncoderCheckpointError, match="IR-SE50"):
        load_encoder(path)


def test_inconsistent_size_option_rejected(files, tmp_path):
    path = rewrite(files["e4e"], tmp_path / "size.pt", lambda data: data["opts"].update(stylegan_size=1024))
    with pytest.raises(EncoderCheckpointError, match="stylegan_size=1024"):
        load_encoder(path)


def test_sketch_encoder_rejected(files, tmp_path):
    path = rewrite(files["psp"], tmp_path / "sketch.pt",
                   lambda data: data["opts"].update(input_nc=1, label_nc=1, dataset_type="celebs_sketch_to_face"))
    with pytest.raises(EncoderCheckpointError, match="not RGB photos"):
        load_encoder(path)


def test_unknown_encoder_type_rejected(files, tmp_path):
    path = rewrite(files["psp"], tmp_path / "type.pt", lambda data: data["opts"].update(encoder_type="ResNetEncoder"))
    with pytest.raises(EncoderCheckpointError, match="ResNetEncoder"):
        load_encoder(path)


def test_missing_latent_avg_estimated(files, tmp_path, tiny_generator):
    path = rewrite(files["e4e"], tmp_path / "no_avg.pt", lambda data: data.pop("latent_avg"))
    encoder = load_encoder(path)
    estimate = encoder.latent_avg[0]
    # Two means over 10,000 samples each differ by about 1.4% of the spread of W (one standard deviation).
    z = torch.randn([10_000, tiny_generator.z_dim], generator=torch.Generator().manual_seed(123))
    w = tiny_generator.mapping(z, None)[:, 0]
    assert list(encoder.latent_avg.shape) == [1, tiny_generator.w_dim]
    assert torch.equal(estimate, encoder.decoder.mapping.w_avg)
    assert ((estimate - w.mean(dim=0)).abs() < 0.1 * w.std(dim=0)).all()


# ---------------------------------------------------------------------------------------------------------------------
# Encoding.


def test_encode_adds_latent_avg(e4e, tiny_generator):
    images = random_images(1)
    latent = encode(e4e, tiny_generator, images)
    expected = e4e.network(prepare_input(images, e4e.input_shape)) + e4e.latent_avg
    assert torch.allclose(latent.w, expected, atol=1e-6)


def test_encode_without_latent_avg_option(files, tmp_path, tiny_generator):
    path = rewrite(files["psp"], tmp_path / "plain.pt", lambda data: data["opts"].update(start_from_latent_avg=False))
    encoder = load_encoder(path)
    images = random_images(1)
    latent = encode(encoder, tiny_generator, images)
    assert torch.allclose(latent.w, encoder.network(prepare_input(images, encoder.input_shape)), atol=1e-6)


def test_e4e_layers_are_offsets_from_first(e4e, tiny_generator):
    x = prepare_input(random_images(1), e4e.input_shape)
    features = e4e.network.pyramid(x)
    w0 = e4e.network.styles[0](features[0])
    offset = e4e.network.styles[5](features[5])
    assert torch.allclose(e4e.network(x)[:, 5], w0 + offset, atol=1e-6)


@pytest.mark.parametrize("kind, encoder_type, space", [
    ("psp", "BackboneEncoderUsingLastLayerIntoW", "W"),
    ("e4e", "SingleStyleCodeEncoder", "W"),
    ("psp", "BackboneEncoderUsingLastLayerIntoWPlus", "W+"),
])
def test_other_encoder_types_encode(tmp_path, tiny_generator, kind, encoder_type, space):
    path = write_encoder_checkpoint(kind, tiny_generator, tmp_path / "other.pt", encoder_type=encoder_type,
                                    backbone=SMALL)
    latent = encode(load_encoder(path), tiny_generator, random_images(1))
    assert latent.space == space
    assert latent.fingerprint == tiny_generator.fingerprint


def test_cars_encoder_takes_192_by_256(files, tmp_path, tiny_generator):
    path = rewrite(files["e4e"], tmp_path / "cars.pt", lambda data: data["opts"].update(dataset_type="cars_encode"))
    encoder = load_encoder(path)
    latent = encode(encoder, tiny_generator, random_images(1))
    assert encoder.input_shape == (192, 256)
    assert list(latent.w.shape) == [1, tiny_generator.num_ws, tiny_generator.w_dim]


def test_prepare_input_matches_torchvision_transform():
    transforms = pytest.importorskip("torchvision.transforms")
    reference = transforms.Compose([transforms.Resize((256, 256)), transforms.ToTensor(),
                                    transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    images = random_images(1, height=301, width=517, seed=3)
    pixels = (images[0].numpy() * 255).round().astype(np.uint8)
    assert torch.equal(prepare_input(images, (256, 256))[0], reference(Image.fromarray(pixels)))


def test_gray_and_rgba_images_encode_as_rgb(e4e, tiny_generator):
    gray = random_images(1)[..., :1]
    rgba = torch.cat([gray.repeat(1, 1, 1, 3), torch.ones_like(gray)], dim=-1)
    from_gray = encode(e4e, tiny_generator, gray)
    from_rgba = encode(e4e, tiny_generator, rgba)
    assert torch.equal(from_gray.w, from_rgba.w)


def test_two_channel_image_rejected(e4e, tiny_generator):
    with pytest.raises(ValueError, match="2 channels"):
        encode(e4e, tiny_generator, torch.rand(1, 8, 8, 2))


def test_interrupt_stops_encoding(e4e, tiny_generator):
    host.interrupt()
    try:
        with pytest.raises(host.InterruptedByUser):
            encode(e4e, tiny_generator, random_images(1))
    finally:
        host.clear_interrupt()


# ---------------------------------------------------------------------------------------------------------------------
# Matching the connected generator.


@pytest.fixture
def fresh_e4e(files):
    """An encoder that has not yet accepted any generator, so every check compares weights."""
    return load_encoder(files["e4e"])


@pytest.fixture
def forward_calls(fresh_e4e):
    calls = []
    fresh_e4e.network.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


def test_other_generator_rejected_before_work(fresh_e4e, tiny_config, forward_calls):
    other = make_generator(tiny_config, seed=7)
    other.source = {"path": "/models/other.pkl"}
    with pytest.raises(EncoderMismatchError) as error:
        encode(fresh_e4e, other, random_images(1), where="EncodeImage")
    message = str(error.value)
    assert message.startswith("EncodeImage: encoder e4e.pt")
    assert "other.pkl" in message
    assert fresh_e4e.decoder_fingerprint[:12] in message
    assert other.fingerprint[:12] in message
    assert forward_calls == []


def test_other_resolution_rejected(fresh_e4e, forward_calls):
    config = StyleGAN2Config(z_dim=32, w_dim=32, img_resolution=64, channels=[32, 32, 32, 16, 16],
                             architecture="skip", conv_clamp=None, num_fp16_res=0, mapping_layers=3)
    with pytest.raises(EncoderMismatchError, match="resolution 64 px differs from the decoder's 32 px"):
        encode(fresh_e4e, make_generator(config, seed=0), random_images(1))
    assert forward_calls == []


def test_stylegan3_generator_rejected(fresh_e4e, forward_calls):
    config = StyleGAN3Config.for_variant("t", z_dim=32, w_dim=32, img_resolution=32, channel_base=128,
                                         channel_max=16)
    with pytest.raises(EncoderMismatchError, match="the connected one is stylegan3"):
        encode(fresh_e4e, make_stylegan3_generator(config, seed=0), random_images(1))
    assert forward_calls == []


def test_same_synthesis_other_mapping_accepted(fresh_e4e, tiny_generator):
    generator = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        generator.mapping.fc0.weight.mul_(2)
    generator.reset_fingerprint()
    latent = encode(fresh_e4e, generator, random_images(1))
    assert latent.fingerprint == generator.fingerprint
    assert latent.fingerprint != tiny_generator.fingerprint


def test_same_mapping_tuned_synthesis_accepted(fresh_e4e, tiny_generator):
    # Pivotal tuning changes the synthesis weights and keeps the mapping, so the W space stays the same.
    generator = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        generator.synthesis.b8.conv0.weight.add_(1)
    latent = encode(fresh_e4e, generator, random_images(1))
    assert latent.fingerprint == tiny_generator.fingerprint


def test_fp16_rounded_copy_accepted(fresh_e4e, tiny_generator):
    generator = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        for tensor in generator.state_dict().values():
            tensor.copy_(tensor.half().float())
    generator.reset_fingerprint()
    fresh_e4e.check_generator(generator)


# ---------------------------------------------------------------------------------------------------------------------
# Nodes.


@pytest.mark.parametrize("name", ["LoadStyleGANEncoder", "EncodeImage"])
def test_node_declares_v1_contract(name, stylebridge_home):
    node = NODE_CLASS_MAPPINGS[name]
    inputs = node.INPUT_TYPES()
    assert set(inputs) <= {"required", "optional"}
    assert len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
    assert callable(getattr(node(), node.FUNCTION))
    assert node.CATEGORY.startswith("StyleBridge")
    for spec in {**inputs["required"], **inputs.get("optional", {})}.values():
        assert spec[1].get("tooltip"), spec


def test_workflow_encodes_loaded_image(stylebridge_home, tiny_generator, tmp_path):
    from stylebridge.models.checkpoints import save_safetensors

    models = stylebridge_home / "models"
    (models / "encoders").mkdir(parents=True)
    (models / "stylegan").mkdir()
    (stylebridge_home / "input").mkdir()
    write_encoder_checkpoint("e4e", tiny_generator, models / "encoders" / "faces.pt", backbone=SMALL)
    save_safetensors(tiny_generator, models / "stylegan" / "faces.safetensors")
    Image.fromarray(np.full((64, 48, 3), 120, dtype=np.uint8)).save(stylebridge_home / "input" / "face.png")
    assert NODE_CLASS_MAPPINGS["LoadStyleGANEncoder"].INPUT_TYPES()["required"]["encoder_name"][0] == ["faces.pt"]

    prompt = {
        "1": {"class_type": "LoadStyleGAN", "inputs": {"ckpt_name": "faces.safetensors", "device": "cpu",
                                                       "dtype": "fp32"}},
        "2": {"class_type": "LoadStyleGANEncoder", "inputs": {"encoder_name": "faces.pt", "device": "cpu"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "4": {"class_type": "EncodeImage", "inputs": {"encoder": ["2", 0], "generator": ["1", 0], "image": ["3", 0]}},
        "5": {"class_type": "StyleGANGenerate", "inputs": {"generator": ["1", 0], "latent": ["4", 0],
                                                           "noise_mode": "const", "noise_seed": 0}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "encoded"}},
    }
    result = run_workflow(prompt, output_dir=tmp_path)
    latent = result.values["4"][0]
    assert latent.space == "W+"
    assert latent.fingerprint == tiny_generator.fingerprint
    assert [path.name for path in result.saved_files] == ["encoded_00001_.png"]
