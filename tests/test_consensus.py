"""A consensus of several finetunes' clusterings (vcn.clustering.consensus, cluster.consensus_finetunes)."""

from __future__ import annotations

import pytest

from tests.test_stage23 import crops_table, tiny_cfg, toy_identity_crops
from tests.test_ssl import ToyBackbone
from vcn.clustering.consensus import consensus_labels
from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.stage23 import finetune_and_cluster


def partition(labels: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for track, label in labels.items():
        groups.setdefault(label, set()).add(track)
    return {frozenset(g) for g in groups.values()}


def as_labels(*groups: set[int]) -> dict[int, int]:
    return {t: i for i, g in enumerate(groups) for t in g}


def test_a_merge_or_split_made_by_one_run_of_three_is_undone():
    right = as_labels({1, 2, 3}, {4, 5}, {6})
    merged = as_labels({1, 2, 3, 4, 5}, {6})        # one run merges two people
    split = as_labels({1, 2}, {3}, {4, 5}, {6})      # another splits one
    assert partition(consensus_labels([right, merged, split])) == partition(right)
    # What two runs of three agree on stands, against the third.
    assert partition(consensus_labels([merged, merged, right])) == partition(merged)


def test_one_run_is_its_own_consensus_and_two_that_disagree_join_at_half():
    run = as_labels({10, 11}, {12}, {13, 14, 15})
    assert partition(consensus_labels([run])) == partition(run)
    other = as_labels({10, 11, 12}, {13, 14, 15})
    # 12 with 10 and 11: one run of two, exactly half: "at least half" joins it.
    assert partition(consensus_labels([run, other])) == partition(other)


def test_tracks_sharing_a_frame_are_never_joined_even_when_every_run_joins_them():
    together = as_labels({1, 2, 3}, {4})
    labels = consensus_labels([together] * 3, cannot_link={(1, 3)})
    assert labels[1] != labels[3] and labels[4] not in (labels[1], labels[3])
    assert len({labels[1], labels[2], labels[3]}) == 2


def test_tracks_unknown_in_a_run_are_left_out_and_an_empty_input_gives_nothing():
    a = {1: 0, 2: 0, 3: 1, 4: -1}
    b = {1: 0, 2: 0, 3: 1, 4: 1}
    assert partition(consensus_labels([a, b])) == {frozenset({1, 2}), frozenset({3})}
    assert consensus_labels([]) == {} and consensus_labels([{7: 0}]) == {7: 0}


def test_the_setting_runs_that_many_finetunes_and_writes_one_valid_clustering(monkeypatch):
    import vcn.stage23 as stage23

    images, tracks = toy_identity_crops([0, 0, 1, 1, 2])
    table = crops_table(images, tracks)
    single, embeddings, _ = finetune_and_cluster(table, ToyBackbone(), tiny_cfg(), "v")
    seeds, serfiq = [], []
    real_finetune, real_serfiq = stage23.finetune, stage23.embed_with_serfiq
    monkeypatch.setattr(stage23, "finetune", lambda *a, **k: seeds.append(a[3].seed) or real_finetune(*a, **k))
    monkeypatch.setattr(stage23, "embed_with_serfiq", lambda *a, **k: serfiq.append(1) or real_serfiq(*a, **k))
    cfg = tiny_cfg()
    cfg.cluster.consensus_finetunes = 3
    clusters, embeddings3, timings = finetune_and_cluster(table, ToyBackbone(), cfg, "v")
    assert seeds == [cfg.ssl.seed, cfg.ssl.seed + 1, cfg.ssl.seed + 2] and len(serfiq) == 1
    assert clusters.schema == single.schema and clusters.column("track_id").equals(single.column("track_id"))
    assert all(c >= 0 for c in clusters.column("cluster_id").to_pylist())
    assert embeddings3.equals(embeddings)            # the first finetune's (ssl.seed's) embeddings
    assert timings["finetune_s"] > 0 and timings["total_s"] >= timings["stage2_s"]


def test_zero_finetunes_is_refused_by_name():
    with pytest.raises(VcnError, match=r"cluster.consensus_finetunes=0 must be at least 1"):
        RunConfig.load(None, ["cluster.consensus_finetunes=0"])
    cfg = RunConfig()
    cfg.cluster.consensus_finetunes = 0     # set in code, past the settings' ranges: the stage refuses it too
    images, tracks = toy_identity_crops([0, 1])
    with pytest.raises(VcnError, match="cluster.consensus_finetunes=0 must be 1 or more"):
        finetune_and_cluster(crops_table(images, tracks), ToyBackbone(), cfg, "v")
