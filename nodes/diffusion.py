"""Nodes for Stable Diffusion: load a diffusers pipeline folder, sample text-to-image or image-to-image.

The library module `models.diffusion` is imported inside the methods, so importing this module (which ComfyUI
does at startup) does not import diffusers.
"""

from __future__ import annotations

from ..runtime import host
from .sockets import CATEGORY, DIFFUSION_PIPELINE, IMAGE

DEVICES = ["auto", "cpu", "cuda"]
DTYPES = ["fp32", "fp16"]


class LoadDiffusionModel:
    """Load a Stable Diffusion 1.x/2.x diffusers folder from the diffusers model folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (host.list_models("diffusers"), {
                "tooltip": "Diffusers pipeline folder (with model_index.json) in models/diffusers; Stable "
                           "Diffusion 1.x/2.x layout."}),
            "device": (DEVICES, {"default": "auto",
                                 "tooltip": "Where the pipeline runs; auto uses ComfyUI's device inside ComfyUI, "
                                            "else CUDA when present, else the CPU."}),
            "dtype": (DTYPES, {"default": "fp32",
                               "tooltip": "Weight precision. fp16 needs CUDA; with device auto and no CUDA it "
                                          "falls back to fp32."}),
        }}

    RETURN_TYPES = (DIFFUSION_PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/diffusion"
    DESCRIPTION = ("Loads a Stable Diffusion pipeline offline with its safety checker disabled; loaded pipelines "
                   "are cached per folder, device and dtype.")

    def load(self, model_name, device, dtype):
        from ..models.diffusion import load_pipeline

        path = host.resolve_model("diffusers", model_name)
        return (load_pipeline(path, device=device, dtype=dtype),)


class DiffusionSample:
    """Generate images from a prompt, or from a prompt and an input image when `image` is connected."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.diffusion import (
            MAX_BATCH_SIZE,
            MAX_GUIDANCE_SCALE,
            MAX_SEED,
            MAX_SIDE,
            MAX_STEPS,
            SCHEDULER_NAMES,
        )

        return {
            "required": {
                "pipeline": (DIFFUSION_PIPELINE, {"tooltip": "Pipeline from Load Diffusion Model."}),
                "prompt": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "Text the images should show."}),
                "negative_prompt": ("STRING", {"default": "", "multiline": True,
                                               "tooltip": "Text the images should avoid; used when guidance is "
                                                          "above 1."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed of the initial noise; the same seed and inputs give the same "
                                            "images on the same device."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS,
                                  "tooltip": "Denoising steps. Image-to-image runs steps × strength of them, "
                                             "rounded down."}),
                "guidance": ("FLOAT", {"default": 7.5, "min": 0.0, "max": MAX_GUIDANCE_SCALE, "step": 0.1,
                                       "tooltip": "Classifier-free guidance scale; higher follows the prompt "
                                                  "more closely, 1 or less turns guidance off."}),
                "scheduler": (list(SCHEDULER_NAMES), {"default": "default",
                                                      "tooltip": "Sampler; default keeps the scheduler saved "
                                                                 "with the pipeline."}),
                "strength": ("FLOAT", {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "Image-to-image only: how much of the input is replaced by "
                                                  "noise; 0 returns the input, 1 nearly ignores it."}),
                "width": ("INT", {"default": 512, "min": 64, "max": MAX_SIDE, "step": 8,
                                  "tooltip": "Text-to-image width in px. Image-to-image keeps the input's size, "
                                             "rounded to a multiple of 8."}),
                "height": ("INT", {"default": 512, "min": 64, "max": MAX_SIDE, "step": 8,
                                   "tooltip": "Text-to-image height in px. Image-to-image keeps the input's "
                                              "size, rounded to a multiple of 8."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH_SIZE,
                                       "tooltip": "Images per run; for image-to-image, images per input image."}),
            },
            "optional": {
                "image": (IMAGE, {"tooltip": "Start image; when connected the node runs image-to-image at the "
                                             "image's size (at most 4096 px per side)."}),
            },
        }

    RETURN_TYPES = (IMAGE,)
    RETURN_NAMES = ("image",)
    FUNCTION = "sample"
    CATEGORY = f"{CATEGORY}/diffusion"
    DESCRIPTION = "Runs Stable Diffusion text-to-image, or image-to-image when an image is connected."

    def sample(self, pipeline, prompt, negative_prompt, seed, steps, guidance, scheduler, strength, width, height,
               batch_size, image=None):
        from ..models.diffusion import sample

        images = sample(pipeline, prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                        guidance_scale=guidance, scheduler=scheduler, width=width, height=height,
                        batch_size=batch_size, image=image, strength=strength)
        return (images,)


NODE_CLASS_MAPPINGS = {
    "LoadDiffusionModel": LoadDiffusionModel,
    "DiffusionSample": DiffusionSample,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadDiffusionModel": "Load Diffusion Model (StyleBridge)",
    "DiffusionSample": "Diffusion Sample (StyleBridge)",
}
