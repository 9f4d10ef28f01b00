"""`stylebridge convert` and `stylebridge demo-models`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="Convert a StyleGAN checkpoint to StyleBridge safetensors.",
                                  description="Read a StyleGAN checkpoint of any supported format (detected from "
                                              "its content) and write it as safetensors with the architecture in "
                                              "its metadata. The source file is only read.")
    convert.add_argument("input", type=Path, help="Checkpoint to read (.pkl, .pt or .safetensors).")
    convert.add_argument("output", type=Path, help="safetensors file to write; must not exist yet.")
    convert.set_defaults(handler=_convert)

    demo = commands.add_parser("demo-models", help="Write the small untrained demo models into the model folders.",
                               description="Write small UNTRAINED StyleGAN2 checkpoints (NVIDIA pickle, rosinality "
                                           ".pt, safetensors), a tiny diffusers Stable Diffusion pipeline and a tiny "
                                           "open_clip CLIP, offline and from fixed seeds. Existing files are kept.")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")
    demo.set_defaults(handler=_demo_models)


def _convert(args) -> int:
    from .checkpoints import CheckpointError, read_generator, save_safetensors
    from .safe_pickle import UnsafePickleError

    if args.output.exists():
        print(f"error: {args.output} already exists; choose another output path or delete it first.",
              file=sys.stderr)
        return 2
    if args.output.suffix != ".safetensors":
        print(f"error: output {args.output} must end in .safetensors.", file=sys.stderr)
        return 2
    if not args.output.parent.is_dir():
        print(f"error: folder {args.output.parent} does not exist; create it first.", file=sys.stderr)
        return 2
    try:
        generator = read_generator(args.input)
    except (CheckpointError, UnsafePickleError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_safetensors(generator, args.output, extra_metadata={"converted_from": args.input.name})
    print(f"Wrote {args.output} ({generator.source.get('format')} -> safetensors, {generator.img_resolution} px, "
          f"{generator.num_ws} W+ layers, fingerprint {generator.fingerprint[:12]}).")
    return 0


def _demo_models(args) -> int:
    from ..runtime import host
    from .demo import write_demo_models

    written = write_demo_models(seed=args.seed)
    print(f"Demo models (UNTRAINED, for trying the pipeline) in {host.home_dir() / 'models'}:")
    for kind, paths in written.items():
        for path in paths:
            print(f"  wrote {kind}: {path}")
    if not any(written.values()):
        print("  all demo models already exist; nothing written.")
    return 0
