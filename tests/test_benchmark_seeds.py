"""benchmarks/seeds.py: the summary and merge that choose a default over seeds (scored rows made up here)."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("seeds")


def scored(f: float, wcp: float = 1.0, pcr: float = 1.0, clusters: int = 3) -> dict:
    return {"bcubed_f": f, "wcp": wcp, "pcr": pcr, "n_clusters": clusters, "unknown_share": 0.0}


def video(runs: dict, hac_f: dict) -> dict:
    return {"video": "v.mp4", "runs": runs, "hac": {t: scored(f) for t, f in hac_f.items()}}


HAC = {"0.3": 0.5, "0.4": 0.6, "0.5": 0.8, "0.6": 0.7, "0.7": 0.4, "0.8": 0.3}


def test_summary_averages_over_seeds_and_counts_targets_against_the_one_hac_threshold(bench):
    videos = {
        "a": video({"one": {"0": scored(0.7, wcp=0.9), "1": scored(0.9)}, "four": {"0": scored(0.9), "1": scored(0.8)}}, HAC),
        "b": video({"one": {"0": scored(0.9, pcr=1.5), "1": scored(0.7)}, "four": {"0": scored(0.9), "1": scored(0.9)}}, HAC),
    }
    s = bench.summarise(videos, ["one", "four"], [0, 1])
    assert s["hac_threshold_chosen_once"] == "0.5"
    one, four = s["configs"]["one"], s["configs"]["four"]
    assert one["mean_bcubed_f_over_seeds"] == pytest.approx(0.8) and four["mean_bcubed_f_over_seeds"] == pytest.approx(0.875)
    assert one["spread_over_seeds"] == pytest.approx(0.0) and four["spread_over_seeds"] == pytest.approx(0.05)
    assert one["per_seed"]["0"]["videos_wcp_ge_0.97"] == 1 and one["per_seed"]["0"]["videos_pcr_0.9_to_1.15"] == 1
    assert one["per_seed"]["0"]["videos_f_ge_hac_chosen_once"] == 1          # 0.7 < 0.8 <= 0.9
    assert four["per_seed"]["1"]["videos_f_ge_hac_chosen_once"] == 2


def test_merge_joins_one_process_per_seed_and_the_table_shows_every_seed(bench):
    part = {"configs": {"one": []}, "seeds": [0], "command": "x", "videos": {"a": video({"one": {"0": scored(0.7)}}, HAC)}}
    other = {"configs": {"one": []}, "seeds": [1], "command": "y", "videos": {"a": video({"one": {"1": scored(0.9)}}, HAC)}}
    part["videos"]["b"] = video({"one": {"0": scored(0.5)}}, HAC)          # the seed-1 run stopped before b
    merged = bench.merge([part, other])
    assert merged["seeds"] == [0, 1] and set(merged["videos"]["a"]["runs"]["one"]) == {"0", "1"}
    summary = merged["summary"]["configs"]["one"]
    assert summary["videos_every_seed_covers"] == ["a"]
    assert summary["mean_bcubed_f_over_seeds"] == pytest.approx(0.8)       # over a only
    assert summary["per_seed"]["0"]["videos"] == 2 and summary["per_seed"]["1"]["videos"] == 1
    text = bench.table(merged)
    assert "| a | 3, 1.00, 1.00, 0.70; 3, 1.00, 1.00, 0.90 | 3, 1.00, 1.00, 0.80 |" in text
    assert "| b | 3, 1.00, 1.00, 0.50 |" in text and "0.600 (2); 0.900 (1)" in text


def test_config_names_and_overrides_are_parsed_or_refused(bench):
    assert bench.parse_config("four:ssl.prototype_sets=4,ssl.seed=1") == ("four", ["ssl.prototype_sets=4", "ssl.seed=1"])
    assert bench.parse_config("defaults:") == ("defaults", [])
    with pytest.raises(SystemExit, match="NAME:section.key=value"):
        bench.parse_config("four:prototype_sets")


def test_merge_joins_a_config_measured_later_and_refuses_a_name_reused_for_other_overrides(bench):
    first = {"configs": {"one": ["ssl.prototype_sets=1"]}, "seeds": [0], "command": ["x"],
             "videos": {"a": video({"one": {"0": scored(0.7)}}, HAC)}}
    later = {"configs": {"mutual": ["match.method=gaussian_mutual"]}, "seeds": [0], "command": "y",
             "videos": {"a": video({"mutual": {"0": scored(0.9)}}, HAC)}}
    merged = bench.merge([first, later])
    assert merged["configs"] == {"one": ["ssl.prototype_sets=1"], "mutual": ["match.method=gaussian_mutual"]}
    assert merged["command"] == ["x", "y"]
    assert merged["summary"]["configs"]["mutual"]["per_seed"]["0"]["mean_bcubed_f"] == pytest.approx(0.9)
    assert "| a | 3, 1.00, 1.00, 0.70 | 3, 1.00, 1.00, 0.90 |" in bench.table(merged)
    clash = dict(later, configs={"one": ["ssl.prototype_sets=2"]})
    with pytest.raises(ValueError, match="config 'one'"):
        bench.merge([first, clash])


def test_a_result_names_the_installed_builds_and_a_merge_of_runs_on_other_installs_keeps_each(bench):
    import torch

    versions = bench.package_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] and {"numpy", "onnxruntime", "av"} <= set(versions)
    part = {"configs": {"one": []}, "seeds": [0], "command": "x", "packages": {"torch": "1"},
            "videos": {"a": video({"one": {"0": scored(0.7)}}, HAC)}}
    same = dict(part, seeds=[1], command="y", videos={"a": video({"one": {"1": scored(0.9)}}, HAC)})
    assert bench.merge([part, same])["packages"] == {"torch": "1"}
    other = dict(same, packages={"torch": "2"})
    assert bench.merge([part, other])["packages"] == [{"torch": "1"}, {"torch": "2"}]
