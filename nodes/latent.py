"""Nodes of the W-space toolbox: interpolation, style mixing, directions, latent files and style space.

Each node converts its inputs and calls models.latent_ops, models.directions, models.latent_io or
models.style_space; the computation and its checks live there.
"""

from __future__ import annotations

from ..models.sampling import MAX_SEED
from ..runtime import host
from .sockets import CATEGORY, IMAGE, STYLEGAN, STYLEGAN_DIRECTION, STYLEGAN_LATENT, STYLEGAN_STYLES

LATENT_CATEGORY = f"{CATEGORY}/latent"
DIRECTION_CATEGORY = f"{CATEGORY}/latent/directions"
FILE_CATEGORY = f"{CATEGORY}/latent/files"
STYLE_CATEGORY = f"{CATEGORY}/latent/style space"

MAX_FRAMES = 1024
MAX_STRENGTH = 100.0
MAX_COMPONENTS = 4096
LAYERS_TOOLTIP = ("W+ layers to edit: 'all', a preset (coarse = 4-8 px blocks, middle = 16-32 px, fine = 64 px "
                  "and up), an index, a range such as '0-3' (both ends included) or a list such as '0-3,8'.")
GENERATOR_FOR_FILES_TOOLTIP = ("Optional. Checks the loaded value against this generator; files without a "
                               "recorded generator fingerprint (.npy, raw arrays) need it and take its fingerprint.")
NOISE_MODES = ["const", "random", "none"]


def _latent_input(tooltip: str) -> tuple:
    return (STYLEGAN_LATENT, {"tooltip": tooltip})


def _direction_inputs() -> dict:
    return {
        "direction": (STYLEGAN_DIRECTION, {"tooltip": "Edit directions from LoadStyleGANDirection, SeFa or GANSpace."}),
        "index": ("INT", {"default": 0, "min": 0, "max": MAX_COMPONENTS - 1,
                          "tooltip": "Which direction of the batch to use (0 = the first, e.g. the strongest "
                                     "SeFa or GANSpace component)."}),
        "layers": ("STRING", {"default": "all", "tooltip": LAYERS_TOOLTIP}),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Latent operations.


class StyleGANLatentInterpolate:
    """Interpolate between two latents in N frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent_a": _latent_input("Start latent (frame 0)."),
            "latent_b": _latent_input("End latent (last frame); must come from the same generator."),
            "frames": ("INT", {"default": 8, "min": 2, "max": MAX_FRAMES,
                               "tooltip": "Number of frames, both end points included."}),
            "method": (["slerp", "lerp"], {"default": "slerp",
                                           "tooltip": "slerp follows the arc between the latents and keeps their "
                                                      "norm; lerp follows the straight line. W+ latents are "
                                                      "interpolated per layer."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "interpolate"
    CATEGORY = LATENT_CATEGORY
    DESCRIPTION = ("Interpolates from latent_a to latent_b; the output batch holds the frames of each pair in "
                   "order. A W latent with a W+ latent gives W+.")

    def interpolate(self, latent_a, latent_b, frames, method):
        from ..models.latent_ops import interpolate

        return (interpolate(latent_a, latent_b, frames, method, where="StyleGANLatentInterpolate"),)


class StyleGANStyleMix:
    """Style mixing: copy a range of W+ layers from a second latent."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent_a": _latent_input("Base latent: gives every layer that is not copied."),
            "latent_b": _latent_input("Latent whose selected layers are copied into latent_a."),
            "layers": (["coarse", "middle", "fine", "custom"], {
                "default": "coarse",
                "tooltip": "Layers taken from latent_b: coarse (4-8 px blocks: pose, face shape), middle (16-32 px: "
                           "features, hair style), fine (64 px and up: colours, micro-structure), or custom_layers."}),
            "custom_layers": ("STRING", {"default": "0-3",
                                         "tooltip": "Used when layers is custom. " + LAYERS_TOOLTIP}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                   "tooltip": "1 copies the layers; below 1 blends them towards latent_b."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "mix"
    CATEGORY = LATENT_CATEGORY
    DESCRIPTION = "Style mixing as in the StyleGAN paper; the output is a W+ latent."

    def mix(self, latent_a, latent_b, layers, custom_layers, strength):
        from ..models.latent_ops import mix_layers, parse_layers

        where = "StyleGANStyleMix"
        if layers == "custom":
            mask = parse_layers(custom_layers, latent_a.num_ws, where=f"{where} custom_layers")
        else:
            mask = parse_layers(layers, latent_a.num_ws, where=f"{where} layers")
        return (mix_layers(latent_a, latent_b, mask, strength, where=where),)


class StyleGANLatentAddDirection:
    """Move latents along an edit direction."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": _latent_input("Latents to edit."),
            **_direction_inputs(),
            "strength": ("FLOAT", {"default": 1.0, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.1,
                                   "tooltip": "Multiple of the direction to add; negative values move the other "
                                              "way. Units are those of the direction (unit vectors, or standard "
                                              "deviations for GANSpace with scale stdev)."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "add"
    CATEGORY = LATENT_CATEGORY
    DESCRIPTION = "latent + strength x direction, on the selected layers; W stays W when all layers are edited."

    def add(self, latent, direction, index, layers, strength):
        from ..models.latent_ops import add_direction, parse_layers

        where = "StyleGANLatentAddDirection"
        mask = parse_layers(layers, latent.num_ws, where=f"{where} layers")
        return (add_direction(latent, direction, strength, index, mask, where=where),)


class StyleGANDirectionSweep:
    """Render-ready batch of a latent moved along a direction from -s to +s."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": _latent_input("Latents to sweep; each gives `steps` outputs."),
            **_direction_inputs(),
            "max_strength": ("FLOAT", {"default": 3.0, "min": 0.0, "max": MAX_STRENGTH, "step": 0.1,
                                       "tooltip": "The sweep goes from -max_strength to +max_strength."}),
            "steps": ("INT", {"default": 7, "min": 2, "max": MAX_FRAMES,
                              "tooltip": "Number of evenly spaced strengths, both ends included; an odd number "
                                         "includes the unedited latent."}),
        }}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sweep"
    CATEGORY = DIRECTION_CATEGORY
    DESCRIPTION = "Connect the output to StyleGAN Generate to see what a direction does."

    def sweep(self, latent, direction, index, layers, max_strength, steps):
        from ..models.latent_ops import parse_layers, sweep_direction

        where = "StyleGANDirectionSweep"
        mask = parse_layers(layers, latent.num_ws, where=f"{where} layers")
        return (sweep_direction(latent, direction, max_strength, steps, index, mask, where=where),)


class StyleGANLatentMean:
    """Mean of a latent batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": _latent_input("Latent batch to average.")}}

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "mean"
    CATEGORY = LATENT_CATEGORY
    DESCRIPTION = "Averages the batch into one latent of the same space."

    def mean(self, latent):
        from ..models.latent_ops import mean_latent

        return (mean_latent(latent),)


# ---------------------------------------------------------------------------------------------------------------------
# Directions.


class LoadStyleGANDirection:
    """Load edit directions from the directions model folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "direction_name": (host.list_models("directions"), {
                    "tooltip": "File in models/directions: InterFaceGAN .npy, GANSpace .npz, rosinality SeFa .pt, "
                               "or StyleBridge .safetensors."}),
                "component": ("INT", {"default": -1, "min": -1, "max": MAX_COMPONENTS - 1,
                                      "tooltip": "-1 keeps every direction in the file; N keeps only direction N."}),
                "scale": (["unit", "stdev"], {"default": "unit",
                                              "tooltip": "unit: strength 1 moves by the direction vector itself. "
                                                         "stdev (GANSpace only): strength 1 moves by one standard "
                                                         "deviation of W along the direction."}),
            },
            "optional": {"generator": (STYLEGAN, {"tooltip": GENERATOR_FOR_FILES_TOOLTIP})},
        }

    RETURN_TYPES = (STYLEGAN_DIRECTION,)
    RETURN_NAMES = ("direction",)
    FUNCTION = "load"
    CATEGORY = DIRECTION_CATEGORY

    def load(self, direction_name, component, scale, generator=None):
        from ..models.directions import load_direction

        where = "LoadStyleGANDirection"
        direction = load_direction(host.resolve_model("directions", direction_name), generator, where=where)
        if component >= 0:
            direction = direction.select(component, where=f"{where} component")
        return (direction.scaled(scale, where=f"{where} scale"),)


class StyleGANSeFaDirections:
    """Compute SeFa directions from the generator's own style weights."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "Generator whose style affine weights are factorised."}),
            "layers": ("STRING", {"default": "all",
                                  "tooltip": "W+ layers whose affine weights are used; directions found on coarse "
                                             "layers tend to change pose and shape. " + LAYERS_TOOLTIP}),
            "num_components": ("INT", {"default": 16, "min": 1, "max": MAX_COMPONENTS,
                                       "tooltip": "Number of directions kept, strongest first; at most w_dim."}),
        }}

    RETURN_TYPES = (STYLEGAN_DIRECTION,)
    RETURN_NAMES = ("direction",)
    FUNCTION = "compute"
    CATEGORY = DIRECTION_CATEGORY
    DESCRIPTION = "Closed-form factorisation (SeFa): unit directions, no sampling, deterministic."

    def compute(self, generator, layers, num_components):
        from ..models.directions import compute_sefa
        from ..models.latent_ops import parse_layers

        mask = parse_layers(layers, generator.num_ws, where="StyleGANSeFaDirections layers")
        indices = [int(index) for index in mask.nonzero().flatten()]
        if num_components > generator.w_dim:
            raise ValueError(f"StyleGANSeFaDirections: num_components {num_components} exceeds this generator's "
                             f"w_dim; use 1..{generator.w_dim}.")
        return (compute_sefa(generator, indices, num_components),)


class StyleGANGANSpaceDirections:
    """Compute GANSpace directions by PCA of sampled W latents."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "Generator whose mapping network is sampled."}),
            "num_samples": ("INT", {"default": 10000, "min": 2, "max": 1_000_000,
                                    "tooltip": "Number of W latents for the PCA; more gives steadier components."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED,
                             "tooltip": "Seed of the sampled z; the same seed gives the same directions."}),
            "num_components": ("INT", {"default": 32, "min": 1, "max": MAX_COMPONENTS,
                                       "tooltip": "Number of principal components kept, largest variance first."}),
            "scale": (["stdev", "unit"], {"default": "stdev",
                                          "tooltip": "stdev: strength 1 = one standard deviation of W along the "
                                                     "component, as GANSpace's sliders. unit: unit vectors."}),
            "class_index": ("INT", {"default": 0, "min": 0, "max": 100000,
                                    "tooltip": "Class label for conditional generators; unconditional ones ignore "
                                               "it."}),
        }}

    RETURN_TYPES = (STYLEGAN_DIRECTION,)
    RETURN_NAMES = ("direction",)
    FUNCTION = "compute"
    CATEGORY = DIRECTION_CATEGORY
    DESCRIPTION = "Principal components of W (GANSpace); deterministic for a given seed and sample count."

    def compute(self, generator, num_samples, seed, num_components, scale, class_index):
        from ..models.directions import compute_ganspace

        where = "StyleGANGANSpaceDirections"
        direction = compute_ganspace(generator, num_samples, seed, num_components, class_index)
        return (direction.scaled(scale, where=f"{where} scale"),)


class SaveStyleGANDirection:
    """Save directions as StyleBridge safetensors in the output folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "direction": (STYLEGAN_DIRECTION, {"tooltip": "Directions to save, with their generator fingerprint."}),
            "filename_prefix": ("STRING", {"default": "directions/direction",
                                           "tooltip": "File name prefix relative to the output folder; the file is "
                                                      "PREFIX_00001_.safetensors with the next free number. Move it "
                                                      "to models/directions to load it."}),
        }}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = DIRECTION_CATEGORY

    def save(self, direction, filename_prefix):
        from ..models.directions import save_direction
        from ..models.latent_io import output_ui_entry, write_numbered

        folder = host.output_dir()
        path = write_numbered(folder, filename_prefix, "safetensors", lambda target: save_direction(direction, target))
        return {"ui": {"directions": [output_ui_entry(path, folder)]}}


# ---------------------------------------------------------------------------------------------------------------------
# Latent files and images.


class SaveStyleGANLatent:
    """Save latents to a file in the output folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": _latent_input("Latents to save."),
            "filename_prefix": ("STRING", {"default": "latents/latent",
                                           "tooltip": "File name prefix relative to the output folder; the file is "
                                                      "PREFIX_00001_.FORMAT with the next free number."}),
            "format": (["safetensors", "pt", "npy"], {
                "default": "safetensors",
                "tooltip": "safetensors and pt keep the space and generator fingerprint; npy keeps only the array, "
                           "so loading it needs the generator connected."}),
        }}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = FILE_CATEGORY
    DESCRIPTION = "Writes a new numbered file; existing files are never overwritten."

    def save(self, latent, filename_prefix, format):
        from ..models.latent_io import output_ui_entry, save_latent_numbered

        folder = host.output_dir()
        path = save_latent_numbered(latent, folder, filename_prefix, format)
        return {"ui": {"latents": [output_ui_entry(path, folder)]}}


class LoadStyleGANLatent:
    """Load latents from a file in the input folder."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.latent_io import list_latent_files

        return {
            "required": {"latent_file": (list_latent_files(host.input_dir()), {
                "tooltip": "Latent file in the input folder (.safetensors, .pt, .npy, or a projector's .npz); "
                           "'name [output]' reads from the output folder."})},
            "optional": {"generator": (STYLEGAN, {"tooltip": GENERATOR_FOR_FILES_TOOLTIP})},
        }

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "load"
    CATEGORY = FILE_CATEGORY

    def load(self, latent_file, generator=None):
        from ..models.latent_io import load_latent
        from ..runtime.core_nodes import resolve_input_file

        path = resolve_input_file(latent_file, "latent file")
        return (load_latent(path, generator, where="LoadStyleGANLatent"),)

    @classmethod
    def IS_CHANGED(cls, latent_file, generator=None):
        from ..runtime.core_nodes import file_sha256, resolve_input_file

        return file_sha256(resolve_input_file(latent_file, "latent file"))

    @classmethod
    def VALIDATE_INPUTS(cls, latent_file):
        # Declaring latent_file also skips the list check, so "name [output]" and subfolder names are accepted.
        from ..runtime.core_nodes import resolve_input_file

        try:
            resolve_input_file(latent_file, "latent file")
        except (ValueError, FileNotFoundError) as exc:
            return f"LoadStyleGANLatent latent_file: {exc}"
        return True


class SaveStyleGANImage:
    """Save images as PNGs that carry their latent, so LoadLatentFromImage can read it back."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": (IMAGE, {"tooltip": "The rendered images."}),
                "latent": _latent_input("The latents that rendered the images: one per image, or one for all."),
                "filename_prefix": ("STRING", {"default": "StyleGAN",
                                               "tooltip": "File name prefix relative to the output folder; files are "
                                                          "PREFIX_00001_.png with the next free number."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = FILE_CATEGORY
    DESCRIPTION = "Like Save Image, plus each image's latent in a PNG text chunk (stylebridge_latent)."

    def save(self, images, latent, filename_prefix, prompt=None, extra_pnginfo=None):
        from ..models.latent_io import save_images_with_latent

        results = save_images_with_latent(images, latent, filename_prefix, host.output_dir(), prompt=prompt,
                                          extra_pnginfo=extra_pnginfo, where="SaveStyleGANImage")
        return {"ui": {"images": results}}


class LoadLatentFromImage:
    """Read the latent stored in a PNG written by SaveStyleGANImage."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..runtime.core_nodes import list_input_images

        return {
            "required": {"image": (list_input_images(), {
                "image_upload": True,
                "tooltip": "PNG in the input folder saved by SaveStyleGANImage; 'name [output]' reads from the "
                           "output folder."})},
            "optional": {"generator": (STYLEGAN, {"tooltip": "Optional. Checks that the latent belongs to this "
                                                             "generator."})},
        }

    RETURN_TYPES = (STYLEGAN_LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "load"
    CATEGORY = FILE_CATEGORY

    def load(self, image, generator=None):
        from ..models.latent_io import read_png_latent
        from ..runtime.core_nodes import resolve_input_file

        path = resolve_input_file(image, "image")
        return (read_png_latent(path, generator, where="LoadLatentFromImage"),)

    @classmethod
    def IS_CHANGED(cls, image, generator=None):
        from ..runtime.core_nodes import file_sha256, resolve_input_file

        return file_sha256(resolve_input_file(image, "image"))

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        from ..runtime.core_nodes import resolve_input_file

        try:
            resolve_input_file(image, "image")
        except (ValueError, FileNotFoundError) as exc:
            return f"LoadLatentFromImage image: {exc}"
        return True


# ---------------------------------------------------------------------------------------------------------------------
# Style space (StyleGAN2 and StyleGAN3).


class StyleGANLatentToStyles:
    """Convert latents to style vectors S."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "Generator the latent belongs to (StyleGAN2 or StyleGAN3)."}),
            "latent": _latent_input("W or W+ latents."),
        }}

    RETURN_TYPES = (STYLEGAN_STYLES,)
    RETURN_NAMES = ("styles",)
    FUNCTION = "convert"
    CATEGORY = STYLE_CATEGORY
    DESCRIPTION = ("S = the output of every layer's style affine, in synthesis order. StyleGAN3's S starts with "
                   "its input transform (cos, sin, tx, ty).")

    def convert(self, generator, latent):
        from ..models.style_space import latent_to_styles

        return (latent_to_styles(generator, latent, where="StyleGANLatentToStyles"),)


class StyleGANStylesEditChannel:
    """Shift one style channel (a StyleSpace edit)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "styles": (STYLEGAN_STYLES, {"tooltip": "Style vectors from StyleGANLatentToStyles."}),
            "layer": ("INT", {"default": 0, "min": 0, "max": 63,
                              "tooltip": "Style layer in synthesis order. StyleGAN2 (skip architecture): 0 = b4.conv1, "
                                         "1 = b4.torgb, 2 = b8.conv0, ... StyleGAN3: 0 = input (channels 0-3: cos, "
                                         "sin, tx, ty of its rotation and translation), 1 = L0, ..."}),
            "channel": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip": "Channel within the layer."}),
            "delta": ("FLOAT", {"default": 1.0, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.1,
                                "tooltip": "Amount added to the channel's style value for every image."}),
        }}

    RETURN_TYPES = (STYLEGAN_STYLES,)
    RETURN_NAMES = ("styles",)
    FUNCTION = "edit"
    CATEGORY = STYLE_CATEGORY

    def edit(self, styles, layer, channel, delta):
        from ..models.style_space import edit_style_channel

        return (edit_style_channel(styles, layer, channel, delta, where="StyleGANStylesEditChannel"),)


class StyleGANGenerateFromStyles:
    """Render style vectors S to images."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (STYLEGAN, {"tooltip": "Generator the styles came from."}),
            "styles": (STYLEGAN_STYLES, {"tooltip": "Style vectors S."}),
            "noise_mode": (NOISE_MODES, {"default": "const",
                                         "tooltip": "Per-pixel noise: const = the stored noise, random = new noise, "
                                                    "none = no noise."}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                   "tooltip": "Seed of the random noise; used only when noise_mode is random."}),
        }}

    RETURN_TYPES = (IMAGE,)
    RETURN_NAMES = ("image",)
    FUNCTION = "generate"
    CATEGORY = STYLE_CATEGORY
    DESCRIPTION = "Unedited styles give the same pixels as StyleGAN Generate on the latent they came from."

    def generate(self, generator, styles, noise_mode, noise_seed):
        from ..models.style_space import styles_to_images

        return (styles_to_images(generator, styles, noise_mode, noise_seed, where="StyleGANGenerateFromStyles"),)


NODE_CLASS_MAPPINGS = {
    "StyleGANLatentInterpolate": StyleGANLatentInterpolate,
    "StyleGANStyleMix": StyleGANStyleMix,
    "StyleGANLatentAddDirection": StyleGANLatentAddDirection,
    "StyleGANDirectionSweep": StyleGANDirectionSweep,
    "StyleGANLatentMean": StyleGANLatentMean,
    "LoadStyleGANDirection": LoadStyleGANDirection,
    "StyleGANSeFaDirections": StyleGANSeFaDirections,
    "StyleGANGANSpaceDirections": StyleGANGANSpaceDirections,
    "SaveStyleGANDirection": SaveStyleGANDirection,
    "SaveStyleGANLatent": SaveStyleGANLatent,
    "LoadStyleGANLatent": LoadStyleGANLatent,
    "SaveStyleGANImage": SaveStyleGANImage,
    "LoadLatentFromImage": LoadLatentFromImage,
    "StyleGANLatentToStyles": StyleGANLatentToStyles,
    "StyleGANStylesEditChannel": StyleGANStylesEditChannel,
    "StyleGANGenerateFromStyles": StyleGANGenerateFromStyles,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "StyleGANLatentInterpolate": "Interpolate Latents (StyleGAN)",
    "StyleGANStyleMix": "Style Mix (StyleGAN)",
    "StyleGANLatentAddDirection": "Add Direction (StyleGAN)",
    "StyleGANDirectionSweep": "Direction Sweep (StyleGAN)",
    "StyleGANLatentMean": "Mean Latent (StyleGAN)",
    "LoadStyleGANDirection": "Load Direction (StyleGAN)",
    "StyleGANSeFaDirections": "SeFa Directions (StyleGAN)",
    "StyleGANGANSpaceDirections": "GANSpace Directions (StyleGAN)",
    "SaveStyleGANDirection": "Save Direction (StyleGAN)",
    "SaveStyleGANLatent": "Save Latent (StyleGAN)",
    "LoadStyleGANLatent": "Load Latent (StyleGAN)",
    "SaveStyleGANImage": "Save Image with Latent (StyleGAN)",
    "LoadLatentFromImage": "Load Latent from Image (StyleGAN)",
    "StyleGANLatentToStyles": "Latent to Styles",
    "StyleGANStylesEditChannel": "Edit Style Channel",
    "StyleGANGenerateFromStyles": "Generate from Styles",
}
