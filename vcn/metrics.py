"""Clustering scores of face tracks (WCP, PCR, NMI, BCubed) and a reader for the TV-series track labels.

Every score is a pure function of two arrays with one entry per track: the predicted cluster id (an integer,
UNKNOWN = -1 for tracks the method left unclustered) and the true identity (any hashable: ints or strings).
Callers leave out tracks with no ground truth before calling.

How Unknown (-1) tracks count, `unknown=`:
- "singleton" (the headline, used by `clustering_scores`): each Unknown track is its own one-track cluster.
  Every track stays in every score, so methods are compared over the same tracks. An Unknown track is
  trivially pure (WCP cannot drop), but it adds a cluster to PCR and cannot be recalled with its identity's other
  tracks, so BCubed recall and NMI fall: sending hard tracks to Unknown is visible, not free.
- "exclude": scores over the clustered tracks only (WCP "over clustered tracks"); PCR still divides by the
  identities of all tracks. Always read it beside the Unknown share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vcn.errors import VcnError

UNKNOWN = -1
UNKNOWN_POLICIES = ("singleton", "exclude")


# ---------------------------------------------------------------------------------------------- label handling


def _labels(pred: Sequence[int] | np.ndarray, truth: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.ndim != 1 or truth.ndim != 1 or len(pred) != len(truth):
        raise ValueError(f"pred and truth must be 1-d arrays of one length, got shapes {pred.shape} and {truth.shape}")
    if len(pred) and not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f"predicted cluster ids must be integers (UNKNOWN = -1), got dtype {pred.dtype}")
    return pred.astype(np.int64), truth


def _apply_unknown(pred: np.ndarray, truth: np.ndarray, unknown: str) -> tuple[np.ndarray, np.ndarray]:
    """Resolve Unknown tracks by the policy: give each its own new cluster id, or drop it."""
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown={unknown!r}; use one of {UNKNOWN_POLICIES}")
    is_unknown = pred == UNKNOWN
    if unknown == "exclude":
        return pred[~is_unknown], truth[~is_unknown]
    pred = pred.copy()
    first_free = (pred.max() + 1) if len(pred) else 0
    pred[is_unknown] = max(first_free, 0) + np.arange(int(is_unknown.sum()))
    return pred, truth


def _contingency(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse contingency table: for each non-empty (cluster, identity) cell its count and its row and column,
    plus the cluster sizes and identity sizes. Sparse so that 100k clusters x 10k identities stays small."""
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    p, t = p.ravel().astype(np.int64), t.ravel().astype(np.int64)
    n_t = int(t.max()) + 1 if len(t) else 0
    cells, counts = np.unique(p * max(n_t, 1) + t, return_counts=True)
    rows, cols = cells // max(n_t, 1), cells % max(n_t, 1)
    return counts.astype(np.float64), rows, cols, np.bincount(p).astype(np.float64), np.bincount(t).astype(np.float64)


# ---------------------------------------------------------------------------------------------- scores


def unknown_share(pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of tracks labelled Unknown (-1)."""
    pred = np.asarray(pred)
    return float(np.mean(pred == UNKNOWN)) if len(pred) else math.nan


def wcp(pred, truth, unknown: str = "singleton") -> float:
    """Weighted cluster purity: sum over clusters of the count of its majority identity, over all tracks scored."""
    pred, truth = _apply_unknown(*_labels(pred, truth), unknown)
    if not len(pred):
        return math.nan
    counts, rows, _, _, _ = _contingency(pred, truth)
    majority = np.zeros(int(rows.max()) + 1)
    np.maximum.at(majority, rows, counts)
    return float(majority.sum() / len(pred))


def pcr(pred, truth, unknown: str = "singleton") -> float:
    """Predicted cluster ratio: predicted clusters / true identities (of all tracks); 1.0 is ideal."""
    pred, truth = _labels(pred, truth)
    if not len(pred):
        return math.nan
    n_identities = len(np.unique(truth))
    scored, _ = _apply_unknown(pred, truth, unknown)
    return len(np.unique(scored)) / n_identities


def nmi(pred, truth, unknown: str = "singleton") -> float:
    """Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default).
    Two one-cluster labellings score 1.0; one one-cluster labelling against several scores 0.0."""
    pred, truth = _apply_unknown(*_labels(pred, truth), unknown)
    n = len(pred)
    if not n:
        return math.nan
    counts, rows, cols, a, b = _contingency(pred, truth)
    h_pred = -np.sum(a / n * np.log(a / n))
    h_truth = -np.sum(b / n * np.log(b / n))
    if h_pred + h_truth == 0:
        return 1.0
    mi = np.sum(counts / n * np.log(counts * n / (a[rows] * b[cols])))
    return float(np.clip(mi / ((h_pred + h_truth) / 2), 0.0, 1.0))


def bcubed(pred, truth, unknown: str = "singleton") -> tuple[float, float, float]:
    """BCubed precision, recall and F (Bagga and Baldwin 1998; Amigo et al. 2009), averaged over tracks.
    Per track: precision = share of its cluster with its identity, recall = share of its identity in its cluster."""
    pred, truth = _apply_unknown(*_labels(pred, truth), unknown)
    n = len(pred)
    if not n:
        return math.nan, math.nan, math.nan
    counts, rows, cols, a, b = _contingency(pred, truth)
    precision = float(np.sum(counts * counts / a[rows]) / n)
    recall = float(np.sum(counts * counts / b[cols]) / n)
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f


def clustering_scores(pred, truth) -> dict[str, Any]:
    """All scores of one clustering. The unsuffixed scores count each Unknown track as a singleton cluster
    (the headline); `*_clustered` score the clustered tracks only. Report `unknown_share` beside WCP."""
    pred, truth = _labels(pred, truth)
    clustered = pred[pred != UNKNOWN]
    p, r, f = bcubed(pred, truth)
    pc, rc, fc = bcubed(pred, truth, unknown="exclude")
    return {
        "unknown_policy": "singleton",
        "n_tracks": int(len(pred)),
        "n_identities": int(len(np.unique(truth))) if len(truth) else 0,
        "n_clusters": int(len(np.unique(clustered))),   # Unknown not counted
        "n_unknown": int(np.sum(pred == UNKNOWN)),
        "unknown_share": unknown_share(pred),
        "wcp": wcp(pred, truth),
        "pcr": pcr(pred, truth),
        "nmi": nmi(pred, truth),
        "bcubed_precision": p,
        "bcubed_recall": r,
        "bcubed_f": f,
        "wcp_clustered": wcp(pred, truth, unknown="exclude"),
        "pcr_clustered": pcr(pred, truth, unknown="exclude"),
        "nmi_clustered": nmi(pred, truth, unknown="exclude"),
        "bcubed_precision_clustered": pc,
        "bcubed_recall_clustered": rc,
        "bcubed_f_clustered": fc,
    }


# ---------------------------------------------------------------------------------------------- TV track labels


@dataclass
class TvTracks:
    """Face tracks of one TV episode (Big Bang Theory / Buffy, TVPersonID): boxes, no pixels.

    Frames are 1024x576; boxes are x1, y1, x2, y2 (the .mat stores top-left x, y and square w, h).
    """

    episode: str
    track_ids: np.ndarray          # int64 [n], the .mat trackerId
    identities: np.ndarray         # str [n]; "" where the track has no label (see `labelled`)
    labelled: np.ndarray           # bool [n]
    mat_identities: np.ndarray     # str [n], the .mat's coarse label (minor characters all "unknown")
    frames: list[np.ndarray]       # int64 per track
    timestamps: list[np.ndarray]   # float64 seconds per track
    boxes: list[np.ndarray]        # float32 [len, 4] per track

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def n_identities(self) -> int:
        return len(set(self.identities[self.labelled].tolist()))


def load_tv_tracks(path: str | Path) -> TvTracks:
    """Read one episode from `<episode>.facetracks.mat` and `<episode>.ids` (either file, or the shared stem).

    The identity of a track is its `.ids` label (which splits the .mat's "unknown" into distinct people,
    unknown_e03_1, unknown_e03_2, ...); a track missing from `.ids` keeps its .mat label if that names a
    character, and is otherwise unlabelled (`labelled` False): leave those out of the scores.
    """
    import scipy.io

    path = Path(path)
    stem = path.name
    for suffix in (".facetracks.mat", ".ids", ".cast"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    mat_path = path.with_name(stem + ".facetracks.mat")
    ids_path = path.with_name(stem + ".ids")
    if not mat_path.is_file():
        raise VcnError(f"TV track file {mat_path} does not exist; pass a *.facetracks.mat file from "
                       "shared/data/tv_tracks (or its .ids file, or the episode stem)")
    try:
        raw = scipy.io.loadmat(str(mat_path))["FaceTracks"].ravel()
    except (ValueError, KeyError, OSError) as e:
        raise VcnError(f"TV track file {mat_path} is not a MATLAB file with a FaceTracks struct: {e}") from None

    ids_labels: dict[int, str] = {}
    if ids_path.is_file():
        lines = ids_path.read_text().splitlines()
        if lines and not lines[0].startswith("CVHCI_TRACKLABELS"):
            raise VcnError(f"{ids_path} does not start with the CVHCI_TRACKLABELS header; is it a track label file?")
        for line in lines[1:]:
            parts = line.split(None, 1)
            if len(parts) == 2:
                ids_labels[int(parts[0])] = parts[1].strip()

    def flat(track, key) -> np.ndarray:
        return np.asarray(track[key]).ravel()

    track_ids, identities, labelled, mat_identities = [], [], [], []
    frames, timestamps, boxes = [], [], []
    for track in raw:
        tid = int(flat(track, "trackerId")[0])
        gt = flat(track, "groundTruthIdentity")
        mat_label = str(gt[0]).strip() if gt.size else ""
        label = ids_labels.get(tid)
        if label is None and mat_label and mat_label != "unknown":
            label = mat_label
        x, y = flat(track, "x").astype(np.float32), flat(track, "y").astype(np.float32)
        w, h = flat(track, "w").astype(np.float32), flat(track, "h").astype(np.float32)
        track_ids.append(tid)
        identities.append(label or "")
        labelled.append(label is not None)
        mat_identities.append(mat_label)
        frames.append(flat(track, "frames").astype(np.int64))
        timestamps.append(flat(track, "timestamps").astype(np.float64))
        boxes.append(np.stack([x, y, x + w, y + h], axis=1))
    return TvTracks(
        episode=stem,
        track_ids=np.asarray(track_ids, np.int64),
        identities=np.asarray(identities, dtype=str),
        labelled=np.asarray(labelled, bool),
        mat_identities=np.asarray(mat_identities, dtype=str),
        frames=frames,
        timestamps=timestamps,
        boxes=boxes,
    )
