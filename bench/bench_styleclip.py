"""StyleCLIP speed: delta_i_c (fs3) computation against StyleCLIP's own procedure, and edit latency per method.

    python bench/bench_styleclip.py [--device cpu|cuda] [--generators demo ffhq1024] [--json results.json]

StyleCLIP's fs3 script (global_torch/SingleChannel.py in orpatashnik/StyleCLIP) cannot run here: it needs the
FFHQ network pickle, OpenAI's `clip` package and hard-coded paths. The baseline is therefore its procedure
re-implemented on the same generator and CLIP model. For every channel and image it renders one image per
synthesis call and converts it to uint8 and a PIL image. It then applies CLIP's PIL preprocessing (bicubic
resize, center crop, normalisation) and encodes the channel's images in one CLIP batch, as its GetImgF does.

Both procedures are timed on a sample of channels and extrapolated to every measured channel. The baseline's cost
per channel does not depend on the layer. Ours does, because the blocks before the layer run once per layer, so
ours is sampled in every layer. For the small demo generator the full computation is also run once, to check the
extrapolation. Weights are random (untrained), which does not change the amount of work. CLIP is OpenAI's
ViT-B/32 architecture with random weights.

NOTE: only the CPU path has been run. `--device cuda` has not been tried on a GPU yet.

Edit latency is the time of one edit of one latent per method: global directions (text direction from 79
templates x 2 prompts, relevance, and the S edit with its W+ fit), the same with the prompt features cached,
latent optimisation (`--optimization-steps` steps are timed and scaled to StyleCLIP's 300) and a LevelsMapper.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

GENERATORS = ("demo", "ffhq256", "ffhq1024")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Clock of every measurement: time.perf_counter (wall) or time.process_time (CPU time of all threads), set by --clock.
CLOCK = time.perf_counter


def _timed(function, device: torch.device) -> tuple[float, object]:
    _sync(device)
    start = CLOCK()
    result = function()
    _sync(device)
    return CLOCK() - start, result


def build_generator(name: str, device: torch.device):
    from stylebridge.models.checkpoint_writers import make_generator
    from stylebridge.models.demo import DEMO_STYLEGAN2
    from stylebridge.models.stylegan2 import StyleGAN2Config, channels_for

    if name == "demo":
        config = DEMO_STYLEGAN2
    else:
        resolution = int(name.removeprefix("ffhq"))
        # StyleGAN2-ADA's FFHQ configuration: 512-wide W, channel_base 32768, fp16 in the top 4 resolutions.
        config = StyleGAN2Config(img_resolution=resolution, channels=channels_for(resolution), conv_clamp=256,
                                 num_fp16_res=4)
    return make_generator(config, seed=0).to(device)


class _ZeroImageEncoder(torch.nn.Module):
    """Stand-in for CLIP's image tower that costs nothing, to time rendering and preprocessing alone."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.text_projection = torch.nn.Parameter(torch.zeros(1, embed_dim))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.zeros(pixels.shape[0], self.text_projection.shape[1], device=pixels.device)


def without_image_tower(clip):
    """A copy of `clip` whose image encoder returns zeros immediately (its preprocessing still runs)."""
    from dataclasses import replace

    return replace(clip, model=_ZeroImageEncoder(clip.embed_dim).to(clip.device), text_cache={})


def build_clip(device: torch.device):
    from open_clip import get_model_config

    from stylebridge.models.clip_models import CLIPModel
    from stylebridge.models.clip_writers import OPENAI_PREPROCESS, make_clip

    config = {**get_model_config("ViT-B-32"), "quick_gelu": True}
    model = make_clip(config, seed=0).float().eval().requires_grad_(False).to(device)
    return CLIPModel(model, 77, 224, tuple(OPENAI_PREPROCESS["mean"]), tuple(OPENAI_PREPROCESS["std"]),
                     "ViT-B-32 (random weights)")


# ---------------------------------------------------------------------------------------------------------------------
# delta_i_c.


def styleclip_procedure_per_channel(generator, clip, statistics_, layer, channel: int, delta_std: float = 5.0):
    """StyleCLIP's SingleChannel.py steps for one channel: batch-1 renders, uint8, PIL preprocessing, one CLIP batch."""
    from PIL import Image
    from torchvision import transforms

    preprocess = transforms.Compose([
        transforms.Resize(clip.image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(clip.image_size),
        transforms.ToTensor(),
        transforms.Normalize(clip.mean, clip.std),
    ])
    device = clip.device
    mean, std = statistics_.mean[layer.index], statistics_.std[layer.index]
    pixels = []
    with torch.no_grad():
        for image in range(statistics_.first[0].shape[0]):
            for sign in (-1, 1):
                styles = [style[image:image + 1].clone().to(device) for style in statistics_.first]
                styles[layer.index][0, channel] = mean[channel] + sign * delta_std * std[channel]
                rendered = generator.synthesis.synthesis_from_styles(styles, noise_mode="const")
                array = (rendered + 1) * (255 / 2)
                array = array.permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()
                pixels.append(preprocess(Image.fromarray(array)))
        features = clip.model.encode_image(torch.stack(pixels).to(device))
    return features.cpu()


def styleclip_preprocessing_seconds(resolution: int, clip_size: int = 224, repeats: int = 20) -> float:
    """Median time of StyleCLIP's per-image CPU work after rendering: uint8 array, PIL image, CLIP preprocessing.

    Its procedure does this for every image on the CPU, whatever the accelerator, so it bounds that procedure's
    time from below.
    """
    from PIL import Image
    from torchvision import transforms

    preprocess = transforms.Compose([
        transforms.Resize(clip_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(clip_size),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    ])
    rendered = torch.rand(1, 3, resolution, resolution) * 2 - 1
    samples = []
    for _ in range(repeats + 1):
        start = CLOCK()
        array = ((rendered + 1) * (255 / 2)).permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8)[0].numpy()
        preprocess(Image.fromarray(array))
        samples.append(CLOCK() - start)
    return statistics.median(samples[1:])


def ours_per_layer(generator, clip, statistics_, layer, layers, chunks: int, batch_size: int,
                   warm_up: bool) -> float:
    """Seconds per channel of our batched procedure in `layer`, from `chunks` chunks after the layer's prefix."""
    from stylebridge.models import styleclip_channels as sc

    device = clip.device
    base = [style.to(device) for style in statistics_.first]
    num_images = base[0].shape[0]
    per_chunk = max(1, batch_size // (2 * num_images))

    def run():
        prefix = sc._run_blocks(generator.synthesis, 0, layer.block, None, None, base, layers) \
            if layer.block > 0 else (None, None)
        done = 0
        for start in range(0, min(layer.channels, chunks * per_chunk), per_chunk):
            end = min(layer.channels, start + per_chunk)
            sc._measure_chunk(generator, clip, layers, layer, start, end, base, prefix, statistics_, 5.0, "channel",
                              batch_size)
            done += end - start
        return done

    if warm_up:
        run()  # Kernel selection and caches.
    seconds, done = _timed(run, device)
    return seconds / done


def bench_delta_i_c(name: str, generator, clip, device: torch.device, num_images: int, batch_size: int,
                    baseline_channels: int, chunks: int, full_run: bool) -> dict:
    from stylebridge.models import styleclip_channels as sc

    layers = sc.style_layers(generator)
    targets = sc.measured_layers(generator)
    total_channels = sum(layer.channels for layer in targets)
    statistics_seconds, statistics_ = _timed(
        lambda: sc.style_statistics(generator, 100_000, num_first=num_images), device)

    # StyleCLIP's procedure costs the same per channel in every layer (a full render per image).
    styleclip_procedure_per_channel(generator, clip, statistics_, targets[0], 0)  # warm-up
    samples = []
    for channel in range(baseline_channels):
        layer = targets[(channel * 7) % len(targets)]
        index = channel % layer.channels
        seconds, _ = _timed(lambda layer=layer, index=index: styleclip_procedure_per_channel(
            generator, clip, statistics_, layer, index), device)
        samples.append(seconds)
    baseline_per_channel = statistics.median(samples)

    # CLIP's part: both procedures encode 2 x num_images images per channel with the same model. On a CPU this
    # bounds the speed-up, because only the rendering and preprocessing differ.
    pixels = torch.zeros(2 * num_images, 3, clip.image_size, clip.image_size, device=device)
    with torch.no_grad():
        clip.model.encode_image(pixels)
        clip_seconds, _ = _timed(lambda: clip.model.encode_image(pixels), device)

    ours_total = 0.0
    per_layer = {}
    for layer in targets:
        per_channel = ours_per_layer(generator, clip, statistics_, layer, layers, chunks, batch_size,
                                     warm_up=True)
        per_layer[layer.name] = per_channel
        ours_total += per_channel * layer.channels

    # The same two procedures with a free image encoder: the part of the work that the procedures differ in.
    free_clip = without_image_tower(clip)
    free_baseline = statistics.median(
        _timed(lambda layer=layer: styleclip_procedure_per_channel(generator, free_clip, statistics_, layer, 0),
               device)[0] for layer in targets[:baseline_channels])
    free_ours = sum(ours_per_layer(generator, free_clip, statistics_, layer, layers, chunks, batch_size,
                                   warm_up=True) * layer.channels for layer in targets)

    result = {
        "generator": name, "device": str(device), "channels": total_channels, "num_images": num_images,
        "batch_size": batch_size, "statistics_seconds": statistics_seconds,
        "baseline_seconds_per_channel": baseline_per_channel,
        "baseline_seconds_total_estimate": baseline_per_channel * total_channels,
        "ours_seconds_total_estimate": ours_total, "ours_seconds_per_channel_by_layer": per_layer,
        "speedup": baseline_per_channel * total_channels / ours_total,
        "clip_seconds_per_channel": clip_seconds,
        "render_only_baseline_seconds_total_estimate": free_baseline * total_channels,
        "render_only_ours_seconds_total_estimate": free_ours,
        "render_only_speedup": free_baseline * total_channels / free_ours,
    }
    if full_run:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["STYLEBRIDGE_CACHE_DIR"] = cache
            seconds, _ = _timed(lambda: sc.compute_channel_data(
                generator, clip, num_images=num_images, num_samples=100_000, batch_size=batch_size), device)
        result["ours_seconds_full_run"] = seconds
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Edit latency.


def bench_edits(name: str, generator, clip, device: torch.device, steps: int) -> dict:
    from stylebridge.models import styleclip
    from stylebridge.models import styleclip_channels as sc
    from stylebridge.models.sampling import sample_w
    from stylebridge.models.styleclip_mappers import load_mapper, write_mapper_checkpoint

    latent = sample_w(generator, seed=0)
    layers = sc.style_layers(generator)
    rows = sum(layer.channels for layer in sc.measured_layers(generator))
    generator_cpu_stats = sc.style_statistics(generator, 2000)
    fs3 = torch.nn.functional.normalize(torch.randn(rows, clip.embed_dim, generator=torch.Generator().manual_seed(0)),
                                        dim=1)
    data = sc.StyleCLIPChannelData(fs3, generator_cpu_stats.mean, generator_cpu_stats.std,
                                   tuple(layer.name for layer in layers),
                                   tuple(layer.name for layer in sc.measured_layers(generator)))

    def global_edit():
        return styleclip.edit_latent(generator, latent, "global directions", clip=clip, channel_data=data,
                                     beta=0.0)

    global_edit()
    clip.text_cache.clear()
    global_seconds, _ = _timed(global_edit, device)  # Encodes the 2 x 79 template prompts.
    global_cached_seconds, _ = _timed(global_edit, device)  # Prompt features cached, as when alpha or beta change.

    optimisation_seconds, _ = _timed(lambda: styleclip.optimize_latent(generator, clip, latent, "a smiling face",
                                                                       steps=steps), device)
    with tempfile.TemporaryDirectory() as folder:
        # rosinality's layout, which StyleCLIP uses for the mapper's decoder, has no conv_clamp: leave it out then.
        include_decoder = generator.config.conv_clamp is None
        path = write_mapper_checkpoint(Path(folder) / "mapper.pt", generator.cpu(), include_decoder=include_decoder)
        mapper = load_mapper(path, device=device)
        generator.to(device)
        direction = styleclip.mapper_direction(generator, mapper)
        styleclip.apply_direction(generator, latent, direction)
        mapper_seconds, _ = _timed(lambda: styleclip.apply_direction(generator, latent, direction), device)
    return {"generator": name, "device": str(device), "global_seconds": global_seconds,
            "global_cached_prompts_seconds": global_cached_seconds,
            "optimization_steps_timed": steps, "optimization_seconds_per_step": optimisation_seconds / steps,
            "optimization_seconds_300_steps": optimisation_seconds / steps * 300, "mapper_seconds": mapper_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda.")
    parser.add_argument("--generators", nargs="*", choices=GENERATORS, default=["demo"],
                        help="Generator configurations (default demo); none with only --preprocessing-bound.")
    parser.add_argument("--num-images", type=int, default=100, help="Images per channel (default 100, as StyleCLIP).")
    parser.add_argument("--batch-size", type=int, default=200, help="Our images per synthesis call (default 200).")
    parser.add_argument("--baseline-channels", type=int, default=2, help="Channels timed for the baseline.")
    parser.add_argument("--chunks", type=int, default=1, help="Chunks timed per layer for ours (default 1).")
    parser.add_argument("--full-run", action="store_true", help="Also time our complete computation once.")
    parser.add_argument("--optimization-steps", type=int, default=20,
                        help="Optimisation steps timed (default 20; scaled to StyleCLIP's 300).")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall (default) or cpu: CPU time of the process, steadier on a loaded CPU machine.")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice).")
    parser.add_argument("--preprocessing-bound", type=int, nargs="*", default=[],
                        help="Also time StyleCLIP's per-image CPU preprocessing at these resolutions (e.g. 1024) and "
                             "give the lower bound it sets for its whole fs3 procedure (5376 channels x 200 images "
                             "for a 1024 px FFHQ generator).")
    parser.add_argument("--json", type=Path, help="Also write the results to this JSON file.")
    args = parser.parse_args()

    global CLOCK
    if args.clock == "cpu":
        if args.device != "cpu":
            parser.error("--clock cpu measures CPU time, which does not include GPU work; use it with --device cpu.")
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    os.environ.setdefault("STYLEBRIDGE_STANDALONE", "1")
    device = torch.device(args.device)
    clip = build_clip(device)
    results = {"delta_i_c": [], "edits": [], "torch": torch.__version__,
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "clock": args.clock}
    for name in args.generators or []:
        generator = build_generator(name, device)
        results["delta_i_c"].append(bench_delta_i_c(name, generator, clip, device, args.num_images, args.batch_size,
                                                    args.baseline_channels, args.chunks, args.full_run))
        print(json.dumps(results["delta_i_c"][-1], indent=1), flush=True)
        results["edits"].append(bench_edits(name, generator, clip, device, args.optimization_steps))
        print(json.dumps(results["edits"][-1], indent=1), flush=True)

    print("\n| generator | device | channels | StyleCLIP procedure (est.) | ours (est.) | ours (full run) | speed-up |"
          " CLIP encoding per channel | rendering and preprocessing only: StyleCLIP / ours / speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results["delta_i_c"]:
        full = f"{row['ours_seconds_full_run'] / 60:.1f} min" if "ours_seconds_full_run" in row else "-"
        baseline = row["baseline_seconds_total_estimate"] / 3600
        ours = row["ours_seconds_total_estimate"] / 60
        render_baseline = row["render_only_baseline_seconds_total_estimate"] / 60
        render_ours = row["render_only_ours_seconds_total_estimate"] / 60
        print(f"| {row['generator']} | {row['device']} | {row['channels']} | {baseline:.2f} h | {ours:.1f} min | "
              f"{full} | {row['speedup']:.1f}x | {row['clip_seconds_per_channel']:.2f} s | {render_baseline:.1f} min "
              f"/ {render_ours:.1f} min / {row['render_only_speedup']:.1f}x |")
    print("\n| generator | device | global directions (s) | same, prompts cached (s) | optimisation, 300 steps (s) |"
          " mapper (s) |")
    print("|---|---|---|---|---|---|")
    for row in results["edits"]:
        print(f"| {row['generator']} | {row['device']} | {row['global_seconds']:.3f} | "
              f"{row['global_cached_prompts_seconds']:.3f} | {row['optimization_seconds_300_steps']:.1f} | "
              f"{row['mapper_seconds']:.4f} |")
    if args.preprocessing_bound:
        print("\n| resolution | StyleCLIP's CPU preprocessing per image | lower bound for 5376 channels x 200 images |")
        print("|---|---|---|")
    results["preprocessing_bound"] = []
    for resolution in args.preprocessing_bound:
        seconds = styleclip_preprocessing_seconds(resolution)
        bound = seconds * 5376 * 200
        results["preprocessing_bound"].append({"resolution": resolution, "seconds_per_image": seconds,
                                               "seconds_total": bound})
        print(f"| {resolution} | {seconds * 1000:.1f} ms | {bound / 3600:.2f} h |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
