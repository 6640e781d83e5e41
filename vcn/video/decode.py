"""Probe a video and decode it in bounded batches of upright, square-pixel, progressive BGR frames with their real
timestamps.

decord decodes (batched `get_batch`, one batch in memory at a time); PyAV reads what decord does not expose
reliably: the container's presentation timestamps, the display-matrix rotation, the sample aspect ratio and
whether the pictures are interlaced.

Interlaced footage (decision): frames flagged interlaced (the decoder's per-frame flag or the stream's field
order) are deinterlaced by field interpolation: the field shown first is kept and the other field's lines are
rebuilt as the mean of the lines above and below. It halves vertical detail but leaves no combing, and it uses
no neighbouring frame, so a frame decoded in the middle of a batch, at the start of a work unit or again for a
shot's crops is always the same picture (a temporal deinterlacer such as yadif would not give that).

Broken files (decision, documented here and in VideoInfo):
- missing, empty, not a video, a still image under a video's name, no video stream (audio only, or audio with
  cover art), no frames, a single frame, all frames at one instant (zero duration), first frame undecodable:
  `probe_video` raises VcnError.
- the container promises more than the file holds (a cut-off download: fewer packets than its header declares):
  `probe_video` returns `partial=True`, and `iter_frames` decodes the frames that are there.
- a frame stops decoding part-way (corrupt data inside the file): `iter_frames` yields every frame before it
  (the failing batch is retried frame by frame) and then raises `DecodeError` (a VcnError) naming the file and
  the last frame it delivered. Those frames are valid: a caller that wants partial output catches DecodeError
  and records `frames_decoded` as partial.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from vcn.errors import VcnError

_REENCODE = "re-encode it, e.g. `ffmpeg -i {p} -c:v libx264 -movflags +faststart fixed.mp4`, and pass fixed.mp4"
# Containers FFmpeg opens for single pictures: a still image renamed .mp4 opens as one of these.
_IMAGE_FORMATS = ("image2", "image2pipe")
# Frames whose flags are read to tell interlaced from progressive (some streams flag only later pictures).
_INTERLACE_PROBE_FRAMES = 5
# FFmpeg's AVFieldOrder: 2 TT, 3 BB, 4 TB (top coded first, bottom shown first), 5 BT.
_FIELD_ORDERS = {2: "tff", 3: "bff", 4: "bff", 5: "tff"}
DEINTERLACE_MODES = ("auto", "always", "never")


class DecodeError(VcnError):
    """A video stopped decoding part-way; every batch yielded before this was decoded correctly."""

    def __init__(self, path: str | Path, frames_decoded: int, n_frames: int, cause: str):
        self.path = str(path)
        self.frames_decoded = frames_decoded
        self.n_frames = n_frames
        last = f"after frame {frames_decoded - 1}" if frames_decoded else "at its first frame"
        usable = f"frames 0..{frames_decoded - 1} decoded correctly" if frames_decoded else "no frame decoded"
        super().__init__(
            f"{path}: decoding failed {last} of {n_frames} ({cause}); the file is corrupt from there on "
            f"({usable}). To process the whole video " + _REENCODE.format(p=path)
        )


@dataclass
class VideoInfo:
    """What `probe_video` found. Sizes are those of the frames `iter_frames` yields (upright, square pixels)."""

    path: str
    n_frames: int               # frames decord can index (and iter_frames will deliver)
    fps: float                  # the stream's average rate (nominal for variable-frame-rate files)
    duration_s: float           # from the first frame's start to the last frame's end
    width: int
    height: int
    coded_width: int            # as stored in the stream, before rotation and pixel-aspect correction
    coded_height: int
    rotation: int               # degrees counter-clockwise applied to display upright (0, 90, 180, 270)
    sample_aspect_ratio: float  # pixel width / pixel height as stored (1.0 = square pixels)
    codec: str
    start_s: float              # presentation time of the first frame
    declared_frames: int | None  # what the container header claims, when it says
    declared_duration_s: float | None
    partial: bool               # the file holds fewer frames than its header declares (cut off)
    timestamps_from: str        # "container" (PyAV packet pts) or "decord" (fallback, see _frame_times)
    times: np.ndarray = field(repr=False)      # float64 [n_frames]: presentation time of each frame, seconds
    end_times: np.ndarray = field(repr=False)  # float64 [n_frames]: when each frame stops being shown
    stream_index: int = 0       # the container's stream decoded (the first video stream that is not cover art)
    interlaced: bool = False    # the stream's pictures are interlaced (decoder frame flag or stream field order)
    field_order: str = "progressive"  # "tff" or "bff" (the field shown first) when interlaced
    deinterlaced: bool = False  # iter_frames deinterlaces (field interpolation, see the module docstring)
    # What iter_frames does to the stored pictures, in words, for summary.json: rotation, pixel-aspect
    # resampling, deinterlacing ([] = frames are delivered as stored).
    corrections: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-frame arrays, JSON-ready."""
        return {k: v for k, v in self.__dict__.items() if k not in ("times", "end_times")}


@dataclass
class FrameBatch:
    frames: np.ndarray    # uint8 [n, H, W, 3], BGR, upright, square pixels
    indices: np.ndarray   # int64 [n]: decoded frame index in the video
    times: np.ndarray     # float64 [n]: presentation time of each frame from the container, seconds
    end_times: np.ndarray  # float64 [n]: presentation time of the next frame (or end of the last one)

    def __len__(self) -> int:
        return len(self.indices)


def probe_video(path: str | Path, deinterlace: str = "auto") -> VideoInfo:
    """Read a video's frame count, timing, size, rotation, pixel aspect, interlacing and codec; VcnError if it is
    unusable. `deinterlace`: "auto" (interlaced streams only), "always" or "never"."""
    import av
    import decord

    if deinterlace not in DEINTERLACE_MODES:
        raise VcnError(f"deinterlace={deinterlace!r}: choose one of {', '.join(DEINTERLACE_MODES)}")
    p = Path(path)
    if not p.exists():
        raise VcnError(f"{p}: no such file; check the path")
    if not p.is_file():
        raise VcnError(f"{p} is not a file (a directory?); pass a video file")
    if p.stat().st_size == 0:
        raise VcnError(f"{p} is empty (0 bytes): the copy or download did not finish; copy it again")
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as e:
        raise VcnError(f"{p} is not a video ffmpeg can read ({e.__class__.__name__}: {e.strerror}); "
                       f"check that it is a video file, or " + _REENCODE.format(p=p)) from None
    with container:
        if container.format.name in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
            kind = container.format.name.removesuffix("_pipe").upper()
            raise VcnError(f"{p} is a still image ({kind}), not a video (a photo renamed to a video name?); "
                           "vcn needs footage: pass a video file")
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            what = "an audio file with cover art" if container.streams.video else "an audio-only or data file?"
            raise VcnError(f"{p} has no video stream ({what}); pass a file with video")
        stream = videos[0]
        stream_index = stream.index
        rotation, coded_w, coded_h, field_order = _first_frames_geometry(container, stream, p)
        time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        sar = float(sar) if sar and float(sar) > 0 else 1.0
        codec = stream.codec_context.name
        declared_frames = int(stream.frames) or None
        declared_start = float(stream.start_time * time_base) if stream.start_time is not None else None
        if stream.duration:
            declared_duration = float(stream.duration * time_base)
        elif container.duration and len(container.streams) == 1:
            # Only the container's duration is known (MKV): it is the video's when there is no other stream.
            declared_duration = container.duration / 1_000_000  # microseconds (AV_TIME_BASE)
        else:
            declared_duration = None
    # A second open for the demux pass: seeking back is not possible in every container.
    with av.open(str(p)) as container:
        pts, last_duration, demux_error = _packet_times(container, container.streams[stream_index])
    if len(pts) > 1 and min(pts) == max(pts):
        raise VcnError(f"{p}: all {len(pts)} frames carry the same timestamp (a zero-duration stream), so they "
                       "cannot be placed in time; re-encode it with fresh timestamps, e.g. `ffmpeg -fflags "
                       f"+genpts -i {p} -c:v libx264 -vsync cfr fixed.mp4`, and pass fixed.mp4")
    try:
        reader = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, AssertionError, decord.DECORDError) as e:
        raise VcnError(f"{p}: the decoder cannot index this video ({_decord_message(e)}); it is probably cut off "
                       f"(an MP4 whose index was lost) or corrupt; " + _REENCODE.format(p=p)) from None
    n = len(reader)
    if n == 0:
        raise VcnError(f"{p} has a video stream but no frames (zero-length); check the source of this file")
    if n == 1:
        raise VcnError(f"{p} holds a single frame (a still picture of zero duration, not footage); vcn tracks "
                       "faces across frames: pass a video")
    times, end_times, source = _frame_times(reader, pts, last_duration, time_base, fps)
    del reader
    if not times[-1] > times[0]:
        raise VcnError(f"{p}: its {n} frames span no time (a zero-duration stream); re-encode it with fresh "
                       f"timestamps, e.g. `ffmpeg -fflags +genpts -i {p} -c:v libx264 -vsync cfr fixed.mp4`")

    interlaced = field_order != "progressive"
    deinterlaced = deinterlace == "always" or (deinterlace == "auto" and interlaced)
    width, height = round(coded_w * sar), coded_h
    corrections = []
    if deinterlaced:
        shown_first = "top" if field_order != "bff" else "bottom"
        corrections.append(f"deinterlaced: {shown_first} field kept, the other interpolated (field order "
                           f"{field_order if interlaced else 'unflagged'})")
    if width != coded_w:
        corrections.append(f"resampled {coded_w}x{coded_h} to {width}x{height} square pixels (sample aspect "
                           f"ratio {_ratio_text(sar)})")
    if rotation:
        corrections.append(f"turned {rotation} degrees counter-clockwise (display matrix)")
    if rotation in (90, 270):
        width, height = height, width
    if fps <= 0:
        fps = (n - 1) / float(times[-1] - times[0]) if n > 1 and times[-1] > times[0] else 0.0
    decoded_end = float(end_times[-1])
    partial = demux_error
    if declared_frames and n < declared_frames - max(2, 0.01 * declared_frames):
        partial = True
    if declared_duration and declared_start is not None:
        declared_end = declared_start + declared_duration
        if declared_end - decoded_end > max(1.0, 0.05 * declared_duration):
            partial = True
    return VideoInfo(
        path=str(p), n_frames=n, fps=fps, duration_s=decoded_end - float(times[0]), width=int(width),
        height=int(height), coded_width=coded_w, coded_height=coded_h, rotation=rotation,
        sample_aspect_ratio=sar, codec=codec, start_s=float(times[0]), declared_frames=declared_frames,
        declared_duration_s=declared_duration, partial=bool(partial), timestamps_from=source,
        times=times, end_times=end_times, stream_index=stream_index, interlaced=interlaced,
        field_order=field_order if interlaced else "progressive", deinterlaced=deinterlaced, corrections=corrections,
    )


def iter_frames(path: str | Path, batch_frames: int = 64, start_frame: int = 0, end_frame: int | None = None,
                info: VideoInfo | None = None, num_threads: int = 0) -> Iterator[FrameBatch]:
    """Yield frames [start_frame, end_frame) in batches of at most `batch_frames`, one batch in memory at a time.

    Frames are BGR uint8, deinterlaced when the stream is interlaced, turned upright when the container carries a
    rotation and resampled to square pixels. If decoding fails part-way, yields every frame before the failure
    and then raises DecodeError (a VcnError) naming the frame reached.
    """
    info = info or probe_video(path)
    end = info.n_frames if end_frame is None else min(int(end_frame), info.n_frames)
    start = max(0, int(start_frame))
    if batch_frames < 1:
        raise VcnError(f"decode.batch_frames must be at least 1, got {batch_frames}")
    try:
        yield from _decode_batches(path, info, start, end, batch_frames, num_threads)
    finally:
        _return_freed_memory()


def _decode_batches(path: str | Path, info: VideoInfo, start: int, end: int, batch_frames: int,
                    num_threads: int) -> Iterator[FrameBatch]:
    import decord

    reader = None
    for s in range(start, end, batch_frames):
        indices = np.arange(s, min(end, s + batch_frames), dtype=np.int64)
        if reader is None:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
            turned = _decord_turned(frames, info)
        except (decord.DECORDError, RuntimeError) as e:
            # decord's decoding thread reports an error some frames after the packet that caused it (at a
            # different frame from run to run), so the batch is decoded again by PyAV, synchronously: it
            # stops at the same frame every time. A fresh decord reader takes the next batch.
            reader = None
            frames, cause = _decode_with_pyav(path, info, indices)
            turned = False
            if len(frames) < len(indices):
                if len(frames):
                    kept = indices[:len(frames)]
                    yield FrameBatch(_to_display(frames, info, turned), kept, info.times[kept], info.end_times[kept])
                raise DecodeError(path, int(s) + len(frames), info.n_frames, cause or _decord_message(e)) from None
        yield FrameBatch(_to_display(frames, info, turned), indices, info.times[indices], info.end_times[indices])
        del frames  # free this batch before the next is decoded: one batch in memory at a time


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _return_freed_memory() -> None:
    """Give the pages of freed frame batches back to the OS at the end of each decoded span.

    Batches are tens of MB and freed at once, but glibc keeps such freed heap memory when small long-lived
    allocations (the tables a video accumulates) sit above it; decoding one span per shot then grew peak RSS
    by ~3 MB per shot, ~30% from a 1- to a 10-minute video (benchmarks/long_video_memory.py). malloc_trim(0)
    returns the free pages (~1 ms).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _decode_with_pyav(path: str | Path, info: VideoInfo, indices: np.ndarray) -> tuple[np.ndarray, str]:
    """Frames `indices` (consecutive) as stored (RGB, not turned), decoded by PyAV without threads up to the first
    that fails; and that failure's message ("" if none failed)."""
    import av

    frames: list[np.ndarray] = []
    cause = ""
    first = int(indices[0])
    # Half the shortest frame interval: a decoded frame's time matches the first wanted frame's within it.
    tolerance = 0.5 * float(np.min(np.diff(info.times))) if info.n_frames > 1 else 1e-3
    try:
        with av.open(str(path)) as container:
            stream = container.streams[info.stream_index]
            stream.thread_type = "NONE"
            if first > 0:
                container.seek(int(info.times[first] / stream.time_base), stream=stream, backward=True)
            position = None  # index of the next decoded frame once the first wanted one is found
            for frame in container.decode(stream):
                if position is None:
                    if frame.time is None or frame.time < info.times[first] - tolerance:
                        continue
                    if frame.time > info.times[first] + tolerance:
                        return np.zeros((0,), np.uint8), f"frame {first} is missing from the decoded stream"
                    position = first
                frames.append(frame.to_ndarray(format="rgb24"))
                position += 1
                if position > int(indices[-1]):
                    break
    except av.error.FFmpegError as e:
        cause = f"{e.__class__.__name__}: {e.strerror}"
    return (np.stack(frames) if frames else np.zeros((0,), np.uint8)), cause


def _decord_turned(frames: np.ndarray, info: VideoInfo) -> bool:
    """Whether decord applied the display-matrix rotation to these frames (decord 0.6 does: tests check it).
    A quarter turn shows in the shape; a half turn (and a square picture) cannot be told, so trust decord."""
    if info.rotation in (90, 270) and info.coded_height != info.coded_width:
        return frames.shape[1:3] != (info.coded_height, info.coded_width)
    return True


def deinterlace(frames: np.ndarray, top_field_first: bool = True) -> np.ndarray:
    """Field interpolation of woven frames [n, H, W, C] (rows as stored): keep the field shown first, rebuild
    each line of the other as the mean of its neighbours above and below. In place; returns `frames`."""
    height = frames.shape[1]
    if height < 3:
        return frames
    kept = 0 if top_field_first else 1
    lines = np.arange(1 - kept, height, 2)   # the lines of the field that is rebuilt
    above = lines - 1
    below = np.where(lines + 1 < height, lines + 1, lines - 1)
    if kept == 1:  # bottom field kept: line 0 has no line above it
        above = np.where(above >= 0, above, below)
    # uint16 so the sum cannot overflow; +1 rounds half up.
    frames[:, lines] = ((frames[:, above].astype(np.uint16) + frames[:, below] + 1) >> 1).astype(frames.dtype)
    return frames


def _to_display(frames: np.ndarray, info: VideoInfo, turned: bool) -> np.ndarray:
    """Decoded RGB frames -> BGR, progressive, upright, square pixels (in place where the size does not change).
    `turned`: the decoder already applied the rotation."""
    for f in frames:
        cv2.cvtColor(f, cv2.COLOR_RGB2BGR, dst=f)
    k = info.rotation // 90
    if info.deinterlaced:
        if turned and k:
            # Fields are lines as stored: back to the stored orientation first.
            frames, turned = np.rot90(frames, k=-k, axes=(1, 2)), False
        frames = deinterlace(np.ascontiguousarray(frames), top_field_first=info.field_order != "bff")
    if k and not turned:
        frames = np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2)))
    if frames.shape[1:3] != (info.height, info.width):
        # Non-square pixels: resample to the display aspect so faces are not stretched for the detector.
        frames = np.stack([cv2.resize(f, (info.width, info.height), interpolation=cv2.INTER_AREA) for f in frames])
    return frames


def _first_frames_geometry(container, stream, path: Path) -> tuple[int, int, int, str]:
    """Decode the first frames: proves the stream decodes, gives the display-matrix rotation and the coded size,
    and tells interlaced from progressive ("tff", "bff" or "progressive")."""
    import av

    frames = container.decode(stream)
    try:
        frame = next(frames, None)
    except av.error.FFmpegError as e:
        raise VcnError(f"{path}: the first video frame cannot be decoded ({e.__class__.__name__}); "
                       + _REENCODE.format(p=path)) from None
    if frame is None:
        raise VcnError(f"{path} has a video stream but no frames (zero-length); check the source of this file")
    # PyAV reports counter-clockwise degrees in (-180, 180]; keep quarter turns (other angles do not occur in
    # practice and cannot be displayed without cropping).
    rotation = int(round(float(frame.rotation or 0) / 90.0)) * 90 % 360
    interlaced = bool(frame.interlaced_frame)
    try:
        for _, later in zip(range(_INTERLACE_PROBE_FRAMES - 1), frames):
            interlaced = interlaced or bool(later.interlaced_frame)
    except av.error.FFmpegError:
        pass  # a later frame is damaged: iter_frames reports that where it happens
    order = _FIELD_ORDERS.get(int(stream.codec_context.field_order or 0))
    if order is None:
        order = "tff" if interlaced else "progressive"  # flagged without an order: top first is the common case
    return rotation, int(frame.width), int(frame.height), order


def _packet_times(container, stream) -> tuple[array, int, bool]:
    """Presentation timestamps of every video packet (demux only, no decoding), the last packet's duration,
    and whether demuxing stopped on an error (a cut-off file)."""
    import av

    # array('q'), not lists of ints and tuples: a two-hour film has ~200,000 packets (~2 MB here, ~30 MB as lists).
    pts = array("q")
    last_pts, last_duration = None, 0
    error = False
    try:
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None or packet.size == 0:
                continue  # the flush packet, or a packet with no time at all
            stamp = int(stamp)
            pts.append(stamp)
            if last_pts is None or stamp >= last_pts:  # the duration of the packet shown last
                last_pts, last_duration = stamp, int(packet.duration or 0)
    except av.error.FFmpegError:
        error = True
    return pts, last_duration, error


def _frame_times(reader, pts: array, last_duration: int, time_base: Fraction,
                 fps: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame start and end times in seconds, from the container's packet pts sorted into display order.

    decord orders frames by pts too, so the i-th sorted pts is the i-th frame decord returns. decord's own
    timestamps are not used while the counts agree: they are rounded to 0.1 ms and measured from the first
    packet's dts, so B-frame files come out shifted by a frame. If the counts disagree (packets decord
    skipped), fall back to decord's timestamps rather than misalign times and frames.
    """
    n = len(reader)
    ticks = np.sort(np.frombuffer(pts, dtype=np.int64)) if len(pts) else np.zeros(0, np.int64)
    if len(ticks) == n and (n < 2 or np.all(np.diff(ticks) > 0)):
        tb = float(time_base)
        times = ticks.astype(np.float64) * tb
        step = last_duration * tb if last_duration > 0 else (1.0 / fps if fps > 0 else 0.0)
        end_times = np.append(times[1:], times[-1] + step)
        return times, end_times, "container"
    stamps = np.asarray(reader.get_frame_timestamp(list(range(n))), dtype=np.float64)
    return stamps[:, 0].copy(), stamps[:, 1].copy(), "decord"


def _ratio_text(value: float) -> str:
    """A pixel aspect ratio as the fraction it was stored as, e.g. 64:45."""
    ratio = Fraction(value).limit_denominator(1000)
    return f"{ratio.numerator}:{ratio.denominator}"


def _decord_message(error: Exception) -> str:
    """decord's error text without its '[hh:mm:ss] /source/file.cc:123:' prefixes."""
    text = re.sub(r"\[[\d:]+\] \S+:\d+: ", "", str(error)).strip()
    return text[:200] or type(error).__name__
