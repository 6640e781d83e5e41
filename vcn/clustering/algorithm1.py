"""Algorithm 1 of VideoClusterNet: parameter-free track clustering with the Eq. 2 loss as the distance.

Exactness of the fast form (METHOD.md stage 3): with p = teacher probabilities and l = student
log-probabilities of a crop, S(a, b) = -(p_a . l_b + p_b . l_a) / 2 is bilinear, so the mean of S over all
cross pairs of two sets is -(mean_p(A) . mean_l(B) + mean_p(B) . mean_l(A)) / 2, and every cluster-pair mean
of one iteration is one matrix product of per-cluster mean vectors.

Elements of a cluster: a one-track cluster's elements are its crops; a cluster of several tracks has its
tracks as elements, each standing for the mean over its crops (so every track weighs the same however long
it is). A cluster's threshold is the mean of S over pairs of distinct elements (a one-crop track uses its
single crop against itself, the only pair it has).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vcn.clustering.groups import group_means


def cluster_pair_losses(p_means: np.ndarray | torch.Tensor, l_means: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sim[j, k] = mean over a in j, b in k of S(a, b) = -(P_j . L_k + P_k . L_j) / 2, all pairs at once.

    p_means, l_means: [C, K] per-cluster means of teacher probabilities and student log-probabilities.
    Symmetric [C, C]. The diagonal holds the mean over ALL ordered pairs of a cluster's elements (self
    pairs included), which is not the cluster's threshold.
    """
    p = torch.as_tensor(p_means, dtype=torch.float64)
    l = torch.as_tensor(l_means, dtype=torch.float64)
    cross = p @ l.T
    return (-0.5 * (cross + cross.T)).numpy()


def within_set_loss(p: np.ndarray, l: np.ndarray) -> float:
    """Mean of S over ordered pairs of distinct rows (a != b); a single row is paired with itself."""
    n = p.shape[0]
    diag = float((p * l).sum())
    if n == 1:
        return -diag
    return -(float(p.sum(axis=0) @ l.sum(axis=0)) - diag) / (n * (n - 1))


@dataclass
class Algorithm1Result:
    track_ids: np.ndarray          # int64 [T], sorted
    labels: np.ndarray             # int64 [T]: cluster index per track, 0..C-1 in order of first track
    iterations: int                # iterations that merged something
    clusters_per_iteration: list[int] = field(default_factory=list)


def track_loss_terms(p: np.ndarray, l: np.ndarray, track_of_crop: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids sorted, mean teacher probabilities, mean student log-probabilities of each track's crops): the
    terms of the Eq. 2 loss between tracks (`cluster_pair_losses` of them)."""
    ids, p_mean = group_means(p, track_of_crop)
    _, l_mean = group_means(l, track_of_crop)
    return ids, p_mean, l_mean


def _track_statistics(p: np.ndarray, l: np.ndarray, track_of_crop: np.ndarray):
    ids, p_mean, l_mean = track_loss_terms(p, l, track_of_crop)
    index = np.searchsorted(ids, track_of_crop)
    thresholds = np.array([within_set_loss(p[index == t], l[index == t]) for t in range(len(ids))])
    return ids, p_mean, l_mean, thresholds


MERGE_RULES = ("either", "both")
# all: every matched pair of an iteration merges at once, transitively (the paper's Algorithm 1);
# best_first: one merge per iteration, the matched pair with the lowest Sim, then the merged cluster's Sim row
# and threshold are recomputed before the next (a cluster that grew is judged as it now is, not as it was).
MERGE_ORDERS = ("all", "best_first")


def pair_matches(sim: np.ndarray, row_thresholds: np.ndarray, col_thresholds: np.ndarray,
                 merge_rule: str = "either") -> np.ndarray:
    """Algorithm 1's match test on a block of Sim: Sim[j, k] below max (either) or min (both) of the row
    cluster's and the column cluster's thresholds. One place for the rule, single-process and in Ray blocks."""
    if merge_rule not in MERGE_RULES:
        raise ValueError(f"merge_rule={merge_rule!r}; choose one of {MERGE_RULES}")
    pair_threshold = np.minimum if merge_rule == "both" else np.maximum
    return sim < pair_threshold(np.asarray(row_thresholds)[:, None], np.asarray(col_thresholds)[None, :])


def algorithm1(p: np.ndarray | torch.Tensor, l: np.ndarray | torch.Tensor, track_of_crop: np.ndarray,
               max_iterations: int = 100, cannot_link: set[tuple[int, int]] | None = None,
               merge_rule: str = "either", merge_order: str = "all") -> Algorithm1Result:
    """Cluster tracks from per-crop teacher probabilities p [N, K] and student log-probabilities l [N, K].

    Start with one cluster per track; clusters j, k match when Sim[j, k] is below their thresholds:
    merge_rule "both" (Sim < min(Thres_j, Thres_k)) or "either" (Sim < max(Thres_j, Thres_k)), the two
    readings of the paper's "lower than either" (METHOD.md; docs/measurements.md "Accuracy" says which measured
    better); matched pairs merge transitively (connected components); thresholds are recomputed; repeat until an
    iteration merges nothing. With `cannot_link` (pairs of track ids that share a frame), matched pairs are
    merged most-similar first and a merge that would put a cannot-link pair in one cluster is skipped.
    merge_order "best_first" merges one pair per iteration instead (`_best_first`; max_iterations does not
    bound it: it stops when no pair matches).
    """
    if merge_order not in MERGE_ORDERS:
        raise ValueError(f"merge_order={merge_order!r}; choose one of {MERGE_ORDERS}")
    p = np.asarray(torch.as_tensor(p, dtype=torch.float64))
    l = np.asarray(torch.as_tensor(l, dtype=torch.float64))
    track_of_crop = np.asarray(track_of_crop)
    if len(track_of_crop) == 0:
        return Algorithm1Result(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, [])
    ids, tp, tl, track_thres = _track_statistics(p, l, track_of_crop)
    n_tracks = len(ids)
    conflicts = np.zeros((n_tracks, n_tracks), dtype=bool)
    i, j = pair_positions(ids, cannot_link)
    conflicts[i, j] = conflicts[j, i] = True

    if merge_order == "best_first":
        members, history = _best_first(tp, tl, track_thres, conflicts, merge_rule)
        return _result(ids, members, len(history) - 1, history)
    members: list[np.ndarray] = [np.array([t]) for t in range(n_tracks)]
    history = [n_tracks]
    merged_iterations = 0
    for _ in range(max_iterations):
        c_p = np.stack([tp[m].mean(axis=0) for m in members])
        c_l = np.stack([tl[m].mean(axis=0) for m in members])
        thres = np.array([track_thres[m[0]] if len(m) == 1 else within_set_loss(tp[m], tl[m]) for m in members])
        sim = cluster_pair_losses(c_p, c_l)
        match = pair_matches(sim, thres, thres, merge_rule)
        np.fill_diagonal(match, False)
        if not match.any():
            break
        if conflicts.any():
            groups = _merge_with_cannot_link(members, match, sim, conflicts)
        else:
            jj, kk = np.nonzero(match)
            graph = coo_matrix((np.ones(len(jj)), (jj, kk)), shape=(len(members), len(members)))
            _, comp = connected_components(graph, directed=False)
            groups = [np.flatnonzero(comp == c) for c in range(comp.max() + 1)]
        if len(groups) == len(members):
            break
        members = [np.sort(np.concatenate([members[g] for g in group])) for group in groups]
        merged_iterations += 1
        history.append(len(members))
    return _result(ids, members, merged_iterations, history)


def _result(ids: np.ndarray, members: list[np.ndarray], iterations: int, history: list[int]) -> Algorithm1Result:
    labels = np.zeros(len(ids), dtype=np.int64)
    for c, m in enumerate(sorted(members, key=lambda m: int(m[0]))):
        labels[m] = c
    return Algorithm1Result(ids.astype(np.int64), labels, iterations, history)


def _best_first(tp: np.ndarray, tl: np.ndarray, track_thres: np.ndarray, conflicts: np.ndarray,
                merge_rule: str) -> tuple[list[np.ndarray], list[int]]:
    """Merge the matched, allowed pair with the lowest Sim, update that cluster's row, repeat until none matches.

    Each merge changes one cluster: its mean vectors, threshold, Sim row and cannot-link row are recomputed
    (O(C K) per merge), so the whole run costs about one Sim matrix per merged track rather than per iteration.
    """
    n = len(tp)
    members: list[np.ndarray | None] = [np.array([t]) for t in range(n)]
    c_p, c_l = tp.copy(), tl.copy()
    thres = track_thres.astype(np.float64).copy()
    sim = cluster_pair_losses(c_p, c_l)
    blocked = conflicts.copy()
    alive = np.ones(n, dtype=bool)
    history = [n]
    while alive.sum() > 1:
        match = pair_matches(sim, thres, thres, merge_rule) & ~blocked
        match &= alive[:, None] & alive[None, :]
        match = np.triu(match, 1)
        if not match.any():
            break
        jj, kk = np.nonzero(match)
        best = int(np.argmin(sim[jj, kk]))
        a, b = int(jj[best]), int(kk[best])
        members[a] = np.sort(np.concatenate([members[a], members[b]]))
        members[b], alive[b] = None, False
        m = members[a]
        c_p[a], c_l[a] = tp[m].mean(axis=0), tl[m].mean(axis=0)
        thres[a] = within_set_loss(tp[m], tl[m])
        row = -0.5 * (c_p @ c_l[a] + c_l @ c_p[a])
        sim[a, :], sim[:, a] = row, row
        blocked[a, :] = blocked[:, a] = blocked[a] | blocked[b]
        history.append(int(alive.sum()))
    return [m for m in members if m is not None], history


def _merge_with_cannot_link(members: list[np.ndarray], match: np.ndarray, sim: np.ndarray,
                            conflicts: np.ndarray) -> list[list[int]]:
    """Union matched clusters most-similar first, skipping unions that would join a cannot-link pair."""
    n = len(members)
    parent = list(range(n))
    tracks = [set(m.tolist()) for m in members]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    jj, kk = np.nonzero(np.triu(match, 1))
    for o in np.argsort(sim[jj, kk], kind="stable"):
        a, b = root(int(jj[o])), root(int(kk[o]))
        if a == b:
            continue
        if conflicts[np.ix_(sorted(tracks[a]), sorted(tracks[b]))].any():
            continue
        parent[b] = a
        tracks[a] |= tracks[b]
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def cosine_vectors(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, l) that make S(a, b) = -cos(a, b), i.e. cosine distance less 1, for Algorithm 1 with cosine."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, x


def pair_positions(track_ids: np.ndarray, pairs: set[tuple[int, int]] | None) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (i, j) in `track_ids` of the (track id, track id) pairs whose two tracks are both there
    and differ: where a cannot-link pair lands in a track-by-track matrix."""
    index = {int(t): k for k, t in enumerate(np.asarray(track_ids).tolist())}
    found = np.array([(index[a], index[b]) for a, b in pairs or () if a in index and b in index and a != b],
                     dtype=np.int64).reshape(-1, 2)
    return found[:, 0], found[:, 1]


def frames_of_tracks(detections) -> dict[int, np.ndarray]:
    """track_id -> the frames it has a detection in, from a detections table (columns track_id and frame;
    untracked detections, track -1, left out): what `cooccurring_pairs` reads."""
    frames = detections.column("frame").to_numpy()
    tracks = detections.column("track_id").to_numpy()
    return {int(t): np.unique(frames[tracks == t]) for t in np.unique(tracks) if t >= 0}


def cooccurring_pairs(frames_of_track: dict[int, np.ndarray]) -> set[tuple[int, int]]:
    """Pairs of track ids (a < b) that have a detection in the same frame: never one person."""
    owner: dict[int, list[int]] = {}
    for t, frames in frames_of_track.items():
        for f in np.unique(np.asarray(frames)).tolist():
            owner.setdefault(int(f), []).append(int(t))
    pairs = set()
    for ts in owner.values():
        ts = sorted(set(ts))
        for i in range(len(ts)):
            for j in range(i + 1, len(ts)):
                pairs.add((ts[i], ts[j]))
    return pairs
