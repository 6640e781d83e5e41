"""benchmarks/nearest_links.py: the verdict of each matched pair of tracks."""

from __future__ import annotations

import numpy as np

from tests.benchmark_scripts import load_benchmark


def test_link_verdicts_count_each_matched_pair_once_by_what_the_truth_says():
    bench = load_benchmark("nearest_links")
    from vcn.matching import TrackMatches

    matched = np.zeros((4, 4), dtype=bool)
    for a, b in ((0, 1), (1, 2), (2, 3)):
        matched[a, b] = matched[b, a] = True
    m = TrackMatches(np.array([10, 11, 12, 13]), np.zeros((4, 4)), np.zeros(4), matched)
    identity = {10: "ann", 11: "ann", 12: "bob", 13: None}
    assert bench.link_verdicts(m, identity) == {"right": 1, "wrong": 1, "unlabelled": 1}
