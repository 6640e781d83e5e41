"""RetinaFace detection on real photos and video frames, ArcFace alignment, and the quality gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vcn.config import QualityGateConfig
from vcn.faces.align import ARCFACE_TEMPLATE, align_face, nose_offset, similarity_transform, template
from vcn.faces.quality import blur_variance, passes_gate
from vcn.models.retinaface import RetinaFaceDetector, nms, prior_boxes
from vcn.models.types import Faces

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEEPFACE = SHARED / "data" / "faces" / "deepface13"
HAMILTON = SHARED / "data" / "videos" / "short_hamilton_clip.mp4"
needs_deepface = pytest.mark.skipif(not DEEPFACE.is_dir(), reason=f"shared test data not found at {DEEPFACE}")
needs_hamilton = pytest.mark.skipif(not HAMILTON.is_file(), reason=f"shared test data not found at {HAMILTON}")


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector()


@pytest.fixture(scope="module")
def photos():
    names = sorted(p for files in json.loads((DEEPFACE / "identities.json").read_text())["identities"].values()
                   for p in files)
    return {name: cv2.imread(str(DEEPFACE / name)) for name in names}


@pytest.fixture(scope="module")
def hamilton_frames():
    from vcn.video.decode import iter_frames

    wanted = {10: None, 50: None, 150: None, 250: None, 251: None, 252: None, 253: None, 254: None, 255: None,
              256: None, 257: None}
    for batch in iter_frames(HAMILTON, 64):
        for i, f in zip(batch.indices, batch.frames):
            if int(i) in wanted:
                wanted[int(i)] = f.copy()
    return wanted


def check_faces(faces: Faces, shape):
    h, w = shape[:2]
    assert faces.boxes.dtype == faces.scores.dtype == faces.landmarks.dtype == np.float32
    assert faces.landmarks.shape == (len(faces), 5, 2)
    x1, y1, x2, y2 = faces.boxes.T
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= w) & (0 <= y1) & (y1 < y2) & (y2 <= h))
    # Landmarks sit inside their box (5% slack for profiles), except where the frame edge cut the face (boxes
    # are clipped to the frame, landmarks are not).
    inside = (x1 > 1) & (y1 > 1) & (x2 < w - 1) & (y2 < h - 1)
    lx, ly = faces.landmarks[inside, :, 0], faces.landmarks[inside, :, 1]
    x1, y1, x2, y2 = (v[inside, None] for v in (x1, y1, x2, y2))
    slack = 0.05 * (x2 - x1)
    assert np.all((lx >= x1 - slack) & (lx <= x2 + slack) & (ly >= y1 - slack) & (ly <= y2 + slack))


def test_weights_are_read_without_importing_retinaface():
    code = ("import sys; from vcn.models.retinaface import load_weights; w = load_weights(); "
            "assert w[:2] == b'\\x08\\x06' and len(w) > 1_000_000, len(w); "
            "assert 'retinaface' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_priors_match_the_network_outputs(detector):
    for h, w in [(360, 640), (250, 250), (97, 131)]:
        loc, conf, landms = detector.session.run(None, {"input": np.zeros((1, 3, h, w), np.float32)})
        assert len(prior_boxes(h, w)) == loc.shape[1] == conf.shape[1] == landms.shape[1]


def test_priors_are_every_cell_and_anchor_size_in_the_networks_order_and_cached():
    for h, w in [(540, 960), (97, 131)]:
        expected = [((j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h)
                    for step, sizes in ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
                    for i in range(-(-h // step)) for j in range(-(-w // step)) for s in sizes]
        priors = prior_boxes(h, w)
        assert np.array_equal(priors, np.asarray(expected, np.float32))
        assert prior_boxes(h, w) is priors and not priors.flags.writeable   # built once per input size


def test_onnx_batch_is_each_frame_resized_centred_channels_first_and_padded_with_the_mean():
    import cv2

    from vcn.models.retinaface import MEAN_BGR, onnx_batch

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)]
    sizes = [(54, 96), (40, 50)]   # the first scaled down, the second as it is
    batch = onnx_batch(frames, sizes, 54, 96)
    first = cv2.resize(frames[0], (96, 54), interpolation=cv2.INTER_AREA).astype(np.float32) - MEAN_BGR
    assert batch.shape == (2, 3, 54, 96) and batch.dtype == np.float32
    assert np.array_equal(batch[0], first.transpose(2, 0, 1))
    assert np.array_equal(batch[1, :, :40, :50], (frames[1].astype(np.float32) - MEAN_BGR).transpose(2, 0, 1))
    assert not batch[1, :, 40:].any() and not batch[1, :, :, 50:].any()


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.3], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2, 3]


@needs_deepface
def test_finds_the_face_in_every_real_photo(detector, photos):
    multi = {}
    for name, image in photos.items():
        faces = detector.detect(image[None])[0]
        assert len(faces) >= 1, f"no face found in {name}"
        check_faces(faces, image.shape)
        best = int(np.argmax(faces.scores))
        assert faces.scores[best] > 0.95, name
        eyes, mouth = faces.landmarks[best, :2], faces.landmarks[best, 3:]
        # Upright portraits: image-left eye left of the image-right eye, eyes above the mouth.
        assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0], name
        assert eyes[:, 1].max() < mouth[:, 1].min(), name
        multi[name] = len(faces)
    assert multi["img62.jpg"] >= 3  # a group photo


@needs_deepface
def test_boxes_are_in_original_pixels_whatever_the_scale(detector, photos):
    image = photos["img11.jpg"]  # 600x800 (w x h), one face
    big = cv2.resize(image, (1200, 1600), interpolation=cv2.INTER_CUBIC)  # longer side 1600 > max_side 960
    a, b = detector.detect([image])[0], detector.detect([big])[0]
    assert len(a) == len(b) == 1
    # What the detector saw of `big` was 720x960: its results, scaled back by 1600/960, are `big`'s.
    seen = detector.detect([cv2.resize(big, (720, 960), interpolation=cv2.INTER_AREA)])[0]
    np.testing.assert_allclose(b.boxes, seen.boxes * (1600 / 960), atol=0.05)
    np.testing.assert_allclose(b.landmarks, seen.landmarks * (1600 / 960), atol=0.05)
    # And they describe the same face as on the original (a different scale, so not to the pixel).
    face = a.boxes[0, 3] - a.boxes[0, 1]
    np.testing.assert_allclose(b.boxes[0] / 2, a.boxes[0], atol=0.05 * face)
    np.testing.assert_allclose(b.landmarks[0] / 2, a.landmarks[0], atol=0.03 * face)
    # Different sizes in one batch (padded to one size): each result is in its own frame's pixels.
    mixed = detector.detect([image, big])
    np.testing.assert_allclose(mixed[0].boxes, a.boxes, atol=0.02 * face)
    np.testing.assert_allclose(mixed[1].boxes, b.boxes, atol=0.02 * face)


@needs_hamilton
def test_finds_the_faces_in_hamilton_frames(detector, hamilton_frames):
    counts = {}
    for i, frame in hamilton_frames.items():
        faces = detector.detect(frame[None])[0]
        check_faces(faces, frame.shape)
        counts[i] = len(faces)
    assert counts[10] == 2     # wide stage view: the performer and the pianist
    assert counts[150] == 1    # the performer close-up
    assert counts[250] >= 4    # the audience row


@needs_hamilton
def test_batch_equals_single_frames(detector, hamilton_frames):
    frames = np.stack([hamilton_frames[i] for i in range(250, 258)])
    batched = detector.detect(frames)
    for frame, together in zip(frames, batched):
        alone = detector.detect(frame[None])[0]
        assert len(alone) == len(together)
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-2)
        np.testing.assert_allclose(together.landmarks, alone.landmarks, atol=1e-2)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-4)


def test_empty_and_faceless_input(detector):
    assert detector.detect(np.zeros((0, 64, 64, 3), np.uint8)) == []
    faces = detector.detect(np.full((2, 120, 160, 3), 128, np.uint8))
    assert [len(f) for f in faces] == [0, 0]
    with pytest.raises(ValueError, match="BGR uint8"):
        detector.detect(np.zeros((1, 64, 64), np.uint8))


def test_alignment_puts_landmarks_on_the_template():
    rng = np.random.default_rng(0)
    for trial in range(5):
        # A face somewhere in a frame: the template moved by a random rotation, scale and shift.
        angle = np.deg2rad(rng.uniform(-40, 40))
        scale = rng.uniform(0.6, 3.0)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = rng.uniform(150, 300, size=2)
        points = (ARCFACE_TEMPLATE - 56) @ rot.T + shift
        frame = np.zeros((480, 640, 3), np.uint8)
        radius = max(2, int(round(2 * scale)))
        for k, (x, y) in enumerate(points):
            cv2.circle(frame, (int(round(x * 16)), int(round(y * 16))), radius * 16, (255, 255, 255), -1,
                       lineType=cv2.LINE_AA, shift=4)
        crop = align_face(frame, points)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        grey = crop[..., 0].astype(np.float64)
        for k, (tx, ty) in enumerate(ARCFACE_TEMPLATE):
            # Centroid of the dot near where the template says it should be.
            x0, x1, y0, y1 = int(tx) - 7, int(tx) + 8, int(ty) - 7, int(ty) + 8
            patch = grey[y0:y1, x0:x1]
            ys, xs = np.mgrid[y0:y1, x0:x1]
            cx, cy = (patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()
            assert abs(cx - tx) < 1.0 and abs(cy - ty) < 1.0, (trial, k, cx, cy, tx, ty)


def test_similarity_transform_is_exact_on_similar_points_and_never_mirrors():
    matrix = similarity_transform(template(112) * 2 + 7, template(112))
    mapped = (template(112) * 2 + 7) @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, template(112), atol=1e-4)
    mirrored = template(112).copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]
    m = similarity_transform(mirrored, template(112))
    assert np.linalg.det(m[:, :2]) > 0
    np.testing.assert_allclose(template(224), ARCFACE_TEMPLATE * 2)


@needs_deepface
def test_aligned_real_faces_land_on_the_template(detector, photos):
    for name in ["img1.jpg", "img11.jpg", "img26.jpg", "img47.jpg", "img8.jpg"]:
        image = photos[name]
        faces = detector.detect(image[None])[0]
        crop = align_face(image, faces.landmarks[int(np.argmax(faces.scores))])
        # Detect again in the aligned crop (on a margin so the face is not cut by the border).
        canvas = np.zeros((224, 224, 3), np.uint8)
        canvas[56:168, 56:168] = crop
        again = detector.detect(canvas[None])[0]
        assert len(again) >= 1, name
        eyes = again.landmarks[int(np.argmax(again.scores)), :2] - 56
        assert np.abs(eyes - ARCFACE_TEMPLATE[:2]).max() < 6, (name, eyes)


@needs_deepface
def test_blur_variance_separates_sharp_from_blurred(detector, photos):
    image = photos["img11.jpg"]
    faces = detector.detect(image[None])[0]
    crop = align_face(image, faces.landmarks[0])
    sharp = blur_variance(crop)
    blurred = blur_variance(cv2.GaussianBlur(crop, (0, 0), 3))
    assert sharp > 4 * blurred
    assert blur_variance(np.full((112, 112, 3), 90, np.uint8)) == 0.0
    cfg = QualityGateConfig()
    assert passes_gate(float(faces.boxes[0, 2] - faces.boxes[0, 0]), sharp, cfg)
    assert not passes_gate(200.0, blurred, QualityGateConfig(min_blur_var=blurred + 1))


def test_gate_thresholds_on_arrays():
    cfg = QualityGateConfig(min_face_px=24, min_blur_var=15)
    ok = passes_gate(np.array([23.9, 24, 100, 100]), np.array([100, 100, 14.9, 15]), cfg)
    assert ok.tolist() == [False, True, False, True]
    assert passes_gate(30, 30, cfg) is True


def face_points(nose_x: float, roll_deg: float = 0.0) -> list[float]:
    """Eyes at x = 40 and 60 (y = 50), nose at (nose_x, 65), mouth below; the whole face turned by roll_deg."""
    pts = np.array([[40, 50], [60, 50], [nose_x, 65], [42, 80], [58, 80]], float)
    a = np.radians(roll_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return ((pts - 50) @ rot.T + 50).ravel().tolist()


def test_nose_offset_is_zero_frontal_half_at_an_eye_and_ignores_roll():
    offsets = nose_offset(np.array([face_points(50), face_points(60), face_points(75), face_points(50, 30),
                                    face_points(75, -40), face_points(25)]))
    np.testing.assert_allclose(offsets, [0.0, 0.5, 1.25, 0.0, 1.25, 1.25], atol=1e-9)
