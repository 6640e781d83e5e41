"""Small test videos made on the fly with PyAV: constant/variable frame rate, odd rates, rotated, broken."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np

# Each frame shows its own index as 8 black/white blocks across the top (bit 7 first), so a test can read back
# which frame it got even after lossy coding; below them a bright square moves so content changes frame to frame.
CODE_BITS = 8


def index_frame(i: int, width: int = 160, height: int = 96) -> np.ndarray:
    """A BGR uint8 frame whose top band encodes `i` (0..255) and whose square moves with `i`."""
    frame = np.full((height, width, 3), 60, np.uint8)
    block = width // CODE_BITS
    band = height // 3
    for bit in range(CODE_BITS):
        on = (i >> (CODE_BITS - 1 - bit)) & 1
        frame[:band, bit * block:(bit + 1) * block] = 235 if on else 16
    side = height // 4
    x = (4 * i) % max(1, width - side)
    frame[height - side - 4:height - 4, x:x + side] = (40, 200, 240)
    return frame


def read_index(frame: np.ndarray) -> int:
    """Decode the index written by `index_frame` (any upright frame of that layout, any size)."""
    height, width = frame.shape[:2]
    block = width // CODE_BITS
    band = height // 3
    value = 0
    for bit in range(CODE_BITS):
        patch = frame[band // 4:3 * band // 4, bit * block + block // 4:(bit + 1) * block - block // 4]
        value = (value << 1) | int(patch.mean() > 128)
    return value


def write_video(
    path: str | Path,
    n_frames: int = 30,
    fps: Fraction | int | float = 30,
    width: int = 160,
    height: int = 96,
    pts_s: Sequence[float] | None = None,
    rotation: float | None = None,
    sample_aspect_ratio: Fraction | None = None,
    codec: str = "libx264",
    make_frame: Callable[[int], np.ndarray] | None = None,
    faststart: bool = False,
) -> Path:
    """Encode `n_frames` BGR frames to `path` (container from the suffix).

    pts_s: per-frame presentation times in seconds (variable frame rate); default i / fps.
    rotation: display-matrix rotation in degrees, counter-clockwise (as PyAV reads it back).
    sample_aspect_ratio: pixel aspect ratio written to the stream (non-square pixels).
    faststart: MP4 index (moov) before the data, as streaming files have it.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    make_frame = make_frame or (lambda i: index_frame(i, width, height))
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # No B-frames: pts stay monotonic in decode order, which keeps VFR timing easy to reason about.
            stream.options = {"bf": "0", "crf": "18", "preset": "ultrafast"}
        if pts_s is not None:
            # Millisecond time base so arbitrary VFR times are representable.
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i), format="bgr24")
            if pts_s is not None:
                frame.pts = int(round(pts_s[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_truncated(path: str | Path, n_frames: int = 60, keep_fraction: float = 0.5, **kw) -> Path:
    """A valid video with its tail cut off (as a killed download leaves it)."""
    path = Path(path)
    full = path.with_name(path.stem + "_full" + path.suffix)
    write_video(full, n_frames=n_frames, **kw)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    full.unlink()
    return path


def write_zero_length(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_not_video(path: str | Path) -> Path:
    path = Path(path)
    path.write_text("this is a text file, not a video\n" * 50)
    return path


def write_no_frames(path: str | Path) -> Path:
    """A well-formed container with a video stream and no frames at all (use .avi: MP4 and MKV drop the
    stream or the file when nothing is written)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = 64, 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return path


def write_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """An .m4a with one silent AAC stream and no video."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        for k in range(int(seconds * rate) // 1024 + 1):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_corrupt_middle(path: str | Path, n_frames: int = 120, garbage_bytes: int = 3000, seed: int = 0,
                         **kw) -> Path:
    """An MP4 whose index is intact but whose data is overwritten with noise half-way: decoding fails part-way."""
    path = Path(path)
    write_video(path, n_frames=n_frames, faststart=True, **kw)
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    noise = np.random.default_rng(seed).integers(0, 256, garbage_bytes, dtype=np.uint8).tobytes()
    data[start:start + garbage_bytes] = noise
    path.write_bytes(bytes(data))
    return path


# --- Real faces in motion (deepface13 photos), and the ways archives store such footage ------------------------

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEEPFACE13 = SHARED_DATA / "faces" / "deepface13"
# Two frontal portraits of two different people (person_00 and Jeff Bezos in deepface13).
FACE_PHOTOS = ("img11.jpg", "img21.jpg")


def face_scene(width: int = 320, height: int = 180, photos: Sequence[str] = FACE_PHOTOS,
               amplitude: float = 0.12, period_s: float = 2.0, face_height: float = 0.8,
               ) -> Callable[[float], np.ndarray]:
    """A function of time (seconds) -> BGR frame: the photos side by side on a grey gradient, `face_height` of
    the frame tall, with the camera panning left and right (`amplitude` of the width, one cycle per `period_s`).

    A pure function of time, so any frame rate, variable timing or field rate samples the same motion: that is
    what lets a test compare the same footage stored in different ways. Sub-pixel motion via warpAffine.
    """
    import cv2

    tiles = []
    for name in photos:
        image = cv2.imread(str(DEEPFACE13 / name))
        if image is None:
            raise FileNotFoundError(f"{DEEPFACE13 / name} (shared test data) is missing")
        h = int(round(height * face_height))
        tiles.append(cv2.resize(image, (max(1, round(image.shape[1] * h / image.shape[0])), h),
                                interpolation=cv2.INTER_AREA))
    gap = width // 40
    margin = int(np.ceil(amplitude * width)) + 2
    strip_w = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    canvas_w = max(strip_w, width) + 2 * margin
    gradient = np.linspace(50, 170, canvas_w, dtype=np.float32)[None, :, None] \
        + np.linspace(0, 40, height, dtype=np.float32)[:, None, None]
    canvas = np.ascontiguousarray(np.broadcast_to(gradient, (height, canvas_w, 3)).clip(0, 255).astype(np.uint8))
    x, top = (canvas_w - strip_w) // 2, (height - tiles[0].shape[0]) // 2
    for t in tiles:
        canvas[top:top + t.shape[0], x:x + t.shape[1]] = t
        x += t.shape[1] + gap
    x0 = (canvas_w - width) / 2

    def frame_at(t: float) -> np.ndarray:
        dx = x0 + amplitude * width * np.sin(2 * np.pi * t / period_s)
        matrix = np.float32([[1, 0, -dx], [0, 1, 0]])
        return cv2.warpAffine(canvas, matrix, (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    return frame_at


def vfr_times(duration_s: float, fps: float = 30.0, seed: int = 0) -> list[float]:
    """Variable-rate presentation times over `duration_s` as screen and phone recorders write them: mostly
    1/fps apart, with runs at double rate and gaps of 2-3 frames (dropped while nothing changed)."""
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < duration_s - 1e-9:
        times.append(round(t, 3))
        t += rng.choice([0.5, 1.0, 1.0, 2.0, 3.0]) / fps
    return times


def write_rotated(path: str | Path, rotation: int, scene: Callable[[float], np.ndarray], n_frames: int,
                  fps: float = 10, **kw) -> Path:
    """What a phone writes: the picture stored turned by -rotation, with a display matrix saying to turn it
    back by `rotation` degrees counter-clockwise. Displayed, it is the same as `scene`."""
    k = (rotation // 90) % 4
    height, width = np.rot90(scene(0.0), -k).shape[:2]
    return write_video(path, n_frames=n_frames, fps=fps, rotation=rotation, width=width, height=height,
                       make_frame=lambda i: np.ascontiguousarray(np.rot90(scene(i / fps), -k)), **kw)


def write_anamorphic(path: str | Path, scene: Callable[[float], np.ndarray], n_frames: int, fps: float = 10,
                     stored: tuple[int, int] = (720, 576), sample_aspect_ratio: Fraction = Fraction(64, 45),
                     **kw) -> Path:
    """PAL widescreen as DVDs and broadcast masters store it: `scene` (square pixels, e.g. 1024x576) squeezed
    horizontally into 720x576 with a sample aspect ratio that stretches it back on display."""
    import cv2

    width, height = stored
    return write_video(path, n_frames=n_frames, fps=fps, width=width, height=height,
                       sample_aspect_ratio=sample_aspect_ratio,
                       make_frame=lambda i: cv2.resize(scene(i / fps), (width, height), interpolation=cv2.INTER_AREA),
                       **kw)


def weave_fields(scene: Callable[[float], np.ndarray], i: int, field_rate: float, top_field_first: bool = True
                 ) -> np.ndarray:
    """Frame i of interlaced footage: its two fields are the scene at two instants 1/field_rate apart, woven
    line by line (the first field in time on the even lines when top field first)."""
    first, second = scene(2 * i / field_rate), scene((2 * i + 1) / field_rate)
    frame = second.copy()
    start = 0 if top_field_first else 1
    frame[start::2] = first[start::2]
    return frame


def write_interlaced(path: str | Path, scene: Callable[[float], np.ndarray], n_frames: int,
                     field_rate: float = 50, width: int | None = None, height: int | None = None,
                     top_field_first: bool = True, sample_aspect_ratio: Fraction | None = None) -> Path:
    """Interlaced H.264 (field-coded: +ilme+ildct, tff/bff flagged) of woven frames of moving content, as a
    broadcast 576i/480i master holds it; frame rate = field_rate / 2."""
    path = Path(path)
    rate = Fraction(field_rate).limit_denominator(1001) / 2
    probe = scene(0.0)
    height, width = height or probe.shape[0], width or probe.shape[1]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "0", "crf": "16", "preset": "ultrafast", "flags": "+ilme+ildct",
                          "x264-params": "tff=1" if top_field_first else "bff=1"}
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        for i in range(n_frames):
            woven = weave_fields(scene, i, field_rate, top_field_first)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(woven[:height, :width]), format="bgr24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def combing(image: np.ndarray) -> float:
    """How combed a picture is: energy of differences between neighbouring rows (which belong to different
    fields) over that of rows two apart (same field). Progressive pictures score well below 1 (neighbours are
    closer than rows two apart); woven fields of moving content score above 1."""
    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    adjacent = np.mean((grey[1:] - grey[:-1]) ** 2)
    two_apart = np.mean((grey[2:] - grey[:-2]) ** 2)
    return float(adjacent / max(two_apart, 1e-6))


def write_still_image(path: str | Path, width: int = 160, height: int = 96, ext: str = ".png") -> Path:
    """A still image (PNG or JPEG bytes) saved under a video's name, e.g. photo.png renamed clip.mp4."""
    import cv2

    path = Path(path)
    ok, data = cv2.imencode(ext, index_frame(3, width, height))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def write_same_timestamps(path: str | Path, n_frames: int = 10) -> Path:
    """A Matroska video whose frames all carry the same presentation time: a stream of zero duration."""
    path = Path(path)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = 64, 64
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 64, 64), format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                packet.pts = packet.dts = 0
                container.mux(packet)
        for packet in stream.encode():
            packet.pts = packet.dts = 0
            container.mux(packet)
    return path


def write_audio_with_cover(path: str | Path, seconds: float = 0.5) -> Path:
    """An .m4a with a silent AAC stream and a JPEG cover picture: FFmpeg lists the cover as a video stream
    (disposition attached_pic), as it does for most music files."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=rate)
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 160, 96, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(index_frame(1), format="bgr24").reformat(format="yuvj420p")
        picture.pts = 0
        for packet in [*cover.encode(picture), *cover.encode()]:
            container.mux(packet)
        for k in range(int(seconds * rate) // 1024 + 1):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = k * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path
