"""Algorithm 1 (exact bilinear cluster-pair losses, thresholds, transitive merging, cannot-link) and the baselines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vcn.clustering import (algorithm1, cluster_pair_losses, cooccurring_pairs, cosine_vectors, dbscan_cluster,
                            finch_cluster, finch_partitions, first_neighbour_partition, hac_cluster,
                            mean_track_embeddings, within_set_loss)
from vcn.clustering.groups import group_means


def _random_probs(rng, n, k=12, spread=1.0):
    z_t = torch.from_numpy(rng.normal(scale=spread, size=(n, k)))
    z_s = torch.from_numpy(rng.normal(scale=spread, size=(n, k)))
    return F.softmax(z_t / 0.5, -1).numpy(), F.log_softmax(z_s / 0.5, -1).numpy()


def _s(p, l, a, b):
    """S(a, b) by definition: Eq. 2 both ways, averaged."""
    return -0.5 * (p[a] @ l[b] + p[b] @ l[a])


def test_cluster_pair_losses_equal_brute_force_over_crop_pairs():
    rng = np.random.default_rng(0)
    p, l = _random_probs(rng, 30)
    groups = [np.arange(0, 4), np.arange(4, 5), np.arange(5, 17), np.arange(17, 30)]
    sim = cluster_pair_losses(np.stack([p[g].mean(0) for g in groups]), np.stack([l[g].mean(0) for g in groups]))
    for j, k in itertools.product(range(4), repeat=2):
        brute = np.mean([_s(p, l, a, b) for a in groups[j] for b in groups[k]])
        assert sim[j, k] == pytest.approx(brute, rel=1e-12)


def test_multi_track_cluster_means_equal_brute_force_over_track_pairs():
    """Clusters of several tracks: elements are tracks, S between two tracks = its mean over their crop pairs."""
    rng = np.random.default_rng(1)
    p, l = _random_probs(rng, 24)
    tracks = [np.arange(0, 3), np.arange(3, 10), np.arange(10, 12), np.arange(12, 24)]
    clusters = [[0, 1], [2, 3]]

    def track_s(u, v):
        return np.mean([_s(p, l, a, b) for a in tracks[u] for b in tracks[v]])

    tp = np.stack([p[t].mean(0) for t in tracks])
    tl = np.stack([l[t].mean(0) for t in tracks])
    sim = cluster_pair_losses(np.stack([tp[c].mean(0) for c in clusters]), np.stack([tl[c].mean(0) for c in clusters]))
    brute = np.mean([track_s(u, v) for u in clusters[0] for v in clusters[1]])
    assert sim[0, 1] == pytest.approx(brute, rel=1e-12)
    # The merged cluster's threshold: mean over pairs of its distinct tracks.
    assert within_set_loss(tp[[0, 1]], tl[[0, 1]]) == pytest.approx(track_s(0, 1), rel=1e-12)


def test_within_set_loss_is_the_mean_over_distinct_pairs():
    rng = np.random.default_rng(2)
    p, l = _random_probs(rng, 7)
    brute = np.mean([_s(p, l, a, b) for a in range(7) for b in range(7) if a != b])
    assert within_set_loss(p, l) == pytest.approx(brute, rel=1e-12)
    assert within_set_loss(p[:1], l[:1]) == pytest.approx(_s(p, l, 0, 0))


def _brute_algorithm1(p, l, track_of_crop, cannot=(), merge_rule="both", merge_order="all"):
    """Algorithm 1 written out with explicit pair enumeration (no bilinear shortcut, no union-find library).

    merge_order "best_first": each iteration merges only the matched pair (not cannot-linked) of lowest Sim."""
    pair_threshold = min if merge_rule == "both" else max
    ids = sorted(set(track_of_crop.tolist()))
    crops = {t: np.flatnonzero(track_of_crop == t) for t in ids}

    def track_pair(u, v):
        return np.mean([_s(p, l, a, b) for a in crops[u] for b in crops[v]])

    def elements(cluster):
        # (list of elements, S between two elements): crops of a one-track cluster, else its tracks.
        if len(cluster) == 1:
            return list(crops[cluster[0]]), lambda a, b: _s(p, l, a, b)
        return list(cluster), track_pair

    def threshold(cluster):
        el, s = elements(cluster)
        if len(el) == 1:
            return s(el[0], el[0])
        return np.mean([s(a, b) for a in el for b in el if a != b])

    def sim(c1, c2):
        e1, _ = elements(c1)
        e2, _ = elements(c2)
        # Cross pairs of elements, each element as its crops; a crop vs a track = mean over the track's crops.
        g1 = [np.array([x]) for x in e1] if len(c1) == 1 else [crops[t] for t in e1]
        g2 = [np.array([x]) for x in e2] if len(c2) == 1 else [crops[t] for t in e2]
        return np.mean([np.mean([_s(p, l, a, b) for a in x for b in y]) for x in g1 for y in g2])

    clusters = [[t] for t in ids]
    while True:
        thr = [threshold(c) for c in clusters]
        n = len(clusters)
        edges = [(i, j) for i in range(n) for j in range(i + 1, n)
                 if sim(clusters[i], clusters[j]) < pair_threshold(thr[i], thr[j])]
        if merge_order == "best_first":
            edges = [(i, j) for i, j in edges
                     if not any((a, b) in cannot or (b, a) in cannot for a in clusters[i] for b in clusters[j])]
            if not edges:
                break
            i, j = min(edges, key=lambda e: sim(clusters[e[0]], clusters[e[1]]))
            clusters = [c for k, c in enumerate(clusters) if k not in (i, j)] + [sorted(clusters[i] + clusters[j])]
            continue
        if not edges:
            break
        parent = list(range(n))

        def root(i):
            while parent[i] != i:
                i = parent[i]
            return i

        for i, j in edges:
            parent[root(j)] = root(i)
        groups = {}
        for i in range(n):
            groups.setdefault(root(i), []).extend(clusters[i])
        clusters = [sorted(g) for g in groups.values()]
    return {t: min(c) for c in clusters for t in c}


@pytest.mark.parametrize("merge_order", ["all", "best_first"])
@pytest.mark.parametrize("merge_rule", ["both", "either"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_algorithm1_equals_brute_force_enumeration(seed, merge_rule, merge_order):
    rng = np.random.default_rng(seed)
    # 3 identities, 9 tracks of 1-5 crops: head outputs near an identity centre.
    centres = rng.normal(scale=2.0, size=(3, 10))
    rows, tracks = [], []
    for t in range(9):
        c = centres[t % 3]
        for _ in range(int(rng.integers(1, 6))):
            rows.append(c + rng.normal(scale=1.0, size=10))
            tracks.append(t)
    z = torch.from_numpy(np.array(rows))
    p = F.softmax(z / 0.5, -1).numpy()
    l = F.log_softmax(z / 0.7, -1).numpy()
    tracks = np.array(tracks)
    # best_first checks cannot-link itself in the reference; "all" has its own cannot-link test below.
    cannot = {(0, 3), (4, 8)} if merge_order == "best_first" else set()
    result = algorithm1(p, l, tracks, merge_rule=merge_rule, merge_order=merge_order, cannot_link=cannot)
    brute = _brute_algorithm1(p, l, tracks, cannot, merge_rule=merge_rule, merge_order=merge_order)
    fast = {int(t): int(c) for t, c in zip(result.track_ids, result.labels)}
    # Same partition (labels may be named differently).
    assert {frozenset(t for t in fast if fast[t] == c) for c in set(fast.values())} == \
        {frozenset(t for t in brute if brute[t] == c) for c in set(brute.values())}
    assert result.clusters_per_iteration[-1] == len(set(fast.values()))


def test_algorithm1_recovers_planted_identities_and_stops_at_a_fixed_point():
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=3.0, size=(4, 16))
    rows, tracks, truth = [], [], {}
    for t in range(16):
        for _ in range(6):
            rows.append(centres[t % 4] + rng.normal(scale=0.6, size=16))
            tracks.append(t)
        truth[t] = t % 4
    z = torch.from_numpy(np.array(rows))
    # Tracks of one identity drawn from one distribution: their cross loss has the same expectation as each
    # track's own threshold, so only the "either" reading merges them reliably ("both" is a coin toss).
    result = algorithm1(F.softmax(z / 0.3, -1), F.log_softmax(z / 0.5, -1), np.array(tracks), merge_rule="either")
    labels = dict(zip(result.track_ids.tolist(), result.labels.tolist()))
    assert len(set(labels.values())) == 4
    for t in range(16):
        assert labels[t] == labels[t % 4]
    assert result.clusters_per_iteration[0] == 16 and result.clusters_per_iteration[-1] == 4


def test_either_rule_merges_when_only_the_looser_track_accepts_and_both_rule_does_not():
    # Track 0 is tight (low threshold), track 1 is loose; their cross loss lies between the two thresholds.
    p = np.array([[0.7, 0.3], [0.7, 0.3], [0.6, 0.4], [0.1, 0.9]])
    l = np.log(p)
    tracks = np.array([0, 0, 1, 1])
    thr0, thr1 = within_set_loss(p[:2], l[:2]), within_set_loss(p[2:], l[2:])
    sim = cluster_pair_losses(np.stack([p[:2].mean(0), p[2:].mean(0)]), np.stack([l[:2].mean(0), l[2:].mean(0)]))
    assert thr0 < sim[0, 1] < thr1
    assert algorithm1(p, l, tracks, merge_rule="either").labels.tolist() == [0, 0]
    assert algorithm1(p, l, tracks, merge_rule="both").labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="merge_rule"):
        algorithm1(p, l, tracks, merge_rule="neither")


@pytest.mark.parametrize("merge_order", ["all", "best_first"])
def test_cannot_link_keeps_co_occurring_tracks_apart_even_transitively(merge_order):
    rng = np.random.default_rng(6)
    c = rng.normal(scale=3.0, size=8)
    rows = [c + rng.normal(scale=0.5, size=8) for _ in range(15)]
    tracks = np.repeat([10, 11, 12], 5)
    z = torch.from_numpy(np.array(rows))
    p, l = F.softmax(z / 0.3, -1), F.log_softmax(z / 0.5, -1)
    assert len(set(algorithm1(p, l, tracks, merge_order=merge_order).labels.tolist())) == 1
    r = algorithm1(p, l, tracks, cannot_link={(10, 12)}, merge_order=merge_order)
    lab = dict(zip(r.track_ids.tolist(), r.labels.tolist()))
    assert lab[10] != lab[12]
    assert len(set(lab.values())) == 2     # 11 joins one of them


def test_best_first_stops_loose_tracks_chaining_identities_together():
    # 3 identities; each has a tight track and a loose one (4x the spread, so a high threshold that accepts
    # other people under "either"). Merging every matched pair at once chains identities through the loose
    # tracks; one merge at a time, re-judging the merged cluster, keeps them apart far more often.
    recovered = {"all": 0, "best_first": 0}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        centres = rng.normal(scale=2.0, size=(3, 8))
        rows, tracks = [], []
        for t in range(6):
            for _ in range(3):
                rows.append(centres[t % 3] + rng.normal(scale=2.0 if t >= 3 else 0.5, size=8))
                tracks.append(t)
        z = torch.from_numpy(np.array(rows))
        p, l = F.softmax(z / 0.3, -1), F.log_softmax(z / 0.5, -1)
        for order in recovered:
            labels = algorithm1(p, l, np.array(tracks), merge_rule="either", merge_order=order).labels.tolist()
            recovered[order] += labels == [0, 1, 2, 0, 1, 2]
    assert recovered["best_first"] >= 15 and recovered["all"] <= 5, recovered


def test_unknown_merge_order_is_refused():
    with pytest.raises(ValueError, match="merge_order"):
        algorithm1(np.ones((2, 2)) / 2, np.log(np.ones((2, 2)) / 2), np.array([0, 1]), merge_order="random")


def test_cooccurring_pairs_from_shared_frames():
    pairs = cooccurring_pairs({1: np.array([0, 1, 2]), 2: np.array([2, 3]), 3: np.array([5]), 4: np.array([3, 9])})
    assert pairs == {(1, 2), (2, 4)}


def test_cosine_vectors_give_minus_cosine():
    x = np.array([[3.0, 0.0], [1.0, 1.0]])
    p, l = cosine_vectors(x)
    assert cluster_pair_losses(p[:1], l[:1])[0, 0] == pytest.approx(-1.0)
    assert -0.5 * (p[0] @ l[1] + p[1] @ l[0]) == pytest.approx(-np.sqrt(0.5))


def test_empty_input_gives_no_clusters():
    r = algorithm1(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, np.int64))
    assert len(r.labels) == 0


# ----- baselines ----------------------------------------------------------------------------------------------------

def _planted(rng, people=3, per=4, dim=32, noise=0.3):
    centres = rng.normal(size=(people, dim))
    x = np.concatenate([centres[i] + rng.normal(scale=noise, size=(per, dim)) for i in range(people)])
    return x, np.repeat(np.arange(people), per)


def test_mean_track_embeddings_average_unit_vectors():
    ids, means = mean_track_embeddings(np.array([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0]]), np.array([7, 7, 3]))
    assert ids.tolist() == [3, 7]
    assert np.allclose(means, [[0.0, 1.0], [0.5, 0.5]])


def test_group_means_average_raw_rows_per_sorted_group():
    rows = np.array([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0], [4.0, 4.0]], dtype=np.float32)
    ids, means = group_means(rows, np.array([7, 7, 3, 7]))
    assert ids.tolist() == [3, 7]
    assert means.dtype == np.float64
    assert np.allclose(means, [[0.0, 1.0], [2.0, 3.0]])


def test_hac_separates_planted_groups_and_its_threshold_matters():
    x, truth = _planted(np.random.default_rng(0))
    labels = hac_cluster(x, 0.6)
    assert len(set(labels)) == 3 and all(len(set(labels[truth == i])) == 1 for i in range(3))
    assert len(set(hac_cluster(x, 1.99))) == 1
    assert len(set(hac_cluster(x, 1e-6))) == len(x)


def test_dbscan_clusters_and_noise():
    x, truth = _planted(np.random.default_rng(1))
    outlier = np.random.default_rng(2).normal(size=(1, 32))
    labels = dbscan_cluster(np.concatenate([x, outlier]), eps=0.4, min_samples=2)
    assert labels[-1] == -1
    assert len(set(labels[:-1])) == 3 and all(len(set(labels[:-1][truth == i])) == 1 for i in range(3))


def test_first_neighbour_rule_by_hand():
    # On a line: 0 - 1 are mutual first neighbours, 2's first neighbour is 1 -> {0,1,2}; 3 and 4 pair up.
    angles = np.array([0.0, 0.05, 0.12, 1.0, 1.04])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert first_neighbour_partition(x).tolist() == [0, 0, 0, 1, 1]


def test_finch_hierarchy_coarsens_to_one_cluster():
    x, truth = _planted(np.random.default_rng(3), people=6, per=5)
    levels = finch_partitions(x)
    counts = [lab.max() + 1 for lab in levels]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts)
    first = finch_cluster(x, 0)
    # The first partition never mixes planted groups here (each point's first neighbour is in its group).
    assert all(len(set(truth[first == c])) == 1 for c in set(first))
    coarsest = finch_cluster(x, -1)
    assert coarsest.max() + 1 == min(c for c in counts if c > 1)
