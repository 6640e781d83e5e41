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
