"""benchmarks/ceiling.py's search over tree cuts (the runs themselves are benchmarks, not tests)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmark_scripts import load_benchmark
from vcn.metrics import clustering_scores


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("ceiling")


def test_cuts_run_from_every_track_alone_to_one_cluster(bench):
    means = np.random.default_rng(0).normal(size=(7, 16))
    for method in bench.LINKAGES:
        parts = bench.cuts(bench.cosine_distances(means), 7, method)
        assert [len(np.unique(p)) for p in parts] == list(range(7, 0, -1))
    assert [p.tolist() for p in bench.cuts(bench.cosine_distances(means[:1]), 1, "average")] == [[0]]


def test_loss_distances_are_algorithm_1s_between_tracks(bench):
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(5), size=6)
    l = np.log(rng.dirichlet(np.ones(5), size=6))
    track_of_crop = np.array([4, 4, 7, 7, 9, 9])
    ids, condensed = bench.loss_distances(p, l, track_of_crop)
    assert ids.tolist() == [4, 7, 9]
    pm = np.stack([p[track_of_crop == t].mean(0) for t in ids])
    lm = np.stack([l[track_of_crop == t].mean(0) for t in ids])
    sim = -(pm @ lm.T + (pm @ lm.T).T) / 2
    want = np.array([sim[0, 1], sim[0, 2], sim[1, 2]])
    assert np.allclose(condensed, want)


def _scorer(identity: dict[int, str]):
    ids = sorted(identity)
    return lambda labels: clustering_scores([labels[t] for t in ids], [identity[t] for t in ids])


def test_ceiling_finds_the_cut_that_separates_two_people(bench):
    # Two people, three tracks each, far apart: the two-cluster cut meets both targets with F 1.
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 32))
    means = np.concatenate([centres[0] + 0.05 * rng.normal(size=(3, 32)),
                            centres[1] + 0.05 * rng.normal(size=(3, 32))])
    ids = np.arange(10, 16)
    identity = {t: ("a" if t < 13 else "b") for t in ids.tolist()}
    got = bench.space_ceiling(_scorer(identity), lambda labels: labels, bench.cosine_distances(means), ids)
    assert got["meets_both"] and got["best_f"]["bcubed_f"] == 1.0
    assert got["fewest_clusters_at_wcp"]["n_clusters"] == 2


def test_ceiling_says_when_no_cut_meets_the_targets(bench):
    # One person's two looks lie farther apart than two strangers: every cut either splits the person or
    # merges the strangers, so no threshold reaches WCP >= 0.97 with PCR <= 1.15.
    means = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.96, 0.28, 0.0], [0.2, 0.98, 0.0]])
    ids = np.arange(4)
    identity = {0: "p", 1: "p", 2: "q", 3: "r"}     # 3 people; p's looks 90 degrees apart
    got = bench.space_ceiling(_scorer(identity), lambda labels: labels, bench.cosine_distances(means), ids)
    assert not got["meets_both"] and got["cuts_meeting_both"] == []
    assert got["fewest_clusters_at_wcp"]["n_clusters"] == 4       # pure only with p split: PCR 1.33


def test_cuts_apart_never_join_a_refused_pair_and_stop_when_only_refused_joins_are_left(bench):
    means = np.random.default_rng(3).normal(size=(6, 16))
    condensed = bench.cosine_distances(means)
    apart = (np.array([0, 2]), np.array([1, 5]))
    for method in bench.LINKAGES:
        parts = bench.cuts_apart(condensed, 6, method, apart)
        assert [len(np.unique(p)) for p in parts] == list(range(6, 6 - len(parts), -1))
        for p in parts:
            assert p[0] != p[1] and p[2] != p[5]
        last = parts[-1]     # nothing left to join: every two clusters hold a refused pair
        for a in np.unique(last):
            for b in np.unique(last):
                if a < b:
                    assert any({last[i], last[j]} == {a, b} for i, j in zip(*apart))


def test_cuts_apart_without_pairs_is_the_plain_tree(bench):
    means = np.random.default_rng(4).normal(size=(7, 16))
    condensed = bench.cosine_distances(means)
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for method in bench.LINKAGES:
        plain = bench.cuts(condensed, 7, method)
        for a, b in zip(bench.cuts_apart(condensed, 7, method, none), plain):
            same = a[:, None] == a[None, :]
            assert (same == (b[:, None] == b[None, :])).all()


def test_cannot_link_lets_a_persons_looks_join_after_a_refused_stranger(bench):
    # p's two looks (tracks 0, 1) are farther apart than p's first look and q (track 2), who share a frame: the
    # plain tree joins p with q first and never reaches three pure clusters; under cannot-link it does.
    angle = np.radians([0.0, 50.0, -35.0])      # p at 0 and 50 degrees, q at -35: nearer p's first look
    means = np.concatenate([np.stack([np.cos(angle), np.sin(angle), 0 * angle], axis=1), [[0.0, 0.0, 1.0]]])
    ids = np.arange(4)
    identity = {0: "p", 1: "p", 2: "q", 3: "r"}
    condensed = bench.cosine_distances(means)
    plain = bench.space_ceiling(_scorer(identity), lambda labels: labels, condensed, ids)
    assert not plain["meets_both"]
    apart = (np.array([0]), np.array([2]))
    got = bench.space_ceiling(_scorer(identity), lambda labels: labels, condensed, ids, apart)
    assert got["meets_both"] and got["best_f"]["bcubed_f"] == 1.0
    assert got["best_f"]["cannot_link"] and got["fewest_clusters_at_wcp"]["n_clusters"] == 3


def test_joins_beyond_start_from_the_clustering_and_never_join_a_refused_pair(bench):
    # Tracks 0, 1 are one cluster to start with; 2 sits near them, 3 far off and sharing a frame with 0.
    means = np.array([[1.0, 0.0, 0.0], [0.98, 0.2, 0.0], [0.9, 0.43, 0.0], [0.0, 0.0, 1.0]])
    condensed = bench.cosine_distances(means)
    steps = bench.joins_beyond(np.array([5, 5, 7, 9]), condensed, (np.array([0]), np.array([3])))
    assert [len(np.unique(s["labels"])) for s in steps] == [3, 2]      # 3 may never join the others
    assert steps[0]["height"] == 0.0
    full = bench.squareform(condensed)
    assert steps[1]["height"] == pytest.approx((full[0, 2] + full[1, 2]) / 2)     # average linkage
    assert steps[1]["labels"][2] == steps[1]["labels"][0] != steps[1]["labels"][3]


def _ladder(heights: list[float], meets: list[bool], fs: list[float], together: float = 1.0) -> dict:
    steps = [{"height": h, "meets_both": m, "bcubed_f": f, "wcp": 1.0} for h, m, f in zip(heights, meets, fs)]
    return {"closest_together": together, "steps": steps}


def test_one_constant_is_the_best_single_stop_for_every_run_chosen_with_the_truth(bench):
    # Run a is right after a join at 0.5; run b goes wrong with a join at 0.4: no constant serves both, so the best
    # single constant keeps one of them and vcn as is (no joins) scores the same count.
    a = _ladder([0.0, 0.5], [False, True], [0.8, 1.0])
    b = _ladder([0.0, 0.4], [True, False], [1.0, 0.7])
    got = bench.one_constant([a, b])
    assert got["vcn_as_is"]["runs_meeting_both"] == 1 and got["vcn_as_is"]["mean_bcubed_f"] == pytest.approx(0.9)
    assert got["raw"]["runs_meeting_both"] == 1 and got["raw"]["constant"] == 0.0     # ties keep vcn as is
    # Scaled by each run's closest pair sharing a frame, a's join is at 0.25 and b's at 0.8: c between serves both.
    a["closest_together"], b["closest_together"] = 2.0, 0.5
    scaled = bench.one_constant([a, b])["closest_together"]
    assert scaled["runs_meeting_both"] == 2 and scaled["constant"] == pytest.approx(0.25)   # just above a's join
    assert bench.stop_below(a["steps"], 0.5)["height"] == 0.0 and bench.stop_below(a["steps"], 0.51)["height"] == 0.5


def test_one_constant_scaled_joins_nothing_in_a_run_with_no_pair_seen_together(bench):
    # No two faces share a frame: nothing to scale by, so the scaled form stops there at vcn's clusters, whatever c.
    alone = _ladder([0.0, 0.3], [True, False], [1.0, 0.5], together=float("nan"))
    other = _ladder([0.0, 0.6], [False, True], [0.9, 1.0], together=1.0)
    got = bench.one_constant([alone, other])["closest_together"]
    assert got["runs_meeting_both"] == 2 and got["mean_bcubed_f"] == pytest.approx(1.0)
