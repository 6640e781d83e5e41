"""The clustering benchmark's own parts: its brute-force comparator and its scoring of coarse matches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.benchmark_scripts import load_benchmark
from vcn.clustering import cluster_pair_losses


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("clustering")


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


def test_track_mean_auc_orders_people_and_counts_ties_half(bench):
    emb = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], float)
    tracks = np.array([0, 1, 2, 3])
    assert bench.track_mean_auc(emb, tracks, {0: "a", 1: "a", 2: "b", 3: "b"}) == 1.0
    # Names swapped across people: the same-person pairs are now the far ones; only the orthogonal
    # different-person pair (0, 2) is farther, 2 of the 8 (same, different) comparisons.
    assert bench.track_mean_auc(emb, tracks, {0: "a", 1: "b", 2: "b", 3: "a"}) == 0.25
    assert bench.track_mean_auc(np.ones((4, 2)), tracks, {0: "a", 1: "a", 2: "b", 3: "b"}) == 0.5
    assert bench.track_mean_auc(emb, tracks, {0: "a", 1: "b"}) is None      # no same-person pair


def test_summary_picks_one_hac_threshold_for_all_videos_and_counts_targets(bench):
    def s(wcp, pcr, f):
        return {"wcp": wcp, "pcr": pcr, "bcubed_f": f, "unknown_share": 0.0}
    hac = {t: s(1, 1, 0.5) for t in bench.HAC_THRESHOLDS}
    one = {"methods": {**{f"hac_{t}": v for t, v in hac.items()}, "hac_0.5": s(1, 1, 0.9), "vcn": s(0.98, 1.1, 0.95)}}
    two = {"methods": {**{f"hac_{t}": v for t, v in hac.items()}, "hac_0.5": s(1, 1, 0.8), "hac_0.7": s(1, 1, 0.85),
                       "vcn": s(0.9, 2.0, 0.6)}}
    out = bench.summarise({"one": one, "two": two})
    assert out["hac_threshold_chosen_once"] == 0.5
    vcn = out["methods"]["vcn"]
    assert (vcn["videos_wcp_ge_0.97"], vcn["videos_pcr_0.9_to_1.15"], vcn["videos_f_ge_hac_chosen_once"]) == (1, 1, 1)
    assert vcn["mean_bcubed_f"] == pytest.approx(0.775)


def test_markdown_table_has_a_row_per_video_and_the_threshold_chosen_once(bench):
    r = {"n_clusters": 7, "n_identities": 6, "wcp": 1.0, "pcr": 7 / 6, "bcubed_f": 0.97}
    video = {"methods": {m: r for m in ("vcn", "hac_0.5")}, "auc_track_means": {"base": 0.9, "finetuned": 0.95}}
    video["methods"]["hac_best_per_video"] = dict(r, threshold=0.7)
    text = bench.markdown_table({"videos": {"clip": video}, "summary": {"hac_threshold_chosen_once": 0.5}})
    header, _, row = text.splitlines()
    assert "hac_0.5" in header and row.startswith("| clip (6) | 7, 1.00, 1.17, 0.97 |")
    assert "7, 1.00, 1.17, 0.97 @0.7" in row and row.endswith("| 0.900 -> 0.950 |") and "| - |" in row


def test_reviewed_truth_joins_the_reviewed_identities_and_scores_beside_the_truth(bench, tmp_path):
    import pyarrow as pa

    from vcn.render import TRUTH_SCHEMA

    review = tmp_path / "review.csv"
    review.write_text("video,identity,same_person_as,evidence\nclip,anna_dark,anna,same jacket\n")
    # Three tracks, one box each: anna, anna_dark (the same woman, named twice), ben.
    boxes = [(0, "anna"), (3, "anna_dark"), (6, "ben")]
    columns = {"frame": [f for f, _ in boxes], "x1": [0.0] * 3, "y1": [0.0] * 3, "x2": [50.0] * 3, "y2": [50.0] * 3,
               "identity": [i for _, i in boxes], "t_s": [float("nan")] * 3}
    truth = pa.table({k: columns[k] for k in TRUTH_SCHEMA.names}).cast(TRUTH_SCHEMA)
    assert bench.reviewed_truth("other_clip", truth, review) is None
    joined = bench.reviewed_truth("clip", truth, review)
    assert joined.column("identity").to_pylist() == ["anna", "anna", "ben"]
    assert truth.column("identity").to_pylist() == ["anna", "anna_dark", "ben"]      # the truth itself untouched

    # Only the columns scoring reads: a track per box, each box on the truth's.
    tracks = pa.table({"track_id": [0, 1, 2]})
    detections = pa.table({"frame": [f for f, _ in boxes], "track_id": [0, 1, 2], "x1": [0.0] * 3, "y1": [0.0] * 3,
                           "x2": [50.0] * 3, "y2": [50.0] * 3})
    # The two anna tracks in one cluster: a merge of strangers against the truth, right against the review.
    clusters = pa.table({"track_id": [0, 1, 2], "cluster_id": [0, 0, 1]})
    score = bench.scorer("clip", {"tracks": tracks, "detections": detections}, truth, review)(clusters)
    assert score["wcp"] < 1 and score["reviewed_truth"]["wcp"] == 1 and score["reviewed_truth"]["bcubed_f"] == 1
    assert bench.as_reviewed(score) is score["reviewed_truth"] and bench.as_reviewed({"wcp": 1}) == {"wcp": 1}


def test_the_repository_review_names_identities_of_the_shared_truth(bench):
    import csv

    with open(bench.TRUTH_REVIEW, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["evidence"].strip() for r in rows)
    for r in rows:
        path = bench.SHARED / "truth" / f"{r['video']}.truth.csv"
        if not path.is_file():
            pytest.skip("../shared is absent")
        names = set(bench.read_truth(path).column("identity").to_pylist())
        assert {r["identity"], r["same_person_as"]} <= names and r["identity"] != r["same_person_as"]


def test_review_of_possible_splits_names_each_pair_and_joins_only_the_right_ones(bench):
    """Four clusters: anna split in two (clusters 0 and 1, near each other), bob (seen in one frame with cluster 0),
    and an unlabelled face. The pairs shown come nearest first with their distance and verdict, never a pair that
    shares a frame; only the right one is joined before scoring."""
    import pyarrow as pa

    directions = {0: [1.0, 0.0, 0.0], 1: [0.9, 0.1, 0.0], 2: [0.6, 0.8, 0.0], 3: [0.5, 0.0, 0.85]}
    embeddings = np.array([directions[t] for t in range(4) for _ in range(2)])
    track_of_crop = np.repeat(np.arange(4), 2)
    clusters = pa.table({"track_id": pa.array([0, 1, 2, 3], pa.int64()), "cluster_id": pa.array([0, 1, 2, 3], pa.int64())})
    identity_of = {0: "anna", 1: "anna", 2: "bob"}
    scored = []

    def score(table):
        scored.append(dict(zip(table.column("track_id").to_pylist(), table.column("cluster_id").to_pylist())))
        return {"n_clusters": len(set(scored[-1].values()))}

    out = bench.review_possible_splits(clusters, embeddings, track_of_crop, {(0, 2)}, identity_of, score)
    assert [p["verdict"] for p in out["pairs"]] == ["right", "wrong", "unlabelled"]
    distances = [p["distance"] for p in out["pairs"]]
    assert distances == sorted(distances) and distances[0] < 0.01
    assert (out["right"], out["wrong"], out["unlabelled"]) == (1, 1, 1)
    assert scored[-1][0] == scored[-1][1] and out["after_review"] == {"n_clusters": 3}


def test_a_cached_stage1_made_with_other_settings_is_named_not_reused(bench):
    from vcn.config import RunConfig

    made_with = RunConfig().to_dict()                        # a run made with the defaults: sample.interval_s 0.5
    asked = ["sample.interval_s=0.25", "detect.score_threshold=0.8"]
    differ = bench.settings_differ(made_with, RunConfig.load(None, overrides=asked), asked)
    assert differ == "sample.interval_s=0.5, not 0.25"      # the setting it kept is not named
    made_with["sample"]["interval_s"] = 0.25
    assert bench.settings_differ(made_with, RunConfig.load(None, overrides=asked), asked) == ""
    assert bench.settings_differ({}, RunConfig(), []) == ""  # no stage-1 setting asked for: any cached run serves
