"""Track clustering: Algorithm 1 (the method) and the threshold-based baselines it is compared with."""

from __future__ import annotations

import numpy as np

from vcn.clustering.algorithm1 import (MERGE_ORDERS, MERGE_RULES, Algorithm1Result, algorithm1, cluster_pair_losses,
                                       cooccurring_pairs, cosine_vectors, frames_of_tracks, pair_positions,
                                       within_set_loss)
from vcn.clustering.baselines import (dbscan_cluster, finch_cluster, finch_partitions, first_neighbour_partition,
                                      hac_cluster, mean_track_embeddings)
from vcn.config import ClusterConfig
from vcn.errors import VcnError

BASELINES = ("hac", "dbscan", "finch")
METHODS = ("vcn",) + BASELINES


def cluster_with_baseline(method: str, embeddings: np.ndarray, track_of_crop: np.ndarray,
                          cfg: ClusterConfig) -> tuple[np.ndarray, np.ndarray]:
    """(sorted track ids, label per track) from a baseline on mean track embeddings; DBSCAN noise -> -1."""
    ids, means = mean_track_embeddings(embeddings, track_of_crop)
    if method == "hac":
        return ids, hac_cluster(means, cfg.hac_threshold)
    if method == "dbscan":
        return ids, dbscan_cluster(means, cfg.dbscan_eps, cfg.dbscan_min_samples)
    if method == "finch":
        return ids, finch_cluster(means, cfg.finch_level)
    raise VcnError(f"cluster.method={method!r} is not a baseline; choose one of {', '.join(METHODS)}")


__all__ = [
    "MERGE_ORDERS", "MERGE_RULES", "Algorithm1Result", "algorithm1", "cluster_pair_losses", "cooccurring_pairs",
    "cosine_vectors", "frames_of_tracks", "pair_positions", "within_set_loss", "dbscan_cluster", "finch_cluster",
    "finch_partitions", "first_neighbour_partition", "hac_cluster", "mean_track_embeddings", "cluster_with_baseline",
    "BASELINES", "METHODS",
]
