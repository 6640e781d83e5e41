"""Stage 1's tracking: each shot's detections linked into tracks (BoT-SORT), sampled, aligned and cropped, shots in
threads and in order, track ids unique over the video. vcn.pipeline runs it after the scan or during it
(track.during_scan); the distributed layer runs `track_shot` on its actors."""

from __future__ import annotations

import functools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.progress import Progress
from vcn.tables import concat_parts, empty_table, make_table


def assign_shots(detections: pa.Table, shots: pa.Table) -> pa.Table:
    """Set each detection's shot_id from the shot whose frame range holds it."""
    if detections.num_rows == 0:
        return detections
    starts = shots.column("start_frame").to_numpy()
    frames = detections.column("frame").to_numpy()
    shot_ids = (np.searchsorted(starts, frames, side="right") - 1).astype(np.int32)
    idx = detections.schema.get_field_index("shot_id")
    return detections.set_column(idx, detections.schema.field("shot_id"), pa.array(shot_ids, pa.int32()))


def track_shot(path: str | Path, shot: dict[str, Any], detections: pa.Table, cfg: RunConfig,
               first_track_id: int, info=None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Track one shot's detections (BoT-SORT, no ReID), sample a crop every interval_s, align and gate it.

    Returns the shot's detections with track_id set, its tracks and its crops; track ids start at
    `first_track_id`. The shot's frames are decoded again in one forward pass (frame-exact, see
    vcn.video.decode.read_frames); only the sampled ones become pictures.
    """
    from vcn.tracking.botsort import track_shot as link_detections
    from vcn.tracking.sample import sample_crops
    from vcn.video.decode import probe_video

    info = info or probe_video(path, deinterlace=cfg.decode.deinterlace)
    if detections.num_rows == 0:
        return detections, empty_table("tracks"), empty_table("crops")
    detections = detections.sort_by([("frame", "ascending"), ("det_id", "ascending")])
    d = {name: detections.column(name).to_numpy(zero_copy_only=False)
         for name in ("frame", "t_s", "x1", "y1", "x2", "y2", "score", "face_px", "det_id")}
    boxes = np.column_stack([d["x1"], d["y1"], d["x2"], d["y2"]])
    track_ids = link_detections(d["frame"], boxes, d["score"], cfg.track, fps=info.fps, first_track_id=first_track_id)
    detections = detections.set_column(detections.schema.get_field_index("track_id"),
                                       detections.schema.field("track_id"), pa.array(track_ids, pa.int64()))
    sampled: list[int] = []
    track_rows = []
    for track_id in np.unique(track_ids[track_ids >= 0]):
        rows = np.flatnonzero(track_ids == track_id)   # already in frame order
        picks = rows[sample_crops(d["t_s"][rows], cfg.sample.interval_s)]
        sampled.extend(picks.tolist())
        track_rows.append({
            "video_id": shot["video_id"], "track_id": int(track_id), "shot_id": int(shot["shot_id"]),
            "start_frame": int(d["frame"][rows[0]]), "end_frame": int(d["frame"][rows[-1]]),
            "start_s": float(d["t_s"][rows[0]]), "end_s": float(d["t_s"][rows[-1]]),
            "n_detections": len(rows), "n_crops": len(picks), "n_good_crops": 0,
            "mean_score": float(d["score"][rows].mean()),
        })
    crops = _crops_for(path, info, detections, np.array(sorted(sampled), np.int64), shot, cfg)
    good = crops.filter(crops.column("quality_ok")).column("track_id").to_numpy()
    good_per_track = dict(zip(*np.unique(good, return_counts=True))) if len(good) else {}
    for row in track_rows:
        row["n_good_crops"] = int(good_per_track.get(row["track_id"], 0))
    return detections, make_table("tracks", track_rows) if track_rows else empty_table("tracks"), crops


def track_shots(path: str | Path, shots: pa.Table, detections: pa.Table, cfg: RunConfig, info=None,
                progress: Progress | None = None,
                crops_sink: Callable[[pa.Table], None] | None = None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """`track_shot` over every shot in order, track ids unique over the video: detections, tracks, crops.

    With `crops_sink`, each shot's crops go to it as soon as they are made and the crops returned are empty:
    the crop images (the one table that grows with screen time, ~16 kB a crop) are never all in memory.
    """
    with ShotTracking(path, cfg, info, progress, crops_sink) as tracking:
        for shot in shots.to_pylist():
            tracking.submit(shot, shot_detections(detections, shot["shot_id"]))
        return tracking.finish()


class ShotTracking:
    """Shots handed in in order are tracked in threads (track.workers at once) and collected in that order: track
    ids unique over the video, numbered as one shot after another would number them, and each shot's crops sent to
    `crops_sink` (when given) as soon as the shots before it are collected."""

    def __init__(self, path: str | Path, cfg: RunConfig, info=None, progress: Progress | None = None,
                 crops_sink: Callable[[pa.Table], None] | None = None):
        self.path, self.cfg, self.info, self.progress, self.crops_sink = path, cfg, info, progress, crops_sink
        self.workers = shot_workers(cfg.track.workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vcn-track")
        self.pending: deque = deque()
        self.parts: list[tuple[pa.Table, pa.Table, pa.Table]] = []
        self.next_track = 0

    def __enter__(self) -> "ShotTracking":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def submit(self, shot: dict[str, Any], detections: pa.Table) -> None:
        """Track `shot` (a shots-table row; shots in order) from its detections; collect what is done. At most
        2 x workers shots wait uncollected: their crops are in memory until then."""
        # Numbered from 0 and moved when collected, as the distributed layer's tracking actors do.
        self.pending.append(self.pool.submit(track_shot, self.path, shot, detections, self.cfg, 0, info=self.info))
        self._collect(wait_above=2 * self.workers)

    def finish(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        """Wait for every shot: the video's detections (track_id set), tracks and crops (empty with a sink)."""
        self._collect(wait_above=0)
        return tuple(concat_parts(name, [p[i] for p in self.parts])  # type: ignore[return-value]
                     for i, name in enumerate(("detections", "tracks", "crops")))

    def _collect(self, wait_above: int) -> None:
        while self.pending and (len(self.pending) > wait_above or self.pending[0].done()):
            dets, tracks, crops = (shift_track_ids(t, self.next_track) for t in self.pending.popleft().result())
            self.next_track += tracks.num_rows
            if self.crops_sink is not None:
                if crops.num_rows:
                    self.crops_sink(crops)
                crops = empty_table("crops")
            self.parts.append((dets, tracks, crops))
            if self.progress:
                self.progress.advance(1)


DURING_SCAN = ("auto", "always", "never")


def check_during_scan(mode: str) -> None:
    if mode not in DURING_SCAN:
        raise VcnError(f"track.during_scan={mode!r}: choose auto (during the scan where detection runs on a GPU), "
                       f"always or never")


def tracks_during_scan(cfg: RunConfig, detector=None) -> bool:
    """Whether track.during_scan tracks shots while the scan runs: "auto" where detection runs on a GPU (the
    `detector` given, or the one cfg.detect would load)."""
    mode = cfg.track.during_scan
    check_during_scan(mode)
    if mode != "auto":
        return mode == "always"
    from vcn.models import detects_on_gpu

    return detects_on_gpu(cfg.detect, detector)


def shot_workers(setting: int) -> int:
    """Threads for track.workers: 0 = one per CPU core this process may use, at most 8. OMP_NUM_THREADS, where set,
    says how many that is: Ray sets it to a task's CPUs, so a video's task does not take a shared node's cores."""
    if setting < 0:
        raise VcnError(f"track.workers={setting}: use 0 (one per CPU core) or a positive number of shots at once")
    if setting:
        return setting
    omp = os.environ.get("OMP_NUM_THREADS", "")
    cores = int(omp) if omp.isdigit() and int(omp) > 0 else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def shot_detections(detections: pa.Table, shot_id: int) -> pa.Table:
    """The rows of one shot."""
    return detections.filter(pc.equal(detections.column("shot_id"), shot_id))


def shift_track_ids(table: pa.Table, offset: int) -> pa.Table:
    """`table` with every assigned track_id (>= 0) moved up by `offset`; -1 (unassigned) stays. Shots are tracked
    with ids from 0 (here in threads, or on Ray actors) and moved up by the tracks of the shots before them."""
    if offset == 0 or table.num_rows == 0:
        return table
    ids = table.column("track_id")
    shifted = pc.if_else(pc.greater_equal(ids, 0), pc.add(ids, offset), ids)
    return table.set_column(table.schema.get_field_index("track_id"), table.schema.field("track_id"), shifted)


@functools.lru_cache(maxsize=None)   # asked once per shot; the trial encoding need run once per format
def crop_extension(image_format: str) -> str:
    """The file extension crops are encoded with for sample.image_format; VcnError where OpenCV cannot encode it."""
    import cv2

    ext = "." + image_format.lower().lstrip(".")
    try:
        ok = cv2.imencode(ext, np.zeros((8, 8, 3), np.uint8))[0]
    except cv2.error:
        ok = False
    if not ok:
        raise VcnError(f"sample.image_format={image_format!r} cannot be encoded; use png or jpg")
    return ext


def _crops_for(path, info, detections: pa.Table, picks: np.ndarray, shot: dict[str, Any], cfg: RunConfig) -> pa.Table:
    """Aligned, quality-gated, encoded crops of the detections at row positions `picks` (sorted by frame)."""
    import cv2

    from vcn.faces.align import align_face
    from vcn.faces.clothes import torso_histogram
    from vcn.faces.quality import blur_variance, passes_gate
    from vcn.video.decode import read_frames
    from vcn.video.looks import frame_look

    if len(picks) == 0:
        return empty_table("crops")
    chosen = detections.take(pa.array(picks))
    frames = chosen.column("frame").to_numpy()
    landmarks = np.asarray(chosen.column("landmarks").to_pylist(), np.float32).reshape(-1, 5, 2)
    face_px = chosen.column("face_px").to_numpy()
    boxes = np.stack([chosen.column(c).to_numpy() for c in ("x1", "y1", "x2", "y2")], axis=1)
    images: list[bytes] = [b""] * len(picks)
    torsos: list[list[float] | None] = [None] * len(picks)
    looks: list[bytes] = [b""] * len(picks)
    blur = np.zeros(len(picks), np.float32)
    ext = crop_extension(cfg.sample.image_format)
    # One forward pass over the span that holds the sampled frames; only those are converted to pictures.
    for index, picture in read_frames(path, frames, info):
        lo, hi = np.searchsorted(frames, [index, index + 1])
        look = frame_look(picture).tobytes()
        for k in range(lo, hi):
            looks[k] = look
            crop = align_face(picture, landmarks[k], cfg.sample.crop_size)
            blur[k] = blur_variance(crop)
            images[k] = cv2.imencode(ext, crop)[1].tobytes()
            torso = torso_histogram(picture, tuple(boxes[k]))
            torsos[k] = None if torso is None else torso.tolist()
    quality_ok = np.asarray(passes_gate(face_px, blur, cfg.quality), bool)
    columns = {name: chosen.column(name) for name in
               ("video_id", "track_id", "shot_id", "frame", "t_s", "x1", "y1", "x2", "y2", "score", "landmarks",
                "face_px")}
    columns.update({"crop_id": chosen.column("det_id"), "blur_var": blur, "quality_ok": quality_ok,
                    "image": images, "torso_hist": torsos,
                    "frame_look": looks})
    return make_table("crops", columns)
