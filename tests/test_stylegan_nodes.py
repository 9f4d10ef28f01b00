"""The StyleGAN nodes, called the way ComfyUI calls them, on checkpoints in the model folder."""

import pytest
import torch

from stylebridge.models.checkpoint_writers import make_generator, write_nvidia_pickle
from stylebridge.models.checkpoints import clear_cache, save_safetensors
from stylebridge.models.latents import LatentMismatchError
from stylebridge.nodes import NODE_CLASS_MAPPINGS
from stylebridge.nodes.stylegan import LoadStyleGAN, SampleW, StyleGANGenerate


@pytest.fixture
def model_folder(stylebridge_home, tiny_generator):
    folder = stylebridge_home / "models" / "stylegan"
    folder.mkdir(parents=True)
    write_nvidia_pickle(tiny_generator, folder / "tiny.pkl")
    (folder / "sub").mkdir()
    save_safetensors(tiny_generator, folder / "sub" / "tiny.safetensors")
    (folder / "notes.txt").write_text("not a model")
    clear_cache()
    return folder


def test_load_stylegan_lists_model_files(model_folder):
    choices = LoadStyleGAN.INPUT_TYPES()["required"]["ckpt_name"][0]
    assert choices == ["sub/tiny.safetensors", "tiny.pkl"]


def test_nodes_render_seed_to_image(model_folder, tiny_generator):
    (generator,) = LoadStyleGAN().load("tiny.pkl", "cpu", "fp32")
    (latent,) = SampleW().sample(generator, seed=7, batch_size=2, truncation_psi=0.7, truncation_cutoff=0,
                                 class_index=0)
    (image,) = StyleGANGenerate().generate(generator, latent, "const", 0)
    assert image.shape == (2, 32, 32, 3)
    assert image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    # The safetensors copy in a subfolder renders the same pixels.
    (copy,) = LoadStyleGAN().load("sub/tiny.safetensors", "cpu", "fp32")
    (image_copy,) = StyleGANGenerate().generate(copy, latent, "const", 0)
    assert torch.equal(image, image_copy)


def test_load_stylegan_missing_file_names_folder(model_folder):
    with pytest.raises(FileNotFoundError, match="stylegan model 'absent.pkl' not found in .*models/stylegan"):
        LoadStyleGAN().load("absent.pkl", "cpu", "fp32")


def test_load_stylegan_rejects_path_outside_folder(model_folder):
    with pytest.raises(ValueError, match="outside the stylegan model folder"):
        LoadStyleGAN().load("../../secret.pkl", "cpu", "fp32")


def test_generate_rejects_latent_from_other_generator(model_folder, tiny_config):
    (generator,) = LoadStyleGAN().load("tiny.pkl", "cpu", "fp32")
    other = make_generator(tiny_config, seed=5)
    (latent,) = SampleW().sample(other, 0, 1, 1.0, 0, 0)
    with pytest.raises(LatentMismatchError, match="Connect the generator that produced the latent"):
        StyleGANGenerate().generate(generator, latent, "const", 0)


def test_sample_w_cutoff_above_layers_names_limit(model_folder):
    (generator,) = LoadStyleGAN().load("tiny.pkl", "cpu", "fp32")
    with pytest.raises(ValueError, match="exceeds this generator's 8 W\\+ layers"):
        SampleW().sample(generator, 0, 1, 0.5, 20, 0)


@pytest.mark.parametrize("name", ["LoadStyleGAN", "SampleW", "StyleGANGenerate"])
def test_node_declares_v1_contract(name):
    node = NODE_CLASS_MAPPINGS[name]
    inputs = node.INPUT_TYPES()
    assert "required" in inputs
    assert isinstance(node.RETURN_TYPES, tuple)
    assert callable(getattr(node, node.FUNCTION))
    assert node.CATEGORY.startswith("StyleBridge")
    for input_name, (input_type, options) in inputs["required"].items():
        assert "tooltip" in options, f"{name}.{input_name} has no tooltip"
        if input_type in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], f"{name}.{input_name} default"


def test_generate_rejects_translate_for_stylegan2(model_folder):
    (generator,) = LoadStyleGAN().load("tiny.pkl", "cpu", "fp32")
    (latent,) = SampleW().sample(generator, 0, 1, 1.0, 0, 0)
    with pytest.raises(ValueError, match="translate and rotate apply only to StyleGAN3"):
        StyleGANGenerate().generate(generator, latent, "const", 0, translate_x=0.25)


def test_generate_translates_stylegan3_without_changing_loaded_generator(stylebridge_home):
    from stylebridge.models.checkpoint_writers import make_stylegan3_generator as make_stylegan3
    from stylebridge.models.stylegan3 import StyleGAN3Config

    folder = stylebridge_home / "models" / "stylegan"
    folder.mkdir(parents=True)
    config = StyleGAN3Config(z_dim=16, w_dim=16, img_resolution=16, channel_base=512, channel_max=32,
                             num_layers=4, num_critical=1, mapping_layers=2)
    write_nvidia_pickle(make_stylegan3(config, seed=0), folder / "sg3.pkl")
    clear_cache()
    (generator,) = LoadStyleGAN().load("sg3.pkl", "cpu", "fp32")
    (latent,) = SampleW().sample(generator, 3, 1, 1.0, 0, 0)
    (plain,) = StyleGANGenerate().generate(generator, latent, "const", 0)
    (moved,) = StyleGANGenerate().generate(generator, latent, "const", 0, translate_x=0.25, rotate=30.0)
    (again,) = StyleGANGenerate().generate(generator, latent, "const", 0)
    assert not torch.equal(plain, moved)
    assert torch.equal(plain, again)


def test_symlinked_checkpoint_in_folder_loads(model_folder, tmp_path):
    outside = tmp_path / "shared_storage"
    outside.mkdir()
    (outside / "real.pkl").write_bytes((model_folder / "tiny.pkl").read_bytes())
    (model_folder / "linked.pkl").symlink_to(outside / "real.pkl")
    assert "linked.pkl" in LoadStyleGAN.INPUT_TYPES()["required"]["ckpt_name"][0]
    (generator,) = LoadStyleGAN().load("linked.pkl", "cpu", "fp32")
    assert generator.img_resolution == 32


def test_latent_mismatch_names_checkpoint_files(model_folder, tiny_config, tmp_path):
    other_path = write_nvidia_pickle(make_generator(tiny_config, seed=5), model_folder / "other.pkl")
    (generator,) = LoadStyleGAN().load("tiny.pkl", "cpu", "fp32")
    (other,) = LoadStyleGAN().load("other.pkl", "cpu", "fp32")
    (latent,) = SampleW().sample(other, 0, 1, 1.0, 0, 0)
    with pytest.raises(LatentMismatchError) as raised:
        StyleGANGenerate().generate(generator, latent, "const", 0)
    assert str(other_path.resolve()) in str(raised.value)
    assert str((model_folder / "tiny.pkl").resolve()) in str(raised.value)
