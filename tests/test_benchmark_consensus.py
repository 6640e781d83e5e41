"""benchmarks/consensus.py: the consensus of finetunes already run, as the setting would write it."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("consensus")


def test_combined_keeps_what_most_runs_agree_on_and_unknown_tracks_unknown(bench):
    # seeds.py stores each run's clustering with the track ids as text (JSON keys); track 9 is Unknown.
    right = {"1": 0, "2": 0, "3": 1, "4": 2, "9": -1}
    merged = {"1": 0, "2": 0, "3": 0, "4": 1, "9": -1}        # one run merges tracks 1-2 with 3
    table = bench.combined([right, merged, right], set(), "v")
    labels = dict(zip(table.column("track_id").to_pylist(), table.column("cluster_id").to_pylist()))
    assert labels[9] == -1 and labels[1] == labels[2] and len({labels[1], labels[3], labels[4]}) == 3
    # Two tracks that share a frame stay apart even where every run joins them.
    table = bench.combined([merged] * 3, {(1, 3)}, "v")
    labels = dict(zip(table.column("track_id").to_pylist(), table.column("cluster_id").to_pylist()))
    assert labels[1] != labels[3]
