"""Socket type names shared by the nodes and the web extension (web/stylebridge.js colours them)."""

STYLEGAN = "STYLEGAN"  # models.stylegan2.Generator (or any generator with the official calling convention)
STYLEGAN_LATENT = "STYLEGAN_LATENT"  # models.latents.StyleGANLatent
STYLEGAN_DIRECTION = "STYLEGAN_DIRECTION"  # models.directions.StyleGANDirection
STYLEGAN_STYLES = "STYLEGAN_STYLES"  # models.style_space.StyleGANStyles (StyleGAN2 only)
DIFFUSION_PIPELINE = "DIFFUSION_PIPELINE"  # models.diffusion.DiffusionPipeline
IMAGE = "IMAGE"  # ComfyUI's layout: float32 tensor [B, H, W, C] in 0..1

CATEGORY = "StyleBridge"
