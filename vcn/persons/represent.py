"""One row per cluster of a video output: its representative BASE embedding, screen time and thumbnail crop.

Only the base backbone's embeddings (model without '+finetuned') are used: they are the one space shared by all
videos, while each video's finetuned model is its own. The representative is the L2-normalised mean of the
cluster's L2-normalised crop embeddings, so long tracks weigh by their crops and one odd crop moves it little.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vcn.errors import VcnError
from vcn.report.data import list_column_matrix, track_seconds
from vcn.search import _base_model

def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class VideoClusters:
    """The clusters of one video as the person index needs them (arrays aligned by row)."""

    video_id: str
    model: str | None                 # base model of the embeddings; None when the video has no clusters
    cluster_id: np.ndarray            # int64 [k]
    n_tracks: np.ndarray              # int32 [k]
    n_crops: np.ndarray               # int32 [k]
    screen_s: np.ndarray              # float64 [k]
    embedding: np.ndarray             # float32 [k, d], unit rows
    thumb_crop_id: np.ndarray         # int64 [k]
    cooccurring: list[tuple[int, int]]  # pairs of rows (i < j) whose tracks share a frame: certainly two people

    def __len__(self) -> int:
        return len(self.cluster_id)

    def shares_frame_with(self) -> list[list[int]]:
        """Per row, the cluster ids of this video that share a frame with it."""
        out: list[list[int]] = [[] for _ in range(len(self))]
        for a, b in self.cooccurring:
            out[a].append(int(self.cluster_id[b]))
            out[b].append(int(self.cluster_id[a]))
        return [sorted(x) for x in out]


def cluster_representatives(video_dir: str | Path, video_id: str | None = None) -> VideoClusters:
    """Read clusters, base embeddings and tracks of one `vcn run` output folder (all stages done)."""
    video_dir = Path(video_dir)
    for name in ("summary.json", "clusters.parquet", "embeddings.parquet", "tracks.parquet"):
        if not (video_dir / name).is_file():
            raise VcnError(f"{video_dir / name} is missing: run `vcn run VIDEO --out ...` with all stages "
                           "(detect,track,cluster) before indexing persons")
    summary = json.loads((video_dir / "summary.json").read_text())
    video_id = video_id or str(summary.get("video_id") or video_dir.name)
    fps = float((summary.get("video_info") or {}).get("fps") or 0.0)
    file = video_dir / "embeddings.parquet"
    model = _base_model(pc.unique(pq.read_table(file, columns=["model"]).column("model")).to_pylist(), str(file))
    clusters = pq.read_table(video_dir / "clusters.parquet", columns=["track_id", "cluster_id"])
    tracks = pq.read_table(video_dir / "tracks.parquet", columns=["track_id", "shot_id", "start_frame",
                                                                   "end_frame", "start_s", "end_s"])
    empty = VideoClusters(video_id, model, np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32),
                          np.zeros(0), np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [])
    if model is None:
        return empty
    emb = ds.dataset(file, format="parquet").to_table(columns=["crop_id", "track_id", "embedding"],
                                                      filter=pc.field("model") == model)
    cluster_of = {int(t): int(c) for t, c in zip(clusters.column("track_id").to_pylist(),
                                                 clusters.column("cluster_id").to_pylist()) if c is not None}
    crop_track = emb.column("track_id").to_numpy()
    crop_cluster = np.array([cluster_of.get(int(t), -1) for t in crop_track], np.int64)
    keep = crop_cluster >= 0
    if not keep.any():
        return empty
    vectors = unit(list_column_matrix(emb.column("embedding"))[keep])
    crop_ids = emb.column("crop_id").to_numpy()[keep]
    crop_cluster = crop_cluster[keep]
    ids = np.unique(crop_cluster)
    reps = np.zeros((len(ids), vectors.shape[1]), np.float32)
    thumbs = np.zeros(len(ids), np.int64)
    n_crops = np.zeros(len(ids), np.int32)
    for i, c in enumerate(ids.tolist()):
        sel = crop_cluster == c
        reps[i] = unit(vectors[sel].mean(axis=0))
        # The most typical face of the cluster: its crop nearest the mean.
        thumbs[i] = crop_ids[sel][int(np.argmax(vectors[sel] @ reps[i]))]
        n_crops[i] = int(sel.sum())
    t_ids = tracks.column("track_id").to_numpy()
    t_cluster = np.array([cluster_of.get(int(t), -1) for t in t_ids], np.int64)
    # A cluster whose crops all failed the quality gate has no embedding: it cannot be linked, so it is left out.
    t_cluster[~np.isin(t_cluster, ids)] = -1
    seconds = track_seconds(tracks.column("start_s").to_numpy(), tracks.column("end_s").to_numpy(), fps)
    n_tracks = np.array([int((t_cluster == c).sum()) for c in ids], np.int32)
    screen = np.array([float(seconds[t_cluster == c].sum()) for c in ids])
    return VideoClusters(video_id, model, ids.astype(np.int64), n_tracks, n_crops, screen, reps, thumbs,
                         cooccurring_clusters(ids, t_cluster, tracks))


def cooccurring_clusters(ids: np.ndarray, t_cluster: np.ndarray, tracks: pa.Table) -> list[tuple[int, int]]:
    """Row pairs (i < j) of `ids` with a track of each on screen in the same frame of the same shot.

    Two faces in one frame are two people whatever the clustering said, so these pairs give the catalogue a
    set of different-person distances that does not depend on how well each video was clustered.
    """
    row_of = {int(c): i for i, c in enumerate(ids.tolist())}
    shot = tracks.column("shot_id").to_numpy()
    start = tracks.column("start_frame").to_numpy()
    end = tracks.column("end_frame").to_numpy()
    pairs: set[tuple[int, int]] = set()
    sel = np.flatnonzero(t_cluster >= 0)
    order = sel[np.lexsort((start[sel], shot[sel]))]
    # Sweep per shot: tracks sorted by start; each overlaps the still-open tracks before it.
    open_tracks: list[int] = []
    current_shot = None
    for t in order.tolist():
        if shot[t] != current_shot:
            open_tracks, current_shot = [], shot[t]
        open_tracks = [o for o in open_tracks if end[o] >= start[t]]
        for o in open_tracks:
            a, b = row_of[int(t_cluster[o])], row_of[int(t_cluster[t])]
            if a != b:
                pairs.add((min(a, b), max(a, b)))
        open_tracks.append(t)
    return sorted(pairs)
