"""Socket type names shared by the nodes and the web extension (web/stylebridge.js colours them)."""

STYLEGAN = "STYLEGAN"  # models.stylegan2.Generator (or any generator with the official calling convention)
STYLEGAN_LATENT = "STYLEGAN_LATENT"  # models.latents.StyleGANLatent
STYLEGAN_DIRECTION = "STYLEGAN_DIRECTION"  # models.directions.StyleGANDirection
STYLEGAN_STYLES = "STYLEGAN_STYLES"  # models.style_space.StyleGANStyles
STYLEGAN_ENCODER = "STYLEGAN_ENCODER"  # models.encoders.Encoder (pSp or e4e, with its decoder generator)
DIFFUSION_PIPELINE = "DIFFUSION_PIPELINE"  # models.diffusion.DiffusionPipeline
FACE_TRANSFORM = "FACE_TRANSFORM"  # tuple of models.alignment.FaceTransform, one per image of the batch
OPEN_CLIP = "OPEN_CLIP"  # models.clip_models.CLIPModel (not ComfyUI's CLIP socket, which is an SD text encoder)
STYLECLIP_FS3 = "STYLECLIP_FS3"  # models.styleclip_channels.StyleCLIPChannelData
STYLECLIP_MAPPER = "STYLECLIP_MAPPER"  # models.styleclip_mappers.StyleCLIPMapper
STYLECLIP_DIRECTION = "STYLECLIP_DIRECTION"  # models.styleclip.StyleCLIPDirection
IMAGE = "IMAGE"  # ComfyUI's layout: float32 tensor [B, H, W, C] in 0..1

CATEGORY = "StyleBridge"
