"""Join Algorithm 1's clusters after it: those the last coarse matching links (cluster.join_final_matches), those
closer than chance (cluster.join_below_chance), and those each other's nearest within the video's bounds
(cluster.join_nearest_clusters)."""

from __future__ import annotations

import numpy as np

from vcn.chance import chance_closest
from vcn.clustering.algorithm1 import cluster_pair_losses, pair_positions, track_loss_terms
from vcn.clustering.baselines import mean_track_embeddings
from vcn.matching import mutual_nearest_within_known_different


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


def join_below_chance(labels: dict[int, int], p: np.ndarray, l: np.ndarray, track_of_crop: np.ndarray,
                      cannot_link: set[tuple[int, int]] | None = None) -> dict[int, int]:
    """track id -> cluster, with clusters joined nearest first while they are closer than chance puts strangers
    (cluster.join_below_chance).

    The distance is Algorithm 1's: the Eq. 2 loss between two clusters, each track weighing the same (the mean of
    the loss over their track pairs, i.e. average linkage on the loss between tracks). The bound is
    `chance_closest` of the loss between every two tracks: most of those pairs are two people, and a pair of
    clusters closer than the closest such pair expected by chance is taken for one person. The bound is fixed
    once, from the tracks; joins repeat until the nearest pair of clusters is not below it. Never joins two tracks
    sharing a frame; labels below 0 and tracks without crops are left alone. Clusters are renumbered 0, 1, ... in
    the order of their smallest track id."""
    ids, tp, tl = track_loss_terms(np.asarray(p, dtype=np.float64), np.asarray(l, dtype=np.float64), track_of_crop)
    row = {int(t): i for i, t in enumerate(ids.tolist())}
    clusters: dict[int, list[int]] = {}
    for t, c in labels.items():
        if c >= 0 and t in row:
            clusters.setdefault(c, []).append(row[t])
    members = [np.array(sorted(m)) for m in clusters.values()]
    if len(members) < 2:
        return labels
    track_sim = cluster_pair_losses(tp, tl)
    bound = chance_closest(track_sim[np.triu_indices(len(ids), 1)])
    conflict = np.zeros((len(ids), len(ids)), dtype=bool)
    i, j = pair_positions(ids, cannot_link)
    conflict[i, j] = conflict[j, i] = True
    # Per cluster: mean teacher probabilities and student log-probabilities over its tracks, and which tracks
    # it may never join.
    c_p = np.stack([tp[m].mean(axis=0) for m in members])
    c_l = np.stack([tl[m].mean(axis=0) for m in members])
    c_conflict = np.stack([conflict[m].any(axis=0) for m in members])
    while len(members) > 1:
        sim = cluster_pair_losses(c_p, c_l)
        blocked = np.stack([c_conflict[:, m].any(axis=1) for m in members], axis=1)
        sim[blocked] = np.inf
        np.fill_diagonal(sim, np.inf)
        a, b = np.unravel_index(np.argmin(sim), sim.shape)
        if not sim[a, b] < bound:
            break
        a, b = min(a, b), max(a, b)
        na, nb = len(members[a]), len(members[b])
        c_p[a] = (c_p[a] * na + c_p[b] * nb) / (na + nb)
        c_l[a] = (c_l[a] * na + c_l[b] * nb) / (na + nb)
        c_conflict[a] |= c_conflict[b]
        members[a] = np.concatenate([members[a], members[b]])
        del members[b]
        c_p, c_l, c_conflict = (np.delete(x, b, axis=0) for x in (c_p, c_l, c_conflict))
    cluster_of = {int(ids[i]): c for c, m in enumerate(members) for i in m.tolist()}
    order = sorted(range(len(members)), key=lambda c: int(ids[members[c]].min()))
    renumber = {c: k for k, c in enumerate(order)}
    return {t: (renumber[cluster_of[t]] if t in cluster_of else c) for t, c in labels.items()}


# cluster.join_nearest_clusters: in which embeddings two clusters must be each other's nearest.
JOIN_NEAREST_SPACES = ("off", "base", "finetuned", "both")


def join_nearest_clusters(labels: dict[int, int], spaces: list[tuple[np.ndarray, np.ndarray]],
                          cannot_link: set[tuple[int, int]] | None = None) -> dict[int, int]:
    """track id -> cluster, with clusters joined while some pair is each other's nearest cluster and closer than
    both distances at which the video shows two people, in every one of `spaces` (embeddings, track of each row).

    The coarse matching's mutual-nearest rule (vcn.matching.mutual_nearest_within_known_different with the chance
    bound, called on the cluster means), lifted from tracks to clusters: a cluster is the mean of its unit track
    means; its nearest is taken among the clusters it shares no frame with; the bounds are the closest pair of
    clusters that share a frame and how close two clusters come by chance (vcn.chance, over the pairs that share
    none). No join without a pair
    sharing a frame. Repeated until nothing joins; labels below 0 and tracks without rows are left alone; clusters
    renumbered 0, 1, ... by smallest track id (cluster.join_nearest_clusters)."""
    apart = cannot_link or set()
    per_space = []   # per space: track id -> unit track mean
    for embeddings, track_of_crop in spaces:
        ids, means = mean_track_embeddings(embeddings, track_of_crop)
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        per_space.append(dict(zip(ids.tolist(), means)))
    members: dict[int, list[int]] = {}
    for t, c in labels.items():
        if c >= 0 and all(t in means for means in per_space):
            members.setdefault(c, []).append(t)
    while len(members) > 2:
        clusters = sorted(members)
        shared = np.zeros((len(clusters), len(clusters)), dtype=bool)
        for i, a in enumerate(clusters):
            for j in range(i + 1, len(clusters)):
                b = clusters[j]
                shared[i, j] = shared[j, i] = any((min(x, y), max(x, y)) in apart
                                                  for x in members[a] for y in members[b])
        found = None
        for means in per_space:
            pairs = _mutual_nearest_clusters([np.mean([means[t] for t in members[c]], axis=0) for c in clusters],
                                             shared)
            found = pairs if found is None else found & pairs
        if not found:
            break
        for i, j in sorted(found):
            a, b = clusters[i], clusters[j]
            members[a] += members.pop(b)
    cluster_of = {t: c for c, ts in members.items() for t in ts}
    order = sorted(members, key=lambda c: min(members[c]))
    renumber = {c: k for k, c in enumerate(order)}
    joined = {t: renumber[cluster_of[t]] for t in cluster_of}
    # Tracks not in every space keep their cluster, renumbered with it where their cluster survived.
    old_to_new = {labels[t]: joined[t] for t in joined}
    return {t: joined.get(t, old_to_new.get(c, c) if c >= 0 else c) for t, c in labels.items()}


def _mutual_nearest_clusters(means: list[np.ndarray], shared: np.ndarray) -> set[tuple[int, int]]:
    """(i, j), i < j, of the cluster means that the coarse matching's rule links: each other's nearest among those
    not `shared` with and closer than both the closest `shared` pair and chance (one row per cluster, the
    cluster's index as its track id)."""
    i, j = np.nonzero(np.triu(shared, 1))
    matched = mutual_nearest_within_known_different(np.stack(means), np.arange(len(means)),
                                                    set(zip(i.tolist(), j.tolist())), below_chance=True).matched
    return {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(matched, 1)))}
