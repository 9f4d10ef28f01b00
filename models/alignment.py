"""Face alignment as in the FFHQ dataset, and pasting an edited aligned face back into the photo.

FFHQ's faces were cut from in-the-wild photos by `recreate_aligned_images` in NVlabs/ffhq-dataset
(download_ffhq.py). Eye centres and mouth corners define an oriented square (the quad). The photo is then shrunk,
cropped and reflect-padded with a blurred border, and the quad is resampled to the output size. StyleGAN models
trained on FFHQ, and the e4e and pSp encoders, expect faces framed this way, so inverting a photo starts here.

Coordinates are (x, y) in source pixels, x to the right and y down, with pixel centres at integer values (dlib's
and numpy's convention). "eye_left" is the eye on the image's left side, which is the subject's right eye.

Landmark sources:
- "dlib": dlib's HOG face detector and its 68-point shape predictor, the file
  shape_predictor_68_face_landmarks.dat in the "landmarks" model folder. These are the landmarks FFHQ used.
- "opencv": OpenCV's bundled Haar cascades for faces and eyes. The mouth is estimated from the eye positions.
  This fallback is less precise: a Haar eye box centre can be a few pixels off the eye centre, and the mouth
  estimate ignores the face's own proportions. It also finds only roughly frontal faces.

Everything except landmark detection needs only numpy, scipy, Pillow and torch.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..runtime import host
from .messages import error_reason

logger = logging.getLogger(__name__)

LANDMARK_METHODS = ("auto", "dlib", "opencv")
NO_FACE_ACTIONS = ("error", "center_crop")
ALPHA_MODES = ("white", "drop")

MIN_IMAGE_SIDE = 64  # smaller photos hold too few pixels for a face detector
MAX_IMAGE_SIDE = 8192  # an 8192 px square is 0.8 GB as float32 RGB; larger photos are better downscaled first
MIN_OUTPUT_SIZE = 16
MAX_OUTPUT_SIZE = 4096  # the resolution at which the FFHQ script resamples the quad
MAX_FEATHER = 0.5  # a feather of half the side fades the mask all the way to the square's centre

DLIB_PREDICTOR_NAME = "shape_predictor_68_face_landmarks.dat"
OPENCV_INSTALL_HINT = "pip install 'opencv-python-headless>=4.8,<5'"

# Float inputs may overshoot 0..1 by this much (resampling ringing) and are clipped. Larger excursions are an error.
FLOAT_RANGE_TOLERANCE = 0.01
# Maximum side of the downscaled copy that face detectors run on. Boxes are scaled back to the full image.
DETECTION_MAX_SIDE = 1024
# Faces whose box is at least this fraction of the largest box compete on detector confidence.
FACE_AREA_RATIO = 0.5
# In-plane rotations (degrees) tried by the OpenCV fallback when no upright face is found.
OPENCV_ROTATIONS = (0.0, -30.0, 30.0)

# Usual eye centres relative to an OpenCV frontal-face box, as fractions of its width and height. The eye
# detections nearest to them are chosen. NOTE: measured on one photo (scikit-image's astronaut).
HAAR_BOX_EYE_LEFT = (0.29, 0.38)
HAAR_BOX_EYE_RIGHT = (0.71, 0.38)
# Distance from the eye midpoint to the mouth midpoint, in units of the eye distance, and the mouth width in
# the same unit. NOTE: typical adult frontal proportions (estimates). While the ratio stays below 2 / 1.8, an
# error in it only shifts the FFHQ crop centre, by 0.1 of the error. The estimated mouth lies perpendicular to the
# eye line, so the eyes alone set the rotation.
MOUTH_TO_EYE_RATIO = 1.0
MOUTH_WIDTH_RATIO = 0.8


# ---------------------------------------------------------------------------------------------------------------------
# Types.


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """The four points FFHQ alignment uses, in source pixel coordinates (x, y)."""

    eye_left: np.ndarray  # [2], centre of the eye on the image's left side
    eye_right: np.ndarray  # [2]
    mouth_left: np.ndarray  # [2], mouth corner on the image's left side
    mouth_right: np.ndarray  # [2]
    method: str  # "dlib" or "opencv"
    face_box: tuple[float, float, float, float]  # (left, top, right, bottom) of the detected face
    points: np.ndarray | None = None  # [68, 2] in the iBUG 300-W order when method is "dlib"
    estimated: tuple[str, ...] = ()  # names of the points estimated from face geometry instead of detected

    @classmethod
    def from_68_points(cls, points: np.ndarray, face_box: tuple[float, float, float, float]) -> FaceLandmarks:
        """Build the FFHQ points from dlib's 68: eye centres are the means of points 36-41 and 42-47, and the
        mouth corners are points 48 and 54."""
        points = np.asarray(points, dtype=np.float64)
        return cls(eye_left=points[36:42].mean(axis=0), eye_right=points[42:48].mean(axis=0),
                   mouth_left=points[48].copy(), mouth_right=points[54].copy(), method="dlib",
                   face_box=face_box, points=points)

    def as_array(self) -> np.ndarray:
        """Points [4, 2]: eye_left, eye_right, mouth_left, mouth_right."""
        return np.stack([self.eye_left, self.eye_right, self.mouth_left, self.mouth_right])


@dataclass(frozen=True, eq=False)
class FaceTransform:
    """Where an aligned square came from: its corners in the source photo and the photo's size.

    An aligned image of any side N maps onto the quad. The centre of its pixel at column i and row j lies at the
    source point top_left + (i + 0.5) / N * (top_right - top_left) + (j + 0.5) / N * (bottom_left - top_left).
    """

    quad: np.ndarray  # [4, 2] float64: top-left, bottom-left, bottom-right, top-right corners (the FFHQ order)
    source_height: int
    source_width: int
    output_size: int  # side of the aligned image made with this transform
    method: str  # "dlib", "opencv" or "center_crop"

    def __post_init__(self):
        quad = np.asarray(self.quad, dtype=np.float64)
        if quad.shape != (4, 2) or not np.all(np.isfinite(quad)):
            raise ValueError(f"FaceTransform quad must be 4 finite (x, y) corners, got shape {quad.shape}.")
        top_left, bottom_left, bottom_right, top_right = quad
        # The mapping is affine, so the quad must be a parallelogram (FFHQ and centre crops give squares).
        mismatch = np.abs(bottom_right - (top_right + bottom_left - top_left)).max()
        if mismatch > 1e-6 * max(1.0, np.abs(quad).max()):
            raise ValueError(f"FaceTransform quad {quad.tolist()} is not a parallelogram.")
        object.__setattr__(self, "quad", quad)

    @property
    def side(self) -> float:
        """Side length of the quad in source pixels."""
        return float(np.hypot(*(self.quad[3] - self.quad[0])))

    def aligned_to_source_matrix(self, size: int | None = None) -> np.ndarray:
        """Affine matrix [2, 3] taking aligned pixel coordinates (image side `size`) to source coordinates."""
        size = self.output_size if size is None else size
        top_left, bottom_left, _, top_right = self.quad
        x_axis = (top_right - top_left) / size
        y_axis = (bottom_left - top_left) / size
        offset = top_left + 0.5 * (x_axis + y_axis)
        return np.stack([x_axis, y_axis, offset], axis=1)

    def source_to_aligned_matrix(self, size: int | None = None) -> np.ndarray:
        """Inverse of aligned_to_source_matrix: source coordinates to aligned pixel coordinates."""
        forward = self.aligned_to_source_matrix(size)
        linear_inverse = np.linalg.inv(forward[:, :2])
        return np.concatenate([linear_inverse, -linear_inverse @ forward[:, 2:]], axis=1)

    def to_aligned(self, points: np.ndarray, size: int | None = None) -> np.ndarray:
        """Map source points [..., 2] into the aligned image of side `size` (default: output_size)."""
        return _apply_affine(self.source_to_aligned_matrix(size), points)

    def to_source(self, points: np.ndarray, size: int | None = None) -> np.ndarray:
        """Map aligned-image points [..., 2] back into the source photo."""
        return _apply_affine(self.aligned_to_source_matrix(size), points)


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """Result of align_face."""

    image: np.ndarray  # float32 [S, S, 3] in 0..1
    transform: FaceTransform
    landmarks: FaceLandmarks | None  # None when no face was found and the image was centre-cropped
    method: str  # "dlib", "opencv" or "center_crop"


class NoFaceFoundError(ValueError):
    """Raised by align_face when no face is detected and no_face is "error"."""


def _apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


# ---------------------------------------------------------------------------------------------------------------------
# Input conversion.


def prepare_image(image, *, alpha: str = "white", where: str = "") -> np.ndarray:
    """Convert an image to float32 RGB [H, W, 3] in 0..1 and check its size.

    Args:
        image: a numpy array or torch tensor [H, W], [H, W, C] or [1, H, W, C] with C = 1 (gray), 2 (gray and
            alpha), 3 (RGB) or 4 (RGBA), of dtype uint8 (0..255), uint16 (0..65535), bool, or float (0..1);
            a PIL image, or the path of an image file. PIL images and files get their EXIF orientation applied,
            and 16-bit modes are scaled by 1/65535.
        alpha: "white" composites transparent pixels over white; "drop" discards the alpha channel.
        where: prefix for error messages, such as "AlignFace image".

    Raises:
        ValueError: for an unsupported layout, dtype or value range, or a side outside
            MIN_IMAGE_SIDE..MAX_IMAGE_SIDE, with the limits and the fix.
        FileNotFoundError: when `image` is a path that does not exist.
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"{_prefix(where)}invalid alpha mode {alpha!r}; expected one of {list(ALPHA_MODES)}.")
    # Sizes are checked before any float conversion, so a huge input is rejected without allocating it.
    if isinstance(image, (str, os.PathLike)):
        image = _open_image_file(Path(image), where)
    if isinstance(image, Image.Image):
        check_image_size(image.height, image.width, where)
        array = _pil_to_array(ImageOps.exif_transpose(image))
    elif isinstance(image, (torch.Tensor, np.ndarray)):
        image = _to_channels_last(image, where)
        check_image_size(image.shape[0], image.shape[1], where)
        array = image if isinstance(image, np.ndarray) else _tensor_to_numpy(image)
        array = _scale_to_unit_range(array, where)
    else:
        raise ValueError(f"{_prefix(where)}unsupported image type {type(image).__name__}; expected a numpy array, "
                         f"a torch tensor, a PIL image or a file path.")

    array = _to_rgb(array, alpha, where)
    return np.ascontiguousarray(array, dtype=np.float32)


def check_image_size(height: int, width: int, where: str = "") -> None:
    """Reject images with a side below MIN_IMAGE_SIDE or above MAX_IMAGE_SIDE pixels."""
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(f"{_prefix(where)}image is {width}x{height} px, too small for face alignment: each side "
                         f"must be {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px. Use a larger photo or upscale it.")
    if max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(f"{_prefix(where)}image is {width}x{height} px, too large: each side must be "
                         f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px. Downscale it to at most {MAX_IMAGE_SIDE} px "
                         f"on its longest side.")


def _open_image_file(path: Path, where: str) -> Image.Image:
    """Open the first frame of an image file, checking its size before decoding. EXIF orientation is not applied."""
    if not path.is_file():
        raise FileNotFoundError(f"{_prefix(where)}image file not found: {path}.")
    with Image.open(path) as opened:
        check_image_size(opened.height, opened.width, where)
        opened.seek(0)
        opened.load()
        return opened.copy()  # the copy keeps `info`, which contains the EXIF orientation


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float64:
        tensor = tensor.float()  # numpy has no bfloat16
    return tensor.numpy()


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """PIL image to float32 [H, W, C] in 0..1, keeping alpha when the image has it."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # NOTE: mode "I" is taken to contain 16-bit samples, as Pillow gives for 16-bit PNGs. Larger values clip.
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)[..., None]
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[..., None]
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    converted = image.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(converted, dtype=np.float32) / 255.0


def _scale_to_unit_range(array: np.ndarray, where: str) -> np.ndarray:
    """Integer or float samples to float32 in 0..1."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{_prefix(where)}unsupported image dtype {array.dtype}; expected uint8 (0..255), uint16 "
                         f"(0..65535), bool or float (0..1).")

    array = array.astype(np.float32)
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError(f"{_prefix(where)}image contains NaN or infinite values.")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < -FLOAT_RANGE_TOLERANCE or high > 1.0 + FLOAT_RANGE_TOLERANCE:
        raise ValueError(f"{_prefix(where)}float image values span {low:.3g}..{high:.3g}; expected 0..1. Divide "
                         f"0..255 data by 255, or map -1..1 data with (x + 1) / 2.")
    return np.clip(array, 0.0, 1.0)


def _to_channels_last(array: np.ndarray, where: str) -> np.ndarray:
    """Shape [H, W, C]: adds a channel axis to [H, W] and drops a batch axis of one."""
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or not 1 <= array.shape[-1] <= 4:
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] > 4:
            hint = " It looks channels-first: permute it to [H, W, C]."
        raise ValueError(f"{_prefix(where)}image shape {list(array.shape)} is not supported; expected [H, W], "
                         f"[H, W, C] or [1, H, W, C] with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).{hint}")
    return array


def _to_rgb(array: np.ndarray, alpha: str, where: str) -> np.ndarray:
    channels = array.shape[-1]
    if channels in (2, 4):
        color, opacity = array[..., :-1], array[..., -1:]
        if alpha == "white":
            color = color * opacity + (1.0 - opacity)
            logger.info("%sinput has an alpha channel; transparent pixels were composited over white.",
                        _prefix(where))
        else:
            logger.info("%sinput has an alpha channel; it was dropped (alpha='drop').", _prefix(where))
        array = color
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


# ---------------------------------------------------------------------------------------------------------------------
# Landmark detection.


def find_dlib_predictor(name: str = DLIB_PREDICTOR_NAME) -> Path | None:
    """Path of the dlib 68-point predictor in the landmarks model folder, or None when it is not there."""
    try:
        return host.resolve_model("landmarks", name)
    except FileNotFoundError:
        return None


def detect_landmarks(image: np.ndarray, method: str = "auto", *, predictor_path: str | Path | None = None,
                     where: str = "") -> FaceLandmarks | None:
    """Find the most prominent face and return its FFHQ landmarks, or None when no face is found.

    Args:
        image: float32 RGB [H, W, 3] in 0..1, as prepare_image returns.
        method: "dlib" (needs the dlib package and the 68-point predictor file), "opencv" (Haar cascades) or
            "auto" (dlib when both are present, else opencv).
        predictor_path: the dlib predictor file; default: DLIB_PREDICTOR_NAME in the landmarks model folder.
        where: prefix for error messages.

    Raises:
        ValueError: for an unknown method.
        RuntimeError: when the requested method's package is missing, naming the package to install.
        FileNotFoundError: when method is "dlib" and the predictor file is missing, naming the folder.
    """
    if method not in LANDMARK_METHODS:
        raise ValueError(f"{_prefix(where)}invalid landmarks method {method!r}; expected one of "
                         f"{list(LANDMARK_METHODS)}.")
    pixels = np.ascontiguousarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))

    if method == "auto":
        method = _choose_automatic_method(predictor_path)
    if method == "dlib":
        path = Path(predictor_path) if predictor_path is not None else find_dlib_predictor()
        if path is None or not path.is_file():
            folder = host.model_folders("landmarks")[0]
            raise FileNotFoundError(
                f"{_prefix(where)}dlib landmarks requested, but {DLIB_PREDICTOR_NAME} was not found "
                f"(looked for {path or folder / DLIB_PREDICTOR_NAME}). Put dlib's 68-point shape predictor in "
                f"{folder}, or choose landmarks 'opencv'.")
        return _detect_with_dlib(pixels, path, where)
    return _detect_with_opencv(pixels, where)


def _choose_automatic_method(predictor_path: str | Path | None) -> str:
    if not _dlib_available():
        logger.info("Face landmarks: the dlib package is not installed, so OpenCV's Haar cascades are used "
                    "(less precise). Install dlib and put %s in %s for FFHQ's own landmarks.",
                    DLIB_PREDICTOR_NAME, host.model_folders("landmarks")[0])
        return "opencv"
    path = Path(predictor_path) if predictor_path is not None else find_dlib_predictor()
    if path is None or not path.is_file():
        logger.info("Face landmarks: %s is not in %s, so OpenCV's Haar cascades are used (less precise).",
                    DLIB_PREDICTOR_NAME, host.model_folders("landmarks")[0])
        return "opencv"
    return "dlib"


def _dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


def _import_dlib(where: str):
    try:
        import dlib
    except ImportError as exc:
        raise RuntimeError(f"{_prefix(where)}dlib landmarks requested, but the dlib package is not installed. "
                           f"Install it (pip install dlib), or choose landmarks 'opencv'.") from exc
    return dlib


def _import_cv2(where: str):
    try:
        import cv2
    except ImportError as exc:
        raise RuntimeError(f"{_prefix(where)}OpenCV landmarks need the opencv-python-headless package, which is "
                           f"not installed. Install it ({OPENCV_INSTALL_HINT}), or install dlib with its "
                           f"68-point predictor and choose landmarks 'dlib'.") from exc
    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(f"{_prefix(where)}OpenCV {cv2.__version__} has no CascadeClassifier (opencv-python-headless "
                           f"5.x ships without Haar cascades). Install OpenCV 4 ({OPENCV_INSTALL_HINT}).")
    return cv2


def _downscale_for_detection(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Copy of `pixels` with its longest side at most DETECTION_MAX_SIDE, and the factor it was scaled by."""
    height, width = pixels.shape[:2]
    scale = min(1.0, DETECTION_MAX_SIDE / max(height, width))
    if scale == 1.0:
        return pixels, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX)), scale


def _faces_by_preference(boxes: list[tuple[float, float, float, float]], scores: list[float]) -> list[int]:
    """Face indices, best first: boxes of at least FACE_AREA_RATIO of the largest by confidence, then the rest
    by size."""
    if not boxes:
        return []
    areas = [(right - left) * (bottom - top) for left, top, right, bottom in boxes]
    large = [index for index, area in enumerate(areas) if area >= FACE_AREA_RATIO * max(areas)]
    small = [index for index in range(len(boxes)) if index not in large]
    return sorted(large, key=lambda index: -scores[index]) + sorted(small, key=lambda index: -areas[index])


# dlib ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _dlib_face_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=2)
def _load_dlib_predictor(path: str, modified_ns: int):
    """Load a shape predictor. The modification time is part of the cache key, so a replaced file is reloaded."""
    import dlib

    logger.info("Loading dlib shape predictor %s", path)
    return dlib.shape_predictor(path)


def _detect_with_dlib(pixels: np.ndarray, predictor_path: Path, where: str) -> FaceLandmarks | None:
    dlib = _import_dlib(where)
    try:
        predictor = _load_dlib_predictor(str(predictor_path), predictor_path.stat().st_mtime_ns)
    except RuntimeError as exc:
        raise RuntimeError(f"{_prefix(where)}failed to load the dlib shape predictor {predictor_path}: "
                           f"{error_reason(exc)}. Use dlib's shape_predictor_68_face_landmarks.dat.") from exc

    # 1. Detect faces on a copy of at most DETECTION_MAX_SIDE px; dlib upsamples it once to find smaller faces.
    small, scale = _downscale_for_detection(pixels)
    rectangles, scores, _ = _dlib_face_detector().run(small, 1, 0.0)
    boxes = [(r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale) for r in rectangles]
    scores = list(scores)
    if not boxes:
        # The HOG detector misses some faces that the Haar cascade finds, and the predictor works from either box.
        boxes, scores = _opencv_face_boxes_if_available(pixels)
        if not boxes:
            return None
    chosen = _faces_by_preference(boxes, scores)[0]
    if len(boxes) > 1:
        logger.info("%sfound %d faces; aligning the face at box %s.", _prefix(where), len(boxes),
                    [round(v) for v in boxes[chosen]])

    # 2. Predict the 68 points on the full-resolution image.
    left, top, right, bottom = boxes[chosen]
    rectangle = dlib.rectangle(round(left), round(top), round(right), round(bottom))
    shape = predictor(pixels, rectangle)
    if shape.num_parts != 68:
        raise ValueError(f"{_prefix(where)}{predictor_path} is a {shape.num_parts}-point shape predictor; FFHQ "
                         f"alignment needs the 68-point model {DLIB_PREDICTOR_NAME}.")
    points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
    return FaceLandmarks.from_68_points(points, boxes[chosen])


def _opencv_face_boxes_if_available(pixels: np.ndarray) -> tuple[list, list]:
    try:
        cv2 = _import_cv2("")
    except RuntimeError:
        return [], []
    gray, scale = _detection_gray(cv2, pixels)
    boxes, scores = _haar_faces(cv2, gray)
    return [tuple(v / scale for v in box) for box in boxes], scores


# OpenCV --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _haar_cascade(file_name: str):
    import cv2

    path = os.path.join(cv2.data.haarcascades, file_name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV failed to load its bundled Haar cascade {path}. Reinstall OpenCV "
                           f"({OPENCV_INSTALL_HINT}).")
    return cascade


def _detection_gray(cv2, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    small, scale = _downscale_for_detection(pixels)
    return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)), scale


def _haar_faces(cv2, gray: np.ndarray) -> tuple[list[tuple[float, float, float, float]], list[float]]:
    """Frontal face boxes (left, top, right, bottom) and their neighbour counts, which serve as confidence."""
    cascade = _haar_cascade("haarcascade_frontalface_default.xml")
    found, neighbours = cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found]
    return boxes, [float(n) for n in np.asarray(neighbours).reshape(-1)]


def _haar_eye_centres(cv2, gray: np.ndarray, box: tuple[float, float, float, float]) -> list[np.ndarray]:
    """Centres of eye detections in the upper part of a face box, in box-relative units (fractions of its size)."""
    left, top, right, bottom = (round(v) for v in box)
    width, height = right - left, bottom - top
    band_top, band_bottom = top + round(0.15 * height), top + round(0.6 * height)
    region = gray[band_top:band_bottom, left:right]
    min_eye, max_eye = max(6, round(0.1 * width)), max(7, round(0.45 * width))
    centres = []
    for cascade_name in ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml"):
        found = _haar_cascade(cascade_name).detectMultiScale(region, scaleFactor=1.05, minNeighbors=3,
                                                             minSize=(min_eye, min_eye), maxSize=(max_eye, max_eye))
        for x, y, w, h in found:
            centres.append(np.array([(x + w / 2 - 0.5) / width, (band_top - top + y + h / 2 - 0.5) / height]))
    return centres


def _pick_eye_pair(centres: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Left and right eye among box-relative detections, closest to the usual positions; None where missing."""
    expected_left, expected_right = np.array(HAAR_BOX_EYE_LEFT), np.array(HAAR_BOX_EYE_RIGHT)
    lefts = [c for c in centres if c[0] < 0.5]
    rights = [c for c in centres if c[0] >= 0.5]
    best, best_cost = (None, None), np.inf
    for left in lefts:
        for right in rights:
            separation = right[0] - left[0]
            # Reject pairs that cannot be two eyes of one upright face (an eyebrow with a nostril, say).
            if abs(right[1] - left[1]) > 0.15 or not 0.25 <= separation <= 0.7:
                continue
            cost = np.hypot(*(left - expected_left)) + np.hypot(*(right - expected_right))
            if cost < best_cost:
                best, best_cost = (left, right), cost
    if best[0] is not None:
        return best
    # No valid pair: keep the single detection nearest to where an eye should be.
    singles = [(np.hypot(*(c - expected_left)), c, "left") for c in lefts]
    singles += [(np.hypot(*(c - expected_right)), c, "right") for c in rights]
    singles = [entry for entry in singles if entry[0] < 0.15]
    if not singles:
        return None, None
    _, centre, side = min(singles, key=lambda entry: entry[0])
    return (centre, None) if side == "left" else (None, centre)


def _rotation_matrix(angle: float, width: int, height: int) -> np.ndarray:
    """Affine [2, 3] rotating an image by `angle` degrees about its centre (counter-clockwise on screen)."""
    radians = np.deg2rad(angle)
    cosine, sine = np.cos(radians), np.sin(radians)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    linear = np.array([[cosine, sine], [-sine, cosine]])
    return np.concatenate([linear, (centre - linear @ centre)[:, None]], axis=1)


def _detect_with_opencv(pixels: np.ndarray, where: str) -> FaceLandmarks | None:
    cv2 = _import_cv2(where)
    gray, scale = _detection_gray(cv2, pixels)
    height, width = gray.shape

    # Find a face box with at least one detectable eye; the frontal-face cascade alone also fires on cats and
    # textures. Rotate the image when no upright face qualifies, because Haar cascades only see faces within
    # about 15 degrees of upright.
    eyeless_boxes = 0
    for angle in OPENCV_ROTATIONS:
        rotation = _rotation_matrix(angle, width, height)
        rotated = gray if angle == 0.0 else cv2.warpAffine(gray, rotation, (width, height),
                                                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        boxes, scores = _haar_faces(cv2, rotated)
        for index in _faces_by_preference(boxes, scores):
            eye_left, eye_right = _pick_eye_pair(_haar_eye_centres(cv2, rotated, boxes[index]))
            if eye_left is None and eye_right is None:
                eyeless_boxes += 1
                continue
            if len(boxes) > 1:
                logger.info("%sfound %d face candidates; aligning the one at box %s of the detection image.",
                            _prefix(where), len(boxes), [round(v) for v in boxes[index]])
            box_to_source = cv2.invertAffineTransform(rotation) / scale
            return _opencv_landmarks(boxes[index], eye_left, eye_right, box_to_source, where)
    if eyeless_boxes:
        logger.info("%sOpenCV ignored %d face-like regions in which it found no eye.", _prefix(where), eyeless_boxes)
    return None


def _opencv_landmarks(box: tuple[float, float, float, float], eye_left: np.ndarray | None,
                      eye_right: np.ndarray | None, box_to_source: np.ndarray, where: str) -> FaceLandmarks:
    """FFHQ landmarks from a face box and box-relative eye detections (at least one of them)."""
    # 1. Mirror a missing eye about the box's centre line.
    estimated = []
    if eye_left is None:
        eye_left = np.array([1.0 - eye_right[0], eye_right[1]])
        estimated.append("eye_left")
    elif eye_right is None:
        eye_right = np.array([1.0 - eye_left[0], eye_left[1]])
        estimated.append("eye_right")
    if estimated:
        logger.warning("%sOpenCV found only one eye; %s was mirrored from it, so the alignment is approximate.",
                       _prefix(where), estimated[0])

    # 2. Estimate the mouth below the eye midpoint, perpendicular to the eye line.
    left, top, right, bottom = box
    eyes = np.stack([eye_left, eye_right]) * np.array([right - left, bottom - top]) + np.array([left, top])
    eye_to_eye = eyes[1] - eyes[0]
    downward = np.array([-eye_to_eye[1], eye_to_eye[0]])
    mouth_centre = eyes.mean(axis=0) + MOUTH_TO_EYE_RATIO * downward
    mouths = np.stack([mouth_centre - 0.5 * MOUTH_WIDTH_RATIO * eye_to_eye,
                       mouth_centre + 0.5 * MOUTH_WIDTH_RATIO * eye_to_eye])

    # 3. Map from the rotated, downscaled detection image back to source pixels.
    points = _apply_affine(box_to_source, np.concatenate([eyes, mouths]))
    corners = _apply_affine(box_to_source, np.array([[left, top], [right, top], [right, bottom], [left, bottom]]))
    face_box = (*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist())
    return FaceLandmarks(eye_left=points[0], eye_right=points[1], mouth_left=points[2], mouth_right=points[3],
                         method="opencv", face_box=face_box,
                         estimated=tuple(estimated) + ("mouth_left", "mouth_right"))


# ---------------------------------------------------------------------------------------------------------------------
# FFHQ alignment.


def ffhq_quad(landmarks: FaceLandmarks) -> np.ndarray:
    """Return the FFHQ crop square [4, 2] (top-left, bottom-left, bottom-right, top-right) for these landmarks.

    The square's x axis combines the eye line with the eye-to-mouth line turned by 90 degrees. Its half side is
    the larger of 2 x the eye distance and 1.8 x the eye-to-mouth distance, and its centre lies 0.1 of the way
    from the eye midpoint to the mouth midpoint.
    """
    eye_centre = (landmarks.eye_left + landmarks.eye_right) / 2
    eye_to_eye = landmarks.eye_right - landmarks.eye_left
    eye_to_mouth = (landmarks.mouth_left + landmarks.mouth_right) / 2 - eye_centre

    # Turning eye_to_mouth by -90 degrees makes it point along the eye line for an upright face.
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x_axis = x_axis / np.hypot(*x_axis)
    x_axis = x_axis * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    centre = eye_centre + eye_to_mouth * 0.1
    return np.stack([centre - x_axis - y_axis, centre - x_axis + y_axis, centre + x_axis + y_axis,
                     centre + x_axis - y_axis])


def ffhq_eye_positions(landmarks: FaceLandmarks, output_size: int) -> np.ndarray:
    """Return where FFHQ alignment puts these landmarks' eye centres in an output_size image: [2, 2] (left, right)."""
    transform = FaceTransform(ffhq_quad(landmarks), 1, 1, output_size, landmarks.method)
    return transform.to_aligned(np.stack([landmarks.eye_left, landmarks.eye_right]))


def align_face(image, output_size: int, landmarks: str = "auto", no_face: str = "error", *,
               predictor_path: str | Path | None = None, alpha: str = "white", where: str = "",
               fallback_input: str = "no_face") -> AlignedFace:
    """Crop and rotate the most prominent face of a photo as FFHQ's faces were.

    Args:
        image: IMAGE-layout float [H, W, 3] in 0..1, a uint8 array, or anything prepare_image accepts.
        output_size: side of the aligned square in pixels, MIN_OUTPUT_SIZE..MAX_OUTPUT_SIZE (usually the
            generator's resolution).
        landmarks: "auto", "dlib" or "opencv" (see detect_landmarks).
        no_face: "error" raises NoFaceFoundError; "center_crop" resamples the largest centred square instead.
        predictor_path: dlib predictor file; default: DLIB_PREDICTOR_NAME in the landmarks model folder.
        alpha: how prepare_image treats an alpha channel ("white" or "drop").
        where: prefix for error messages, such as "AlignFace".
        fallback_input: the caller's input that chooses 'center_crop', named when no face is found.

    Returns:
        AlignedFace with the aligned image, the landmarks, the method and the FaceTransform for paste_back.
    """
    # 1. Check inputs.
    if not isinstance(output_size, (int, np.integer)) or not MIN_OUTPUT_SIZE <= output_size <= MAX_OUTPUT_SIZE:
        raise ValueError(f"{_prefix(where)}output_size {output_size!r} is out of range; expected an integer in "
                         f"{MIN_OUTPUT_SIZE}..{MAX_OUTPUT_SIZE}.")
    output_size = int(output_size)
    if no_face not in NO_FACE_ACTIONS:
        raise ValueError(f"{_prefix(where)}invalid no_face option {no_face!r}; expected one of "
                         f"{list(NO_FACE_ACTIONS)}.")
    pixels = prepare_image(image, alpha=alpha, where=where)
    height, width = pixels.shape[:2]

    # 2. Find the face.
    found = detect_landmarks(pixels, landmarks, predictor_path=predictor_path, where=where)
    if found is None:
        if no_face == "error":
            raise NoFaceFoundError(f"{_prefix(where)}no face found in the {width}x{height} px image (landmarks "
                                   f"{landmarks!r}). Use a photo with a frontal face, or set {fallback_input} "
                                   f"to 'center_crop' to use the largest centred square instead.")
        logger.warning("%sno face found in the %dx%d px image; using the largest centred square.", _prefix(where),
                       width, height)
        return _center_crop(pixels, output_size)

    # 3. Crop, pad and resample the FFHQ square.
    quad = ffhq_quad(found)
    aligned = _render_ffhq_quad(pixels, quad, output_size)
    transform = FaceTransform(quad, height, width, output_size, found.method)
    return AlignedFace(image=aligned, transform=transform, landmarks=found, method=found.method)


def _center_crop(pixels: np.ndarray, output_size: int) -> AlignedFace:
    height, width = pixels.shape[:2]
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    # Pixel centres are integers, so the square of pixels left..left+side-1 has its edges at half-pixels.
    corner = np.array([left - 0.5, top - 0.5])
    quad = np.stack([corner, corner + [0, side], corner + [side, side], corner + [side, 0]])
    crop = pixels[top:top + side, left:left + side]
    aligned = _resize_lanczos(crop, output_size, output_size)
    transform = FaceTransform(quad, height, width, output_size, "center_crop")
    return AlignedFace(image=aligned, transform=transform, landmarks=None, method="center_crop")


def _render_ffhq_quad(pixels: np.ndarray, quad: np.ndarray, output_size: int) -> np.ndarray:
    """Resample `quad` of `pixels` to [output_size, output_size, 3] with the FFHQ script's shrink, crop and pad.

    Three differences from the script leave the quad where it is. The image stays float32 throughout, where the
    script rounds to uint8 after padding. The shrink keeps pixel centres exact, where the script divides
    coordinates by the integer factor. The quad is resampled at the smallest multiple of the output size that
    samples every source pixel, where the script always uses 4096 px.
    """
    quad = quad.copy()
    side = float(np.hypot(*(quad[3] - quad[0])))

    # 1. Shrink photos much larger than the output with an antialiasing filter first.
    shrink = int(np.floor(side / output_size * 0.5))
    if shrink > 1:
        height, width = pixels.shape[:2]
        new_width, new_height = int(np.rint(width / shrink)), int(np.rint(height / shrink))
        pixels = _resize_lanczos(pixels, new_width, new_height)
        quad = (quad + 0.5) * np.array([new_width / width, new_height / height]) - 0.5
        side = float(np.hypot(*(quad[3] - quad[0])))

    # 2. Crop to the quad's bounding box plus a border of 10 % of its side.
    border = max(int(np.rint(side * 0.1)), 3)
    height, width = pixels.shape[:2]
    left = max(int(np.floor(quad[:, 0].min())) - border, 0)
    top = max(int(np.floor(quad[:, 1].min())) - border, 0)
    right = min(int(np.ceil(quad[:, 0].max())) + border, width)
    bottom = min(int(np.ceil(quad[:, 1].max())) + border, height)
    if right - left < width or bottom - top < height:
        pixels = pixels[top:bottom, left:right]
        quad -= np.array([left, top])

    # 3. Pad with a blurred mirror image where the quad (plus border) leaves the photo.
    height, width = pixels.shape[:2]
    pads = [max(border - int(np.floor(quad[:, 0].min())), 0), max(border - int(np.floor(quad[:, 1].min())), 0),
            max(int(np.ceil(quad[:, 0].max())) - width + border, 0),
            max(int(np.ceil(quad[:, 1].max())) - height + border, 0)]
    if max(pads) > border - 4:
        pads = [max(pad, int(np.rint(side * 0.3))) for pad in pads]
        pixels = _pad_with_blurred_reflection(pixels, pads, side)
        quad += np.array(pads[:2])

    # 4. Resample at a multiple of the output size with at least one sample per source pixel, then downsample.
    factor = max(1, int(np.ceil(side / output_size)))
    render_size = min(output_size * factor, max(MAX_OUTPUT_SIZE, output_size))
    rendered = _warp_quad(pixels, quad, render_size)
    if render_size > output_size:
        rendered = _resize_lanczos(rendered, output_size, output_size)
    return np.clip(rendered, 0.0, 1.0)


def _pad_with_blurred_reflection(pixels: np.ndarray, pads: list[int], side: float) -> np.ndarray:
    """Reflect-pad by pads = (left, top, right, bottom), blurring the padding and fading it to the median colour.

    As in the FFHQ script, the blur sigma is 2 % of the quad side. The blur fades into the photo over the inner
    third of the pad width, and the median colour takes over towards the outer edge.
    """
    pad_left, pad_top, pad_right, pad_bottom = (max(pad, 1) for pad in pads)
    padded = np.pad(pixels, ((pads[1], pads[3]), (pads[0], pads[2]), (0, 0)), mode="reflect")
    height, width = padded.shape[:2]

    # Weight [H, W, 1]: 1 at the outer edge, 0 at the photo's edge, negative inside the photo.
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    columns = np.arange(width, dtype=np.float32)[None, :, None]
    horizontal = 1.0 - np.minimum(columns / pad_left, (width - 1 - columns) / pad_right)
    vertical = 1.0 - np.minimum(rows / pad_top, (height - 1 - rows) / pad_bottom)
    weight = np.maximum(horizontal, vertical)

    sigma = side * 0.02
    blurred = scipy.ndimage.gaussian_filter(padded, [sigma, sigma, 0])
    padded = padded + (blurred - padded) * np.clip(weight * 3.0 + 1.0, 0.0, 1.0)
    padded = padded + (np.median(padded, axis=(0, 1)) - padded) * np.clip(weight, 0.0, 1.0)
    return padded.astype(np.float32)


def _warp_quad(pixels: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Resample the parallelogram `quad` of `pixels` to [size, size, 3] with bilinear interpolation."""
    transform = FaceTransform(quad, pixels.shape[0], pixels.shape[1], size, "")
    indices = np.arange(size, dtype=np.float64)
    columns, rows = np.meshgrid(indices, indices)
    source = transform.to_source(np.stack([columns, rows], axis=-1))  # [S, S, 2] (x, y)
    return _sample_bilinear(pixels, source, padding_mode="border")


def _sample_bilinear(pixels: np.ndarray, points: np.ndarray, padding_mode: str) -> np.ndarray:
    """Sample `pixels` [H, W, C] at `points` [..., 2] (x, y in pixel coordinates) with bilinear interpolation."""
    height, width = pixels.shape[:2]
    grid = torch.from_numpy(points.astype(np.float32))
    # grid_sample with align_corners=False puts pixel centres at (2 * index + 1) / size - 1.
    grid = torch.stack([(2 * grid[..., 0] + 1) / width - 1, (2 * grid[..., 1] + 1) / height - 1], dim=-1)
    source = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    sampled = F.grid_sample(source, grid.reshape(1, -1, 1, 2), mode="bilinear", padding_mode=padding_mode,
                            align_corners=False)  # [1, C, N, 1]
    return sampled[0, :, :, 0].T.reshape(*points.shape[:-1], pixels.shape[2]).numpy()


def _resize_lanczos(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize float32 [H, W, C] with Pillow's Lanczos filter, which antialiases when shrinking."""
    channels = [Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32), mode="F")
                for c in range(pixels.shape[2])]
    resized = [np.asarray(channel.resize((width, height), Image.Resampling.LANCZOS)) for channel in channels]
    return np.stack(resized, axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Paste back.


def paste_back(original, edited_aligned, transform: FaceTransform, feather: float = 0.1,
               mask=None, *, where: str = "") -> np.ndarray:
    """Warp an edited aligned face back into the photo it was aligned from, blending with a feathered mask.

    Args:
        original: the photo given to align_face ([H, W, 3], anything prepare_image accepts).
        edited_aligned: the edited square [N, N, 3]; N may differ from the aligned size.
        transform: the FaceTransform that align_face returned for `original`.
        feather: width of the mask's fade from the square's edge inwards, as a fraction of the square's side,
            0..MAX_FEATHER. 0 gives a hard edge.
        mask: optional float [N', N'] in 0..1 in the aligned frame (any square size), multiplied into the
            feathered mask, such as a face segmentation.
        where: prefix for error messages, such as "PasteBack".

    Returns:
        float32 [H, W, 3] in 0..1. Pixels outside the quad are the original's, bit for bit.
    """
    # 1. Check inputs.
    if not 0.0 <= feather <= MAX_FEATHER:
        raise ValueError(f"{_prefix(where)}feather {feather} is out of range; expected 0..{MAX_FEATHER} (a "
                         f"fraction of the aligned square's side).")
    photo = _as_float_image(original, "original", where)
    edited = _as_float_image(edited_aligned, "edited", where)
    height, width = photo.shape[:2]
    if (height, width) != (transform.source_height, transform.source_width):
        raise ValueError(f"{_prefix(where)}original is {width}x{height} px, but the transform was made for a "
                         f"{transform.source_width}x{transform.source_height} px image. Connect the image that "
                         f"was aligned.")
    if edited.shape[0] != edited.shape[1]:
        raise ValueError(f"{_prefix(where)}edited image is {edited.shape[1]}x{edited.shape[0]} px; it must be square, "
                         f"like the aligned face it replaces.")
    mask_pixels = None
    if mask is not None:
        mask_pixels = _as_float_image(mask, "mask", where, channels=1)
        if mask_pixels.shape[0] != mask_pixels.shape[1]:
            raise ValueError(f"{_prefix(where)}mask is {mask_pixels.shape[1]}x{mask_pixels.shape[0]} px; it must be "
                             f"square, in the frame of the aligned face.")

    # 2. Restrict the work to the quad's bounding box inside the photo.
    left = max(int(np.floor(transform.quad[:, 0].min())), 0)
    top = max(int(np.floor(transform.quad[:, 1].min())), 0)
    right = min(int(np.ceil(transform.quad[:, 0].max())) + 1, width)
    bottom = min(int(np.ceil(transform.quad[:, 1].max())) + 1, height)
    result = photo.copy()
    if right <= left or bottom <= top:
        logger.warning("%sthe face square lies outside the photo; nothing was pasted.", _prefix(where))
        return result

    # 3. Blend row bands, so that memory stays bounded for large photos.
    size = edited.shape[0]
    to_unit = transform.source_to_aligned_matrix(1)  # source pixels to the unit square, edge to edge
    band_rows = max(1, (1 << 22) // (right - left))
    for band_top in range(top, bottom, band_rows):
        band_bottom = min(band_top + band_rows, bottom)
        columns, rows = np.meshgrid(np.arange(left, right, dtype=np.float64),
                                    np.arange(band_top, band_bottom, dtype=np.float64))
        # Unit-square coordinates, 0..1 from edge to edge (the +0.5 of the pixel-centre convention removed).
        unit = _apply_affine(to_unit, np.stack([columns, rows], axis=-1)) + 0.5
        weight = _feather_weight(unit, feather)
        if mask_pixels is not None:
            weight *= _sample_bilinear(mask_pixels, unit * mask_pixels.shape[0] - 0.5, padding_mode="zeros")[..., 0]
        face = _sample_bilinear(edited, unit * size - 0.5, padding_mode="border")
        window = result[band_top:band_bottom, left:right]
        window += weight[..., None].astype(np.float32) * (face - window)
    return np.clip(result, 0.0, 1.0)


def _feather_weight(unit: np.ndarray, feather: float) -> np.ndarray:
    """Compute the mask [...] at unit-square coordinates [..., 2]: 0 outside, rising smoothly to 1 at `feather`
    inside."""
    edge_distance = np.minimum(np.minimum(unit[..., 0], 1.0 - unit[..., 0]),
                               np.minimum(unit[..., 1], 1.0 - unit[..., 1]))
    if feather == 0.0:
        return (edge_distance > 0).astype(np.float64)
    ramp = np.clip(edge_distance / feather, 0.0, 1.0)
    return ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no visible seam where the fade starts or ends


def _as_float_image(value, name: str, where: str, channels: int = 3) -> np.ndarray:
    """Convert a tensor or array to float32 [H, W, channels], without prepare_image's size limits."""
    array = _tensor_to_numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
    array = _scale_to_unit_range(array, f"{_prefix(where)}{name}".rstrip(": "))
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, channels):
        raise ValueError(f"{_prefix(where)}{name} has shape {list(np.shape(value))}; expected [H, W] or "
                         f"[H, W, {channels}].")
    if array.shape[-1] != channels:
        array = np.repeat(array, channels, axis=-1)
    return np.ascontiguousarray(array, dtype=np.float32)
