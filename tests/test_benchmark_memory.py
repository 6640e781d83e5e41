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


def test_spread_gives_each_ratio_as_lowest_median_highest_over_repeated_runs(bench):
    same = {"clusters": "a", "embeddings": "b"}
    runs = [{"stage2_over_stage1": 1.16, "warmup_over_stage1": 0.35, "output_sha256": same},
            {"stage2_over_stage1": 0.84, "warmup_over_stage1": 0.29, "output_sha256": same},
            {"stage2_over_stage1": 0.93, "warmup_over_stage1": 0.31, "output_sha256": same}]
    assert bench.spread(runs) == {"runs": 3, "stage2_over_stage1": {"min": 0.84, "median": 0.93, "max": 1.16},
                                  "warmup_over_stage1": {"min": 0.29, "median": 0.31, "max": 0.35},
                                  "same_outputs": True}
    # An even count takes the middle two's mean; a run that computed other clusters is said.
    two = bench.spread([runs[0], {**runs[1], "output_sha256": {"clusters": "c", "embeddings": "b"}}])
    assert two["stage2_over_stage1"]["median"] == 1.0 and two["same_outputs"] is False


def test_repeat_below_one_is_refused_with_the_fix(bench, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--repeat", "0", "--sitcom-only"])
    assert stop.value.code == 2
    assert "--repeat 0: give 1 or more runs" in capsys.readouterr().err
