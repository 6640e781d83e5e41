"""Join Algorithm 1's clusters that the last coarse matching links (cluster.join_final_matches)."""

from __future__ import annotations

import numpy as np

from vcn.clustering.baselines import mean_track_embeddings


def matched_pairs_nearest_first(matched: np.ndarray, track_ids: np.ndarray, embeddings: np.ndarray,
                                track_of_crop: np.ndarray) -> list[tuple[int, int]]:
    """(track id, track id) of every matched pair (either direction), the closest track means first."""
    ids, means = mean_track_embeddings(embeddings, track_of_crop)
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    row = {int(t): r for r, t in enumerate(ids.tolist())}
    a, b = np.nonzero(np.triu(matched | matched.T, 1))
    pairs = [(int(track_ids[i]), int(track_ids[j])) for i, j in zip(a, b)]
    return sorted(pairs, key=lambda p: (1.0 - float(means[row[p[0]]] @ means[row[p[1]]]), p))


def join_matched_clusters(labels: dict[int, int], pairs: list[tuple[int, int]],
                          cannot_link: set[tuple[int, int]] | None = None) -> dict[int, int]:
    """track id -> cluster, with the clusters of each pair joined, in the order given. A join that would put two
    tracks sharing a frame (`cannot_link`) in one cluster is skipped; labels below 0 and unknown tracks are left
    alone. Clusters are renumbered 0, 1, ... in the order of their smallest track id."""
    members: dict[int, set[int]] = {}
    for t, c in labels.items():
        if c >= 0:
            members.setdefault(c, set()).add(t)
    cluster_of = {t: c for t, c in labels.items() if c >= 0}
    apart = cannot_link or set()
    for a, b in pairs:
        if a not in cluster_of or b not in cluster_of or cluster_of[a] == cluster_of[b]:
            continue
        ca, cb = cluster_of[a], cluster_of[b]
        if any((min(x, y), max(x, y)) in apart for x in members[ca] for y in members[cb]):
            continue
        for t in members[cb]:
            cluster_of[t] = ca
        members[ca] |= members.pop(cb)
    order = sorted(members, key=lambda c: min(members[c]))
    renumber = {c: i for i, c in enumerate(order)}
    return {t: (renumber[cluster_of[t]] if t in cluster_of else c) for t, c in labels.items()}
