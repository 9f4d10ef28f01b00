"""Nodes for StyleGAN generators: load a checkpoint, sample W from seeds, render latents to images."""

from __future__ import annotations

from ..models.sampling import MAX_SEED
from ..runtime import host
from .sockets import CATEGORY, IMAGE, STYLEGAN, STYLEGAN_LATENT

DEVICES = ["auto", "cpu", "cuda"]
DTYPES = ["fp32", "fp16"]
NOISE_MODES = ["const", "random", "none"]
MAX_BATCH = 256


class LoadStyleGAN:
    """Load a StyleGAN checkpoint from the stylegan model folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (host.list_models("stylegan"), {
                "tooltip": "Checkpoint in models/stylegan: NVIDIA .pkl, rosinality .pt or StyleBridge .safetensors."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where the generator runs; auto picks CUDA when present."}),
            "dtype": (DTYPES, {"default": "fp32",
                               "tooltip": "fp16 runs the highest resolutions in half precision on CUDA, as the "
                                          "official code does; on CPU the generator always runs in fp32."}),
        }}

    RETURN_TYPES = (STYLEGAN,)
    RETURN_NAMES = ("generator",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/stylegan"
    DESCRIPTION = "Loads a StyleGAN2 or StyleGAN3 generator; the format is detected from the file content."

    def load(self, ckpt_name, device, dtype):
        from ..models.checkpoints import load_stylegan

        path = host.resolve_model("stylegan", ckpt_name)
        return (load_stylegan(path, device=host.resolve_device(device), dtype=dtype),)


class SampleW:
    """Map seeds to W latents, with truncation."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "The generator whose mapping network turns seeds into latents."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "First seed; seed N gives the latent of the official gen_images.py --seeds N."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH,
                                   "tooltip": "Number of latents; they use seeds seed, seed+1, ..."}),
            "truncation_psi": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05,
                                         "tooltip": "Truncation ψ: 1 = none, 0 = the average face, below 1 trades "
                                                    "variety for quality."}),
            "truncation_cutoff": ("INT", {"default": 0, "min": 0, "max": 64,
                                          "tooltip": "Truncate only the first N W+ layers (coarse styles); 0 "
                                                     "truncates all layers."}),
            "class_index": ("INT", {"default": 0, "min": 0, "max": 100000,
                                    "tooltip": "Class label for conditional generators; ignored by unconditional ones."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sample"
    CATEGORY = f"{CATEGORY}/stylegan"

    def sample(self, generator, seed, batch_size, truncation_psi, truncation_cutoff, class_index):
        from ..models.sampling import sample_w

        cutoff = truncation_cutoff or None
        if cutoff is not None and cutoff > generator.num_ws:
            raise ValueError(f"SampleW: truncation_cutoff {truncation_cutoff} exceeds this generator's "
                             f"{generator.num_ws} W+ layers; use 0..{generator.num_ws}.")
        return (sample_w(generator, seed, batch_size, truncation_psi, cutoff, class_index),)


class StyleGANGenerate:
    """Render latents to images."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "The generator the latent belongs to."}),
            "latent": (STYLEGAN_LATENT, {"tooltip": "W or W+ latents from SampleW or another latent node."}),
            "noise_mode": (NOISE_MODES, {"default": "const",
                                         "tooltip": "Per-pixel noise: const = the stored noise (reproducible, as "
                                                    "gen_images.py), random = new noise, none = no noise."}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                   "tooltip": "Seed of the random noise; used only when noise_mode is random."}),
        }, "optional": {
            "translate_x": ("FLOAT", {"default": 0.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                      "tooltip": "StyleGAN3 only: horizontal shift in image widths."}),
            "translate_y": ("FLOAT", {"default": 0.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                      "tooltip": "StyleGAN3 only: vertical shift in image heights."}),
            "rotate": ("FLOAT", {"default": 0.0, "min": -360.0, "max": 360.0, "step": 0.5,
                                 "tooltip": "StyleGAN3 only: rotation in degrees."}),
        }}

    RETURN_TYPES = (IMAGE,)
    RETURN_NAMES = ("image",)
    FUNCTION = "generate"
    CATEGORY = f"{CATEGORY}/stylegan"

    def generate(self, generator, latent, noise_mode, noise_seed, translate_x=0.0, translate_y=0.0, rotate=0.0):
        from ..models.sampling import generate_images

        images = generate_images(generator, latent, noise_mode, noise_seed, where="StyleGANGenerate",
                                 translate=(float(translate_x), float(translate_y)), rotate=float(rotate))
        return (images,)


NODE_CLASS_MAPPINGS = {
    "LoadStyleGAN": LoadStyleGAN,
    "SampleW": SampleW,
    "StyleGANGenerate": StyleGANGenerate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadStyleGAN": "Load StyleGAN",
    "SampleW": "Sample W (StyleGAN)",
    "StyleGANGenerate": "StyleGAN Generate",
}
