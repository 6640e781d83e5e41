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


def test_loss_distances_are_algorithm_1s_between_tracks_from_zero(bench):
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(5), size=6)
    l = np.log(rng.dirichlet(np.ones(5), size=6))
    track_of_crop = np.array([4, 4, 7, 7, 9, 9])
    ids, condensed = bench.loss_distances(p, l, track_of_crop)
    assert ids.tolist() == [4, 7, 9] and condensed.min() == 0.0
    pm = np.stack([p[track_of_crop == t].mean(0) for t in ids])
    lm = np.stack([l[track_of_crop == t].mean(0) for t in ids])
    sim = -(pm @ lm.T + (pm @ lm.T).T) / 2
    want = np.array([sim[0, 1], sim[0, 2], sim[1, 2]])
    assert np.allclose(condensed, want - want.min())


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
