"""Stable Diffusion for the DIFFUSION_PIPELINE socket: load diffusers folders once, run text-to-image and
image-to-image on ComfyUI IMAGE tensors.

Supported folders have the Stable Diffusion 1.x/2.x diffusers layout: model_index.json naming
StableDiffusionPipeline, and unet/, vae/, text_encoder/, tokenizer/ and scheduler/ subfolders. Loading never
touches the network (local_files_only), and the safety checker is never loaded.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..runtime import host
from .messages import error_reason

logger = logging.getLogger(__name__)

# Scheduler option -> diffusers class, built with from_config from the pipeline's own scheduler config so that
# the noise schedule (betas, timestep spacing, prediction type) stays the model's. None keeps the pipeline's class.
SCHEDULERS: dict[str, type[SchedulerMixin] | None] = {
    "default": None,
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "pndm": PNDMScheduler,
    "lms": LMSDiscreteScheduler,  # Needs scipy.
    "unipc": UniPCMultistepScheduler,
}
SCHEDULER_NAMES = tuple(SCHEDULERS)
# Config values that a scheduler option fixes whatever the pipeline's config says. DPM++ 2M is the multistep
# DPM-Solver++ of order 2 (diffusers' defaults, set here so that a pipeline saved with another variant keeps it).
SCHEDULER_OVERRIDES: dict[str, dict] = {
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16}

# model_index.json `_class_name` values whose folders have the layout below.
SUPPORTED_PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# Limits of the sampling inputs. The nodes declare the same ranges.
MIN_SIDE = 8  # px
MAX_SIDE = 4096  # px
MAX_STEPS = 1000
MAX_BATCH_SIZE = 64
MAX_GUIDANCE_SCALE = 100.0
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF

# Loaded pipelines kept alive by the cache, least recently used dropped first. A dropped pipeline that is still
# referenced elsewhere (for example by ComfyUI's output cache) is still found and reused, so it never loads twice.
MAX_CACHED_PIPELINES = 2


@dataclass(eq=False)
class DiffusionPipeline:
    """The DIFFUSION_PIPELINE socket's value: a Stable Diffusion pipeline loaded on one device in one dtype.

    `text_to_image` owns the models. `image_to_image` and `for_sampling` build pipeline objects that share those
    models, so no weights are loaded or copied twice.
    """

    text_to_image: StableDiffusionPipeline
    path: Path  # The diffusers folder it was loaded from.
    device: torch.device
    dtype: torch.dtype
    _image_to_image: StableDiffusionImg2ImgPipeline | None = field(default=None, init=False, repr=False)

    @property
    def image_to_image(self) -> StableDiffusionImg2ImgPipeline:
        """Image-to-image pipeline over the same models and scheduler, built on first use."""
        if self._image_to_image is None:
            self._image_to_image = StableDiffusionImg2ImgPipeline(
                **self.text_to_image.components, requires_safety_checker=False
            )
            self._image_to_image.set_progress_bar_config(disable=True)
        return self._image_to_image

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel along each side (8 for Stable Diffusion)."""
        return self.text_to_image.vae_scale_factor

    def for_sampling(
        self, scheduler: str = "default", image_to_image: bool = False
    ) -> StableDiffusionPipeline | StableDiffusionImg2ImgPipeline:
        """Build a pipeline object over the shared models with a new scheduler of kind `scheduler`.

        Schedulers keep per-run state, so each run gets its own, and runs never change the cached pipeline.
        """
        pipeline_class = StableDiffusionImg2ImgPipeline if image_to_image else StableDiffusionPipeline
        components = dict(self.text_to_image.components)
        components["scheduler"] = create_scheduler(scheduler, self.text_to_image.scheduler)
        pipeline = pipeline_class(**components, requires_safety_checker=False)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


# ---------------------------------------------------------------------------------------------------------------------
# Schedulers.


def create_scheduler(name: str, base: SchedulerMixin) -> SchedulerMixin:
    """Create a scheduler of kind `name` (a key of SCHEDULERS) from the config of `base`, the pipeline's own."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}. Choose one of: {', '.join(SCHEDULER_NAMES)}.")
    scheduler_class = SCHEDULERS[name] or type(base)
    try:
        return scheduler_class.from_config(base.config, **SCHEDULER_OVERRIDES.get(name, {}))
    except ImportError as error:
        # diffusers replaces schedulers whose optional dependency is missing by placeholders that raise here.
        raise ImportError(f"Scheduler {name!r} is unavailable: {error_reason(error)}. Install the missing package "
                          f"(for 'lms': pip install scipy) or choose another scheduler.") from error


# ---------------------------------------------------------------------------------------------------------------------
# Loading.

_cache: OrderedDict[tuple[str, str, str], DiffusionPipeline] = OrderedDict()
_live_pipelines: weakref.WeakValueDictionary[tuple[str, str, str], DiffusionPipeline] = weakref.WeakValueDictionary()
_cache_lock = threading.Lock()


def check_pipeline_folder(path: str | Path) -> Path:
    """Check that `path` is a Stable Diffusion 1.x/2.x diffusers folder and return it as an absolute path.

    Raises:
        FileNotFoundError: the folder, its model_index.json or a component subfolder is missing.
        ValueError: model_index.json is invalid or names an unsupported pipeline class.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"Diffusers pipeline folder not found: {folder}. Put a Stable Diffusion diffusers "
                                f"folder (with model_index.json) in models/diffusers/, or pass an existing path.")

    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} has no model_index.json, so it is not a diffusers pipeline folder. Use "
                                f"a folder saved with save_pretrained (a single .ckpt or .safetensors file must be "
                                f"converted to the diffusers layout first).")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Invalid model_index.json in {folder}: {error_reason(error)}.") from error

    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if class_name not in SUPPORTED_PIPELINE_CLASSES:
        raise ValueError(f"{index_path} names pipeline class {class_name!r}; supported: "
                         f"{', '.join(SUPPORTED_PIPELINE_CLASSES)} (Stable Diffusion 1.x/2.x). Choose another "
                         f"pipeline folder.")
    missing = [name for name in REQUIRED_COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"Stable Diffusion folder {folder} lacks the component folders {missing}; a "
                                f"complete folder has {', '.join(REQUIRED_COMPONENTS)}.")
    return folder


def _resolve_device_and_dtype(device: str | torch.device, dtype: str) -> tuple[torch.device, torch.dtype]:
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}. Choose one of: {', '.join(DTYPES)}.")
    torch_device = device if isinstance(device, torch.device) else host.resolve_device(device)
    if torch_device.type == "cuda" and torch_device.index is None and torch.cuda.is_available():
        # 'cuda' and 'cuda:0' are the same device and must share one cache entry.
        torch_device = torch.device("cuda", torch.cuda.current_device())
    if DTYPES[dtype] == torch.float16 and torch_device.type != "cuda":
        if isinstance(device, str) and device == "auto":
            logger.warning("dtype 'fp16' requested with device 'auto', which resolved to %s; loading in fp32 "
                           "because fp16 is supported on CUDA devices only.", torch_device)
            return torch_device, torch.float32
        raise ValueError(f"dtype 'fp16' is supported on CUDA devices only, but device is {str(torch_device)!r}. "
                         f"Choose dtype 'fp32' or a CUDA device.")
    return torch_device, DTYPES[dtype]


def load_pipeline(path: str | Path, device: str | torch.device = "auto", dtype: str = "fp32") -> DiffusionPipeline:
    """Load the Stable Diffusion diffusers folder `path` offline, or return the copy already loaded.

    Pipelines are cached per (folder, device, dtype), so repeated loads return the same object.

    Args:
        path: Diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
        device: 'auto' (ComfyUI's device inside ComfyUI, else CUDA when available, else CPU), 'cpu', 'cuda',
            'cuda:N' or a torch.device.
        dtype: 'fp32' or 'fp16'. fp16 needs a CUDA device; with device 'auto' on a machine without CUDA it falls
            back to fp32 with a warning.

    Returns:
        The loaded pipeline, with the safety checker disabled.

    Raises:
        FileNotFoundError, ValueError: see `check_pipeline_folder`; ValueError also for an unknown device or dtype.
        OSError: diffusers failed to read the folder's files.
    """
    # 1. Check the folder and options.
    folder = check_pipeline_folder(path)
    torch_device, torch_dtype = _resolve_device_and_dtype(device, dtype)
    key = (str(folder), str(torch_device), str(torch_dtype))

    with _cache_lock:
        # 2. Reuse a pipeline that is already loaded.
        pipeline = _cache.get(key) or _live_pipelines.get(key)
        if pipeline is None:
            # 3. Load it.
            pipeline = _load_uncached(folder, torch_device, torch_dtype)
            _live_pipelines[key] = pipeline

        # 4. Mark it most recently used and drop the least recently used beyond the limit.
        _cache[key] = pipeline
        _cache.move_to_end(key)
        while len(_cache) > MAX_CACHED_PIPELINES:
            dropped_key, _ = _cache.popitem(last=False)
            logger.info("Dropped diffusion pipeline %s (%s, %s) from the cache.", *dropped_key)
    return pipeline


def _load_uncached(folder: Path, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    logger.info("Loading Stable Diffusion pipeline %s on %s in %s", folder, device, dtype)
    try:
        text_to_image = StableDiffusionPipeline.from_pretrained(
            folder,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except OSError as error:
        raise OSError(f"Failed to load the Stable Diffusion pipeline in {folder}: {error_reason(error)}. Check that "
                      f"every component folder has its config and weights, or save the pipeline again.") from error
    # Cast after loading because diffusers 0.42 deprecates from_pretrained's torch_dtype keyword in favour of
    # dtype, while older releases read torch_dtype only. `to` takes device and dtype in all of them; the weights
    # load as fp32, so fp32 needs only the move (casting would log a warning per component).
    if dtype == torch.float32:
        text_to_image.to(device=device)
    else:
        text_to_image.to(device=device, dtype=dtype)
    text_to_image.set_progress_bar_config(disable=True)
    return DiffusionPipeline(text_to_image=text_to_image, path=folder, device=device, dtype=dtype)


def clear_pipeline_cache() -> None:
    """Forget all cached pipelines; the next `load_pipeline` call loads from disk."""
    with _cache_lock:
        _cache.clear()
        _live_pipelines.clear()


# ---------------------------------------------------------------------------------------------------------------------
# Sampling.


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_sample_inputs(
    pipeline: DiffusionPipeline,
    prompt: str,
    negative_prompt: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    scheduler: str,
    width: int,
    height: int,
    batch_size: int,
    image: torch.Tensor | None,
    strength: float,
) -> None:
    """Raise ValueError naming the first invalid `sample` argument, or TypeError for a pipeline or prompt of the
    wrong type."""
    if not isinstance(pipeline, DiffusionPipeline):
        raise TypeError(f"`pipeline` must be a {__name__}.DiffusionPipeline (from load_pipeline or the Load "
                        f"Diffusion Model node), got {type(pipeline).__name__}.")
    if not isinstance(prompt, str):
        raise TypeError(f"`prompt` must be a string, got {type(prompt).__name__}.")
    if not isinstance(negative_prompt, str):
        raise TypeError(f"`negative_prompt` must be a string, got {type(negative_prompt).__name__}.")
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"`seed` must be an integer in 0..{MAX_SEED:#x}, got {seed!r}.")
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"`steps` must be an integer in 1..{MAX_STEPS}, got {steps!r}.")
    if not _is_real(guidance_scale) or not 0 <= guidance_scale <= MAX_GUIDANCE_SCALE:
        raise ValueError(f"guidance (`guidance_scale`) must be a number in 0..{MAX_GUIDANCE_SCALE}, got "
                         f"{guidance_scale!r}.")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}. Choose one of: {', '.join(SCHEDULER_NAMES)}.")
    if not _is_int(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"`batch_size` must be an integer in 1..{MAX_BATCH_SIZE}, got {batch_size!r}.")

    if image is None:
        factor = pipeline.vae_scale_factor
        for name, value in (("width", width), ("height", height)):
            if not _is_int(value) or not MIN_SIDE <= value <= MAX_SIDE or value % factor != 0:
                raise ValueError(f"`{name}` must be a multiple of {factor} in {MIN_SIDE}..{MAX_SIDE} px, got "
                                 f"{value!r}. Use {_nearest_multiple(value, factor)} instead.")
        return

    if not _is_real(strength) or not 0 <= strength <= 1:
        raise ValueError(f"`strength` must be a number in 0..1, got {strength!r}.")
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"`image` must be an IMAGE tensor [B, H, W, 3] with values in 0..1, got {shape}.")
    if image.shape[0] < 1:
        raise ValueError("`image` is an empty batch (B = 0); connect at least one image.")
    height_in, width_in = image.shape[1], image.shape[2]
    if max(height_in, width_in) > MAX_SIDE:
        raise ValueError(f"`image` is {width_in}x{height_in} px, but image-to-image accepts at most {MAX_SIDE} px "
                         f"per side. Downscale the image first.")
    if not image.is_floating_point():
        raise ValueError(f"`image` must be a float tensor with values in 0..1, got dtype {image.dtype}.")


def _nearest_multiple(value: object, factor: int) -> int | str:
    if not _is_real(value):
        return "an integer"
    return min(MAX_SIDE, max(MIN_SIDE, int(value / factor + 0.5) * factor))


def prepare_input_image(image: torch.Tensor, factor: int, copies: int) -> torch.Tensor:
    """Convert an IMAGE batch [B, H, W, C] in 0..1 to the pipeline's layout [B * copies, C, H', W'].

    H' and W' are H and W rounded to the nearest multiple of `factor` (at least `factor`); the image is resized
    when they differ. Each input image is repeated `copies` times in a row, so output i comes from input
    i // copies.
    """
    height, width = image.shape[1], image.shape[2]
    new_height = max(factor, int(height / factor + 0.5) * factor)
    new_width = max(factor, int(width / factor + 0.5) * factor)

    # ComfyUI images should be in 0..1 already, but diffusers reads tensors with negative values as -1..1 images.
    pixels = image.detach().float().clamp(0, 1).permute(0, 3, 1, 2)  # [B, C, H, W]
    if (new_height, new_width) != (height, width):
        logger.info("Resizing the image-to-image input from %dx%d to %dx%d px, because the VAE needs sides that "
                    "are multiples of %d.", width, height, new_width, new_height, factor)
        pixels = F.interpolate(pixels, size=(new_height, new_width), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
    return pixels.repeat_interleave(copies, dim=0)  # [B * copies, C, H', W']


def count_image_to_image_steps(steps: int, strength: float) -> int:
    """Number of denoising steps an image-to-image run takes, as diffusers computes it: int(steps * strength)."""
    return min(int(steps * strength), steps)


def sample(
    pipeline: DiffusionPipeline,
    prompt: str,
    negative_prompt: str = "",
    seed: int = 0,
    steps: int = 20,
    guidance_scale: float = 7.5,
    scheduler: str = "default",
    width: int = 512,
    height: int = 512,
    batch_size: int = 1,
    image: torch.Tensor | None = None,
    strength: float = 0.35,
) -> torch.Tensor:
    """Generate images with Stable Diffusion: text-to-image, or image-to-image when `image` is given.

    Args:
        pipeline: A pipeline from `load_pipeline`.
        prompt: Text the images should show.
        negative_prompt: Text the images should avoid; "" is the unconditional prompt.
        seed: Seed of the torch.Generator on the pipeline's device, in 0..2**64-1. The same seed, inputs and
            device give the same images.
        steps: Number of denoising steps, 1..1000. Image-to-image runs int(steps * strength) of them.
        guidance_scale: Classifier-free guidance scale, 0..100; values up to 1 turn guidance off.
        scheduler: One of SCHEDULER_NAMES; 'default' keeps the scheduler saved with the pipeline.
        width, height: Text-to-image output size in px, multiples of 8 in 8..4096. Ignored for image-to-image,
            whose output has the input's size rounded to multiples of 8.
        batch_size: Images per run (text-to-image) or per input image (image-to-image), 1..64.
        image: Optional IMAGE batch [B, H, W, 3] in 0..1, at most 4096 px per side, to start from.
        strength: Image-to-image only: how much noise is added to the input, 0..1. 0 returns the input
            (resized) unchanged and 1 nearly ignores it.

    Returns:
        IMAGE tensor [N, H, W, 3], float32 in 0..1 on the CPU, with N = batch_size for text-to-image and
        N = B * batch_size for image-to-image.

    Raises:
        ValueError: an input is invalid (see `check_sample_inputs`).
        host.InterruptedByUser, or ComfyUI's interruption exception: the user interrupted the run.
    """
    # 1. Check inputs.
    check_sample_inputs(pipeline, prompt, negative_prompt, seed, steps, guidance_scale, scheduler, width, height,
                        batch_size, image, strength)
    host.check_interrupted()
    image_to_image = image is not None

    # 2. Prepare the input image and the per-image prompts (image-to-image only).
    call_arguments: dict = {}
    if image_to_image:
        pixels = prepare_input_image(image, pipeline.vae_scale_factor, copies=batch_size)
        if count_image_to_image_steps(steps, strength) == 0:
            # diffusers fails on a run without timesteps, and a run without denoising keeps the input anyway.
            logger.info("Image-to-image with strength %s and %d steps runs no denoising step; returning the "
                        "input image unchanged.", strength, steps)
            return pixels.permute(0, 2, 3, 1).cpu().contiguous()
        call_arguments.update(image=pixels, strength=strength, prompt=[prompt] * pixels.shape[0],
                              negative_prompt=[negative_prompt] * pixels.shape[0], num_images_per_prompt=1)
        expected_steps = count_image_to_image_steps(steps, strength)
    else:
        call_arguments.update(width=width, height=height, prompt=prompt, negative_prompt=negative_prompt,
                              num_images_per_prompt=batch_size)
        expected_steps = steps

    # 3. Build a pipeline object with its own scheduler over the shared models.
    runner = pipeline.for_sampling(scheduler, image_to_image=image_to_image)

    # 4. Seed the generator on the pipeline's device.
    generator = torch.Generator(device=pipeline.device).manual_seed(seed)

    # 5. Denoise, reporting progress and checking for interruption after every scheduler step.
    progress = host.ProgressBar(expected_steps)

    def on_step_end(step_pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
        # num_timesteps counts scheduler steps, which can exceed `steps` (PNDM adds one, second-order solvers
        # double them), so the bar's total follows it.
        progress.update_absolute(step_index + 1, step_pipeline.num_timesteps)
        host.check_interrupted()
        return callback_kwargs

    logger.debug("Sampling %s: scheduler %s, %d steps, guidance %s, seed %d", pipeline.path.name, scheduler,
                 steps, guidance_scale, seed)
    output = runner(
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="pt",
        callback_on_step_end=on_step_end,
        **call_arguments,
    )

    # 6. Convert to ComfyUI's IMAGE layout.
    images = output.images  # [N, C, H, W] in 0..1
    return images.permute(0, 2, 3, 1).float().cpu().contiguous()  # [N, H, W, C]
