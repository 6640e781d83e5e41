"""Score a `vcn run` output folder against a rendered video's ground truth (which track is whom, then WCP etc.)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.optimize import linear_sum_assignment

from vcn.errors import VcnError
from vcn.metrics import UNKNOWN, clustering_scores
from vcn.render import read_truth

# A detection takes the identity of the truth box matched to it, when their overlap reaches this IoU.
IOU_THRESHOLD = 0.3

TRACK_LABELS = pa.schema([
    pa.field("track_id", pa.int64()),
    pa.field("identity", pa.string()),       # null = unlabelled (no detection of the track matched a truth box)
    pa.field("votes", pa.int32()),           # detections of the track that matched `identity`
    pa.field("n_detections", pa.int32()),    # detections of the track
])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [n, 4] with every box in b [m, 4] (x1, y1, x2, y2) -> [n, m]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(det_frames: np.ndarray, det_boxes: np.ndarray, truth_frames: np.ndarray,
                     truth_boxes: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the row of the truth box matched to it in the same frame (IoU >= threshold), else -1;
    and that IoU. One to one per frame, the assignment with the largest total IoU (as MOT scoring matches): a
    second box on one face, or a box across two faces, takes no truth box its better-placed neighbour holds, so
    it stays unlabelled (the shared truth's labellers left such boxes out) instead of naming a split."""
    det_frames = np.asarray(det_frames, np.int64)
    truth_frames = np.asarray(truth_frames, np.int64)
    match = np.full(len(det_frames), -1, np.int64)
    best = np.zeros(len(det_frames), np.float64)
    order = np.argsort(truth_frames, kind="stable")
    sorted_frames = truth_frames[order]
    det_order = np.argsort(det_frames, kind="stable")
    frames, starts = np.unique(det_frames[det_order], return_index=True)
    ends = np.append(starts[1:], len(det_order))
    for frame, s, e in zip(frames, starts, ends):
        lo, hi = np.searchsorted(sorted_frames, frame, "left"), np.searchsorted(sorted_frames, frame, "right")
        if lo == hi:
            continue
        dets, truths = det_order[s:e], order[lo:hi]
        iou = box_iou(det_boxes[dets], truth_boxes[truths])
        # Pairs under the threshold may not be matched: zero them so the assignment never trades for them.
        iou = np.where(iou >= iou_threshold, iou, 0.0)
        rows, cols = linear_sum_assignment(iou, maximize=True)
        ok = iou[rows, cols] > 0
        match[dets[rows[ok]]] = truths[cols[ok]]
        best[dets[rows[ok]]] = iou[rows[ok], cols[ok]]
    return match, best


def label_tracks(detections: pa.Table, truth: pa.Table, iou_threshold: float = IOU_THRESHOLD) -> pa.Table:
    """Each track's identity: the majority over its detections of the truth identity each one matched
    (ties go to the identity with the larger summed IoU). TRACK_LABELS; a track with no match is unlabelled."""
    det = detections.filter(pc.greater_equal(detections["track_id"], 0))
    match, iou = match_detections(det["frame"].to_numpy(), _boxes(det), truth["frame"].to_numpy(),
                                  _boxes(truth), iou_threshold)
    truth_ids = np.asarray(truth["identity"].to_pylist(), dtype=object)
    track_of = det["track_id"].to_numpy()
    votes: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    n_dets: dict[int, int] = defaultdict(int)
    for tid, m, v in zip(track_of.tolist(), match.tolist(), iou.tolist()):
        n_dets[tid] += 1
        if m >= 0:
            cell = votes[tid][truth_ids[m]]
            cell[0] += 1
            cell[1] += v
    rows = []
    for tid in sorted(n_dets):
        if votes[tid]:
            identity, (count, _) = max(votes[tid].items(), key=lambda kv: (kv[1][0], kv[1][1]))
        else:
            identity, count = None, 0
        rows.append({"track_id": tid, "identity": identity, "votes": count, "n_detections": n_dets[tid]})
    return pa.Table.from_pylist(rows, schema=TRACK_LABELS)


def evaluate(pred_dir: str | Path, truth_path: str | Path, video_id: str | None = None,
             iou_threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Score the `tracks`, `detections` and `clusters` tables of a `vcn run` output folder against a
    ground-truth table (vcn.render.TRUTH_SCHEMA). Unlabelled tracks (no detection overlaps a truth box)
    are left out of the scores and counted; a track with no row in `clusters` counts as Unknown."""
    pred_dir = Path(pred_dir)
    tracks = _read_output_table(pred_dir, "tracks")
    detections = _read_output_table(pred_dir, "detections")
    clusters = _read_output_table(pred_dir, "clusters")
    truth = read_truth(truth_path)
    video_id = _one_video(pred_dir, video_id, tracks, detections, clusters)
    tracks, detections, clusters = (_only_video(t, video_id) for t in (tracks, detections, clusters))
    result: dict[str, Any] = {"pred_dir": str(pred_dir), "truth": str(truth_path), "video_id": video_id}
    result.update(evaluate_tables(tracks, detections, clusters, truth, iou_threshold))
    return result


def evaluate_tables(tracks: pa.Table, detections: pa.Table, clusters: pa.Table, truth: pa.Table,
                    iou_threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """`evaluate` on one video's tables in memory (benchmarks score several clusterings of one run)."""
    labels = label_tracks(detections, truth, iou_threshold)
    identity_of = dict(zip(labels["track_id"].to_pylist(), labels["identity"].to_pylist()))
    cluster_of = dict(zip(clusters["track_id"].to_pylist(), clusters["cluster_id"].to_pylist()))
    track_ids = tracks["track_id"].to_pylist()
    labelled = [t for t in track_ids if identity_of.get(t) is not None]
    pred = np.array([cluster_of.get(t, UNKNOWN) for t in labelled], np.int64)
    true = np.array([identity_of[t] for t in labelled], dtype=object).astype(str)

    match, _ = match_detections(detections["frame"].to_numpy(), _boxes(detections), truth["frame"].to_numpy(),
                                _boxes(truth), iou_threshold)
    matched_truth = np.zeros(truth.num_rows, bool)
    matched_truth[match[match >= 0]] = True
    labelled_rows = labels.filter(pc.is_valid(labels["identity"]))
    votes, n_dets = labelled_rows["votes"].to_numpy(), labelled_rows["n_detections"].to_numpy()
    truth_identities = set(truth["identity"].to_pylist())

    result: dict[str, Any] = {
        "iou_threshold": iou_threshold,
        "tracks_predicted": len(track_ids),
        "tracks_labelled": len(labelled),
        "tracks_unlabelled": len(track_ids) - len(labelled),
        "tracks_without_cluster_row": sum(1 for t in track_ids if t not in cluster_of),
        "truth_identities": len(truth_identities),
        "identities_found": len(set(true.tolist())),
        # Of the truth boxes, the share some detection overlaps (detector + quality of the truth boxes).
        "truth_box_recall": float(matched_truth.mean()) if truth.num_rows else float("nan"),
        "detection_precision": float(np.mean(match >= 0)) if len(match) else float("nan"),
        # Per labelled track, the share of its detections that carry its identity (1.0 = no identity switch).
        "track_label_agreement": float(np.mean(votes / n_dets)) if len(votes) else float("nan"),
    }
    result.update(clustering_scores(pred, true))
    return result


def _boxes(table: pa.Table) -> np.ndarray:
    return np.stack([table[c].to_numpy().astype(np.float64) for c in ("x1", "y1", "x2", "y2")], axis=1) \
        if table.num_rows else np.zeros((0, 4))


def _read_output_table(pred_dir: Path, name: str) -> pa.Table:
    """`<pred_dir>/<name>.parquet`, or a folder `<pred_dir>/<name>/` of Parquet parts."""
    for candidate in (pred_dir / f"{name}.parquet", pred_dir / name):
        if candidate.exists():
            try:
                return pq.read_table(candidate)
            except (pa.ArrowInvalid, OSError) as e:
                raise VcnError(f"{candidate} is not a readable Parquet table ({e}); re-run vcn run") from None
    raise VcnError(f"{pred_dir} has no {name}.parquet; pass the output folder of a finished `vcn run`")


def _one_video(pred_dir: Path, video_id: str | None, *tables: pa.Table) -> str | None:
    ids = set()
    for t in tables:
        if "video_id" in t.column_names:
            ids.update(v for v in t["video_id"].unique().to_pylist() if v is not None)
    if video_id is not None:
        if video_id not in ids:
            raise VcnError(f"{pred_dir} holds no video {video_id!r}; it holds {sorted(ids)}")
        return video_id
    if len(ids) > 1:
        raise VcnError(f"{pred_dir} holds {len(ids)} videos ({', '.join(sorted(ids)[:5])}, ...); "
                       "pass video_id= (--video-id) to say which one the ground truth belongs to")
    return next(iter(ids), None)


def _only_video(table: pa.Table, video_id: str | None) -> pa.Table:
    if video_id is None or "video_id" not in table.column_names:
        return table
    return table.filter(pc.equal(table["video_id"], video_id))


def to_json(result: Any) -> str:
    """JSON text of a result with NaN written as null (plain json.dumps writes NaN, which is not JSON)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(result), indent=2, allow_nan=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vcn.evaluate", description=evaluate.__doc__)
    parser.add_argument("pred_dir", help="output folder of vcn run (tracks/detections/clusters Parquet tables)")
    parser.add_argument("truth", help="ground-truth Parquet table written beside a rendered video")
    parser.add_argument("--video-id", default=None)
    parser.add_argument("--iou", type=float, default=IOU_THRESHOLD)
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.pred_dir, args.truth, video_id=args.video_id, iou_threshold=args.iou)
    except VcnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
