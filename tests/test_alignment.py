"""FFHQ face alignment, paste-back, input conversion and the AlignFace and PasteBack nodes.

The photo is scikit-image's public-domain astronaut portrait (512 x 512, face about 90 px wide, torso visible).
Its landmarks below were read by hand from a zoomed pixel grid and are good to about 1 px. Eye-position checks
compare where these hand-placed eyes land after the detected alignment with where FFHQ alignment from the
hand-placed landmarks puts them. Tolerances are fractions of the output size:
- OpenCV fallback, upright photo: 0.01 (measured 0.0033, 0.83 px at 256);
- OpenCV fallback, photo turned by 25 degrees: 0.02 (measured 0.0047);
- dlib path with a predictor trained here on the hand-placed points: 0.01.
"""

from __future__ import annotations

import logging
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from stylebridge.models import alignment
from stylebridge.models.alignment import (
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    FaceLandmarks,
    FaceTransform,
    NoFaceFoundError,
    align_face,
    detect_landmarks,
    ffhq_eye_positions,
    ffhq_quad,
    paste_back,
    prepare_image,
)
from stylebridge.nodes.inversion_align import AlignFace, PasteBack

# Hand-placed landmarks of the astronaut photo, (x, y) in pixels with pixel centres at integers.
ASTRONAUT_EYE_LEFT = np.array([202.3, 100.5])
ASTRONAUT_EYE_RIGHT = np.array([246.0, 102.8])
ASTRONAUT_MOUTH_LEFT = np.array([204.0, 140.4])
ASTRONAUT_MOUTH_RIGHT = np.array([243.4, 141.2])

UPRIGHT_TOLERANCE = 0.01
ROTATED_TOLERANCE = 0.02
SIZE = 256


def hand_landmarks(points: np.ndarray | None = None) -> FaceLandmarks:
    if points is None:
        points = np.stack([ASTRONAUT_EYE_LEFT, ASTRONAUT_EYE_RIGHT, ASTRONAUT_MOUTH_LEFT, ASTRONAUT_MOUTH_RIGHT])
    return FaceLandmarks(*points, method="hand", face_box=(0.0, 0.0, 0.0, 0.0))


def eye_errors(result, truth: FaceLandmarks, size: int) -> np.ndarray:
    """Distance in output pixels between where the true eyes land and where FFHQ alignment would put them."""
    landed = result.transform.to_aligned(np.stack([truth.eye_left, truth.eye_right]))
    return np.hypot(*(landed - ffhq_eye_positions(truth, size)).T)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut().astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def aligned_astronaut(astronaut):
    return align_face(astronaut, SIZE, landmarks="opencv")


# ---------------------------------------------------------------------------------------------------------------------
# The FFHQ square.


def test_ffhq_quad_upright_face_on_template():
    # Eye distance 40, eye-to-mouth distance 40: half side = 2 x 40, centre 4 px below the eye line.
    face = hand_landmarks(np.array([[100.0, 100.0], [140.0, 100.0], [104.0, 140.0], [136.0, 140.0]]))
    # Fractions of the side, minus half a pixel because pixel centres are at integers.
    eyes = ffhq_eye_positions(face, SIZE)
    assert np.allclose(eyes[0], [0.375 * SIZE - 0.5, 0.475 * SIZE - 0.5], atol=1e-9)
    assert np.allclose(eyes[1], [0.625 * SIZE - 0.5, 0.475 * SIZE - 0.5], atol=1e-9)


def test_ffhq_quad_side_follows_mouth_when_longer():
    face = hand_landmarks(np.array([[100.0, 100.0], [140.0, 100.0], [104.0, 160.0], [136.0, 160.0]]))
    quad = ffhq_quad(face)
    assert np.isclose(np.hypot(*(quad[3] - quad[0])), 2 * 1.8 * 60)
    assert np.isclose(np.hypot(*(quad[1] - quad[0])), 2 * 1.8 * 60)


def test_ffhq_quad_follows_rotated_eye_line():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    upright = np.array([[100.0, 100.0], [140.0, 100.0], [104.0, 140.0], [136.0, 140.0]])
    quad = ffhq_quad(hand_landmarks(upright @ rotation.T))
    top_edge = quad[3] - quad[0]
    assert np.isclose(np.arctan2(top_edge[1], top_edge[0]), angle)


def test_transform_round_trip():
    transform = FaceTransform(ffhq_quad(hand_landmarks()), 512, 512, SIZE, "hand")
    points = np.array([[0.0, 0.0], [10.5, 200.25], [255.0, 255.0]])
    assert np.allclose(transform.to_aligned(transform.to_source(points)), points)


def test_transform_rejects_non_parallelogram():
    with pytest.raises(ValueError, match="parallelogram"):
        FaceTransform(np.array([[0, 0], [0, 10], [12, 10], [10, 0]]), 64, 64, 32, "hand")


# ---------------------------------------------------------------------------------------------------------------------
# Alignment with the OpenCV fallback.


def test_astronaut_eyes_on_ffhq_positions(aligned_astronaut):
    errors = eye_errors(aligned_astronaut, hand_landmarks(), SIZE)
    assert aligned_astronaut.method == "opencv"
    assert errors.max() < UPRIGHT_TOLERANCE * SIZE, errors


def test_astronaut_aligned_image_layout(aligned_astronaut):
    image = aligned_astronaut.image
    assert image.shape == (SIZE, SIZE, 3)
    assert image.dtype == np.float32
    assert image.min() >= 0.0
    assert image.max() <= 1.0


def test_astronaut_detected_points_near_hand_points(aligned_astronaut):
    found = aligned_astronaut.landmarks
    assert np.hypot(*(found.eye_left - ASTRONAUT_EYE_LEFT)) < 3.0
    assert np.hypot(*(found.eye_right - ASTRONAUT_EYE_RIGHT)) < 3.0
    assert set(found.estimated) == {"mouth_left", "mouth_right"}


def test_aligned_face_redetected_on_template(aligned_astronaut):
    # Independent of the hand-placed points: run the detector again on the aligned square.
    found = detect_landmarks(aligned_astronaut.image, "opencv")
    expected = ffhq_eye_positions(hand_landmarks(), SIZE)
    detected = np.stack([found.eye_left, found.eye_right])
    assert np.hypot(*(detected - expected).T).max() < 0.015 * SIZE


def test_rotated_photo_aligned_upright(astronaut):
    rotation = cv2.getRotationMatrix2D((255.5, 255.5), 25.0, 1.0)
    rotated = cv2.warpAffine(astronaut, rotation, (512, 512), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    truth_points = np.stack([ASTRONAUT_EYE_LEFT, ASTRONAUT_EYE_RIGHT, ASTRONAUT_MOUTH_LEFT, ASTRONAUT_MOUTH_RIGHT])
    truth = hand_landmarks(truth_points @ rotation[:, :2].T + rotation[:, 2])
    result = align_face(rotated, SIZE, landmarks="opencv")
    assert eye_errors(result, truth, SIZE).max() < ROTATED_TOLERANCE * SIZE


def test_face_near_edge_padded(astronaut):
    # The FFHQ square leaves this crop at the top and left, so the reflect padding fills it.
    crop = astronaut[60:300, 150:400]
    result = align_face(crop, SIZE, landmarks="opencv")
    assert result.transform.quad[:, 1].min() < 0
    assert np.isfinite(result.image).all()
    assert result.image[:8].std() > 0.0  # padded rows hold blurred content, not a constant fill


def test_large_photo_aligned_like_small(astronaut):
    # The shrink step runs for a photo 4x larger than the face square needs.
    large = np.asarray(Image.fromarray((astronaut * 255).round().astype(np.uint8)).resize((2048, 2048),
                                                                                         Image.Resampling.BICUBIC))
    truth = hand_landmarks((np.stack([ASTRONAUT_EYE_LEFT, ASTRONAUT_EYE_RIGHT, ASTRONAUT_MOUTH_LEFT,
                                      ASTRONAUT_MOUTH_RIGHT]) + 0.5) * 4 - 0.5)
    result = align_face(large, 128, landmarks="opencv")
    assert eye_errors(result, truth, 128).max() < UPRIGHT_TOLERANCE * 128


def test_output_size_out_of_range_rejected(astronaut):
    with pytest.raises(ValueError, match=r"output_size 8 .* 16\.\.4096"):
        align_face(astronaut, 8)


def test_unknown_landmarks_method_rejected(astronaut):
    with pytest.raises(ValueError, match=r"'mediapipe'.*'auto', 'dlib', 'opencv'"):
        align_face(astronaut, SIZE, landmarks="mediapipe")


# ---------------------------------------------------------------------------------------------------------------------
# No face.


def test_flat_image_raises_with_size_and_option():
    flat = np.full((200, 300, 3), 0.5, dtype=np.float32)
    with pytest.raises(NoFaceFoundError) as caught:
        align_face(flat, SIZE, landmarks="opencv", where="AlignFace")
    message = str(caught.value)
    assert message.startswith("AlignFace: no face found")
    assert "300x200 px" in message
    assert "center_crop" in message


def test_inversion_without_face_names_align_input():
    from stylebridge.models.inversion import prepare_target

    flat = torch.full((200, 300, 3), 0.5)
    with pytest.raises(NoFaceFoundError, match="set align to 'center_crop'"):
        prepare_target(flat, SIZE, align="ffhq", where="InvertImage")


def test_cat_photo_has_no_face():
    # The frontal-face cascade fires on this cat, but no eye is found in the box, so it is rejected.
    with pytest.raises(NoFaceFoundError):
        align_face(skimage_data.chelsea(), SIZE, landmarks="opencv")


def test_center_crop_takes_middle_square():
    rows = np.linspace(0.0, 1.0, 200, dtype=np.float32)[:, None, None]
    columns = np.linspace(0.0, 1.0, 300, dtype=np.float32)[None, :, None]
    gradient = np.broadcast_to(rows * columns, (200, 300, 3)).copy()
    result = align_face(gradient, 200, landmarks="opencv", no_face="center_crop")
    assert result.method == "center_crop"
    assert result.landmarks is None
    assert np.allclose(result.image, gradient[:, 50:250], atol=1e-6)
    assert np.allclose(result.transform.to_source(np.array([0.0, 0.0])), [50.0, 0.0])
    assert np.allclose(result.transform.to_source(np.array([199.0, 199.0])), [249.0, 199.0])


def test_no_face_option_validated(astronaut):
    with pytest.raises(ValueError, match=r"'skip'.*'error', 'center_crop'"):
        align_face(astronaut, SIZE, no_face="skip")


# ---------------------------------------------------------------------------------------------------------------------
# dlib.


def _synthetic_68_points(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """68 points in the iBUG order whose eye means and mouth corners are the given points."""
    eye_distance = np.hypot(*(eye_right - eye_left))
    eye_centre, mouth_centre = (eye_left + eye_right) / 2, (mouth_left + mouth_right) / 2

    def ring(centre, radius_x, radius_y, count):
        angles = np.pi + 2 * np.pi * np.arange(count) / count  # starts at the left-most point
        return centre + np.stack([radius_x * np.cos(angles), radius_y * np.sin(angles)], axis=1)

    sweep = np.linspace(0.0, np.pi, 17)
    chin = np.stack([eye_centre[0] - eye_distance * np.cos(sweep), eye_centre[1] + 1.1 * eye_distance * np.sin(sweep)],
                    axis=1)
    brows = np.concatenate([np.linspace(eye_left + [-12, -12], eye_left + [12, -14], 5),
                            np.linspace(eye_right + [-12, -14], eye_right + [12, -12], 5)])
    nose = np.linspace(eye_centre + [0, 4], eye_centre + [0, 24], 4)
    nostrils = np.linspace(eye_centre + [-10, 28], eye_centre + [10, 28], 5)
    eyes = np.concatenate([ring(eye_left, 9, 3, 6), ring(eye_right, 9, 3, 6)])
    half_width = np.hypot(*(mouth_right - mouth_left)) / 2
    outer = ring(mouth_centre, half_width, 0.3 * half_width, 12)
    outer[0], outer[6] = mouth_left, mouth_right
    inner = ring(mouth_centre, 0.8 * half_width, 0.15 * half_width, 8)
    return np.concatenate([chin, brows, nose, nostrils, eyes, outer, inner])


def _train_shape_predictor(dlib, image_uint8: np.ndarray, points: np.ndarray, path) -> None:
    """Write a real dlib shape predictor file that reproduces `points` on this image's detected face."""
    rectangle = dlib.get_frontal_face_detector()(image_uint8, 1)[0]
    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
    options = dlib.shape_predictor_training_options()
    options.cascade_depth = 3
    options.tree_depth = 2
    options.num_trees_per_cascade_level = 8
    options.oversampling_amount = 5
    options.feature_pool_size = 50
    options.num_threads = 1
    options.random_seed = "0"
    predictor = dlib.train_shape_predictor([image_uint8], [[dlib.full_object_detection(rectangle, parts)]], options)
    predictor.save(str(path))


@pytest.fixture
def dlib_predictor(stylebridge_home, astronaut):
    dlib = pytest.importorskip("dlib")
    folder = stylebridge_home / "models" / "landmarks"
    folder.mkdir(parents=True)
    path = folder / alignment.DLIB_PREDICTOR_NAME
    points = _synthetic_68_points(ASTRONAUT_EYE_LEFT, ASTRONAUT_EYE_RIGHT, ASTRONAUT_MOUTH_LEFT,
                                  ASTRONAUT_MOUTH_RIGHT)
    _train_shape_predictor(dlib, (astronaut * 255).round().astype(np.uint8), points, path)
    return path


def test_dlib_eyes_on_ffhq_positions(dlib_predictor, astronaut):
    result = align_face(astronaut, SIZE, landmarks="dlib")
    assert result.method == "dlib"
    assert result.landmarks.points.shape == (68, 2)
    assert eye_errors(result, hand_landmarks(), SIZE).max() < UPRIGHT_TOLERANCE * SIZE


def test_auto_prefers_dlib_with_predictor(dlib_predictor, astronaut):
    assert align_face(astronaut, 64, landmarks="auto").method == "dlib"


def test_dlib_rejects_five_point_predictor(stylebridge_home, astronaut, tmp_path):
    dlib = pytest.importorskip("dlib")
    pixels = (astronaut * 255).round().astype(np.uint8)
    five = np.stack([ASTRONAUT_EYE_LEFT, ASTRONAUT_EYE_RIGHT, ASTRONAUT_MOUTH_LEFT, ASTRONAUT_MOUTH_RIGHT,
                     (ASTRONAUT_EYE_LEFT + ASTRONAUT_EYE_RIGHT) / 2 + [0, 20]])
    path = tmp_path / "five_point.dat"
    _train_shape_predictor(dlib, pixels, five, path)
    with pytest.raises(ValueError, match="5-point shape predictor.*68-point"):
        align_face(astronaut, 64, landmarks="dlib", predictor_path=path)


def test_dlib_corrupt_predictor_names_file(astronaut, tmp_path):
    pytest.importorskip("dlib")
    path = tmp_path / "corrupt.dat"
    path.write_bytes(b"not a shape predictor")
    with pytest.raises(RuntimeError, match=r"failed to load the dlib shape predictor .*corrupt\.dat"):
        align_face(astronaut, 64, landmarks="dlib", predictor_path=path)


def test_auto_falls_back_to_opencv_without_predictor(astronaut, caplog):
    with caplog.at_level(logging.INFO, logger=alignment.__name__):
        result = align_face(astronaut, 64, landmarks="auto")
    assert result.method == "opencv"
    assert "shape_predictor_68_face_landmarks.dat" in caplog.text or "dlib package is not installed" in caplog.text


def test_dlib_requested_without_predictor_names_folder(stylebridge_home, astronaut):
    pytest.importorskip("dlib")
    with pytest.raises(FileNotFoundError, match=r"shape_predictor_68_face_landmarks\.dat.*models/landmarks"):
        align_face(astronaut, 64, landmarks="dlib")


def test_dlib_requested_without_package(astronaut, monkeypatch, dlib_predictor_if_installed):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(RuntimeError, match="dlib package is not installed"):
        align_face(astronaut, 64, landmarks="dlib", predictor_path=dlib_predictor_if_installed)


def test_auto_without_dlib_package_uses_opencv(astronaut, monkeypatch, dlib_predictor_if_installed):
    monkeypatch.setitem(sys.modules, "dlib", None)
    assert align_face(astronaut, 64, landmarks="auto").method == "opencv"


@pytest.fixture
def dlib_predictor_if_installed(stylebridge_home):
    """A file where the predictor would be; its content does not matter when dlib cannot be imported."""
    folder = stylebridge_home / "models" / "landmarks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / alignment.DLIB_PREDICTOR_NAME
    path.write_bytes(b"not read")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Paste back.


def _outside_quad_box(transform: FaceTransform, height: int, width: int) -> np.ndarray:
    left, top = np.floor(transform.quad.min(axis=0)).astype(int)
    right, bottom = np.ceil(transform.quad.max(axis=0)).astype(int)
    outside = np.ones((height, width), dtype=bool)
    outside[max(top, 0):bottom + 1, max(left, 0):right + 1] = False
    return outside


def _face_region(landmarks: FaceLandmarks) -> tuple[slice, slice]:
    left, top, right, bottom = (int(v) for v in landmarks.face_box)
    return slice(top, bottom), slice(left, right)


def test_paste_back_unedited_reproduces_face(astronaut, aligned_astronaut):
    pasted = paste_back(astronaut, aligned_astronaut.image, aligned_astronaut.transform)
    region = _face_region(aligned_astronaut.landmarks)
    error = pasted[region] - astronaut[region]
    psnr = 10 * np.log10(1.0 / np.mean(error ** 2))
    assert psnr > 33.0  # measured 37.1 dB at 256 px
    assert np.abs(error).mean() < 0.015


def test_paste_back_leaves_outside_untouched(astronaut, aligned_astronaut):
    edited = 1.0 - aligned_astronaut.image
    pasted = paste_back(astronaut, edited, aligned_astronaut.transform)
    outside = _outside_quad_box(aligned_astronaut.transform, 512, 512)
    assert outside.sum() > 100_000
    assert np.array_equal(pasted[outside], astronaut[outside])


def test_paste_back_feather_fades_edge(astronaut, aligned_astronaut):
    black = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
    transform = aligned_astronaut.transform
    soft = paste_back(astronaut, black, transform, feather=0.2)
    hard = paste_back(astronaut, black, transform, feather=0.0)
    # A point 5 % inside the square's edge: fully replaced with a hard edge, partly with a 20 % feather.
    x, y = np.rint(transform.to_source(np.array([0.5 * SIZE, 0.05 * SIZE]))).astype(int)
    centre_x, centre_y = np.rint(transform.to_source(np.array([SIZE / 2, SIZE / 2]))).astype(int)
    assert np.all(hard[y, x] == 0.0)
    assert np.all(soft[y, x] > 0.0)
    assert np.all(soft[y, x] < astronaut[y, x])
    assert np.all(soft[centre_y, centre_x] == 0.0)


def test_paste_back_zero_mask_keeps_photo(astronaut, aligned_astronaut):
    edited = 1.0 - aligned_astronaut.image
    pasted = paste_back(astronaut, edited, aligned_astronaut.transform, mask=np.zeros((64, 64), np.float32))
    assert np.array_equal(pasted, astronaut)


def test_paste_back_accepts_other_edit_size(astronaut, aligned_astronaut):
    larger = np.asarray(Image.fromarray((aligned_astronaut.image * 255).round().astype(np.uint8)).resize(
        (2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS))
    pasted = paste_back(astronaut, larger, aligned_astronaut.transform)
    region = _face_region(aligned_astronaut.landmarks)
    assert np.abs(pasted[region] - astronaut[region]).mean() < 0.02


def test_paste_back_rejects_wrong_original(astronaut, aligned_astronaut):
    with pytest.raises(ValueError, match=r"original is 256x512 px.*512x512 px"):
        paste_back(astronaut[:, :256], aligned_astronaut.image, aligned_astronaut.transform, where="PasteBack")


def test_paste_back_rejects_non_square_edit(astronaut, aligned_astronaut):
    with pytest.raises(ValueError, match="must be square"):
        paste_back(astronaut, aligned_astronaut.image[:, :100], aligned_astronaut.transform)


def test_paste_back_rejects_feather_out_of_range(astronaut, aligned_astronaut):
    with pytest.raises(ValueError, match=r"feather 0\.7 .* 0\.\.0\.5"):
        paste_back(astronaut, aligned_astronaut.image, aligned_astronaut.transform, feather=0.7)


# ---------------------------------------------------------------------------------------------------------------------
# Input conversion.


def test_prepare_grayscale_uint8():
    gray = np.arange(64 * 80, dtype=np.uint32).reshape(64, 80).astype(np.uint8)
    rgb = prepare_image(gray)
    assert rgb.shape == (64, 80, 3)
    assert np.array_equal(rgb[..., 0], gray / np.float32(255))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_prepare_rgba_composites_on_white(caplog):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:32, :, 3] = 255  # top half opaque, bottom half transparent
    with caplog.at_level(logging.INFO, logger=alignment.__name__):
        rgb = prepare_image(rgba, where="AlignFace image")
    assert np.allclose(rgb[0, 0], [1.0, 0.0, 0.0])
    assert np.allclose(rgb[63, 0], [1.0, 1.0, 1.0])
    assert "composited over white" in caplog.text


def test_prepare_rgba_drop_keeps_color():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgb = prepare_image(rgba, alpha="drop")
    assert np.allclose(rgb[63, 0], [0.0, 1.0, 0.0])


def test_prepare_gray_alpha_two_channels():
    gray_alpha = np.zeros((64, 64, 2), dtype=np.float32)
    gray_alpha[..., 0] = 0.25
    gray_alpha[:, :32, 1] = 1.0
    rgb = prepare_image(gray_alpha)
    assert np.allclose(rgb[0, 0], 0.25)
    assert np.allclose(rgb[0, 63], 1.0)


def test_prepare_uint16_scaled():
    data = np.full((64, 64, 3), 32768, dtype=np.uint16)
    data[0, 0] = 65535
    rgb = prepare_image(data)
    assert np.isclose(rgb[0, 0, 0], 1.0)
    assert np.isclose(rgb[1, 1, 0], 32768 / 65535)


def test_prepare_16_bit_png_file(tmp_path):
    data = np.linspace(0, 65535, 64 * 96).astype(np.uint16).reshape(64, 96)
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)
    rgb = prepare_image(path)
    assert rgb.shape == (64, 96, 3)
    assert np.isclose(rgb[-1, -1, 0], 1.0)
    assert np.isclose(rgb[0, 1, 0], data[0, 1] / 65535, atol=1e-6)


def test_prepare_exif_rotated_jpeg(tmp_path):
    stored = np.zeros((128, 96, 3), dtype=np.uint8)  # 96 wide, 128 tall as stored
    stored[..., 2] = 255
    stored[:32, :32] = [255, 0, 0]  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    rgb = prepare_image(path)
    assert rgb.shape == (96, 128, 3)
    assert rgb[10, 117, 0] > 0.9  # the red block is now at the top-right
    assert rgb[10, 10, 0] < 0.1


def test_prepare_pil_image_applies_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation 8: display rotated 90 degrees counter-clockwise
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (96, 128), (0, 0, 255)).save(path, exif=exif)
    with Image.open(path) as opened:
        assert prepare_image(opened).shape == (96, 128, 3)


def test_prepare_rejects_tiny_image():
    with pytest.raises(ValueError, match=rf"200x63 px.*{MIN_IMAGE_SIDE}\.\.{MAX_IMAGE_SIDE} px"):
        prepare_image(np.zeros((63, 200, 3), dtype=np.uint8))


def test_prepare_accepts_minimum_size():
    assert prepare_image(np.zeros((MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3), dtype=np.uint8)).shape == (64, 64, 3)


def test_prepare_rejects_huge_image():
    huge = np.zeros((MAX_IMAGE_SIDE + 1, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"64x{MAX_IMAGE_SIDE + 1} px.*at most {MAX_IMAGE_SIDE} px"):
        prepare_image(huge, where="AlignFace image")


def test_prepare_rejects_huge_file_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (MAX_IMAGE_SIDE + 1, 64)).save(path)
    with pytest.raises(ValueError, match="too large"):
        prepare_image(path)


def test_prepare_rejects_float_out_of_range():
    data = np.zeros((64, 64, 3), dtype=np.float32)
    data[0, 0] = 255.0
    with pytest.raises(ValueError, match=r"span 0\.\.255; expected 0\.\.1"):
        prepare_image(data)


def test_prepare_rejects_nan():
    data = np.zeros((64, 64, 3), dtype=np.float32)
    data[3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prepare_image(data)


def test_prepare_hints_channels_first():
    with pytest.raises(ValueError, match="channels-first"):
        prepare_image(torch.zeros(3, 64, 64))


def test_prepare_tensor_batch_of_one():
    image = torch.rand(1, 64, 72, 3, dtype=torch.float16)
    assert prepare_image(image).shape == (64, 72, 3)


# ---------------------------------------------------------------------------------------------------------------------
# Nodes.


@pytest.fixture(scope="module")
def astronaut_batch(astronaut):
    return torch.from_numpy(np.stack([astronaut, astronaut[:, ::-1].copy()]))


def test_align_face_node_batch(astronaut_batch):
    aligned, transforms = AlignFace().align(astronaut_batch, 64, "opencv", "error")
    assert aligned.shape == (2, 64, 64, 3)
    assert len(transforms) == 2
    mirrored_x = transforms[1].to_source(np.array([32.0, 32.0]))[0]
    assert np.isclose(mirrored_x, 511 - transforms[0].to_source(np.array([32.0, 32.0]))[0], atol=4.0)


def test_align_face_node_uses_generator_size(astronaut_batch, tiny_generator):
    aligned, _ = AlignFace().align(astronaut_batch[:1], 1024, "opencv", "error", generator=tiny_generator)
    assert aligned.shape == (1, tiny_generator.img_resolution, tiny_generator.img_resolution, 3)


def test_paste_back_node_one_original_many_edits(astronaut_batch):
    aligned, transforms = AlignFace().align(astronaut_batch[:1], 64, "opencv", "error")
    edits = torch.stack([aligned[0], 1.0 - aligned[0], torch.zeros_like(aligned[0])])
    (pasted,) = PasteBack().paste(astronaut_batch[:1], edits, transforms, 0.1)
    assert pasted.shape == (3, 512, 512, 3)
    assert not torch.equal(pasted[1], pasted[2])


def test_paste_back_node_rejects_mismatched_batches(astronaut_batch):
    aligned, transforms = AlignFace().align(astronaut_batch, 64, "opencv", "error")
    with pytest.raises(ValueError, match="edited has 3 images but original has 2"):
        PasteBack().paste(astronaut_batch, torch.cat([aligned, aligned[:1]]), transforms, 0.1)


def test_align_and_paste_workflow_headless(stylebridge_home, astronaut):
    from stylebridge.runtime.runner import run_workflow

    (stylebridge_home / "input").mkdir()
    Image.fromarray((astronaut * 255).round().astype(np.uint8)).save(stylebridge_home / "input" / "astronaut.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "AlignFace", "inputs": {"image": ["1", 0], "output_size": 128, "landmarks": "opencv",
                                                    "no_face": "error"}},
        "3": {"class_type": "PasteBack", "inputs": {"original": ["1", 0], "edited": ["2", 0],
                                                    "transform": ["2", 1], "feather": 0.1}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "pasted"}},
    }
    result = run_workflow(prompt)
    assert len(result.saved_files) == 1
    with Image.open(result.saved_files[0]) as saved:
        assert saved.size == (512, 512)
    assert result.values["2"][0].shape == (1, 128, 128, 3)
