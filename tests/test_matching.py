"""Coarse track matching: per-track Gaussians in log-density after per-video PCA and Ledoit-Wolf shrinkage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from vcn.config import MatchConfig
from vcn.matching import fit_pca, fit_track_gaussians, ledoit_wolf, match_tracks


def _identities(rng, n_people=4, dim=128):
    centres = rng.normal(size=(n_people, dim))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def _track(rng, centre, n, spread=0.15):
    return centre + rng.normal(scale=spread / math.sqrt(len(centre)), size=(n, len(centre)))


def test_ledoit_wolf_matches_the_reference_formula():
    sklearn_cov = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(0)
    for n, p in [(2, 8), (10, 32), (500, 32)]:
        x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
        ref = sklearn_cov.LedoitWolf(assume_centered=False).fit(x).covariance_
        assert np.allclose(ledoit_wolf(x), ref, rtol=1e-8, atol=1e-10)


def test_pca_keeps_at_most_the_rank():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)) @ rng.normal(size=(3, 20))   # rank 3 (4 after centring is at most 3 here)
    _, axes = fit_pca(x, 32)
    assert axes.shape == (20, 3)


@pytest.mark.parametrize("n_crops", [2, 500])
def test_thresholds_are_finite_for_tracks_of_2_and_500_crops(n_crops):
    rng = np.random.default_rng(1)
    people = _identities(rng)
    emb = np.concatenate([_track(rng, people[0], n_crops), _track(rng, people[1], 7)])
    tracks = np.array([0] * n_crops + [1] * 7)
    g = fit_track_gaussians(emb, tracks, MatchConfig())
    assert np.isfinite(g.thresholds).all() and np.isfinite(g.log_det).all()
    # Covariances are positive definite (Cholesky succeeded) and well conditioned.
    for c in g.chol:
        cov = c @ c.T
        assert np.linalg.cond(cov) < 1e6
    m = match_tracks(emb, tracks, MatchConfig())
    assert np.isfinite(m.log_pdf).all()


def test_degenerate_track_of_identical_crops_stays_finite_and_matches_only_itself():
    rng = np.random.default_rng(2)
    people = _identities(rng)
    same = np.repeat(people[0][None], 6, axis=0)             # a still frame: 6 identical crops
    emb = np.concatenate([same, _track(rng, people[0], 8), _track(rng, people[1], 8)])
    tracks = np.array([0] * 6 + [1] * 8 + [2] * 8)
    m = match_tracks(emb, tracks, MatchConfig())
    assert np.isfinite(m.log_pdf).all() and np.isfinite(m.thresholds).all()
    # Its own crops all sit at its mean, so its threshold is the density at the mean: nothing else reaches it.
    assert not m.matched[:, 0].any()
    # It still matches the other track of the same person (whose Gaussian has real spread).
    assert m.matched[0, 1]


def test_same_person_tracks_match_and_different_people_do_not():
    rng = np.random.default_rng(3)
    people = _identities(rng, 3)
    emb, tracks = [], []
    for t, person in enumerate([0, 0, 1, 1, 2]):
        emb.append(_track(rng, people[person], 12))
        tracks += [t] * 12
    m = match_tracks(np.concatenate(emb), np.array(tracks), MatchConfig())
    assert m.matched[0, 1] and m.matched[1, 0] and m.matched[2, 3] and m.matched[3, 2]
    person = np.array([0, 0, 1, 1, 2])
    assert not m.matched[person[:, None] != person[None, :]].any()
    assert not m.matched.diagonal().any()
    assert m.as_dict()[0] == [1] and m.as_dict()[4] == []


def test_rule_is_log_pdf_of_mean_under_other_track_against_its_lowest_quarter():
    rng = np.random.default_rng(4)
    people = _identities(rng, 2, dim=6)
    emb = np.concatenate([_track(rng, people[0], 10, 0.5), _track(rng, people[0], 9, 0.5),
                          _track(rng, people[1], 11, 0.5)])
    tracks = np.array([5] * 10 + [7] * 9 + [9] * 11)
    cfg = MatchConfig(pca_dim=4, var_floor=0.0)
    g = fit_track_gaussians(emb, tracks, cfg)
    m = match_tracks(emb, tracks, cfg)
    # Recompute in the same PCA space with scipy as the reference density.
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    mean, axes = fit_pca(x, 4)
    y = (x - mean) @ axes
    for j, tid in enumerate([5, 7, 9]):
        own = y[tracks == tid]
        dist = multivariate_normal(own.mean(0), ledoit_wolf(own))
        logs = np.sort(dist.logpdf(own))
        assert g.thresholds[j] == pytest.approx(logs[:math.ceil(0.25 * len(own))].mean())
        for k, kid in enumerate([5, 7, 9]):
            lp = dist.logpdf(y[tracks == kid].mean(0))
            assert m.log_pdf[k, j] == pytest.approx(lp)
            if k != j:
                assert m.matched[k, j] == (lp >= g.thresholds[j])


def test_cannot_link_pairs_never_match():
    rng = np.random.default_rng(5)
    people = _identities(rng, 1)
    emb = np.concatenate([_track(rng, people[0], 10), _track(rng, people[0], 10)])
    tracks = np.array([3] * 10 + [4] * 10)
    assert match_tracks(emb, tracks, MatchConfig()).matched[0, 1]
    m = match_tracks(emb, tracks, MatchConfig(), cannot_link={(3, 4)})
    assert not m.matched.any()


def test_pca_dimension_follows_the_typical_track_length():
    from vcn.matching import pca_dimension

    cfg = MatchConfig(pca_dim=16, min_pca_dim=4)
    assert pca_dimension(np.repeat(np.arange(5), 10), cfg) == 9
    assert pca_dimension(np.repeat(np.arange(5), 3), cfg) == 4
    assert pca_dimension(np.repeat(np.arange(5), 100), cfg) == 16
    assert pca_dimension(np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]), cfg) == 5


def test_first_neighbour_matching_links_each_track_to_its_nearest_and_back():
    """Three tracks along a line and a far fourth: 0<->1 nearest, 2's nearest is 1, 3's nearest is 2."""
    from vcn.matching import find_matches, first_neighbour_matches

    directions = np.array([[1.0, 0.0, 0.0], [0.95, 0.3, 0.0], [0.7, 0.7, 0.0], [0.0, 0.2, 1.0]])
    emb = np.repeat(directions, 3, axis=0) + np.random.default_rng(0).normal(0, 1e-3, (12, 3))
    tracks = np.repeat([10, 11, 12, 13], 3)
    m = first_neighbour_matches(emb, tracks).as_dict()
    assert m == {10: [11], 11: [10, 12], 12: [11, 13], 13: [12]}
    # Cannot-link removes the pair; the track then takes its next nearest.
    m = first_neighbour_matches(emb, tracks, {(10, 11)}).as_dict()
    assert 11 not in m[10] and m[10] == [12]
    cfg = MatchConfig()
    cfg.method = "first_neighbour"
    assert find_matches(emb, tracks, cfg).as_dict() == first_neighbour_matches(emb, tracks).as_dict()


def test_unknown_match_method_is_a_clear_error():
    from vcn.errors import VcnError
    from vcn.matching import find_matches

    cfg = MatchConfig()
    cfg.method = "kmeans"
    with pytest.raises(VcnError, match="match.method='kmeans'.*gaussian, first_neighbour"):
        find_matches(np.eye(4), np.arange(4), cfg)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_mutual_nearest_tracks_match_only_when_closer_than_two_faces_seen_together():
    from vcn.matching import find_matches, mutual_nearest_within_known_different

    # Tracks 0 and 1: one person in two shots (cosine distance 0.08). Tracks 2 and 3 share a frame (two people,
    # distance 0.29). Tracks 4 and 5: mutual nearest but 0.35 apart, farther than the pair seen together.
    looks = [_unit([1, 0.2, 0, 0, 0]), _unit([1, -0.2, 0, 0, 0]), _unit([0, 0, 1, 0, 0]),
             _unit([0, 0, 1, 1, 0]), _unit([0, 0, 0, 0, 1]), _unit([0, 0, -0.5, -0.5, 0.6])]
    embeddings = np.concatenate([np.repeat(v[None], 3, axis=0) for v in looks])
    track_of_crop = np.repeat(np.arange(6) * 10, 3)
    seen_together = {(20, 30)}

    m = mutual_nearest_within_known_different(embeddings, track_of_crop, seen_together)
    pairs = {(int(m.track_ids[a]), int(m.track_ids[b])) for a, b in zip(*np.nonzero(m.matched)) if a < b}
    assert pairs == {(0, 10)}
    assert m.thresholds[0] == pytest.approx(1 - 1 / math.sqrt(2))
    # Nothing seen together: no distance between two people to go by, so no match.
    assert not mutual_nearest_within_known_different(embeddings, track_of_crop, set()).matched.any()
    # 'gaussian_mutual' adds these matches to the Gaussian rule's and never links the pair seen together.
    both = find_matches(embeddings, track_of_crop, MatchConfig(method="gaussian_mutual"), seen_together).as_dict()
    assert 10 in both[0] and 0 in both[10]
    assert 30 not in both[20] and 20 not in both[30]


def test_mutual_nearest_strangers_closer_than_the_faces_seen_together_stay_apart_below_chance():
    from vcn.matching import find_matches, mutual_nearest_within_known_different

    # A montage: 19 people seen once each (random directions in 64-d, about 1 +- 0.13 apart) and one person in two
    # shots (tracks 0 and 1, very close). The only two faces seen together (tracks 2, 3) are the farthest pair,
    # so under the closest-pair-seen-together rule every two strangers that are each other's nearest match.
    rng = np.random.default_rng(0)
    looks = rng.standard_normal((21, 64))
    looks[1] = looks[0] + 0.1 * rng.standard_normal(64)
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    looks[3] = -looks[2]
    embeddings = np.repeat(looks, 3, axis=0)
    track_of_crop = np.repeat(np.arange(21), 3)
    seen_together = {(2, 3)}

    def pairs(m):
        return {(int(m.track_ids[a]), int(m.track_ids[b])) for a, b in zip(*np.nonzero(m.matched)) if a < b}

    closest_seen = pairs(mutual_nearest_within_known_different(embeddings, track_of_crop, seen_together))
    assert (0, 1) in closest_seen and len(closest_seen) >= 4
    below = mutual_nearest_within_known_different(embeddings, track_of_crop, seen_together, below_chance=True)
    assert pairs(below) == {(0, 1)}
    strangers = 1 - looks[2:] @ looks[2:].T
    assert below.thresholds[0] < strangers[np.triu_indices(19, 1)].min()
    chance = find_matches(embeddings, track_of_crop, MatchConfig(method="gaussian_mutual_chance"),
                          seen_together).as_dict()
    assert 1 in chance[0] and all(not chance[t] for t in range(2, 21))


def test_nearest_chance_links_a_chain_of_one_persons_tracks_that_mutual_nearest_leaves_in_pieces():
    from vcn.matching import find_matches, mutual_nearest_within_known_different

    # One person in four shots drifting in look (tracks 0-3 at 0, 12, 20 and 26 degrees: each track's nearest is
    # the next one, 0.005-0.022 apart, and only 2 and 3 are each other's nearest), and two people seen together far
    # from everyone (tracks 4 and 5, 0.2 apart). Each other's nearest links 2 and 3 alone; each track's nearest
    # links the whole chain, and never a stranger (every stranger is beyond the pair seen together).
    angles = np.radians([0, 12, 20, 26])
    looks = [np.array([np.cos(a), np.sin(a), 0, 0]) for a in angles] + [_unit([0, 0, 1, 0]), _unit([0, 0, 0.8, 0.6])]
    embeddings = np.concatenate([np.repeat(v[None], 3, axis=0) for v in looks])
    track_of_crop = np.repeat(np.arange(6), 3)
    seen_together = {(4, 5)}

    def pairs(m):
        return {(int(m.track_ids[a]), int(m.track_ids[b])) for a, b in zip(*np.nonzero(m.matched)) if a < b}

    assert pairs(mutual_nearest_within_known_different(embeddings, track_of_crop, seen_together)) == {(2, 3)}
    one_sided = mutual_nearest_within_known_different(embeddings, track_of_crop, seen_together, mutual=False)
    assert pairs(one_sided) == {(0, 1), (1, 2), (2, 3)}
    linked = find_matches(embeddings, track_of_crop, MatchConfig(method="gaussian_nearest_chance"),
                          seen_together).as_dict()
    assert 2 in linked[1] and 1 in linked[2]
    assert 5 not in linked[4] and 4 not in linked[5]


def test_gaussian_matches_within_bounds_drop_strangers_the_few_pca_dimensions_confuse():
    from vcn.chance import chance_closest
    from vcn.matching import _track_cosines, find_matches

    # 12 tracks of 3 crops in 64-d: each person's identity lies in dimensions 4-63, and every crop also varies
    # widely along 4 shared directions (pose, light) that the video's PCA keeps. In those 4 dimensions strangers
    # overlap, so the Gaussian rule matches some far apart in the whole embedding. Tracks 0 and 1 are one person
    # (near-identical crops); tracks 2 and 3 share a frame, 0.50 apart: two people the video shows that close.
    rng = np.random.default_rng(0)
    identity = rng.standard_normal((12, 64))
    identity[:, :4] = 0
    identity /= np.linalg.norm(identity, axis=1, keepdims=True)
    identity[3] = identity[2] + 0.9 * identity[3]
    identity[3] /= np.linalg.norm(identity[3])
    crops = identity[:, None, :].repeat(3, axis=1)
    crops[:, :, :4] += 0.8 * rng.standard_normal((12, 3, 4))
    crops[1] = crops[0] + 0.01 * rng.standard_normal((3, 64))
    embeddings, track_of_crop = crops.reshape(-1, 64), np.repeat(np.arange(12), 3)
    seen_together = {(2, 3)}

    def pairs(cfg):
        m = find_matches(embeddings, track_of_crop, cfg, seen_together)
        return {(int(m.track_ids[a]), int(m.track_ids[b])) for a, b in zip(*np.nonzero(m.matched)) if a < b}

    ids, sim, shared = _track_cosines(embeddings, track_of_crop, seen_together)
    dist = 1 - sim
    bound = max(1 - shared.max(), chance_closest(dist[np.triu_indices(12, 1)]))
    plain, bounded = pairs(MatchConfig(gaussian_within_bounds=False)), pairs(MatchConfig())   # the default bounds
    assert (0, 1) in plain and (0, 1) in bounded
    assert any(dist[a, b] >= bound for a, b in plain)       # the rule alone links strangers beyond both bounds
    assert bounded <= plain and all(dist[a, b] < bound for a, b in bounded)
    assert bounded == {(0, 1)}
