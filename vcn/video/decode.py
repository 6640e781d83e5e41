"""Probe a video and decode it in bounded batches of upright, square-pixel BGR frames with their real timestamps.

decord decodes (batched `get_batch`, one batch in memory at a time); PyAV reads what decord does not expose
reliably: the container's presentation timestamps, the display-matrix rotation and the sample aspect ratio.

Broken files (decision, documented here and in VideoInfo):
- missing, empty, not a video, no video stream, no frames, first frame undecodable: `probe_video` raises VcnError.
- the container promises more than the file holds (a cut-off download: fewer packets than its header declares):
  `probe_video` returns `partial=True`, and `iter_frames` decodes the frames that are there.
- a frame stops decoding part-way (corrupt data inside the file): `iter_frames` raises `DecodeError` (a VcnError)
  naming the file and the last frame it delivered, after yielding every batch before it. Those batches are valid:
  a caller that wants partial output catches DecodeError and records `frames_decoded` as partial.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from vcn.errors import VcnError

_REENCODE = "re-encode it, e.g. `ffmpeg -i {p} -c:v libx264 -movflags +faststart fixed.mp4`, and pass fixed.mp4"


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


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame count, timing, size, rotation, pixel aspect and codec; VcnError if it is unusable."""
    import av
    import decord

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
        if not container.streams.video:
            raise VcnError(f"{p} has no video stream (an audio-only or data file?); pass a file with video")
        stream = container.streams.video[0]
        rotation, coded_w, coded_h = _first_frame_geometry(container, stream, p)
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
        pts, last_duration, demux_error = _packet_times(container, container.streams.video[0])
    try:
        reader = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, AssertionError, decord.DECORDError) as e:
        raise VcnError(f"{p}: the decoder cannot index this video ({_decord_message(e)}); it is probably cut off "
                       f"(an MP4 whose index was lost) or corrupt; " + _REENCODE.format(p=p)) from None
    n = len(reader)
    if n == 0:
        raise VcnError(f"{p} has a video stream but no frames (zero-length); check the source of this file")
    times, end_times, source = _frame_times(reader, pts, last_duration, time_base, fps)
    del reader

    width, height = round(coded_w * sar), coded_h
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
        times=times, end_times=end_times,
    )


def iter_frames(path: str | Path, batch_frames: int = 64, start_frame: int = 0, end_frame: int | None = None,
                info: VideoInfo | None = None, num_threads: int = 0) -> Iterator[FrameBatch]:
    """Yield frames [start_frame, end_frame) in batches of at most `batch_frames`, one batch in memory at a time.

    Frames are BGR uint8, turned upright when the container carries a rotation and resampled to square pixels.
    Raises DecodeError (a VcnError) if decoding fails part-way, after yielding every good batch before it.
    """
    import decord

    info = info or probe_video(path)
    end = info.n_frames if end_frame is None else min(int(end_frame), info.n_frames)
    start = max(0, int(start_frame))
    if batch_frames < 1:
        raise VcnError(f"decode.batch_frames must be at least 1, got {batch_frames}")
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
    for s in range(start, end, batch_frames):
        indices = np.arange(s, min(end, s + batch_frames), dtype=np.int64)
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(path, int(s), info.n_frames, _decord_message(e)) from None
        yield FrameBatch(_to_display(frames, info), indices, info.times[indices], info.end_times[indices])


def _to_display(frames: np.ndarray, info: VideoInfo) -> np.ndarray:
    """decord's RGB frames -> BGR, upright, square pixels (in place where the size does not change)."""
    for f in frames:
        cv2.cvtColor(f, cv2.COLOR_RGB2BGR, dst=f)
    if info.rotation in (90, 270) and frames.shape[1:3] == (info.coded_height, info.coded_width) \
            and info.coded_height != info.coded_width:
        # decord 0.6 applies the display matrix itself (tests check it); rotate here only if it did not.
        frames = np.ascontiguousarray(np.rot90(frames, k=info.rotation // 90, axes=(1, 2)))
    if frames.shape[1:3] != (info.height, info.width):
        # Non-square pixels: resample to the display aspect so faces are not stretched for the detector.
        frames = np.stack([cv2.resize(f, (info.width, info.height), interpolation=cv2.INTER_AREA) for f in frames])
    return frames


def _first_frame_geometry(container, stream, path: Path) -> tuple[int, int, int]:
    """Decode the first frame: proves the stream decodes and gives the display-matrix rotation."""
    import av

    try:
        frame = next(container.decode(stream), None)
    except av.error.FFmpegError as e:
        raise VcnError(f"{path}: the first video frame cannot be decoded ({e.__class__.__name__}); "
                       + _REENCODE.format(p=path)) from None
    if frame is None:
        raise VcnError(f"{path} has a video stream but no frames (zero-length); check the source of this file")
    # PyAV reports counter-clockwise degrees in (-180, 180]; keep quarter turns (other angles do not occur in
    # practice and cannot be displayed without cropping).
    rotation = int(round(float(frame.rotation or 0) / 90.0)) * 90 % 360
    return rotation, int(frame.width), int(frame.height)


def _packet_times(container, stream) -> tuple[list[int], int, bool]:
    """Presentation timestamps of every video packet (demux only, no decoding), the last packet's duration,
    and whether demuxing stopped on an error (a cut-off file)."""
    import av

    pts: list[int] = []
    durations: list[tuple[int, int]] = []
    error = False
    try:
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None or packet.size == 0:
                continue  # the flush packet, or a packet with no time at all
            pts.append(int(stamp))
            durations.append((int(stamp), int(packet.duration or 0)))
    except av.error.FFmpegError:
        error = True
    last_duration = max(durations)[1] if durations else 0
    return pts, last_duration, error


def _frame_times(reader, pts: list[int], last_duration: int, time_base: Fraction,
                 fps: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame start and end times in seconds, from the container's packet pts sorted into display order.

    decord orders frames by pts too, so the i-th sorted pts is the i-th frame decord returns. decord's own
    timestamps are not used while the counts agree: they are rounded to 0.1 ms and measured from the first
    packet's dts, so B-frame files come out shifted by a frame. If the counts disagree (packets decord
    skipped), fall back to decord's timestamps rather than misalign times and frames.
    """
    n = len(reader)
    if len(pts) == n and len(set(pts)) == n:
        ticks = np.sort(np.asarray(pts, dtype=np.int64))
        tb = float(time_base)
        times = ticks.astype(np.float64) * tb
        step = last_duration * tb if last_duration > 0 else (1.0 / fps if fps > 0 else 0.0)
        end_times = np.append(times[1:], times[-1] + step)
        return times, end_times, "container"
    stamps = np.asarray(reader.get_frame_timestamp(list(range(n))), dtype=np.float64)
    return stamps[:, 0].copy(), stamps[:, 1].copy(), "decord"


def _decord_message(error: Exception) -> str:
    """decord's error text without its '[hh:mm:ss] /source/file.cc:123:' prefixes."""
    text = re.sub(r"\[[\d:]+\] \S+:\d+: ", "", str(error)).strip()
    return text[:200] or type(error).__name__
