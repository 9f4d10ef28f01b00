"""ComfyUI node classes. Each module declares NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS."""

from . import diffusion, encoders, inversion, inversion_align, latent, styleclip, stylegan

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (stylegan, latent, diffusion, encoders, inversion, inversion_align, styleclip):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
