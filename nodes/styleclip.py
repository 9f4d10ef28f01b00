"""Nodes for StyleCLIP text-driven editing: load CLIP, fs3 data and mappers, edit latents, reuse edits.

Each node converts its inputs and calls models.clip_models, models.styleclip_channels, models.styleclip_mappers
or models.styleclip, where the computation and its checks live.
"""

from __future__ import annotations

from ..models.styleclip import METHODS, OPTIMIZATION_SPACES, SWEEP_MODES
from ..models.styleclip_channels import MEAN_RESET_MODES, SETTING_RANGES
from ..runtime import host
from .sockets import (
    CATEGORY,
    OPEN_CLIP,
    STYLECLIP_DIRECTION,
    STYLECLIP_FS3,
    STYLECLIP_MAPPER,
    STYLEGAN,
    STYLEGAN_LATENT,
    STYLEGAN_STYLES,
)

STYLECLIP_CATEGORY = f"{CATEGORY}/styleclip"
DEVICES = ["auto", "cpu", "cuda"]
NO_IDENTITY_MODEL = "none"
MAX_FRAMES = 1024
MAX_STEPS = 10_000

STRENGTH_TOOLTIP = ("Multiple of the edit: 0 returns the input, 1 the edit as found (for global directions "
                    "alpha x 1), negative values edit the other way.")
SWEEP_TOOLTIP = ("off: one output per latent at `strength`. Otherwise each latent gives `frames` outputs with the "
                 "strength going evenly from 0 (or -strength) to strength, for a video.")


def _sweep_inputs() -> dict:
    return {
        "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05, "tooltip": STRENGTH_TOOLTIP}),
        "sweep": (list(SWEEP_MODES), {"default": "off", "tooltip": SWEEP_TOOLTIP}),
        "frames": ("INT", {"default": 9, "min": 1, "max": MAX_FRAMES,
                           "tooltip": "Outputs per latent when sweep is on (at least 2), both ends included. A "
                                      "latent batch times frames may give at most 4096 outputs."}),
    }


class LoadCLIP:
    """Load a CLIP model (OpenAI or open_clip weights) from the clip model folder."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.clip_models import AUTO_MODEL_NAME, open_clip_model_names

        return {"required": {
            "clip_name": (host.list_models("clip"), {
                "tooltip": "File in models/clip: OpenAI's ViT-B-32.pt (TorchScript, read as data), a state dict, "
                           "an open_clip checkpoint, or open_clip_model.safetensors beside open_clip_config.json."}),
            "model_name": ([AUTO_MODEL_NAME, *open_clip_model_names()], {
                "default": AUTO_MODEL_NAME,
                "tooltip": "auto: OpenAI files and folders with open_clip_config.json describe themselves. For a "
                           "bare open_clip state dict choose its architecture, e.g. ViT-B-32 for LAION weights."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where CLIP runs; auto picks CUDA when present."}),
        }}

    RETURN_TYPES = (OPEN_CLIP,)
    RETURN_NAMES = ("clip",)
    FUNCTION = "load"
    CATEGORY = STYLECLIP_CATEGORY
    DESCRIPTION = "Loads CLIP in float32 without downloading anything. StyleCLIP's files were made with ViT-B/32."

    def load(self, clip_name, model_name, device):
        from ..models.clip_models import load_clip

        path = host.resolve_model("clip", clip_name)
        return (load_clip(path, model_name=model_name, device=host.resolve_device(device)),)


class LoadStyleCLIPFS3:
    """Load StyleCLIP's fs3.npy (with S_mean_std beside it) or a file from StyleCLIP Compute fs3."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "fs3_name": (host.list_models("styleclip"), {
                "tooltip": "File in models/styleclip: StyleCLIP's fs3.npy with its S_mean_std in the same folder "
                           "(without it the statistics are computed), or a .safetensors from StyleCLIP Compute fs3."}),
            "generator": (STYLEGAN, {"tooltip": "The generator the file was computed for; its channel counts are "
                                                "checked against the file."}),
        }}

    RETURN_TYPES = (STYLECLIP_FS3,)
    RETURN_NAMES = ("fs3",)
    FUNCTION = "load"
    CATEGORY = STYLECLIP_CATEGORY

    def load(self, fs3_name, generator):
        from ..models.styleclip_channels import load_channel_data

        path = host.resolve_model("styleclip", fs3_name)
        return (load_channel_data(path, generator, where="LoadStyleCLIPFS3"),)


def _fs3_range(name: str) -> dict:
    """Return the min and max of an fs3 setting from models.styleclip_channels.SETTING_RANGES, as the CLI does."""
    low, high = SETTING_RANGES[name]
    return {"min": low, "max": high}


class StyleCLIPComputeFS3:
    """Compute fs3 and the style statistics for any StyleGAN2 or StyleGAN3 generator, with StyleCLIP's procedure."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "StyleGAN2 or StyleGAN3 generator to measure."}),
            "clip": (OPEN_CLIP, {"tooltip": "CLIP model whose image space the directions live in; edit with the "
                                            "same model."}),
            "num_images": ("INT", {"default": 100, **_fs3_range("num_images"),
                                   "tooltip": "Images per channel (StyleCLIP: 100). Time grows linearly."}),
            "num_samples": ("INT", {"default": 100_000, **_fs3_range("num_samples"),
                                    "tooltip": "Latents for the per-channel mean and std (StyleCLIP: 100,000)."}),
            "seed": ("INT", {"default": 5, **_fs3_range("seed"), "control_after_generate": False,
                             "tooltip": "Seed of numpy's RandomState for z (StyleCLIP: 5)."}),
            "truncation_psi": ("FLOAT", {"default": 0.7, **_fs3_range("truncation_psi"), "step": 0.05,
                                         "tooltip": "Truncation of the sampled latents (StyleCLIP: 0.7)."}),
            "max_resolution": ("INT", {"default": 128, **_fs3_range("max_resolution"),
                                       "tooltip": "Measure convolution layers of blocks up to this resolution in "
                                                  "pixels (StyleCLIP: 128); 0 measures all layers."}),
            "batch_size": ("INT", {"default": 64, **_fs3_range("batch_size"),
                                   "tooltip": "Images rendered per synthesis call; raise it on a large GPU."}),
            "mean_reset": (list(MEAN_RESET_MODES), {
                "default": "channel",
                "tooltip": "channel: only the measured channel is set to its mean first, as StyleCLIP's code "
                           "intends. cumulative: channels measured earlier stay at their mean too, which is what "
                           "StyleCLIP's SingleChannel.py script does."}),
            "filename_prefix": ("STRING", {"default": "styleclip/fs3",
                                           "tooltip": "Output folder prefix; the files go to PREFIX_00001_/ (fs3.npy, "
                                                      "S_mean_std, fs3.safetensors). Move the folder to "
                                                      "models/styleclip to load it later."}),
        }}

    RETURN_TYPES = (STYLECLIP_FS3,)
    RETURN_NAMES = ("fs3",)
    FUNCTION = "compute"
    OUTPUT_NODE = True
    CATEGORY = STYLECLIP_CATEGORY
    DESCRIPTION = ("Measures every channel's CLIP image-space direction (StyleCLIP's delta_i_c). Cached per "
                   "generator, CLIP model and settings; an interrupted run resumes where it stopped.")

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        # A prefix that leads outside the output folder is reported before the (long) computation, not after it.
        from ..runtime.core_nodes import SaveImage

        return SaveImage.VALIDATE_INPUTS(filename_prefix)

    def compute(self, generator, clip, num_images, num_samples, seed, truncation_psi, max_resolution, batch_size,
                mean_reset, filename_prefix):
        from ..models.styleclip_channels import compute_channel_data, save_numbered_folder

        data = compute_channel_data(generator, clip, num_images=num_images, num_samples=num_samples, seed=seed,
                                    truncation_psi=truncation_psi, max_resolution=max_resolution or None,
                                    batch_size=batch_size, mean_reset=mean_reset, where="StyleCLIPComputeFS3")
        folder = save_numbered_folder(data, host.output_dir(), filename_prefix)
        relative = folder.relative_to(host.output_dir()).as_posix()
        # The same {"filename", "subfolder", "type"} entries as SaveImage's, so runners can list the files.
        files = [{"filename": path.name, "subfolder": relative, "type": "output"} for path in sorted(folder.iterdir())]
        return {"ui": {"text": [f"fs3 ({data.rows} channels) saved to {relative}"], "files": files},
                "result": (data,)}


class LoadStyleCLIPMapper:
    """Load a trained StyleCLIP latent mapper."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mapper_name": (host.list_models("styleclip_mappers"), {
                "tooltip": "StyleCLIP mapper checkpoint (.pt) in models/styleclip_mappers, e.g. one of the "
                           "published FFHQ mappers; it carries the generator it was trained with."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where the mapper runs; use the generator's device."}),
        }}

    RETURN_TYPES = (STYLECLIP_MAPPER,)
    RETURN_NAMES = ("mapper",)
    FUNCTION = "load"
    CATEGORY = STYLECLIP_CATEGORY

    def load(self, mapper_name, device):
        from ..models.styleclip_mappers import load_mapper

        path = host.resolve_model("styleclip_mappers", mapper_name)
        return (load_mapper(path, device=host.resolve_device(device)),)


class StyleCLIPEdit:
    """Edit latents from a text prompt with one of StyleCLIP's three methods."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (STYLEGAN, {"tooltip": "Generator the latent belongs to (StyleGAN2 or StyleGAN3)."}),
                "latent": (STYLEGAN_LATENT, {"tooltip": "W or W+ latents to edit."}),
                "method": (list(METHODS), {
                    "default": "global directions",
                    "tooltip": "global directions: instant, needs fs3. latent optimization: `steps` of Adam per "
                               "latent, needs only CLIP. latent mapper: a trained mapper, one forward pass."}),
                "neutral_prompt": ("STRING", {"default": "face", "tooltip": "What the image shows now; global "
                                                                            "directions edit from this to the "
                                                                            "target."}),
                "target_prompt": ("STRING", {"default": "smiling face",
                                             "tooltip": "What the image should show. Unused by mappers, which are "
                                                        "trained for one prompt."}),
                "alpha": ("FLOAT", {"default": 4.1, "min": -20.0, "max": 20.0, "step": 0.1,
                                    "tooltip": "Global directions: edit strength in standard deviations of the most "
                                               "relevant channel (StyleCLIP's alpha; its notebook uses 4.1)."}),
                "beta": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
                                   "tooltip": "Global directions: disentanglement threshold. Channels whose |fs3 . "
                                              "text direction| is below beta are left alone; higher = fewer "
                                              "channels, a narrower edit (StyleCLIP suggests 0.08-0.3)."}),
                **_sweep_inputs(),
                "optimization_space": (list(OPTIMIZATION_SPACES), {
                    "default": "W+", "tooltip": "Latent optimization: optimise W+ or the convolution styles S."}),
                "steps": ("INT", {"default": 300, "min": 1, "max": MAX_STEPS,
                                  "tooltip": "Latent optimization: Adam steps (StyleCLIP: 300)."}),
                "learning_rate": ("FLOAT", {"default": 0.1, "min": 0.0001, "max": 10.0, "step": 0.01,
                                            "tooltip": "Latent optimization: peak learning rate of the ramped "
                                                       "schedule (StyleCLIP: 0.1)."}),
                "l2_lambda": ("FLOAT", {"default": 0.008, "min": 0.0, "max": 10.0, "step": 0.001,
                                        "tooltip": "Latent optimization: weight of the squared distance to the "
                                                   "start latent (StyleCLIP: 0.008); higher stays closer."}),
                "id_lambda": ("FLOAT", {"default": 0.005, "min": 0.0, "max": 10.0, "step": 0.001,
                                        "tooltip": "Latent optimization: weight of the ArcFace identity loss "
                                                   "(StyleCLIP's notebook: 0.005); used when identity_model is "
                                                   "set."}),
                "identity_model": ([NO_IDENTITY_MODEL, *host.list_models("arcface")], {
                    "default": NO_IDENTITY_MODEL,
                    "tooltip": "Latent optimization: ArcFace IR-SE50 weights (model_ir_se50.pth) in models/arcface "
                               "for the identity loss, which assumes FFHQ-aligned faces; none turns it off."}),
            },
            "optional": {
                "clip": (OPEN_CLIP, {"tooltip": "CLIP model; needed by global directions and latent optimization."}),
                "fs3": (STYLECLIP_FS3, {"tooltip": "Channel relevance data; needed by global directions."}),
                "mapper": (STYLECLIP_MAPPER, {"tooltip": "Trained mapper; needed by the latent mapper method."}),
            },
        }

    RETURN_TYPES = (STYLEGAN_LATENT, STYLEGAN_STYLES, STYLECLIP_DIRECTION)
    RETURN_NAMES = ("latent", "styles", "direction")
    FUNCTION = "edit"
    CATEGORY = STYLECLIP_CATEGORY
    DESCRIPTION = ("Returns the edited latents (W+), their exact style vectors and the edit itself, which StyleCLIP "
                   "Apply Direction adds to other latents. Global directions and S optimisation edit S, which W+ "
                   "can only approximate: render `styles` with Generate from Styles for the exact result.")

    @classmethod
    def VALIDATE_INPUTS(cls, method=None, neutral_prompt=None, target_prompt=None):
        # Runs before the graph does, so an empty prompt is reported before fs3 or other slow nodes run. Taking
        # `method` here turns off the runner's own choice check for it, so it is checked here too.
        if method is not None and method not in METHODS:
            return f"method {method!r} is invalid; expected one of {list(METHODS)}."
        needed = {"global directions": ("neutral_prompt", "target_prompt"), "latent optimization": ("target_prompt",)}
        for name in needed.get(method, ()):
            value = {"neutral_prompt": neutral_prompt, "target_prompt": target_prompt}[name]
            if isinstance(value, str) and not value.strip():
                return (f"{name} is empty, but method {method!r} needs it. Describe the image in words, for example "
                        f"'a face' or 'a smiling face'.")
        if method == "global directions" and isinstance(neutral_prompt, str) and isinstance(target_prompt, str) \
                and neutral_prompt.strip() == target_prompt.strip():
            return (f"neutral_prompt and target_prompt are both {target_prompt.strip()!r}, so they define no edit. "
                    f"Describe the change in target_prompt.")
        return True

    def edit(self, generator, latent, method, neutral_prompt, target_prompt, alpha, beta, strength, sweep, frames,
             optimization_space, steps, learning_rate, l2_lambda, id_lambda, identity_model, clip=None, fs3=None,
             mapper=None):
        from ..models.styleclip import edit_latent

        identity_network = None
        if method == "latent optimization" and identity_model != NO_IDENTITY_MODEL and id_lambda > 0:
            from ..models.arcface import load_arcface

            device = generator.mapping.fc0.weight.device
            identity_network = load_arcface(host.resolve_model("arcface", identity_model), device=device)
        result, direction = edit_latent(
            generator, latent, method, clip=clip, channel_data=fs3, mapper=mapper, neutral_prompt=neutral_prompt,
            target_prompt=target_prompt, alpha=alpha, beta=beta, strength=strength, sweep=sweep, frames=frames,
            space=optimization_space, steps=steps, lr=learning_rate, l2_lambda=l2_lambda, id_lambda=id_lambda,
            identity_network=identity_network, where="StyleCLIPEdit")
        return (result.latent, result.styles, direction)


class StyleCLIPApplyDirection:
    """Add a StyleCLIP edit found by StyleCLIP Edit to other latents of the same generator."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "Generator the direction and latent belong to."}),
            "latent": (STYLEGAN_LATENT, {"tooltip": "Latents to edit. An optimisation result contains one edit per "
                                                    "latent it was found for, so it needs a batch of that size."}),
            "direction": (STYLECLIP_DIRECTION, {"tooltip": "The direction output of StyleCLIP Edit."}),
            **_sweep_inputs(),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT, STYLEGAN_STYLES)
    RETURN_NAMES = ("latent", "styles")
    FUNCTION = "apply"
    CATEGORY = STYLECLIP_CATEGORY

    def apply(self, generator, latent, direction, strength, sweep, frames):
        from ..models.styleclip import apply_direction, sweep_strengths

        where = "StyleCLIPApplyDirection"
        result = apply_direction(generator, latent, direction, sweep_strengths(strength, sweep, frames, where), where)
        return (result.latent, result.styles)


NODE_CLASS_MAPPINGS = {
    "LoadCLIP": LoadCLIP,
    "LoadStyleCLIPFS3": LoadStyleCLIPFS3,
    "StyleCLIPComputeFS3": StyleCLIPComputeFS3,
    "LoadStyleCLIPMapper": LoadStyleCLIPMapper,
    "StyleCLIPEdit": StyleCLIPEdit,
    "StyleCLIPApplyDirection": StyleCLIPApplyDirection,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadCLIP": "Load CLIP (StyleCLIP)",
    "LoadStyleCLIPFS3": "Load StyleCLIP fs3",
    "StyleCLIPComputeFS3": "StyleCLIP Compute fs3",
    "LoadStyleCLIPMapper": "Load StyleCLIP Mapper",
    "StyleCLIPEdit": "StyleCLIP Edit",
    "StyleCLIPApplyDirection": "StyleCLIP Apply Direction",
}
