"""StyleBridge's StyleCLIP against StyleCLIP's own code, on the same small untrained models, on the CPU.

    python bench/fidelity_styleclip.py --official /path/to/StyleCLIP

Needs a local checkout of orpatashnik/StyleCLIP (not part of this repository). Its modules import CUDA-only or
TensorFlow-era code at the top, so this script compiles only the functions and classes it compares from the
checkout's files (selected with `ast`, with their `.cuda()` calls removed) and runs them:

- global directions: `imagenet_templates`, `zeroshot_classifier`, `GetDt`, `GetBoundary` and `SplitS` from
  global_torch/StyleCLIP.py and `Manipulator.MSCode` from global_torch/manipulate.py, against
  `styleclip.text_direction` and `styleclip.global_direction` + `apply_direction`;
- fs3 rows: `GetFs` from global_torch/SingleChannel.py against the reduction in `compute_channel_data`;
- mappers: `LevelsMapper` and `WithoutToRGBStyleSpaceMapper` from mapper/latent_mappers.py (with `PixelNorm` and
  `EqualLinear` from models/stylegan2/model.py) loaded with a checkpoint written by StyleBridge;
- identity loss: `Backbone` from models/facial_recognition and `IDLoss` from criteria/id_loss.py.

Prints the largest absolute difference of each comparison.
"""

from __future__ import annotations

import argparse
import ast
import copy
import math
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SMALL_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def compile_definitions(path: Path, names: set[str], namespace: dict) -> dict:
    """Run the top-level functions, classes and assignments named in `names` from `path` in `namespace`."""
    source = path.read_text().replace(".cuda()", "").replace("input = input.cuda()", "")
    tree = ast.parse(source, filename=str(path))
    selected = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            selected.append(node)
        elif isinstance(node, ast.Assign) and any(getattr(target, "id", None) in names for target in node.targets):
            selected.append(node)
    exec(compile(ast.Module(body=selected, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def compare_global_directions(official: Path) -> None:
    from stylebridge.models import styleclip
    from stylebridge.models import styleclip_channels as channels
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.clip_models import load_clip
    from stylebridge.models.clip_writers import write_tiny_clip
    from stylebridge.models.sampling import sample_w
    from stylebridge.models.stylegan2 import StyleGAN2Config

    config = StyleGAN2Config(z_dim=16, w_dim=16, img_resolution=16, channels=[16, 16, 8], conv_clamp=None,
                             num_fp16_res=0, mapping_layers=2)
    generator = make_generator(config, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        clip = load_clip(write_tiny_clip(folder, seed=0, config=SMALL_CLIP))
        os.environ["STYLEBRIDGE_CACHE_DIR"] = folder
        data = channels.compute_channel_data(generator, clip, num_images=2, num_samples=256)

    clip_module = types.SimpleNamespace(tokenize=clip.tokenize)
    namespace = {"np": np, "torch": torch, "copy": copy, "clip": clip_module}
    compile_definitions(official / "global_torch" / "StyleCLIP.py",
                        {"imagenet_templates", "zeroshot_classifier", "GetDt", "GetBoundary", "SplitS"}, namespace)
    compile_definitions(official / "global_torch" / "manipulate.py", {"Manipulator"}, namespace)
    same = list(namespace["imagenet_templates"]) == list(styleclip.IMAGENET_TEMPLATES)
    print(f"prompt templates: {len(namespace['imagenet_templates'])} in StyleCLIP, identical list: {same}")

    theirs = namespace["GetDt"](["smiling face", "face"], clip.model)
    ours = styleclip.text_direction(clip, "face", "smiling face").numpy()
    print(f"text direction 'face' -> 'smiling face': max abs difference {np.abs(theirs - ours).max():.2e}")

    layers = channels.style_layers(generator)
    latent = sample_w(generator, seed=3, batch_size=2)
    styles = [style.numpy() for style in generator.synthesis.ws_to_styles(latent.ws())]
    manipulator = types.SimpleNamespace(
        mindexs=[layer.index for layer in layers if not layer.is_torgb],
        dlatents=[np.zeros((1, layer.channels)) for layer in layers],
        s_names=[("toRGB" if layer.is_torgb else "conv") + str(layer.index) for layer in layers],
        code_std=[std.numpy() for std in data.style_std], num_images=2, alpha=[4.1], manipulate_layers=None)
    manipulator.MSCode = types.MethodType(namespace["Manipulator"].MSCode, manipulator)
    for beta in (0.0, 0.05, 0.1):
        boundary, count = namespace["GetBoundary"](data.fs3.numpy(), theirs, manipulator, beta)
        codes = manipulator.MSCode(styles, boundary)  # per layer [images, 1, channels]
        direction = styleclip.global_direction(generator, clip, data, "face", "smiling face", alpha=4.1, beta=beta)
        result = styleclip.apply_direction(generator, latent, direction)
        difference = max(np.abs(codes[i][:, 0] - result.styles.styles[i].numpy()).max() for i in range(len(layers)))
        print(f"global direction, alpha 4.1, beta {beta}: {count} channels in StyleCLIP, "
              f"{direction.meta['channels']} here; edited S max abs difference {difference:.2e}")


def compare_fs3_rows(official: Path) -> None:
    from stylebridge.models import styleclip_channels as channels

    namespace = compile_definitions(official / "global_torch" / "SingleChannel.py", {"GetFs"}, {"np": np})
    features = np.random.RandomState(0).randn(7, 5, 2, 32).astype(np.float32)
    difference = np.abs(namespace["GetFs"](features) - channels._unit_rows(torch.from_numpy(features)).numpy())
    print(f"fs3 rows from features (GetFs): max abs difference {difference.max():.2e}")


def compare_mappers(official: Path) -> None:
    from stylebridge.models import styleclip
    from stylebridge.models import styleclip_mappers as mappers
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.sampling import sample_w
    from stylebridge.models.stylegan2 import StyleGAN2Config

    namespace = {"torch": torch, "nn": nn, "F": F, "math": math, "Module": nn.Module}
    compile_definitions(official / "models" / "stylegan2" / "op" / "fused_act.py", {"fused_leaky_relu"}, namespace)
    compile_definitions(official / "models" / "stylegan2" / "model.py", {"PixelNorm", "EqualLinear"}, namespace)
    compile_definitions(official / "mapper" / "latent_mappers.py",
                        {"STYLESPACE_DIMENSIONS", "Mapper", "LevelsMapper", "WithoutToRGBStyleSpaceMapper"}, namespace)
    # StyleCLIP's mappers are 512 wide and its S-space mapper has the 1024 px layer widths.
    config = StyleGAN2Config(z_dim=512, w_dim=512, img_resolution=1024, channels=[512] * 5 + [256, 128, 64, 32],
                             conv_clamp=None, num_fp16_res=0, mapping_layers=2)
    generator = make_generator(config, seed=1)
    latent = sample_w(generator, seed=3, batch_size=2)
    ws = latent.ws()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        path = mappers.write_mapper_checkpoint(Path(folder) / "levels.pt", generator, levels=("course", "medium"))
        official_mapper = namespace["LevelsMapper"](types.SimpleNamespace(
            no_coarse_mapper=False, no_medium_mapper=False, no_fine_mapper=True))
        state = torch.load(path, weights_only=True)["state_dict"]
        official_mapper.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("mapper.")}, strict=True)
        expected = ws + 0.1 * official_mapper(ws)
        direction = styleclip.mapper_direction(generator, mappers.load_mapper(path))
        result = styleclip.apply_direction(generator, latent, direction)
        print(f"LevelsMapper (fine level off): W+ max abs difference {(expected - result.latent.w).abs().max():.2e}")

        path = mappers.write_mapper_checkpoint(Path(folder) / "s.pt", generator, kind="stylespace")
        official_mapper = namespace["WithoutToRGBStyleSpaceMapper"](types.SimpleNamespace())
        state = torch.load(path, weights_only=True)["state_dict"]
        official_mapper.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("mapper.")}, strict=True)
        styles = generator.synthesis.ws_to_styles(ws)
        offsets = official_mapper([style.view(style.shape[0], 1, -1, 1, 1) for style in styles])
        expected = [style + 0.1 * offset.view(style.shape) for style, offset in zip(styles, offsets, strict=True)]
        direction = styleclip.mapper_direction(generator, mappers.load_mapper(path))
        result = styleclip.apply_direction(generator, latent, direction)
        difference = max((e - r).abs().max().item() for e, r in zip(expected, result.styles.styles, strict=True))
        print(f"style-space mapper: S max abs difference {difference:.2e}")


def compare_identity_loss(official: Path) -> None:
    from stylebridge.models.arcface import identity_loss, load_arcface, write_arcface

    # model_irse.py imports its helpers by package path; register them under that name.
    for name in ("models", "models.facial_recognition"):
        sys.modules.setdefault(name, types.ModuleType(name))
    helpers = types.ModuleType("models.facial_recognition.helpers")
    exec(compile((official / "models" / "facial_recognition" / "helpers.py").read_text(), "helpers.py", "exec"),
         helpers.__dict__)
    sys.modules["models.facial_recognition.helpers"] = helpers
    irse = types.ModuleType("models.facial_recognition.model_irse")
    exec(compile((official / "models" / "facial_recognition" / "model_irse.py").read_text(), "model_irse.py", "exec"),
         irse.__dict__)
    namespace = compile_definitions(official / "criteria" / "id_loss.py", {"IDLoss"},
                                    {"torch": torch, "nn": nn, "Backbone": irse.Backbone})

    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        path = write_arcface(Path(folder) / "model_ir_se50.pth", seed=3)
        backbone = irse.Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se")
        backbone.load_state_dict(torch.load(path, weights_only=True), strict=True)
        backbone.eval()
        ours = load_arcface(path)
        faces = torch.rand(2, 3, 112, 112) * 2 - 1
        print(f"ArcFace IR-SE50 embeddings: max abs difference {(backbone(faces) - ours(faces)).abs().max():.2e}")
        loss = namespace["IDLoss"].__new__(namespace["IDLoss"])
        nn.Module.__init__(loss)
        loss.facenet, loss.pool, loss.face_pool = backbone, nn.AdaptiveAvgPool2d(256), nn.AdaptiveAvgPool2d(112)
        edited, original = torch.rand(2, 3, 256, 256) * 2 - 1, torch.rand(2, 3, 256, 256) * 2 - 1
        theirs = loss(edited, original)[0].item()
        mine = identity_loss(ours, edited, original).mean().item()
        print(f"identity loss: StyleCLIP {theirs:.8f}, StyleBridge {mine:.8f}, difference {abs(theirs - mine):.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="Path to a local orpatashnik/StyleCLIP checkout.")
    args = parser.parse_args()
    os.environ.setdefault("STYLEBRIDGE_STANDALONE", "1")
    torch.manual_seed(0)
    compare_global_directions(args.official)
    compare_fs3_rows(args.official)
    compare_mappers(args.official)
    compare_identity_loss(args.official)
    return 0


if __name__ == "__main__":
    sys.exit(main())
