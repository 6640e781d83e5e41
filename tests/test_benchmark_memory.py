"""benchmarks/memory.py's arithmetic (the runs themselves are benchmarks, not tests)."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("memory")


def test_stage_shares_put_stage_2_and_the_warm_up_over_stage_1(bench):
    seconds = {"decode_s": 0.2, "shots_s": 1.5, "detect_s": 54.8, "track_s": 3.5, "frames_scanned": 1972,
               "finetune_round1_heads_s": 15.0, "stage2_s": 54.0, "cluster_s": 1.5}
    assert bench.stage_shares(seconds) == {"stage1_s": 60.0, "stage2_over_stage1": 0.9, "warmup_over_stage1": 0.25}
    # Stage 1 only (vcn run --stages detect,track), or nothing: no ratio to give.
    assert bench.stage_shares({k: v for k, v in seconds.items() if k.endswith(("decode_s", "detect_s"))}) == {}
    assert bench.stage_shares({}) == {}
