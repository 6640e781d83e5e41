"""Pairs of a video's clusters that may be one person split in two: the few an archivist should look at first.

vcn over-splits far more than it merges (README "Accuracy, measured"), and the pieces of a split person are
usually the nearest clusters that never share a frame: over the 8 labelled clips x seeds 2-5, the three nearest
such pairs per video held 25 of the 32 same-person pairs the default left apart (docs/measurements.md "Possible
splits to review"). No rule found tells those from look-alike strangers without the truth, so they are
shown, not joined: confirming one is `vcn persons merge`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcn.clustering.algorithm1 import pair_positions
from vcn.clustering.baselines import mean_track_embeddings
from vcn.clustering.groups import group_means

# Pairs shown per video: a few looks for the archivist. Three held 25 of the 32 pairs to join; one held 15, and
# five 29 but showed 83 pairs of two people against three's 50.
POSSIBLE_SPLITS = 3


@dataclass(frozen=True)
class PossibleSplit:
    """Two clusters that may be one person: the mean cosine distance between their tracks' mean embeddings."""

    cluster_a: int
    cluster_b: int
    distance: float


def possible_splits(cluster_of_track: dict[int, int], embeddings: np.ndarray, track_of_crop: np.ndarray,
                    cannot_link: set[tuple[int, int]] | None = None,
                    limit: int = POSSIBLE_SPLITS) -> list[PossibleSplit]:
    """The `limit` nearest pairs of clusters (average linkage on the cosine distance between track means of
    `embeddings`, one row per crop of `track_of_crop`) with no two tracks sharing a frame (`cannot_link`: track
    id pairs, smaller first). Unknown tracks (cluster below 0) and tracks without crops take no part."""
    ids, means = mean_track_embeddings(np.asarray(embeddings, dtype=np.float64), np.asarray(track_of_crop))
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    cluster = np.array([cluster_of_track.get(int(t), -1) for t in ids.tolist()], dtype=np.int64)
    clustered = cluster >= 0
    # The mean cosine similarity over all track pairs of two clusters is the dot product of the clusters' means of
    # unit track means: a K x K matrix, never the tracks' T x T one.
    keys, cluster_means = group_means(means[clustered], cluster[clustered])
    if len(keys) < 2 or limit <= 0:
        return []
    distance = 1.0 - cluster_means @ cluster_means.T
    blocked = np.eye(len(keys), dtype=bool)
    ti, tj = pair_positions(ids, cannot_link)
    apart = clustered[ti] & clustered[tj]
    ki, kj = np.searchsorted(keys, cluster[ti[apart]]), np.searchsorted(keys, cluster[tj[apart]])
    blocked[ki, kj] = blocked[kj, ki] = True
    i, j = np.nonzero(np.triu(~blocked, 1))
    order = np.lexsort((j, i, distance[i, j]))[:limit]
    return [PossibleSplit(int(keys[i[k]]), int(keys[j[k]]), float(distance[i[k], j[k]])) for k in order.tolist()]
