"""What the report and the overlay read from a video's output folder, and the per-cluster facts they show."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vcn.errors import VcnError

UNKNOWN = -1
# Crop columns the report needs besides the pixels (read without `image`, which can be gigabytes for a film).
CROP_META = ["crop_id", "track_id", "shot_id", "frame", "t_s", "score", "blur_var", "quality_ok"]


@dataclass
class Appearance:
    """Where a cluster (or a track set) is on screen within one shot."""

    shot_id: int
    start_s: float
    end_s: float


@dataclass
class ClusterSummary:
    """One cluster as a person sees it: its tracks, screen time, shots, and its best crops first."""

    cluster_id: int
    track_ids: list[int]
    screen_s: float
    appearances: list[Appearance]
    thumb_crop_ids: list[int]                     # best quality first
    reasons: dict[str, int] = field(default_factory=dict)   # Unknown only: reason -> tracks
    mean_quality: float = float("nan")


@dataclass
class VideoTables:
    """The tables of one `vcn run` output folder (crops without their pixels)."""

    path: Path
    summary: dict[str, Any]
    shots: pa.Table
    tracks: pa.Table
    clusters: pa.Table
    crops: pa.Table              # CROP_META columns only

    @property
    def video_id(self) -> str:
        return str(self.summary.get("video_id") or self.path.name)

    @property
    def fps(self) -> float:
        return float((self.summary.get("video_info") or {}).get("fps") or 0.0)


def read_summary(video_dir: Path) -> dict[str, Any]:
    file = video_dir / "summary.json"
    if not file.is_file():
        raise VcnError(f"{video_dir} is not a `vcn run` output folder (no summary.json); pass OUT/<video_id> "
                       "as written by `vcn run VIDEO --out OUT`")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise VcnError(f"{file} is not valid JSON ({e}); re-run `vcn run` with --force to rewrite it") from None


def read_table(video_dir: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    file = video_dir / f"{name}.parquet"
    if not file.is_file():
        stage = "cluster" if name in ("clusters", "embeddings") else ("track" if name in ("tracks", "crops")
                                                                       else "detect")
        raise VcnError(f"{file} is missing: run `vcn run VIDEO --out {video_dir.parent}` with the {stage} stage "
                       "(the default runs all stages)")
    return pq.read_table(file, columns=columns)


def load_video_tables(video_dir: str | Path) -> VideoTables:
    """Read what the report needs; VcnError naming the missing stage when the folder is not clustered yet."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise VcnError(f"{video_dir}: no such folder; pass OUT/<video_id> as written by `vcn run VIDEO --out OUT`")
    summary = read_summary(video_dir)
    return VideoTables(path=video_dir, summary=summary, shots=read_table(video_dir, "shots"),
                       tracks=read_table(video_dir, "tracks"), clusters=read_table(video_dir, "clusters"),
                       crops=read_table(video_dir, "crops", CROP_META))


def read_crop_images(video_dir: str | Path, crop_ids: list[int]) -> dict[int, bytes]:
    """crop_id -> encoded image for the given crops only, streaming the file so memory stays bounded."""
    if not crop_ids:
        return {}
    dataset = ds.dataset(Path(video_dir) / "crops.parquet", format="parquet")
    table = dataset.to_table(columns=["crop_id", "image"],
                             filter=pc.field("crop_id").isin(pa.array(sorted(set(crop_ids)), pa.int64())))
    return dict(zip(table.column("crop_id").to_pylist(), table.column("image").to_pylist()))


def track_seconds(start_s: np.ndarray, end_s: np.ndarray, fps: float) -> np.ndarray:
    """On-screen duration of tracks: end_s is the last detection's time, so one frame is added."""
    frame = 1.0 / fps if fps > 0 else 0.0
    return np.asarray(end_s, np.float64) - np.asarray(start_s, np.float64) + frame


def appearances(shot_ids: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, fps: float) -> list[Appearance]:
    """Per shot, the span from the first track's start to the last track's end (tracks of one person in one
    shot are usually one track or a few broken by occlusion), in shot order."""
    shot_ids = np.asarray(shot_ids)
    ends = np.asarray(start_s, np.float64) + track_seconds(start_s, end_s, fps)
    out = []
    for shot in np.unique(shot_ids):
        sel = shot_ids == shot
        out.append(Appearance(int(shot), float(np.min(np.asarray(start_s)[sel])), float(np.max(ends[sel]))))
    return sorted(out, key=lambda a: (a.start_s, a.shot_id))


def crop_order(quality_ok: np.ndarray, score: np.ndarray, blur_var: np.ndarray) -> np.ndarray:
    """Indices of one track's crops, best first: crops that pass the gates, then detector score, then sharpness.

    Scores are rounded to 0.01 first: RetinaFace scores of clear faces all sit near 0.99, and among those the
    sharper crop is the better thumbnail.
    """
    keys = (-np.asarray(blur_var, np.float64), -np.round(np.asarray(score, np.float64), 2),
            ~np.asarray(quality_ok, bool))
    return np.lexsort(keys)


def best_crops(track_ids: list[int], track_quality: dict[int, float], crops: pa.Table, limit: int) -> list[int]:
    """Crop ids for a row of thumbnails: the best crop of each track, tracks by SER-FIQ quality (highest first),
    then every track's second best, and so on, so a row shows the person's different shots first."""
    if limit <= 0 or crops.num_rows == 0:
        return []
    crop_track = crops.column("track_id").to_numpy()
    wanted = np.isin(crop_track, np.asarray(track_ids, np.int64))
    idx = np.flatnonzero(wanted)
    if len(idx) == 0:
        return []
    cid = crops.column("crop_id").to_numpy()[idx]
    ctr = crop_track[idx]
    ok = crops.column("quality_ok").to_numpy(zero_copy_only=False)[idx]
    score = crops.column("score").to_numpy()[idx]
    blur = crops.column("blur_var").to_numpy()[idx]

    def quality_key(t: int) -> tuple[int, float, int]:
        q = track_quality.get(t, float("nan"))
        return (1, 0.0, t) if q is None or math.isnan(q) else (0, -q, t)

    per_track = []
    for t in sorted(set(int(x) for x in ctr), key=quality_key):
        sel = np.flatnonzero(ctr == t)
        order = crop_order(ok[sel], score[sel], blur[sel])
        per_track.append(cid[sel][order].tolist())
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(p) for p in per_track):
        for crops_of_track in per_track:
            if depth < len(crops_of_track) and len(chosen) < limit:
                chosen.append(int(crops_of_track[depth]))
        depth += 1
    return chosen


def summarise_clusters(tables: VideoTables, thumbs_per_cluster: int = 12,
                       thumbs_unknown: int = 24) -> tuple[list[ClusterSummary], ClusterSummary | None]:
    """The clusters (most screen time first) and the Unknown group (None when every track was clustered).

    Tracks missing from the clusters table (a stale folder) count as Unknown with reason `not_clustered`.
    """
    tr = tables.tracks
    track_ids = tr.column("track_id").to_numpy()
    shot_ids = tr.column("shot_id").to_numpy()
    start_s = tr.column("start_s").to_numpy()
    end_s = tr.column("end_s").to_numpy()
    cl = tables.clusters
    cluster_of = dict(zip(cl.column("track_id").to_pylist(), cl.column("cluster_id").to_pylist()))
    reason_of = dict(zip(cl.column("track_id").to_pylist(), cl.column("reason").to_pylist()))
    quality_of = {t: (float("nan") if q is None else float(q))
                  for t, q in zip(cl.column("track_id").to_pylist(), cl.column("track_quality").to_pylist())}
    labels = np.array([cluster_of.get(int(t), UNKNOWN) for t in track_ids], np.int64)
    seconds = track_seconds(start_s, end_s, tables.fps)

    def summary(cid: int, sel: np.ndarray, limit: int) -> ClusterSummary:
        ids = track_ids[sel].tolist()
        qualities = [quality_of.get(t, float("nan")) for t in ids]
        finite = [q for q in qualities if not math.isnan(q)]
        reasons: dict[str, int] = {}
        if cid == UNKNOWN:
            for t in ids:
                r = reason_of.get(t) or "not_clustered"
                reasons[r] = reasons.get(r, 0) + 1
        return ClusterSummary(
            cluster_id=cid, track_ids=[int(t) for t in ids], screen_s=float(seconds[sel].sum()),
            appearances=appearances(shot_ids[sel], start_s[sel], end_s[sel], tables.fps),
            thumb_crop_ids=best_crops(ids, quality_of, tables.crops, limit), reasons=reasons,
            mean_quality=float(np.mean(finite)) if finite else float("nan"))

    clusters = [summary(int(c), labels == c, thumbs_per_cluster) for c in np.unique(labels[labels >= 0])]
    clusters.sort(key=lambda c: (-c.screen_s, c.cluster_id))
    unknown = summary(UNKNOWN, labels < 0, thumbs_unknown) if (labels < 0).any() else None
    return clusters, unknown


def read_embeddings(video_dir: str | Path, prefer_finetuned: bool = True) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(model name, track ids [n], embeddings [n, d]) of one model from embeddings.parquet: the finetuned one
    when present and preferred (it is what the clusters were made from), else the base one; None if absent."""
    file = Path(video_dir) / "embeddings.parquet"
    if not file.is_file():
        return None
    models = pq.read_table(file, columns=["model"]).column("model")
    names = pc.unique(models).to_pylist()
    if not names:
        return None
    tuned = [m for m in names if m.endswith("+finetuned")]
    base = [m for m in names if not m.endswith("+finetuned")]
    model = (tuned or base)[0] if prefer_finetuned else (base or tuned)[0]
    table = ds.dataset(file, format="parquet").to_table(columns=["track_id", "embedding"],
                                                        filter=pc.field("model") == model)
    if table.num_rows == 0:
        return None
    return model, table.column("track_id").to_numpy(), list_column_matrix(table.column("embedding"))


def list_column_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of equal-length rows as a float32 matrix [rows, d], without a Python loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if len(flat) % n:
        raise VcnError("embeddings table: rows have different lengths; re-run the cluster stage with --force")
    return flat.reshape(n, len(flat) // n)
