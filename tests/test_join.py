"""Joining Algorithm 1's clusters along the coarse matches found on the finetuned embeddings."""

import numpy as np

import pytest

from vcn.clustering.join import (join_below_chance, join_matched_clusters, join_nearest_clusters,
                                 matched_pairs_nearest_first)


def test_matched_tracks_join_their_clusters_unless_two_faces_seen_together_would_meet():
    labels = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: -1}
    # 1-2 and 3-4 join; 2-3 would put 1 and 4 (seen in one frame) in one cluster: skipped; 5-6: 6 is noise.
    joined = join_matched_clusters(labels, [(1, 2), (3, 4), (2, 3), (5, 6)], {(1, 4)})
    assert joined == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: -1}
    # Nothing matched: the clusters stay (renumbered by their smallest track).
    assert join_matched_clusters({7: 5, 8: 2}, []) == {7: 0, 8: 1}


def test_matched_pairs_come_nearest_first_whichever_way_they_were_matched():
    emb = np.array([[1, 0], [1, 0.1], [0, 1], [0.5, 1], [-1, 0]], float)
    toc = np.array([10, 11, 12, 13, 14])
    matched = np.zeros((5, 5), bool)
    matched[2, 3] = True        # one direction only: 12 matches 13
    matched[0, 1] = matched[1, 0] = True
    assert matched_pairs_nearest_first(matched, toc, emb, toc) == [(10, 11), (12, 13)]


def _people(n_people: int, tracks_each: int, crops_each: int, seed: int = 0):
    """Teacher probabilities and student log-probabilities of crops of n_people, each person peaked on a prototype
    of their own, with noise: (p, l, track of crop, person of track)."""
    rng = np.random.default_rng(seed)
    k = 4 * n_people
    p, track_of_crop, person = [], [], {}
    for who in range(n_people):
        for t in range(tracks_each):
            track = 10 * who + t
            person[track] = who
            for _ in range(crops_each):
                logits = rng.normal(0, 0.5, k)
                logits[who] += 4.0
                p.append(np.exp(logits) / np.exp(logits).sum())
                track_of_crop.append(track)
    p = np.array(p)
    return p, np.log(p), np.array(track_of_crop), person


def test_clusters_closer_than_chance_join_and_strangers_do_not():
    p, l, track_of_crop, person = _people(n_people=6, tracks_each=4, crops_each=3)
    singletons = {t: i for i, t in enumerate(sorted(person))}
    got = join_below_chance(singletons, p, l, track_of_crop)
    # Every person's four tracks in one cluster, six clusters, numbered by smallest track id.
    assert len(set(got.values())) == 6
    assert all((got[a] == got[b]) == (person[a] == person[b]) for a in person for b in person)
    assert [got[10 * who] for who in range(6)] == list(range(6))


def test_joining_below_chance_never_puts_two_faces_of_one_frame_together():
    p, l, track_of_crop, person = _people(n_people=6, tracks_each=4, crops_each=3, seed=1)
    singletons = {t: i for i, t in enumerate(sorted(person))}
    got = join_below_chance(singletons, p, l, track_of_crop, cannot_link={(0, 1)})
    assert got[0] != got[1]
    assert got[2] == got[3]                           # the person's other tracks still join
    # Labels below 0 (DBSCAN noise) are left alone; one cluster has nothing to join.
    assert join_below_chance({0: -1, 1: 0}, p, l, track_of_crop)[0] == -1
    assert join_below_chance({0: 5}, p, l, track_of_crop) == {0: 5}


def test_stage_3_joins_below_chance_only_when_asked():
    import torch

    from vcn.config import RunConfig
    from vcn.stage23 import FinetunedVideo, _Prepared, cluster_finetuned

    # Six people x four tracks; each track's crops nearly identical, so Algorithm 1 (cosine metric, each track's
    # own threshold its within-track distance, about 0) joins nothing; a person's tracks lie far closer to each
    # other than to anyone else.
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 32))
    emb, toc = [], []
    for who in range(6):
        for t in range(4):
            look = centres[who] + 0.3 * rng.normal(size=32)
            emb += [look + 0.001 * rng.normal(size=32) for _ in range(3)]
            toc += [10 * who + t] * 3
    emb, toc = torch.tensor(np.array(emb), dtype=torch.float32), np.array(toc)
    tracks = np.unique(toc)
    prep = _Prepared(tracks, np.arange(len(toc)), toc, torch.zeros(len(toc), 3, 112, 112, dtype=torch.uint8), emb,
                     {int(t): 1.0 for t in tracks}, {int(t): "clustered" for t in tracks}, np.ones(len(toc), bool))
    ft = FinetunedVideo(prep, emb, None, [], {}, "sface")
    ask = ["cluster.metric=cosine", "cluster.join_final_matches=false", "cluster.join_below_chance=true"]
    cluster_of = lambda table: dict(zip(table.column("track_id").to_pylist(), table.column("cluster_id").to_pylist()))
    off = cluster_of(cluster_finetuned(ft, RunConfig.load(None, overrides=ask[:2]), "v"))
    on = cluster_of(cluster_finetuned(ft, RunConfig.load(None, overrides=ask), "v", {(0, 1)}))
    assert len(set(off.values())) == 24
    # Person 0's tracks 0 and 1 share a frame: two clusters, tracks 2 and 3 each with one of them; everyone else
    # whole.
    assert on[0] != on[1] and {on[2], on[3]} <= {on[0], on[1]} and len(set(on.values())) == 7
    assert all((on[a] == on[b]) == (a // 10 == b // 10) for a in tracks if a >= 10 for b in tracks if b >= 10)


def _looks(centres: np.ndarray, tracks_of: dict[int, list[int]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three crops per track around its person's centre: (embeddings, track of crop)."""
    rng = np.random.default_rng(seed)
    emb, toc = [], []
    for who, tracks in tracks_of.items():
        for t in tracks:
            look = centres[who] + 0.25 * rng.normal(size=centres.shape[1])
            emb += [look + 0.01 * rng.normal(size=centres.shape[1]) for _ in range(3)]
            toc += [t] * 3
    return np.array(emb), np.array(toc)


def test_a_persons_two_clusters_that_are_each_others_nearest_join_and_strangers_stay_apart():
    centres = 5.0 * np.eye(8, 32)     # eight people, strangers about equally far apart
    tracks_of = {who: [10 * who + k for k in range(3)] for who in range(8)}
    emb, toc = _looks(centres, tracks_of, seed=1)
    # Person 0 split in two clusters; everyone else whole; persons 1 and 2, 3 and 4 seen in one frame.
    labels = {t: (who if not (who == 0 and t == 2) else 8) for who, ts in tracks_of.items() for t in ts}
    apart = {(10, 20), (30, 40)}
    got = join_nearest_clusters(labels, [(emb, toc)], apart)
    assert got[0] == got[1] == got[2]
    assert len(set(got.values())) == 8 and all((got[a] == got[b]) == (a // 10 == b // 10) for a in got for b in got)
    assert [got[10 * who] for who in range(8)] == list(range(8))          # renumbered by smallest track
    # "both": a second space where the two pieces are strangers keeps them apart.
    other = centres.copy()
    other[0] = centres[5]     # in this space track 2 looks like person 5
    emb2 = emb.copy()
    emb2[toc == 2] = _looks(other, {0: [2]}, seed=3)[0]
    both = join_nearest_clusters(labels, [(emb, toc), (emb2, toc)], apart)
    assert both[2] != both[0]
    # Without a pair of clusters seen in one frame the video shows no distance between two people: no join.
    assert len(set(join_nearest_clusters(labels, [(emb, toc)], set()).values())) == 9
    # Unknown (-1) stays; a track seen in one frame with the other piece blocks the join.
    labels[99] = -1
    blocked = join_nearest_clusters(labels, [(emb, toc)], apart | {(0, 2)})
    assert blocked[99] == -1 and blocked[2] != blocked[0]


def test_stage_3_names_the_spaces_join_nearest_clusters_takes():
    from vcn.config import RunConfig
    from vcn.errors import VcnError
    from vcn.stage23 import check_stage2_settings

    check_stage2_settings(RunConfig.load(None, overrides=["cluster.join_nearest_clusters=both"]))
    with pytest.raises(VcnError, match="cluster.join_nearest_clusters='pose' is unknown; choose one of off, base"):
        check_stage2_settings(RunConfig.load(None, overrides=["cluster.join_nearest_clusters=pose"]))
