"""Baseline track clusterings on mean track embeddings: HAC (average, cosine), DBSCAN-style and FINCH-style.

Each takes one row per track and returns an int64 label per row. These need a threshold (HAC, DBSCAN) or a
choice of level (FINCH): they are the comparisons Algorithm 1 is measured against, not the method.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist

from vcn.clustering.groups import group_means


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0..C-1 in order of first appearance (negative labels kept as -1)."""
    out = np.full(len(labels), -1, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, lab in enumerate(np.asarray(labels).tolist()):
        if lab < 0:
            continue
        out[i] = seen.setdefault(lab, len(seen))
    return out


def mean_track_embeddings(embeddings: np.ndarray, track_of_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(track ids sorted, mean of the L2-normalised crop embeddings of each track)."""
    return group_means(_unit_rows(embeddings), track_of_crop)


def hac_cluster(track_means: np.ndarray, threshold: float = 0.6) -> np.ndarray:
    """Agglomerative clustering, average linkage on cosine distance, cut at distance `threshold`."""
    n = len(track_means)
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    z = linkage(pdist(_unit_rows(track_means), metric="cosine"), method="average")
    return _relabel(fcluster(z, t=threshold, criterion="distance"))


def dbscan_cluster(track_means: np.ndarray, eps: float = 0.4, min_samples: int = 2) -> np.ndarray:
    """DBSCAN on cosine distance: core points have >= min_samples points (itself included) within eps;
    clusters are core points connected through eps-neighbourhoods plus the border points they reach.
    Noise (neither core nor reachable) is labelled -1.
    """
    x = _unit_rows(track_means)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dist = 1.0 - x @ x.T
    near = dist <= eps
    core = near.sum(axis=1) >= min_samples
    labels = np.full(n, -1, dtype=np.int64)
    if core.any():
        core_idx = np.flatnonzero(core)
        sub = near[np.ix_(core_idx, core_idx)]
        _, comp = connected_components(coo_matrix(sub), directed=False)
        labels[core_idx] = comp
        # Border points join the cluster of their nearest core point within eps.
        for i in np.flatnonzero(~core):
            reach = core_idx[near[i, core_idx]]
            if len(reach):
                labels[i] = labels[reach[np.argmin(dist[i, reach])]]
    return _relabel(labels)


def first_neighbour_partition(x: np.ndarray) -> np.ndarray:
    """One FINCH step (Sarfraz et al., CVPR 2019): link i and j when j is i's first (cosine) neighbour, i is
    j's, or both share the same first neighbour; the partition is the connected components of those links."""
    n = len(x)
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    u = _unit_rows(x)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    first = np.argmax(sim, axis=1)
    rows = np.concatenate([np.arange(n), first])
    cols = np.concatenate([first, np.arange(n)])
    # i -> first[i] (and its transpose) already joins points that share a first neighbour: i and j both link
    # to first[i] = first[j], so they land in one component through it.
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    return _relabel(comp)


def finch_partitions(x: np.ndarray) -> list[np.ndarray]:
    """The FINCH hierarchy: partition the points, replace each cluster by its mean, partition the means,
    and so on until one cluster remains or a step merges nothing. Returns point labels at every level."""
    x = np.asarray(x, dtype=np.float64)
    labels = first_neighbour_partition(x)
    levels = [labels]
    while labels.max() + 1 > 1:
        k = labels.max() + 1
        means = np.zeros((k, x.shape[1]))
        np.add.at(means, labels, x)
        means /= np.bincount(labels, minlength=k)[:, None]
        step = first_neighbour_partition(means)
        if step.max() + 1 == k:
            break
        labels = step[labels]
        levels.append(labels)
    return levels


def finch_cluster(x: np.ndarray, level: int = 0) -> np.ndarray:
    """One FINCH partition. level 0 = the first partition (the paper's usual parameter-free choice);
    level -1 = the coarsest partition that still has more than one cluster (the last one if all have one)."""
    levels = finch_partitions(x)
    if level >= 0:
        return levels[min(level, len(levels) - 1)]
    several = [lab for lab in levels if lab.max() + 1 > 1]
    return several[-1] if several else levels[-1]
