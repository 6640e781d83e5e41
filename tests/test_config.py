"""RunConfig: defaults, JSON files and section.key=value overrides, with clear errors."""

import json

import pytest

from vcn.config import RunConfig
from vcn.errors import VcnError


def test_defaults_carry_the_papers_constants():
    cfg = RunConfig()
    assert cfg.ssl.teacher_temp == 0.04 and cfg.ssl.student_temp == 0.1
    assert cfg.match.low_fraction == 0.25
    assert cfg.serfiq.dropout == 0.5
    assert RunConfig.load(None, preset="paper").serfiq.passes == 100
    assert cfg.sample.interval_s == 0.5


def test_round_trip_through_dict_and_file(tmp_path):
    cfg = RunConfig()
    cfg.detect.batch_size = 3
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = RunConfig.load(path)
    assert again.to_dict() == cfg.to_dict()


def test_overrides_parse_json_values():
    cfg = RunConfig.load(None, ["detect.batch_size=16", "track.with_reid=false", "detect.model=/models/pack"])
    assert cfg.detect.batch_size == 16 and cfg.track.with_reid is False and cfg.detect.model == "/models/pack"


@pytest.mark.parametrize("bad, words", [
    ("detect.batchsize=3", "not a setting"),
    ("nosuch.key=1", "unknown section"),
    ("detect=3", "section.key=value"),
    ("detect.batch_size=big", "must be a number"),
    ("track.with_reid=1", "true or false"),
])
def test_bad_overrides_name_the_problem(bad, words):
    with pytest.raises(VcnError, match=words):
        RunConfig.load(None, [bad])


@pytest.mark.parametrize("bad, words", [
    ("ssl.batch_size=0", r"ssl.batch_size=0 must be at least 1 \(the default is 32\)"),
    ("detect.max_side=-5", r"detect.max_side=-5 must be at least 0 \(the default is 960; 0: never downscale\)"),
    ("detect.batch_size=-1", r"detect.batch_size=-1 must be at least 0 \(the default is 0: auto: 8 frames a call "
                             r"on a CPU, 32 on a GPU\)"),
    ("serfiq.batch_size=-2", r"serfiq.batch_size=-2 must be at least 0 \(the default is 0: auto: 4 crops"),
    ("ssl.rounds=-1", r"ssl.rounds=-1 must be at least 0"),
    ("serfiq.dropout=1", r"serfiq.dropout=1.0 must be above 0 and below 1"),
    ("detect.score_threshold=80", r"detect.score_threshold=80.0 must be from 0 to 1"),
    ("ssl.teacher_temp=0", r"ssl.teacher_temp=0.0 must be above 0"),
])
def test_numbers_out_of_range_stop_before_any_work_naming_the_setting(bad, words, tmp_path):
    with pytest.raises(VcnError, match=words):
        RunConfig.load(None, [bad])
    section, _, rest = bad.partition(".")
    key, _, value = rest.partition("=")
    (tmp_path / "c.json").write_text(f'{{"{section}": {{"{key}": {value}}}}}')
    with pytest.raises(VcnError, match=words):      # a config file is held to the same ranges
        RunConfig.load(tmp_path / "c.json")


def test_every_number_has_a_range_the_defaults_and_presets_keep():
    import dataclasses

    from vcn.config import PRESETS, RANGES

    cfg = RunConfig()
    numbers = {f"{section.name}.{f.name}": getattr(getattr(cfg, section.name), f.name)
               for section in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, section.name))
               if f.type in ("int", "float")}
    assert set(numbers) - set(RANGES) == {"ssl.seed", "serfiq.seed"}      # any seed will do
    assert set(RANGES) <= set(numbers)
    assert all(RANGES[k][1](v) for k, v in numbers.items() if k in RANGES)
    for name in PRESETS:
        RunConfig.load(None, preset=name)


def test_missing_config_file_is_a_vcn_error(tmp_path):
    with pytest.raises(VcnError, match="does not exist"):
        RunConfig.load(tmp_path / "nope.json")


def test_consensus_preset_is_the_default_with_three_finetunes():
    consensus, default = RunConfig.load(None, preset="consensus").to_dict(), RunConfig().to_dict()
    assert consensus["cluster"].pop("consensus_finetunes") == 3 and default["cluster"].pop("consensus_finetunes") == 1
    assert consensus == default


def test_paper_preset_restores_the_papers_settings_and_overrides_still_win(tmp_path):
    from vcn.config import PRESETS, RunConfig

    paper = RunConfig.load(None, preset="paper")
    default = RunConfig()
    assert (paper.cluster.merge_rule, paper.cluster.cannot_link, paper.serfiq.exclude_outliers) == ("either", False, True)
    assert (paper.cluster.merge_order, default.cluster.merge_order) == ("all", "best_first")
    assert (paper.ssl.ema_start, paper.ssl.lr_backbone, paper.ssl.warmup_epochs) == (0.996, 1e-5, 50)
    assert (paper.match.method, default.match.method) == ("gaussian", "gaussian_mutual_chance")
    assert (paper.match.gaussian_within_bounds, default.match.gaussian_within_bounds) == (False, True)
    assert (paper.cluster.join_final_matches, default.cluster.join_final_matches) == (False, True)
    assert (paper.cluster.join_base_matches, default.cluster.join_base_matches) == (False, True)
    assert (paper.ssl.rounds, default.ssl.rounds) == (3, 2)
    assert (paper.cluster.join_same_setup, default.cluster.join_same_setup) == (False, True)
    assert (paper.ssl.train_same_setup, default.ssl.train_same_setup) == (False, True)
    assert (paper.ssl.warmup_bfloat16, default.ssl.warmup_bfloat16) == (False, True)
    # Every setting a preset names differs from the default (a preset entry that changes nothing is stale).
    for section, values in PRESETS["paper"].items():
        assert any(getattr(getattr(default, section), k) != v for k, v in values.items()), section
    assert RunConfig.load(None, preset="default").to_dict() == default.to_dict()
    f = tmp_path / "c.json"
    f.write_text('{"cluster": {"merge_rule": "both"}}')
    mixed = RunConfig.load(f, ["ssl.rounds=4"], preset="paper")
    assert (mixed.cluster.merge_rule, mixed.ssl.rounds, mixed.ssl.ema_start) == ("both", 4, 0.996)
    with pytest.raises(VcnError, match="preset 'papr' is unknown; choose one of default, paper"):
        RunConfig.load(None, preset="papr")


def test_what_zero_means_in_range_errors_is_what_the_code_does():
    from vcn.config import ZERO_MEANS
    from vcn.pipeline import AUTO_DETECT_BATCH
    from vcn.quality import AUTO_SERFIQ_BATCH

    assert ZERO_MEANS["detect.batch_size"] == (f"auto: {AUTO_DETECT_BATCH[False]} frames a call on a CPU, "
                                               f"{AUTO_DETECT_BATCH[True]} on a GPU")
    assert ZERO_MEANS["serfiq.batch_size"] == (f"auto: {AUTO_SERFIQ_BATCH[False]} crops a call on a CPU, "
                                               f"{AUTO_SERFIQ_BATCH[True]} on a GPU")
