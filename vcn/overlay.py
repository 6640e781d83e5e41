"""Draw every tracked face box of a `vcn run` output onto its video, labelled and coloured by cluster (H.264)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from vcn.errors import VcnError
from vcn.progress import Progress
from vcn.report.colours import cluster_bgr
from vcn.report.data import read_summary, read_table

UNKNOWN_LABEL = "?"


@dataclass
class OverlayStats:
    path: Path
    frames: int
    boxes: int
    seconds: float


def box_label(cluster_id: int) -> str:
    """What a box says: its cluster id, or '?' for Unknown."""
    return UNKNOWN_LABEL if cluster_id < 0 else str(cluster_id)


def draw_boxes(frame: np.ndarray, boxes: np.ndarray, cluster_ids: np.ndarray) -> np.ndarray:
    """Draw boxes [n, 4] (x1, y1, x2, y2) with their cluster labels onto a BGR frame, in place."""
    h, w = frame.shape[:2]
    thickness = max(2, round(min(h, w) / 240))
    font_scale = max(0.45, min(h, w) / 720)
    for (x1, y1, x2, y2), cid in zip(np.asarray(boxes, np.float64), np.asarray(cluster_ids).tolist()):
        colour = cluster_bgr(int(cid))
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)), int(round(y2)))
        cv2.rectangle(frame, p1, p2, colour, thickness, cv2.LINE_AA)
        text = box_label(int(cid))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thickness - 1))
        # The tag sits above the box, or inside its top when the box touches the frame's top.
        top = p1[1] - th - base - 4 if p1[1] - th - base - 4 >= 0 else p1[1]
        cv2.rectangle(frame, (p1[0], top), (p1[0] + tw + 6, top + th + base + 4), colour, -1)
        b, g, r = colour
        ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
        cv2.putText(frame, text, (p1[0] + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink,
                    max(1, thickness - 1), cv2.LINE_AA)
    return frame


def _boxes_by_frame(video_dir: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame -> (boxes, cluster ids) of the tracked detections (the tracker's unassigned ones are left out)."""
    det = read_table(video_dir, "detections", ["frame", "x1", "y1", "x2", "y2", "track_id"])
    clusters = read_table(video_dir, "clusters", ["track_id", "cluster_id"])
    cluster_of = dict(zip(clusters.column("track_id").to_pylist(), clusters.column("cluster_id").to_pylist()))
    tracks = det.column("track_id").to_numpy()
    keep = tracks >= 0
    frames = det.column("frame").to_numpy()[keep]
    boxes = np.column_stack([det.column(c).to_numpy()[keep] for c in ("x1", "y1", "x2", "y2")]) \
        if keep.any() else np.zeros((0, 4))
    labels = np.array([cluster_of.get(int(t), -1) for t in tracks[keep]], np.int64)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    order = np.argsort(frames, kind="stable")
    frames, boxes, labels = frames[order], boxes[order], labels[order]
    uniq, starts = np.unique(frames, return_index=True)
    ends = np.append(starts[1:], len(frames))
    for f, s, e in zip(uniq.tolist(), starts, ends):
        out[int(f)] = (boxes[s:e], labels[s:e])
    return out


def overlay_video(video: str | Path, video_dir: str | Path, out: str | Path, crf: int = 20,
                  progress: bool = False) -> OverlayStats:
    """Write `out` (.mp4, H.264): the video with each tracked face boxed and tagged by its cluster.

    Frames come from the same decoder as `vcn run` (upright, square pixels), so boxes line up; every frame keeps
    its presentation time, so the output has the input's frame count and timing (variable frame rate included).
    """
    import av

    from vcn.video.decode import iter_frames, probe_video

    t0 = time.perf_counter()
    video, video_dir, out = Path(video), Path(video_dir), Path(out)
    summary = read_summary(video_dir)
    info = probe_video(video)
    made_from = (summary.get("video_info") or {}).get("n_frames")
    if made_from is not None and int(made_from) != info.n_frames:
        raise VcnError(f"{video_dir} was made from a video of {made_from} frames but {video} has {info.n_frames}; "
                       f"pass the video that `vcn run` processed ({summary.get('video', '?')})")
    by_frame = _boxes_by_frame(video_dir)
    with av.open(str(video)) as src:
        stream_in = src.streams.video[0]
        time_base = stream_in.time_base
        rate = stream_in.average_rate or stream_in.guessed_rate or Fraction(round(info.fps * 1000), 1000)
    # yuv420p needs even sizes: an odd row or column is padded by repeating the edge.
    width, height = info.width + info.width % 2, info.height + info.height % 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part{out.suffix}")
    boxes_drawn = 0
    frames_written = 0
    bar = Progress.for_terminal(enabled=progress)
    try:
        with av.open(str(tmp), "w") as dst:
            stream = dst.add_stream("libx264", rate=rate)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = time_base
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            with bar.stage("overlay", total=info.n_frames):
                for batch in iter_frames(video, 32, info=info):
                    for frame, index, t in zip(batch.frames, batch.indices.tolist(), batch.times.tolist()):
                        if index in by_frame:
                            boxes, labels = by_frame[index]
                            draw_boxes(frame, boxes, labels)
                            boxes_drawn += len(boxes)
                        if frame.shape[:2] != (height, width):
                            frame = cv2.copyMakeBorder(frame, 0, height - frame.shape[0], 0,
                                                       width - frame.shape[1], cv2.BORDER_REPLICATE)
                        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
                        vf.pts = int(round(t / time_base))
                        vf.time_base = time_base
                        for packet in stream.encode(vf):
                            dst.mux(packet)
                        frames_written += 1
                    bar.advance(len(batch))
            for packet in stream.encode(None):
                dst.mux(packet)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return OverlayStats(path=out, frames=frames_written, boxes=boxes_drawn, seconds=time.perf_counter() - t0)
