"""vcn.clustering.suggest: the pairs of clusters the report offers for review as one person split in two."""

from __future__ import annotations

import numpy as np

from vcn.clustering.suggest import possible_splits


def _crops(means: np.ndarray, per_track: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """per_track noisy crops around each row of `means`: (embeddings, track of each crop)."""
    emb = np.repeat(means, per_track, axis=0) + 0.01 * rng.normal(size=(len(means) * per_track, means.shape[1]))
    return emb, np.repeat(np.arange(len(means)), per_track)


def test_the_nearest_pairs_first_by_mean_distance_between_their_tracks():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(6, 32))
    means[1] = means[0] + 0.3 * rng.normal(size=32)      # track 1 near track 0: one person split?
    emb, toc = _crops(means, 3, rng)
    cluster_of = {0: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 4}
    got = possible_splits(cluster_of, emb, toc, limit=20)
    assert (got[0].cluster_a, got[0].cluster_b) == (0, 1)
    assert [g.distance for g in got] == sorted(g.distance for g in got) and len(got) == 10   # C(5, 2)
    # A pair's distance is the mean cosine distance over its clusters' track pairs.
    unit = np.stack([emb[toc == t] / np.linalg.norm(emb[toc == t], axis=1, keepdims=True) for t in range(6)])
    track_means = unit.mean(axis=1)
    track_means /= np.linalg.norm(track_means, axis=1, keepdims=True)
    pair = next(g for g in got if (g.cluster_a, g.cluster_b) == (1, 2))
    assert np.isclose(pair.distance, np.mean([1 - track_means[1] @ track_means[t] for t in (2, 3)]))
    assert len(possible_splits(cluster_of, emb, toc)) == 3          # three by default


def test_never_two_clusters_sharing_a_frame_nor_unknown_tracks():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(4, 16))
    means[1] = means[0] + 0.05 * rng.normal(size=16)
    means[3] = means[2] + 0.05 * rng.normal(size=16)
    emb, toc = _crops(means, 2, rng)
    # Tracks 0 and 1 share a frame: the nearest pair is refused, and track 3 is Unknown.
    got = possible_splits({0: 0, 1: 1, 2: 2, 3: -1}, emb, toc, cannot_link={(0, 1)}, limit=10)
    assert {(g.cluster_a, g.cluster_b) for g in got} == {(0, 2), (1, 2)}


def test_nothing_to_review_with_fewer_than_two_clusters():
    rng = np.random.default_rng(2)
    emb, toc = _crops(rng.normal(size=(3, 8)), 2, rng)
    assert possible_splits({0: 0, 1: 0, 2: -1}, emb, toc) == []
    assert possible_splits({}, emb, toc) == []
    assert possible_splits({0: 0, 1: 1}, emb, toc, cannot_link={(0, 1)}) == []
