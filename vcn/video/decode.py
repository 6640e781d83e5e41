"""Probe a video and decode it in bounded batches of upright, square-pixel, progressive BGR frames with their real
timestamps.

PyAV (FFmpeg) does everything: the demux pass gives each frame's presentation timestamp (the packets' pts in
display order are the frame index), and decoding maps every picture the decoder puts out to its index by its
own pts, so a frame is the same picture whether it is reached from the start, after a seek (a shot's crops, a
Ray work unit) or in another batch. decord's random access did not give that: on B-frame H.264 with keyframes
at cuts (../shared simplefr_Video_2.mp4) a reader started mid-file returned another picture for about half the
frames (benchmarks/frame_exact.py), so crops were cut from frames other than their detection's. One batch is in
memory at a time; the decoder's own threads decode (thread_type AUTO).

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
  (the failing batch is decoded again without threads) and then raises `DecodeError` (a VcnError) naming the
  file and the last frame it delivered. Those frames are valid: a caller that wants partial output catches
  DecodeError and records `frames_decoded` as partial.
- a picture the decoder skips without an error (a damaged packet it conceals by dropping) is given the picture
  shown before it, as a player holds it; frames an MP4 edit list puts before the presentation's start are
  decoded for reference by FFmpeg but are not frames of the video (`vinicius_obam.mp4` in ../shared has 49).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
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
    n_frames: int               # frames in the presentation (packets with a time, minus edit-list discards)
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
    timestamps_from: str        # "container": the packets' pts (the only source since decord was dropped)
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


def check_deinterlace(deinterlace: str) -> None:
    if deinterlace not in DEINTERLACE_MODES:
        raise VcnError(f"deinterlace={deinterlace!r}: choose one of {', '.join(DEINTERLACE_MODES)}")


def probe_video(path: str | Path, deinterlace: str = "auto") -> VideoInfo:
    """Read a video's frame count, timing, size, rotation, pixel aspect, interlacing and codec; VcnError if it is
    unusable. `deinterlace`: "auto" (interlaced streams only), "always" or "never"."""
    import av

    check_deinterlace(deinterlace)
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
    n = len(pts)
    if n == 0:
        raise VcnError(f"{p} has a video stream but no frames (zero-length); check the source of this file")
    if n == 1:
        raise VcnError(f"{p} holds a single frame (a still picture of zero duration, not footage); vcn tracks "
                       "faces across frames: pass a video")
    times, end_times = _frame_times(pts, last_duration, time_base, fps)
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
        declared_duration_s=declared_duration, partial=bool(partial), timestamps_from="container",
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
    """Frames [start, end) in batches, each frame the picture whose timestamp is that index's (see _exact_frames).

    Decoding runs with the decoder's threads; a threaded decoder reports a corrupt packet some frames after it
    (at a frame that varies with timing), so on an error the batch is decoded again without threads: that
    stops at the same frame every time, and DecodeError names it.
    """
    import av

    frames = _exact_frames(path, info, start, end, num_threads)
    convert = _Converter(info)
    position = start
    while position < end:
        count = min(batch_frames, end - position)
        pictures = np.empty((count, info.coded_height, info.coded_width, 3), np.uint8)
        try:
            for k in range(count):
                pictures[k] = convert(next(frames))
        except (av.error.FFmpegError, _DecoderStopped) as e:
            frames.close()
            cause = _error_text(e)
            kept = 0
            try:
                for kept, frame in enumerate(_exact_frames(path, info, position, position + count, 1), start=1):
                    pictures[kept - 1] = convert(frame)
            except (av.error.FFmpegError, _DecoderStopped) as again:
                cause = _error_text(again)
            else:
                kept = count
            if kept < count:
                if kept:
                    yield _batch(pictures[:kept], info, position)
                raise DecodeError(path, position + kept, info.n_frames, cause) from None
            # The threaded decoder failed where the synchronous one did not: go on from the next batch.
            frames = _exact_frames(path, info, position + count, end, num_threads)
        yield _batch(pictures, info, position)
        del pictures  # free this batch before the next is decoded: one batch in memory at a time
        position += count


def _batch(pictures: np.ndarray, info: VideoInfo, first: int) -> FrameBatch:
    indices = np.arange(first, first + len(pictures), dtype=np.int64)
    return FrameBatch(_to_display(pictures, info, turned=False), indices, info.times[indices], info.end_times[indices])


class _DecoderStopped(Exception):
    """The decoder ended its output before the frames asked for (no FFmpeg error)."""


def _error_text(error: Exception) -> str:
    strerror = getattr(error, "strerror", None)
    return f"{error.__class__.__name__}: {strerror}" if strerror else str(error) or error.__class__.__name__


def _exact_frames(path: str | Path, info: VideoInfo, start: int, end: int, num_threads: int) -> Iterator[Any]:
    """The decoded pictures (av.VideoFrame, as stored) of frames start, start+1, ..., end-1, each found by its
    presentation timestamp in `info.times`, never by counting after a seek; a `_Converter` turns them into arrays.

    Random access is a seek to the keyframe before the first wanted frame, then decoding forward and dropping
    frames until the first wanted timestamp. If the seek lands after that frame (a container indexed by decode
    time, a keyframe whose leading pictures come before it), it seeks again further back, up to the file's start.
    A picture the decoder never outputs (a damaged packet it skips) is given the picture shown before it, as a
    player holds it. Raises av's FFmpegError where decoding fails, _DecoderStopped if the stream ends early.
    """
    import av

    if start >= end:
        return
    times = info.times
    n = len(times)
    steps = np.diff(times)
    steps = steps[steps > 0]
    # Half the shortest frame interval: a decoded frame's time matches its index's within it.
    tolerance = 0.5 * float(steps.min()) if len(steps) else 1e-3
    margin = 0.0
    while True:
        with av.open(str(path)) as container:
            stream = container.streams[info.stream_index]
            stream.thread_type = "NONE" if num_threads == 1 else "AUTO"
            stream.codec_context.thread_count = max(0, int(num_threads))
            time_base = float(stream.time_base)
            seek_to = float(times[start]) - margin
            seeking = start > 0 and seek_to > float(times[0])
            if seeking:
                container.seek(int(np.floor(seek_to / time_base)), stream=stream, backward=True)
            wanted = start  # the next frame index to deliver
            held = None     # the last picture decoded (given to frames the decoder skips)
            landed = False  # a picture with an index came out after the seek
            for frame in container.decode(stream):
                if frame.pts is None:
                    index = wanted
                else:
                    t = frame.pts * time_base
                    if wanted < n and abs(times[wanted] - t) <= tolerance:
                        index = wanted
                    else:
                        index = int(np.searchsorted(times, t - tolerance))
                        if index >= n or abs(times[index] - t) > tolerance:
                            continue  # a picture with no packet timestamp of its own: not a frame of the index
                if not landed:
                    landed = True
                    if seeking and index > start:
                        break  # the seek went past the first wanted frame: seek again, further back
                if index < wanted:
                    continue
                while wanted < min(index, end):  # frames the decoder skipped: hold the last picture
                    yield held if held is not None else frame
                    wanted += 1
                held = frame
                if wanted < end:
                    yield frame
                    wanted += 1
                if wanted >= end:
                    return
            else:
                if landed or not seeking:
                    raise _DecoderStopped(f"the decoder delivered no picture for frame {wanted} and after")
        margin = max(2.0, 4 * margin)


class _Converter:
    """Decoded pictures (av.VideoFrame) -> BGR uint8 at the coded size (a stream that changes size mid-way is
    scaled), as stored. One swscale context serves every frame of a pass: `frame.to_ndarray` builds one per frame,
    which cost twice the conversion itself (400 sitcom frames: 0.87 s against 0.30 s, the same pictures;
    docs/measurements.md "Decoding"). Not thread-safe: one per decoding pass."""

    def __init__(self, info: VideoInfo):
        from av.video.reformatter import VideoReformatter

        self.width, self.height = info.coded_width, info.coded_height
        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        return self.reformatter.reformat(frame, self.width, self.height, "bgr24").to_ndarray()


def read_frames(path: str | Path, indices, info: VideoInfo, num_threads: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(index, display frame) for each of the sorted frame `indices`, decoded in one forward pass from the first:
    frames between them are decoded (the codec needs them) but not converted, which halves the cost when a
    shot's crops want one frame in twelve. Raises DecodeError where decoding fails."""
    import av

    indices = np.unique(np.asarray(indices, np.int64))
    if len(indices) == 0:
        return
    first, last = int(indices[0]), int(indices[-1])
    keep = set(indices.tolist())
    convert = _Converter(info)
    position = first
    try:
        for frame in _exact_frames(path, info, first, last + 1, num_threads):
            if position in keep:
                picture = convert(frame)[None]
                yield position, _to_display(picture, info, turned=False)[0]
            position += 1
    except (av.error.FFmpegError, _DecoderStopped) as e:
        raise DecodeError(path, position, info.n_frames, _error_text(e)) from None
    finally:
        _return_freed_memory()


def prefetch(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Iterate `items` in a background thread, at most `depth` items ahead of the consumer (0 = no thread).

    Decoding (FFmpeg, with the GIL released) then overlaps with whatever the consumer does with the previous
    batch (detection). Memory: the consumer's item, `depth` queued and one being made. An exception raised by
    `items` (DecodeError) reaches the consumer after every item before it; closing this generator stops the
    thread.
    """
    import queue
    import threading

    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((done, e))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=work, name="vcn-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
            del item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


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


def _to_display(frames: np.ndarray, info: VideoInfo, turned: bool, rgb: bool = False) -> np.ndarray:
    """Decoded BGR frames (RGB if `rgb`) -> BGR, progressive, upright, square pixels (in place where the size
    does not change). `turned`: the decoder already applied the rotation (PyAV does not)."""
    if rgb:
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
            if stamp is None or packet.size == 0 or packet.is_discard:
                # The flush packet, a packet with no time at all, or one the container's edit list puts before
                # the start of the presentation (decoded for reference, never shown: FFmpeg drops its picture).
                continue
            stamp = int(stamp)
            pts.append(stamp)
            if last_pts is None or stamp >= last_pts:  # the duration of the packet shown last
                last_pts, last_duration = stamp, int(packet.duration or 0)
    except av.error.FFmpegError:
        error = True
    return pts, last_duration, error


def _frame_times(pts: array, last_duration: int, time_base: Fraction,
                 fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame start and end times in seconds: the container's packet pts sorted into display order.

    The decoder puts pictures out in pts order, so the i-th sorted pts is frame i; `_exact_frames` finds each
    decoded picture's index by its own pts in these times, so a seek can never shift frames against times.
    """
    ticks = np.sort(np.frombuffer(pts, dtype=np.int64))
    tb = float(time_base)
    times = ticks.astype(np.float64) * tb
    step = last_duration * tb if last_duration > 0 else (1.0 / fps if fps > 0 else 0.0)
    end_times = np.append(times[1:], times[-1] + step)
    return times, end_times


def _ratio_text(value: float) -> str:
    """A pixel aspect ratio as the fraction it was stored as, e.g. 64:45."""
    ratio = Fraction(value).limit_denominator(1000)
    return f"{ratio.numerator}:{ratio.denominator}"
