"""Nodes for pSp and e4e encoders: load a checkpoint, encode images to latents of a connected generator.

The computation and its checks live in models.encoders.
"""

from __future__ import annotations

from ..runtime import host
from .sockets import CATEGORY, IMAGE, STYLEGAN, STYLEGAN_ENCODER, STYLEGAN_LATENT

ENCODER_CATEGORY = f"{CATEGORY}/inversion"
DEVICES = ["auto", "cpu", "cuda"]
MAX_CHUNK = 64


class LoadStyleGANEncoder:
    """Load a pSp or e4e encoder checkpoint from the encoders model folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoder_name": (host.list_models("encoders"), {
                "tooltip": "pSp or e4e checkpoint (.pt) in models/encoders, as saved by their training code."}),
            "device": (DEVICES, {"default": "auto",
                                 "tooltip": "Where the encoder runs. auto picks CUDA when it is available."}),
        }}

    RETURN_TYPES = (STYLEGAN_ENCODER,)
    RETURN_NAMES = ("encoder",)
    FUNCTION = "load"
    CATEGORY = ENCODER_CATEGORY
    DESCRIPTION = ("Loads a pSp or e4e image encoder. Its file also holds the StyleGAN2 generator it was trained "
                   "with; EncodeImage accepts only that generator (or one with the same weights).")

    def load(self, encoder_name, device):
        from ..models.encoders import load_encoder

        path = host.resolve_model("encoders", encoder_name)
        return (load_encoder(path, device=host.resolve_device(device)),)


class EncodeImage:
    """Encode images to W+ latents with a pSp or e4e encoder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoder": (STYLEGAN_ENCODER, {"tooltip": "Encoder from LoadStyleGANEncoder."}),
            "generator": (STYLEGAN, {"tooltip": "The generator the latents are for; it must be the encoder's own "
                                                "generator (checked before encoding)."}),
            "image": (IMAGE, {"tooltip": "Aligned face crops work best (FFHQ alignment); any size is resized to the "
                                         "encoder's 256 px input."}),
        }, "optional": {
            "chunk_size": ("INT", {"default": 4, "min": 1, "max": MAX_CHUNK,
                                   "tooltip": "Images per forward pass; lower it when memory runs out."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "encode"
    CATEGORY = ENCODER_CATEGORY
    DESCRIPTION = ("Encodes each image to a W+ latent in one forward pass (W for single-code encoders), a fast "
                   "inversion and a good start for optimisation.")

    def encode(self, encoder, generator, image, chunk_size=4):
        from ..models.encoders import encode

        return (encode(encoder, generator, image, where="EncodeImage", chunk_size=int(chunk_size)),)


NODE_CLASS_MAPPINGS = {
    "LoadStyleGANEncoder": LoadStyleGANEncoder,
    "EncodeImage": EncodeImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadStyleGANEncoder": "Load StyleGAN Encoder (pSp/e4e)",
    "EncodeImage": "Encode Image (pSp/e4e)",
}
