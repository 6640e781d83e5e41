"""Tests of the clustering scores against hand-computed cases, and of the TV-series track label reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vcn.errors import VcnError
from vcn.metrics import (
    UNKNOWN,
    bcubed,
    clustering_scores,
    load_tv_tracks,
    nmi,
    pcr,
    unknown_share,
    wcp,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TV = SHARED / "data" / "tv_tracks"

# Eight tracks, three people, two Unknown tracks. Clusters: 0 = {a, a, b}, 1 = {b, b}, 2 = {c}; Unknown: a, c.
PRED = [0, 0, 0, 1, 1, 2, UNKNOWN, UNKNOWN]
TRUTH = ["a", "a", "b", "b", "b", "c", "a", "c"]


def test_wcp_by_hand():
    # Singletons: majorities 2 + 2 + 1 + (1 + 1 for the two Unknown singletons) over 8 tracks.
    assert wcp(PRED, TRUTH) == pytest.approx(7 / 8)
    # Over the six clustered tracks: 2 + 2 + 1.
    assert wcp(PRED, TRUTH, unknown="exclude") == pytest.approx(5 / 6)
    assert unknown_share(PRED) == pytest.approx(2 / 8)


def test_pcr_by_hand():
    assert pcr(PRED, TRUTH) == pytest.approx(5 / 3)            # 3 clusters + 2 singletons, 3 people
    assert pcr(PRED, TRUTH, unknown="exclude") == pytest.approx(3 / 3)


def test_bcubed_by_hand():
    # Precision per track: 2/3, 2/3, 1/3 (cluster 0), 1, 1, 1, and 1, 1 for the singletons -> 20/3 over 8.
    # Recall per track: a: 2/3, 2/3, 1/3; b: 1/3, 2/3, 2/3; c: 1/2, 1/2 -> 13/3 over 8.
    p, r, f = bcubed(PRED, TRUTH)
    assert p == pytest.approx(20 / 24)
    assert r == pytest.approx(13 / 24)
    assert f == pytest.approx(2 * (20 / 24) * (13 / 24) / (20 / 24 + 13 / 24))
    # Clustered only: precision 2/3,2/3,1/3,1,1,1 -> 14/3 over 6; recall over the clustered tracks'
    # identity sizes a:2, b:3, c:1 -> 1,1,1/3,2/3,2/3,1 = 14/3 over 6.
    p, r, _ = bcubed(PRED, TRUTH, unknown="exclude")
    assert p == pytest.approx(14 / 18)
    assert r == pytest.approx(14 / 18)


def test_nmi_by_hand():
    # pred [0, 0, 0, 1] vs truth [a, a, b, b]: cells (0,a)=2, (0,b)=1, (1,b)=1; cluster sizes 3, 1; identities 2, 2.
    mi = 0.5 * math.log(4 * 2 / (3 * 2)) + 0.25 * math.log(4 * 1 / (3 * 2)) + 0.25 * math.log(4 * 1 / (1 * 2))
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_truth = math.log(2)
    assert nmi([0, 0, 0, 1], ["a", "a", "b", "b"]) == pytest.approx(mi / ((h_pred + h_truth) / 2))
    assert nmi([0, 0, 1, 1], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert nmi([0, 1, 0, 1], ["a", "a", "b", "b"]) == pytest.approx(0.0, abs=1e-12)
    assert nmi([3, 3, 3], ["a", "a", "a"]) == 1.0        # both one cluster: identical partitions
    assert nmi([3, 3, 3, 3], ["a", "a", "b", "b"]) == 0.0


def test_perfect_singletons_and_one_cluster():
    truth = np.array([5, 5, 5, 7, 7, 9])
    perfect = clustering_scores(np.array([1, 1, 1, 0, 0, 4]), truth)
    for key in ("wcp", "pcr", "nmi", "bcubed_precision", "bcubed_recall", "bcubed_f"):
        assert perfect[key] == pytest.approx(1.0), key
    single = clustering_scores(np.arange(6), truth)
    # All singletons: WCP rewards over-splitting with a perfect score; BCubed recall and PCR expose it.
    assert single["wcp"] == 1.0 and single["bcubed_precision"] == 1.0
    assert single["bcubed_recall"] == pytest.approx((3 * 1 / 3 + 2 * 1 / 2 + 1) / 6)
    assert single["pcr"] == pytest.approx(6 / 3)
    one = clustering_scores(np.zeros(6, np.int64), truth)
    assert one["wcp"] == pytest.approx(3 / 6) and one["bcubed_recall"] == 1.0 and one["pcr"] == pytest.approx(1 / 3)


def test_all_unknown_and_the_two_policies():
    scores = clustering_scores(np.full(4, UNKNOWN), np.array(["a", "a", "b", "c"]))
    assert scores["unknown_share"] == 1.0 and scores["n_clusters"] == 0 and scores["n_unknown"] == 4
    assert scores["wcp"] == 1.0 and scores["pcr"] == pytest.approx(4 / 3)
    assert math.isnan(scores["wcp_clustered"])
    assert scores["pcr_clustered"] == 0.0


def test_scores_ignore_label_names():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 7, 200)
    pred = rng.integers(0, 12, 200)
    pred[rng.random(200) < 0.1] = UNKNOWN
    names = np.array([f"person_{t}" for t in truth])
    relabel = np.where(pred >= 0, pred * 3 + 1000, pred)
    a, b = clustering_scores(pred, truth), clustering_scores(relabel, names)
    for key in a:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key]), key


def test_nmi_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(5):
        truth = rng.integers(0, 6, 300)
        pred = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 9, 300))
        assert nmi(pred, truth) == pytest.approx(sklearn_metrics.normalized_mutual_info_score(truth, pred))


def test_bad_inputs():
    with pytest.raises(ValueError, match="one length"):
        wcp([0, 1], ["a"])
    with pytest.raises(ValueError, match="integers"):
        wcp([0.5, 1.0], ["a", "b"])
    with pytest.raises(ValueError, match="unknown="):
        wcp([0], ["a"], unknown="drop")
    assert math.isnan(wcp([], []))


# ---------------------------------------------------------------------------------------------- TV tracks


@pytest.fixture(scope="module")
def episodes():
    if not TV.is_dir():
        pytest.skip(f"shared TV track labels not found at {TV} (the repository's sibling ../shared)")
    return [load_tv_tracks(p) for p in sorted(TV.glob("*.facetracks.mat"))]


def test_tv_track_statistics_match_the_readme(episodes, capsys):
    assert len(episodes) == 12
    rows = []
    for ep in episodes:
        ids_lines = sum(1 for line in (TV / f"{ep.episode}.ids").read_text().splitlines()[1:] if line.strip())
        ids_identities = len({line.split(None, 1)[1].strip()
                              for line in (TV / f"{ep.episode}.ids").read_text().splitlines()[1:] if line.strip()})
        rows.append((ep.episode, len(ep), ids_lines, int(ep.labelled.sum()), ep.n_identities, ids_identities))
        assert len(ep.boxes) == len(ep.frames) == len(ep)
        assert all(len(b) == len(f) == len(t) for b, f, t in zip(ep.boxes, ep.frames, ep.timestamps))
        allboxes = np.concatenate(ep.boxes)
        assert (allboxes[:, 2] > allboxes[:, 0]).all() and allboxes[:, 2].max() <= 1024
        assert ep.labelled.sum() >= ids_lines           # every .ids track is labelled
        assert not (ep.identities[ep.labelled] == "").any()
        assert "unknown" not in set(ep.identities[ep.labelled].tolist())
    with capsys.disabled():
        print("\nepisode        tracks(.mat)  tracks(.ids)  labelled  identities  identities(.ids)")
        for r in rows:
            print(f"{r[0]:<14} {r[1]:>12} {r[2]:>13} {r[3]:>9} {r[4]:>11} {r[5]:>17}")
    # shared data README: 524-1194 tracks and 6-45 identities per episode (counted in the .ids files).
    assert min(r[2] for r in rows) == 524 and max(r[2] for r in rows) == 1194
    assert min(r[5] for r in rows) == 6 and max(r[5] for r in rows) == 45
    assert all(r[4] == r[5] for r in rows)  # the few tracks only the .mat names add no new person


def test_tv_tracks_perfect_and_singleton_predictions(episodes):
    for ep in episodes:
        truth = ep.identities[ep.labelled]
        _, perfect = np.unique(truth, return_inverse=True)
        scores = clustering_scores(perfect, truth)
        assert scores["wcp"] == 1.0 and scores["pcr"] == 1.0
        assert scores["nmi"] == pytest.approx(1.0)
        single = clustering_scores(np.arange(len(truth)), truth)
        assert single["wcp"] == 1.0
        assert single["bcubed_recall"] < 0.1, (ep.episode, single["bcubed_recall"])


def test_load_tv_tracks_accepts_any_of_the_episode_files(episodes, tmp_path):
    first = episodes[0]
    by_ids = load_tv_tracks(TV / f"{first.episode}.ids")
    by_stem = load_tv_tracks(TV / first.episode)
    assert np.array_equal(by_ids.track_ids, first.track_ids) and np.array_equal(by_stem.identities, first.identities)
    with pytest.raises(VcnError, match="does not exist"):
        load_tv_tracks(tmp_path / "nothing.facetracks.mat")
