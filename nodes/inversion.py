"""Nodes that invert photos into a generator's latent space: InvertImage and PivotalTuning.

Each node converts its inputs and calls models.inversion or models.pti; the optimisation and its checks live
there. Both show their reconstruction error (PSNR, and LPIPS when VGG16 weights are in models/lpips) as UI text.
"""

from __future__ import annotations

import threading

from ..runtime import host
from .sockets import CATEGORY, IMAGE, STYLEGAN, STYLEGAN_ENCODER, STYLEGAN_LATENT

INVERSION_CATEGORY = f"{CATEGORY}/inversion"
METHODS = ["projector W", "projector W+", "encoder", "encoder + projector"]
ALIGNMENTS = ["ffhq", "center_crop", "none"]
PROJECTOR_NOISE = ["const", "optimize", "none"]
TUNING_NOISE = ["const", "none"]
LOSSES = ["auto", "lpips", "pixel+ms-ssim"]
ON_INTERRUPT = ["return best so far", "stop workflow"]
MAX_PROJECTOR_STEPS = 5000
MAX_TUNING_STEPS = 5000
MAX_SEED = 2 ** 32 - 1

LOSS_TOOLTIP = ("auto: LPIPS when torchvision's vgg16-397923af.pth is in models/lpips, else pixel L1 + MS-SSIM with "
                "a warning; lpips: fail when the weights are missing; pixel+ms-ssim: never use VGG16.")
ON_INTERRUPT_TOOLTIP = ("What the cancel button does during the optimisation: 'return best so far' stops it and "
                        "passes the best result on (the node runs again next time); 'stop workflow' stops the "
                        "whole run as other nodes do.")


class _InterruptedRuns:
    """Count of runs that returned a partial result after an interruption.

    IS_CHANGED returns it, so a partial result is never reused from the cache: the next run optimises again.
    """

    _lock = threading.Lock()
    count = 0

    @classmethod
    def record(cls) -> None:
        with cls._lock:
            cls.count += 1


def _raise_interrupt() -> None:
    """Stop the run the way the host does for its cancel button."""
    if host.in_comfyui():
        import comfy.model_management

        raise comfy.model_management.InterruptProcessingException()
    raise host.InterruptedByUser("Interrupted by the user.")


class InvertImage:
    """Find the latent of a photo: align or crop it, then encode, project, or encode and project."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "The generator whose latent space the image is inverted into."}),
            "image": (IMAGE, {"tooltip": "Photos to invert; each image of the batch is inverted separately."}),
            "method": (METHODS, {"default": "projector W+",
                                 "tooltip": "projector W / W+: optimise from the average latent (W+ has one latent "
                                            "per layer and reconstructs more detail). encoder: the e4e/pSp encoder "
                                            "alone, fast. encoder + projector: refine the encoder's latent with "
                                            "'steps' projector steps."}),
            "steps": ("INT", {"default": 300, "min": 0, "max": MAX_PROJECTOR_STEPS,
                              "tooltip": "Projector steps per image (NVIDIA's projector uses 1000; a few dozen "
                                         "suffice after an encoder). Ignored by 'encoder'."}),
            "align": (ALIGNMENTS, {"default": "ffhq",
                                   "tooltip": "ffhq: find the face and crop it as FFHQ was (fails when there is no "
                                              "face); center_crop: the largest centred square; none: the image as "
                                              "it is (must be square)."}),
            "noise_mode": (PROJECTOR_NOISE, {"default": "const",
                                             "tooltip": "const: keep the generator's stored noise, so the latent "
                                                        "renders the same with any copy of the generator. optimize: "
                                                        "optimise the noise too (NVIDIA's projector; one image at "
                                                        "a time); connect the generator output to render it. none: "
                                                        "no noise."}),
            "loss": (LOSSES, {"default": "auto", "tooltip": LOSS_TOOLTIP}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "Seed of the projector's latent jitter and initial noise."}),
            "on_interrupt": (ON_INTERRUPT, {"default": ON_INTERRUPT[0], "tooltip": ON_INTERRUPT_TOOLTIP}),
        }, "optional": {
            "encoder": (STYLEGAN_ENCODER, {"tooltip": "e4e or pSp encoder trained for this generator; needed by the "
                                                      "encoder methods."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT, IMAGE, IMAGE, STYLEGAN)
    RETURN_NAMES = ("latent", "reconstruction", "aligned", "generator")
    OUTPUT_TOOLTIPS = ("Latents tied to the generator (W or W+).",
                       "The latents rendered with const noise: what StyleGANGenerate gives with 'generator'.",
                       "The aligned or cropped input at the generator's resolution (the target of the inversion).",
                       "The input generator, or with noise_mode 'optimize' a copy holding the optimised noise.")
    FUNCTION = "invert"
    CATEGORY = INVERSION_CATEGORY
    DESCRIPTION = ("Inverts photos into W or W+ and reports the reconstruction error (PSNR, and LPIPS when the "
                   "VGG16 weights are present).")

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return _InterruptedRuns.count

    def invert(self, generator, image, method, steps, align, noise_mode, loss, seed, on_interrupt, encoder=None):
        from ..models.inversion import invert_images

        result = invert_images(generator, image, method=method, steps=steps, align=align, encoder=encoder,
                               noise=noise_mode, loss=loss, seed=seed, where="InvertImage")
        if result.interrupted:
            if on_interrupt == "stop workflow":
                _raise_interrupt()
            _InterruptedRuns.record()
        return {"ui": {"text": result.report},
                "result": (result.latent, result.reconstruction, result.targets, result.generator)}


class PivotalTuning:
    """Fine-tune a copy of the generator so the latent reproduces the photo (PTI)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "The generator the latent belongs to; it is copied, never changed."}),
            "latent": (STYLEGAN_LATENT, {"tooltip": "Pivot latents, e.g. InvertImage's latent, one per image."}),
            "image": (IMAGE, {"tooltip": "The targets at the generator's resolution: connect InvertImage's aligned "
                                         "output. Square images of another size are resized."}),
            "steps": ("INT", {"default": 350, "min": 0, "max": MAX_TUNING_STEPS,
                              "tooltip": "Adam steps (the PTI paper uses 350)."}),
            "learning_rate": ("FLOAT", {"default": 3e-4, "min": 1e-6, "max": 0.1, "step": 1e-5,
                                        "tooltip": "Adam learning rate (the PTI paper uses 3e-4)."}),
            "loss": (LOSSES, {"default": "auto", "tooltip": LOSS_TOOLTIP}),
            "locality_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.05,
                                          "tooltip": "Weight of the locality regulariser, which keeps the tuned "
                                                     "generator close to the original away from the pivot "
                                                     "(0 = off; the PTI paper uses 0.1)."}),
            "noise_mode": (TUNING_NOISE, {"default": "const",
                                          "tooltip": "Noise during tuning; render with the same mode afterwards."}),
            "on_interrupt": (ON_INTERRUPT, {"default": ON_INTERRUPT[0], "tooltip": ON_INTERRUPT_TOOLTIP}),
        }}

    RETURN_TYPES = (STYLEGAN, IMAGE)
    RETURN_NAMES = ("generator", "reconstruction")
    OUTPUT_TOOLTIPS = ("The tuned copy: same W space and fingerprint, so the latent and its edits still apply.",
                       "The latents rendered by the tuned generator.")
    FUNCTION = "tune"
    CATEGORY = INVERSION_CATEGORY
    DESCRIPTION = "Pivotal tuning inversion: fine-tunes a copy of the synthesis network around the pivot latents."

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return _InterruptedRuns.count

    def tune(self, generator, latent, image, steps, learning_rate, loss, locality_weight, noise_mode, on_interrupt):
        import torch

        from ..models.inversion import prepare_target
        from ..models.perceptual import load_distance
        from ..models.pti import pivotal_tuning

        where = "PivotalTuning"
        batch = image if image.ndim == 4 else image.unsqueeze(0)
        targets = torch.stack([prepare_target(frame, generator.img_resolution, "none", where) for frame in batch])
        device = generator.mapping.fc0.weight.device
        distance = load_distance(loss, device=device, where=where).distance
        result = pivotal_tuning(generator, latent, targets, steps=steps, learning_rate=learning_rate,
                                distance=distance, locality_weight=locality_weight, noise_mode=noise_mode,
                                where=where)
        if result.interrupted:
            if on_interrupt == "stop workflow":
                _raise_interrupt()
            _InterruptedRuns.record()
        report = [f"image {index}: PSNR {before:.2f} -> {after:.2f} dB ({result.steps_run}/{steps} steps"
                  f"{', interrupted' if result.interrupted else ''})"
                  for index, (before, after) in enumerate(zip(result.psnr_before, result.psnr_after, strict=True))]
        return {"ui": {"text": report}, "result": (result.generator, result.reconstruction)}


NODE_CLASS_MAPPINGS = {
    "InvertImage": InvertImage,
    "PivotalTuning": PivotalTuning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "InvertImage": "Invert Image (StyleGAN)",
    "PivotalTuning": "Pivotal Tuning (StyleGAN)",
}
