"""Link one shot's face detections into tracks with boxmot's BoT-SORT (motion + IoU only, no ReID weights).

A fresh tracker per shot, so no track crosses a cut (METHOD.md 1.4). Camera-motion compensation is off: it
needs the frames, and tracking runs on the detection table after the decode pass has let them go.
"""

from __future__ import annotations

import logging

import numpy as np

from vcn.config import TrackConfig
from vcn.errors import VcnError


def check_tracker(cfg: TrackConfig) -> None:
    if cfg.tracker != "botsort":
        raise VcnError(f"track.tracker={cfg.tracker!r} is not available; the tracker is 'botsort'")
    if cfg.with_reid:
        raise VcnError("track.with_reid=true needs ReID weights, which vcn never downloads; set track.with_reid=false")


def _new_tracker(cfg: TrackConfig, fps: float):
    from boxmot.trackers.box.botsort.tracker import BotSort

    # boxmot logs an INFO line per tracker built, i.e. one per shot here; keep its warnings only.
    logging.getLogger("boxmot").setLevel(logging.WARNING)

    check_tracker(cfg)
    return BotSort(
        track_high_thresh=cfg.track_high_thresh,
        track_low_thresh=cfg.track_low_thresh,
        new_track_thresh=cfg.new_track_thresh,
        track_buffer=cfg.track_buffer,
        match_thresh=cfg.match_thresh,
        # boxmot scales track_buffer (frames) by frame_rate / 30, so a lost face is kept for the same time.
        frame_rate=max(1, int(round(fps))) if fps and fps > 0 else 30,
        use_embeddings=False,  # no appearance model: boxmot would otherwise build (and download) a ReID net
        use_cmc=False,
    )


def track_shot(frames: np.ndarray, boxes: np.ndarray, scores: np.ndarray, cfg: TrackConfig | None = None,
               fps: float = 30.0, first_track_id: int = 0) -> np.ndarray:
    """Track ids for one shot's detections (any order): int64 [n], -1 where unassigned or in a dropped track.

    frames: int [n] frame index of each detection; boxes: float [n, 4] x1, y1, x2, y2; scores: float [n].
    Ids run first_track_id, first_track_id + 1, ... in order of each track's first detection, so a video
    numbers its tracks uniquely by passing the previous shot's next id. Tracks with fewer than
    cfg.min_track_len detections are dropped (-1).
    """
    cfg = cfg or TrackConfig()
    frames = np.asarray(frames, np.int64)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    n = len(frames)
    raw = np.full(n, -1, np.int64)
    if n == 0:
        return raw
    tracker = _new_tracker(cfg, fps)
    # A canonical order (frame, then score, then position) so the result does not depend on input order.
    order = np.lexsort((boxes[:, 1], boxes[:, 0], -scores, frames))
    sorted_frames = frames[order]
    # Every frame between the first and last detection is stepped, empty ones too, so lost tracks age.
    first, last = int(sorted_frames[0]), int(sorted_frames[-1])
    starts = np.searchsorted(sorted_frames, np.arange(first, last + 2))
    empty = np.zeros((0, 6), np.float32)
    for k in range(last - first + 1):
        sel = order[starts[k]:starts[k + 1]]
        if len(sel):
            dets = np.column_stack([boxes[sel], scores[sel], np.zeros(len(sel), np.float32)]).astype(np.float32)
        else:
            dets = empty
        out = tracker.update(dets, None)
        # Output rows: x1, y1, x2, y2, track id, score, class, index of the detection in this frame's input.
        for row in np.asarray(out).reshape(-1, 8):
            raw[sel[int(row[7])]] = int(row[4])
        # BoT-SORT reports a track born after the shot's first frame only from its second detection on;
        # its first detection belongs to it too (it is still unconfirmed, so it is in no output row).
        for track in tracker.active_tracks:
            if not track.is_activated and track.start_frame == tracker.frame_count:
                raw[sel[int(track.det_ind)]] = int(track.id)
    return _renumber(raw, order, cfg.min_track_len, first_track_id)


def _renumber(raw: np.ndarray, order: np.ndarray, min_len: int, first_id: int) -> np.ndarray:
    """Consecutive ids from first_id in order of first appearance (`order`: detections in time order)."""
    ids = np.full(len(raw), -1, np.int64)
    tracked = raw >= 0
    if not tracked.any():
        return ids
    labels, counts = np.unique(raw[tracked], return_counts=True)
    keep = set(labels[counts >= max(1, min_len)].tolist())
    mapping: dict[int, int] = {}
    for i in order:
        r = int(raw[i])
        if r in keep:
            if r not in mapping:
                mapping[r] = first_id + len(mapping)
            ids[i] = mapping[r]
    return ids


def link_shots(shot_ids: np.ndarray, frames: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
               cfg: TrackConfig | None = None, fps: float = 30.0, first_track_id: int = 0) -> np.ndarray:
    """track_shot over every shot of a video's detection arrays (fresh tracker each), ids unique across the video.
    (Runs use vcn.tracking.shots, which also crops; this array form is for checking the linking alone.)"""
    shot_ids = np.asarray(shot_ids)
    frames = np.asarray(frames, np.int64)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    ids = np.full(len(frames), -1, np.int64)
    next_id = first_track_id
    for shot in np.unique(shot_ids):
        sel = np.flatnonzero(shot_ids == shot)
        shot_ids_out = track_shot(frames[sel], boxes[sel], scores[sel], cfg, fps, next_id)
        ids[sel] = shot_ids_out
        if (shot_ids_out >= 0).any():
            next_id = int(shot_ids_out.max()) + 1
    return ids
