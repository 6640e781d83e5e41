"""The clustering benchmark's own parts: its brute-force comparator and its scoring of coarse matches."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vcn.clustering import cluster_pair_losses

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vcn_bench_clustering", REPO / "benchmarks" / "clustering.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_brute_force_comparator_agrees_with_the_bilinear_form(bench):
    """Unequal, interleaved clusters: enumeration over crop pairs equals the per-cluster mean product."""
    rng = np.random.default_rng(3)
    n, k, c = 61, 32, 7
    cluster = rng.integers(0, c, n)
    cluster[:c] = np.arange(c)                                   # every cluster has a crop
    p = torch.softmax(torch.from_numpy(rng.normal(size=(n, k))) / 0.04, 1).numpy()
    l = torch.log_softmax(torch.from_numpy(rng.normal(size=(n, k))) / 0.1, 1).numpy()
    slow = bench.brute_force_pair_means(p, l, cluster, c, chunk=10)
    pm = np.stack([p[cluster == j].mean(0) for j in range(c)])
    lm = np.stack([l[cluster == j].mean(0) for j in range(c)])
    np.testing.assert_allclose(slow, cluster_pair_losses(pm, lm), rtol=1e-10, atol=1e-10)
    # And against the definition, pair by pair, for one cluster pair.
    a, b = np.flatnonzero(cluster == 2), np.flatnonzero(cluster == 5)
    direct = np.mean([-(p[i] @ l[j] + p[j] @ l[i]) / 2 for i in a for j in b])
    assert slow[2, 5] == pytest.approx(direct, rel=1e-10)


def test_timing_row_reports_agreement(bench):
    row = bench.timing(20, 3, 16, brute_max=20)
    assert row["max_abs_difference"] < 1e-4 and row["brute_force_s"] > 0 and row["bilinear_s"] > 0


def test_match_quality_counts_same_person_links_and_wrong_links(bench):
    identity = {1: "a", 2: "a", 3: "a", 4: "b", 5: None}
    matches = {1: [2, 4], 2: [1], 3: [], 4: [1, 5], 5: [4]}
    q = bench.match_quality(matches, identity)
    # Same-person pairs: (1,2) (1,3) (2,3); linked: (1,2); wrong: (1,4); track 5 has no identity.
    assert q == {"same_person_pairs": 3, "same_person_linked": 1, "recall": pytest.approx(1 / 3), "wrong_links": 1}


def test_oracle_matcher_pairs_tracks_of_one_identity(bench):
    match = bench.oracle_matcher({10: "a", 11: "b", 12: "a", 13: None})
    found = match(np.zeros((4, 2)), np.array([10, 11, 12, 13]))
    assert found == {10: [12], 11: [], 12: [10], 13: []}
