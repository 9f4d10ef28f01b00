"""Nodes that align a photo's face as FFHQ's faces were, and paste an edited face back into the photo.

Each node converts between ComfyUI's IMAGE batches and models.alignment, where the computation and its checks
live.
"""

from __future__ import annotations

import torch

from .sockets import CATEGORY, FACE_TRANSFORM, IMAGE, STYLEGAN

INVERSION_CATEGORY = f"{CATEGORY}/inversion"
MASK = "MASK"  # ComfyUI's mask layout: float32 tensor [B, H, W] in 0..1


class AlignFace:
    """Crop and rotate the face of each photo as in the FFHQ dataset."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.alignment import LANDMARK_METHODS, MAX_OUTPUT_SIZE, MIN_OUTPUT_SIZE, NO_FACE_ACTIONS

        return {"required": {
            "image": (IMAGE, {"tooltip": "Photos with one prominent face each; a visible torso or an off-centre "
                                         "face is fine."}),
            "output_size": ("INT", {"default": 1024, "min": MIN_OUTPUT_SIZE, "max": MAX_OUTPUT_SIZE, "step": 1,
                                    "tooltip": "Side of the aligned square in pixels; use the generator's "
                                               "resolution. Ignored when a generator is connected."}),
            "landmarks": (list(LANDMARK_METHODS), {
                "default": "auto",
                "tooltip": "dlib = the 68-point landmarks FFHQ used (needs the dlib package and "
                           "shape_predictor_68_face_landmarks.dat in models/landmarks); opencv = Haar cascades "
                           "with an estimated mouth (less precise, frontal faces only); auto = dlib when "
                           "available, else opencv."}),
            "no_face": (list(NO_FACE_ACTIONS), {
                "default": "error",
                "tooltip": "When no face is found: error stops the run; center_crop uses the largest centred "
                           "square."}),
        }, "optional": {
            "generator": (STYLEGAN, {"tooltip": "Optional. Its resolution sets the output size."}),
        }}

    RETURN_TYPES = (IMAGE, FACE_TRANSFORM)
    RETURN_NAMES = ("aligned", "transform")
    FUNCTION = "align"
    CATEGORY = INVERSION_CATEGORY
    DESCRIPTION = ("Aligns the most prominent face of each photo as the FFHQ dataset did: eyes and mouth define "
                   "a rotated square, padded with blurred reflections where it leaves the photo. The transform "
                   "lets PasteBack put the edited face back.")

    def align(self, image, output_size, landmarks, no_face, generator=None):
        from ..models.alignment import align_face

        size = int(generator.img_resolution) if generator is not None else int(output_size)
        aligned, transforms = [], []
        for index in range(image.shape[0]):
            where = f"AlignFace image {index}" if image.shape[0] > 1 else "AlignFace"
            result = align_face(image[index], size, landmarks=landmarks, no_face=no_face, where=where)
            aligned.append(torch.from_numpy(result.image))
            transforms.append(result.transform)
        return (torch.stack(aligned), tuple(transforms))


class PasteBack:
    """Put edited aligned faces back into the photos they came from."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.alignment import MAX_FEATHER

        return {"required": {
            "original": (IMAGE, {"tooltip": "The photos that went into AlignFace."}),
            "edited": (IMAGE, {"tooltip": "Edited aligned faces (square, any size). With one original, every "
                                          "edited face is pasted into it; otherwise one per original."}),
            "transform": (FACE_TRANSFORM, {"tooltip": "The transform output of AlignFace."}),
            "feather": ("FLOAT", {"default": 0.1, "min": 0.0, "max": MAX_FEATHER, "step": 0.01,
                                  "tooltip": "Width of the soft edge, as a fraction of the face square's side; "
                                             "0 = hard edge."}),
        }, "optional": {
            "mask": (MASK, {"tooltip": "Optional mask in the aligned frame (1 = use the edited face), multiplied "
                                       "into the feathered square; one mask, or one per edited face."}),
        }}

    RETURN_TYPES = (IMAGE,)
    RETURN_NAMES = ("image",)
    FUNCTION = "paste"
    CATEGORY = INVERSION_CATEGORY
    DESCRIPTION = ("Warps each edited face back onto the rotated square it was cut from and blends it in with a "
                   "feathered mask; pixels outside the square are unchanged.")

    def paste(self, original, edited, transform, feather, mask=None):
        from ..models.alignment import paste_back

        count = _paste_count(original.shape[0], edited.shape[0], len(transform), mask)
        results = []
        for index in range(count):
            source = 0 if original.shape[0] == 1 else index
            face_mask = None
            if mask is not None:
                face_mask = mask[0] if mask.shape[0] == 1 else mask[index]
            where = f"PasteBack image {index}" if count > 1 else "PasteBack"
            pasted = paste_back(original[source], edited[index], transform[source], feather=float(feather),
                                mask=face_mask, where=where)
            results.append(torch.from_numpy(pasted))
        return (torch.stack(results),)


def _paste_count(originals: int, edits: int, transforms: int, mask) -> int:
    """Return the number of output images, checking that the batch sizes pair up."""
    if transforms != originals:
        raise ValueError(f"PasteBack: transform contains {transforms} faces but original has {originals} images. "
                         f"Connect the image and transform of the same AlignFace node.")
    if originals != 1 and edits != originals:
        raise ValueError(f"PasteBack: edited has {edits} images but original has {originals}; use one edited face "
                         f"per original, or a single original for any number of edits.")
    if mask is not None and mask.shape[0] not in (1, edits):
        raise ValueError(f"PasteBack: mask has {mask.shape[0]} entries; expected 1 or {edits} (one per edited "
                         f"face).")
    return edits


NODE_CLASS_MAPPINGS = {
    "AlignFace": AlignFace,
    "PasteBack": PasteBack,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AlignFace": "Align Face (FFHQ)",
    "PasteBack": "Paste Back Face",
}
