"""The person index (vcn/persons/): representatives, the linking rule, persons, decisions, atomic and locked
updates, local and on the S3 server, the CLI, the catalogue hook and the persons page in headless Chromium.

Video outputs here are real folders of real Parquet tables (the schemas of vcn/tables.py) whose embeddings are
drawn per person: every person has a fixed direction, each video shows them in a new "look" (a shifted mean),
and crops scatter around that. That keeps these tests at seconds; benchmarks/persons_accuracy.py measures the
same code on real and rendered footage.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vcn import storage
from vcn.cli import main as cli
from vcn.errors import VcnError
from vcn.persons import update_index
from vcn.persons.archivist import merge_persons, name_person, split_person
from vcn.persons.assign import assign_persons
from vcn.persons.candidates import exact_neighbours, ivf_neighbours
from vcn.persons.lease import Lease, index_lock
from vcn.persons.link import (Links, Threshold, VideoEvidence, catalogue_threshold, cross_video_chance, find_links,
                              video_evidence)
from vcn.persons.query import load_persons, names_of, person_of_cluster
from vcn.persons.represent import cluster_representatives
from vcn.persons.root import IndexRoot
from vcn.persons.store import CURRENT, read_state
from vcn.tables import PERSON_CLUSTERS, PERSON_VIDEOS, PERSONS, make_table

DIM = 128
REPO = Path(__file__).resolve().parents[1]


# ----- synthetic video outputs (real files, real parquet) -------------------------------------------------------

def _direction(name: str) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha1(name.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


def write_video(root: Path, video_id: str, people: list[str], seed: int = 0, catalogue: bool = False,
                together: bool = True, unknown: int = 1, crops: int = 4) -> Path:
    """A finished `vcn run` folder: one cluster per name (cluster id = position), one track each, all tracks of
    a video on screen together in shot 0 when `together`, plus `unknown` tracks of cluster -1."""
    rng = np.random.default_rng(seed)
    folder = root / ("videos" if catalogue else "") / video_id
    folder.mkdir(parents=True, exist_ok=True)
    tracks, clusters, emb, crop_rows = [], [], [], []
    crop_id = 0
    names = people + [f"stranger-{video_id}-{i}" for i in range(unknown)]
    for t, name in enumerate(names):
        look = _direction(name) + 0.45 * rng.standard_normal(DIM) / np.sqrt(DIM)
        start = 0 if together else 30 * t
        tracks.append(dict(video_id=video_id, track_id=t, shot_id=0 if together else t, start_frame=start,
                           end_frame=start + 20, start_s=start / 10, end_s=(start + 20) / 10, n_detections=21,
                           n_crops=crops, n_good_crops=crops, mean_score=0.9))
        cluster = t if t < len(people) else -1
        clusters.append(dict(video_id=video_id, track_id=t, cluster_id=cluster, track_quality=1.0,
                             reason="clustered" if cluster >= 0 else "serfiq_outlier"))
        colour = [int(x) for x in _direction(name)[:3] * 100 + 128]
        for k in range(crops):
            e = look + 0.2 * rng.standard_normal(DIM) / np.sqrt(DIM)
            e = (e / np.linalg.norm(e)).astype(np.float32)
            for model, vec in (("sface", e), ("sface+finetuned", rng.standard_normal(DIM).astype(np.float32))):
                emb.append(dict(video_id=video_id, crop_id=crop_id, track_id=t, model=model, embedding=vec.tolist()))
            img = np.full((112, 112, 3), colour, np.uint8)
            cv2.circle(img, (56, 56), 30, (255, 255, 255), -1)
            crop_rows.append(dict(video_id=video_id, crop_id=crop_id, track_id=t, shot_id=tracks[-1]["shot_id"],
                                  frame=start + 5 * k, t_s=(start + 5 * k) / 10, x1=0, y1=0, x2=50, y2=50, score=0.9,
                                  landmarks=[0.0] * 10, face_px=50, blur_var=100.0, quality_ok=True,
                                  image=cv2.imencode(".png", img)[1].tobytes()))
            crop_id += 1
    for name, rows in (("tracks", tracks), ("clusters", clusters), ("embeddings", emb), ("crops", crop_rows)):
        pq.write_table(make_table(name, rows), folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps({"video_id": video_id, "seed": seed,
                                                     "stages_done": ["detect", "track", "cluster"],
                                                     "video_info": {"fps": 10.0}}))
    return folder


CASTS = {"ep1": ["ann", "bob", "cat", "dan"], "ep2": ["ann", "bob", "eve"], "ep3": ["cat", "eve", "fay", "ann"]}


def write_casts(root: Path, casts: dict[str, list[str]] = CASTS, catalogue: bool = False) -> None:
    for i, (vid, people) in enumerate(casts.items()):
        write_video(root, vid, people, seed=i + 1, catalogue=catalogue)


def persons_by_name(state, casts: dict[str, list[str]] = CASTS) -> dict[str, set[int]]:
    """true name -> the person ids its clusters got."""
    person = person_of_cluster(state)
    out: dict[str, set[int]] = {}
    for vid, people in casts.items():
        for c, name in enumerate(people):
            if (vid, c) in person:
                out.setdefault(name, set()).add(person[(vid, c)])
    return out


def assert_right_persons(state, casts=CASTS) -> None:
    found = persons_by_name(state, casts)
    assert all(len(ids) == 1 for ids in found.values()), found            # each person whole
    ids = [next(iter(v)) for v in found.values()]
    assert len(ids) == len(set(ids)), found                                 # and no two people joined


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / "persons").rglob("*")
            if p.is_file() and p.name != "LOCK"}


# ----- the parts ----------------------------------------------------------------------------------------------

def test_representative_is_the_normalised_mean_of_base_embeddings(tmp_path):
    folder = write_video(tmp_path, "v", ["ann", "bob"], unknown=2)
    vc = cluster_representatives(folder)
    assert vc.model == "sface" and vc.cluster_id.tolist() == [0, 1]          # Unknown tracks are no one
    emb = pq.read_table(folder / "embeddings.parquet").to_pylist()
    base = np.array([r["embedding"] for r in emb if r["model"] == "sface" and r["track_id"] == 0])
    mean = base.mean(axis=0)
    assert np.allclose(vc.embedding[0], mean / np.linalg.norm(mean), atol=1e-6)
    assert vc.n_crops.tolist() == [4, 4] and vc.n_tracks.tolist() == [1, 1]
    assert vc.screen_s[0] == pytest.approx(2.1)                              # 0.0-2.0 s plus one frame
    assert vc.cooccurring == [(0, 1)]                                        # the two share frames
    apart = cluster_representatives(write_video(tmp_path, "w", ["ann", "bob"], together=False))
    assert apart.cooccurring == []
    # A cluster without base embeddings (every crop failed the quality gate) cannot be linked: left out.
    emb = pq.read_table(folder / "embeddings.parquet")
    pq.write_table(emb.filter(pc.not_equal(emb.column("track_id"), 1)), folder / "embeddings.parquet")
    vc = cluster_representatives(folder)
    assert vc.cluster_id.tolist() == [0] and vc.cooccurring == []
    (folder / "clusters.parquet").unlink()
    with pytest.raises(VcnError, match="clusters.parquet is missing"):
        cluster_representatives(folder)


def test_threshold_is_the_closest_pair_sharing_a_frame_or_the_chance_bound_whichever_is_smaller():
    e = np.eye(3, dtype=np.float32)
    e[2] = [0.6, 0.8, 0]
    ev, own = video_evidence(e, [(0, 1)])
    assert ev.min_cooccurring == pytest.approx(1.0) and ev.n_cooccurring == 1
    assert ev.min_within == pytest.approx(0.2) and ev.n_within == 3
    assert own.tolist() == pytest.approx([0.4, 0.2, 0.2])
    # Twelve clusters of six videos, two per video: the cross-video pairs are far apart except one close pair.
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((12, 64)).astype(np.float32)
    emb[7] = emb[0] + 0.05 * emb[7]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    video = np.arange(12) // 2
    chance, pairs = cross_video_chance(emb, video)
    assert pairs == 60 and 0.5 < chance < 1.0 - float(emb[0] @ emb[2])
    # A video whose two clusters are the same person (never sharing a frame) does not lower the threshold.
    split = VideoEvidence(math.nan, 0, 0.05, 1)
    t = catalogue_threshold({"a": split, "b": VideoEvidence(0.95, 3, 0.95, 1)}, emb, video)
    assert (t.distance, t.source, t.pairs) == (pytest.approx(chance), "chance", 60)
    t = catalogue_threshold({"a": split, "b": VideoEvidence(0.4, 3, 0.4, 1), "c": VideoEvidence(0.3, 2, 0.3, 1)},
                            emb, video)
    assert (t.distance, t.source, t.video_id, t.pairs) == (pytest.approx(0.3), "shared_frame", "c", 5)
    # The close pair (0, 7) is below the threshold and links; no other pair does.
    links = find_links(emb, video, np.ones(12, bool), catalogue_threshold({}, emb, video))
    assert list(zip(links.i.tolist(), links.j.tolist())) == [(0, 7)]
    assert catalogue_threshold({"a": VideoEvidence()}, emb[:2], np.array([0, 1])).distance is None


def _at(degrees: float) -> np.ndarray:
    """A unit vector at this angle in the first plane (cosine distance between two: 1 - cos of the angle)."""
    a = math.radians(degrees)
    return np.array([math.cos(a), math.sin(a), 0.0], np.float32)


def test_a_link_needs_one_to_be_the_others_nearest_and_the_other_that_or_close_to_it():
    # video 0: x (0 deg), y (-62); video 1: x2 (x's twin, +10), y2 (y's twin, -55). x-y2 is within the threshold
    # (0.5, 60 deg) but x's nearest in video 1 is x2, 65 deg from y2: linking x-y2 would put x2 and y2 together.
    emb = np.stack([_at(0), _at(-62), _at(10), _at(-55)])
    video = np.array([0, 0, 1, 1])
    new = np.array([False, False, True, True])
    links = find_links(emb, video, new, Threshold(0.5, "chance"))
    assert list(zip(links.i.tolist(), links.j.tolist())) == [(1, 3), (0, 2)]     # nearest first
    assert links.distance.tolist() == pytest.approx(1 - (emb[[1, 0]] * emb[[3, 2]]).sum(1), abs=1e-6)
    assert find_links(emb, video, new, Threshold(0.001, "chance")).i.size == 0   # closer than both twins
    # Two look-alikes (x, y 20 deg apart) in both videos, each the nearest of its twin: no cross link (x-y2),
    # though x2 and y2 are within the threshold of each other.
    emb = np.stack([_at(0), _at(-20), _at(2), _at(-22)])
    links = find_links(emb, video, new, Threshold(0.5, "chance"))
    assert list(zip(links.i.tolist(), links.j.tolist())) == [(0, 2), (1, 3)]
    assert find_links(emb, video, new, Threshold(None, "none")).i.size == 0
    # Old-old pairs are never looked at again.
    assert find_links(emb, video, np.zeros(4, bool), Threshold(0.6, "chance")).i.size == 0


def test_both_pieces_of_a_person_split_in_one_video_link_to_that_person_in_another():
    # video 0 split one person into a1 (5 deg) and a2 (-17 deg), 22 deg apart, never in one frame; video 1 holds a
    # (0 deg), nearer a1. a is the nearest of both pieces, and a2 is within the threshold (0.2, 37 deg) of a1, the
    # piece a prefers: both link (mutual nearest neighbours would link a1 only).
    emb = np.stack([_at(5), _at(-17), _at(0), np.array([0, 0, 1], np.float32)])
    video = np.array([0, 0, 1, 1])
    links = find_links(emb, video, np.ones(4, bool), Threshold(0.2, "chance"))
    assert sorted(zip(links.i.tolist(), links.j.tolist())) == [(0, 2), (1, 2)]
    order = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    out = assign_persons(video, np.full(4, -1), links, 0, order, shares_frame=[set(), set(), set(), set()])
    assert out.person_id[0] == out.person_id[1] == out.person_id[2] != out.person_id[3]


def test_someone_absent_from_the_other_video_does_not_link_to_its_nearest_there():
    # video 0: a golfer g (0 deg) and a young man m (-39 deg); video 1: the golfer again, g2 (-3 deg), and nobody
    # else. m's nearest in video 1 is g2, within the threshold (0.2, 37 deg), but g2's nearest in video 0 is g,
    # and g is 39 deg from m: the link would make m and g one person. Only g-g2 links.
    emb = np.stack([_at(0), _at(-39), _at(-3)])
    links = find_links(emb, np.array([0, 0, 1]), np.ones(3, bool), Threshold(0.2, "chance"))
    assert list(zip(links.i.tolist(), links.j.tolist())) == [(0, 2)]


def test_union_never_joins_two_clusters_of_one_video_nor_two_existing_persons():
    # rows: a0 (video 0), a1 (video 0), b (video 1, new), c (video 2, new)
    video = np.array([0, 0, 1, 2])
    person = np.array([10, 11, -1, -1])
    # b links to a0, then c links to b (joins a0's person), then c to a1 (would join 10 and 11: refused).
    links = Links(np.array([0, 2, 1]), np.array([2, 3, 3]), np.array([0.1, 0.2, 0.3], np.float32))
    out = assign_persons(video, person, links, 20, [("a", 0), ("a", 1), ("b", 0), ("c", 0)])
    assert out.person_id.tolist() == [10, 11, 10, 10] and out.next_person_id == 20
    assert out.link_distance[2:].tolist() == pytest.approx([0.1, 0.2])
    # All new: the chain b-a0-c-a1 stops where it would put a0 and a1 (one video) together.
    out = assign_persons(video, np.full(4, -1), links, 1, [("a", 0), ("a", 1), ("b", 0), ("c", 0)])
    assert out.person_id.tolist() == [1, 2, 1, 1] and out.next_person_id == 3


def test_two_clusters_of_one_video_join_one_person_only_when_they_never_share_a_frame():
    # rows: a0, a1 (video 0: maybe one person split in two), b (video 1), c (video 2); chain b-a0, c-b, c-a1.
    video = np.array([0, 0, 1, 2])
    links = Links(np.array([0, 2, 1]), np.array([2, 3, 3]), np.array([0.1, 0.2, 0.3], np.float32))
    keys = [("a", 0), ("a", 1), ("b", 0), ("c", 0)]

    def persons(shares_frame):
        return assign_persons(video, np.full(4, -1), links, 1, keys, shares_frame).person_id.tolist()

    assert persons([set(), set(), set(), set()]) == [1, 1, 1, 1]      # never seen together: one person
    assert persons([{1}, {0}, set(), set()]) == [1, 2, 1, 1]          # seen together: two people
    assert persons([None, set(), set(), set()]) == [1, 2, 1, 1]       # not known (older index): two people


def test_the_index_records_which_clusters_share_a_frame_and_reads_an_index_written_before(tmp_path):
    write_casts(tmp_path)
    update_index(tmp_path)
    state = read_state(IndexRoot(tmp_path))
    shares = {(r["video_id"], r["cluster_id"]): r["shares_frame_with"] for r in state.clusters.to_pylist()}
    assert shares[("ep1", 1)] == [0, 2, 3] and shares[("ep2", 0)] == [1, 2]   # each video's faces are on together
    # The same index as an older vcn wrote it: no shares_frame_with column.
    folder = tmp_path / "persons" / json.loads((tmp_path / CURRENT).read_text())["dir"]
    table = pq.read_table(folder / "clusters.parquet")
    pq.write_table(table.drop_columns(["shares_frame_with"]), folder / "clusters.parquet")
    old = read_state(IndexRoot(tmp_path))
    assert old.clusters.column("shares_frame_with").null_count == old.clusters.num_rows
    casts = {**CASTS, "ep4": ["bob", "fay", "gus"]}
    write_video(tmp_path, "ep4", casts["ep4"], seed=9)
    assert update_index(tmp_path).added_videos == ["ep4"]
    assert_right_persons(read_state(IndexRoot(tmp_path)), casts)


def test_ivf_candidates_match_exact_search():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, 32))
    base = centres[rng.integers(0, 300, 6000)] + 0.3 * rng.standard_normal((6000, 32))
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    video = rng.integers(0, 1500, 6000)
    q = np.arange(0, 6000, 50)
    ex_rows, ex_sims = exact_neighbours(base[q], video[q], base, video, 5)
    iv_rows, iv_sims = ivf_neighbours(base[q], video[q], base, video, 5, nprobe=16)
    assert not (video[ex_rows] == video[q, None]).any()
    assert np.all(np.diff(ex_sims, axis=1) <= 0)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ex_rows.tolist(), iv_rows.tolist())])
    assert recall >= 0.95
    found = iv_rows >= 0
    assert np.allclose(iv_sims[found], np.einsum("qd,qkd->qk", base[q], base[np.where(found, iv_rows, 0)])[found],
                       atol=1e-5)                                             # re-scored exactly


def _catalogue(n: int, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit embeddings, video code, new) of n clusters of ~n/3 people, 10 a video, each appearance a look around
    its person (two looks: cosine ~0.8, two people ~0); the last third new."""
    rng = np.random.default_rng(seed)
    person = rng.integers(0, n // 3, n)
    centres = rng.standard_normal((n // 3, dim))
    emb = centres[person] / np.linalg.norm(centres[person], axis=1, keepdims=True) \
        + 0.5 / math.sqrt(dim) * rng.standard_normal((n, dim))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    return emb, np.arange(n) // 10, np.arange(n) >= n - n // 3


def _same_links(a: Links, b: Links) -> bool:
    return np.array_equal(a.i, b.i) and np.array_equal(a.j, b.j) and a.distance.tobytes() == b.distance.tobytes()


def test_links_do_not_depend_on_how_the_new_rows_are_split():
    # Blocks of 9 (the last of one row) against one block: every pair, distance (to the bit) and order the same.
    emb, video, new = _catalogue(3000)
    threshold = catalogue_threshold({}, emb, video)
    for method in ("exact", "ivf"):
        whole = find_links(emb, video, new, threshold, method=method, parallel="local")
        assert len(whole) > 300
        assert _same_links(find_links(emb, video, new, threshold, method=method, parallel="local", block=9), whole)


def test_links_on_ray_tasks_equal_the_local_links(two_nodes):
    # 1000 new rows in blocks of 300 on two nodes (BLAS and faiss on one thread there, on the machine's cores
    # here): the same Links as this process, exact and through the IVF index (built here, once).
    emb, video, new = _catalogue(3000)
    threshold = catalogue_threshold({}, emb, video)
    for method in ("exact", "ivf"):
        stats: dict = {}
        on_ray = find_links(emb, video, new, threshold, method=method, parallel="ray", block=300, stats=stats)
        assert stats["path"] == "ray" and stats["blocks"] == 4 and stats["worker_peak_rss_mb"] > 0
        assert _same_links(on_ray, find_links(emb, video, new, threshold, method=method, parallel="local"))
    # With Ray up, a few new rows stay in this process.
    stats = {}
    find_links(emb, video, new, threshold, stats=stats)
    assert stats == {"path": "local", "blocks": 1}


# ----- the index, end to end ---------------------------------------------------------------------------------

def test_persons_across_videos_and_the_tables(tmp_path):
    write_casts(tmp_path)
    report = update_index(tmp_path)
    assert report.written and report.added_videos == ["ep1", "ep2", "ep3"] and report.new_clusters == 11
    state = load_persons(str(tmp_path))
    assert_right_persons(state)
    assert state.persons.num_rows == 6 and state.meta["threshold"]["source"] == "chance"
    cur = json.loads((tmp_path / CURRENT).read_text())
    folder = tmp_path / "persons" / cur["dir"]
    for name, schema in (("clusters", PERSON_CLUSTERS), ("persons", PERSONS), ("videos", PERSON_VIDEOS)):
        assert pq.read_schema(folder / f"{name}.parquet").equals(schema, check_metadata=False), name
    persons = {r["person_id"]: r for r in pq.read_table(folder / "persons.parquet").to_pylist()}
    ann = persons[next(iter(persons_by_name(state)["ann"]))]
    assert (ann["n_videos"], ann["n_clusters"], ann["name"]) == (3, 3, None)
    assert ann["screen_s"] == pytest.approx(3 * 2.1) and len(ann["thumbnails"]) == 3
    assert np.linalg.norm(ann["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_nightly_runs_add_only_new_clusters_and_nothing_new_changes_nothing(tmp_path):
    write_casts(tmp_path)
    update_index(tmp_path)
    before = files_of(tmp_path)
    again = update_index(tmp_path)
    assert not again.written and files_of(tmp_path) == before               # not one byte rewritten
    old = read_state(IndexRoot(tmp_path))
    casts = {**CASTS, "ep4": ["bob", "fay", "gus"]}
    write_video(tmp_path, "ep4", casts["ep4"], seed=9)
    report = update_index(tmp_path)
    assert report.added_videos == ["ep4"] and report.new_clusters == 3
    new = read_state(IndexRoot(tmp_path))
    assert_right_persons(new, casts)
    old_rows = {(r["video_id"], r["cluster_id"]): r["person_id"] for r in old.clusters.to_pylist()}
    new_rows = {(r["video_id"], r["cluster_id"]): r["person_id"] for r in new.clusters.to_pylist()}
    assert {k: new_rows[k] for k in old_rows} == old_rows                   # ids stable
    assert persons_by_name(new, casts)["gus"].isdisjoint(set(old_rows.values()))   # a newcomer gets a new id


def test_a_removed_or_changed_video_leaves_the_index(tmp_path):
    write_casts(tmp_path)
    update_index(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "ep3")
    report = update_index(tmp_path)
    assert report.removed_videos == ["ep3"]
    state = read_state(IndexRoot(tmp_path))
    assert "ep3" not in set(state.clusters.column("video_id").to_pylist())
    assert "ep3" not in set(state.videos.column("video_id").to_pylist())
    assert sorted(persons_by_name(state)) == ["ann", "bob", "cat", "dan", "eve"]   # fay was only in ep3
    assert state.persons.num_rows == 5 and all(r["n_videos"] <= 2 for r in state.persons.to_pylist())
    write_video(tmp_path, "ep2", ["eve", "ann"], seed=5)                      # recomputed: other clusters
    report = update_index(tmp_path)
    assert report.added_videos == ["ep2"] and report.removed_videos == []
    state = read_state(IndexRoot(tmp_path))
    assert_right_persons(state, {"ep1": CASTS["ep1"], "ep2": ["eve", "ann"]})
    assert state.clusters.num_rows == 6


def test_decisions_win_over_linking_and_survive_nightly_runs_and_a_relink(tmp_path):
    write_casts(tmp_path)
    update_index(tmp_path)
    state = load_persons(str(tmp_path))
    ids = {k: next(iter(v)) for k, v in persons_by_name(state).items()}
    name_person(str(tmp_path), ids["ann"], "Ann Archer")
    merge_persons(str(tmp_path), ids["bob"], [ids["dan"]])                  # the archivist knows better
    split_person(str(tmp_path), ids["cat"], ["ep3:0"])
    with pytest.raises(VcnError, match="has no cluster ep9:0"):
        split_person(str(tmp_path), ids["cat"], ["ep9:0"])
    with pytest.raises(VcnError, match="person 999 is not in the index"):
        name_person(str(tmp_path), 999, "Nobody")

    def check(state, casts):
        found = persons_by_name(state, casts)
        names = names_of(state)
        assert names[next(iter(found["ann"]))] == "Ann Archer"
        assert found["bob"] == found["dan"] == {ids["bob"]}
        assert len(found["cat"]) == 2 and ids["cat"] in found["cat"]        # split stays split

    check(load_persons(str(tmp_path)), CASTS)
    casts = {**CASTS, "ep4": ["cat", "ann", "dan"]}
    write_video(tmp_path, "ep4", casts["ep4"], seed=11)
    update_index(tmp_path)                                                  # a nightly run
    check(load_persons(str(tmp_path)), casts)
    report = update_index(tmp_path, relink=True)                            # every automatic link again
    assert report.decisions_applied == 3
    state = load_persons(str(tmp_path))
    check(state, casts)
    assert ids["ann"] in persons_by_name(state, casts)["ann"]               # ids kept through the relink
    decisions = sorted((tmp_path / "persons" / "decisions").glob("*.json"))
    assert [json.loads(p.read_text())["op"] for p in decisions] == ["name", "merge", "split"]


def test_merge_takes_clusters_as_video_and_cluster_ids(tmp_path):
    # The video report prints its possible splits as `vcn persons merge --index OUT VIDEO:A VIDEO:B`.
    write_casts(tmp_path)
    update_index(tmp_path)
    ids = {k: next(iter(v)) for k, v in persons_by_name(load_persons(str(tmp_path))).items()}
    merge_persons(str(tmp_path), "ep1:1", ["ep1:3"])           # bob and dan of ep1, by their clusters
    found = persons_by_name(load_persons(str(tmp_path)))
    assert found["bob"] == found["dan"] == {ids["bob"]}
    with pytest.raises(VcnError, match="already one person"):
        merge_persons(str(tmp_path), "ep1:1", ["ep2:1"])        # bob in both videos: one person already
    with pytest.raises(VcnError, match="no cluster 7 of video 'ep1'"):
        merge_persons(str(tmp_path), "ep1:7", ["ep1:0"])
    with pytest.raises(VcnError, match="VIDEO_ID:CLUSTER_ID"):
        merge_persons(str(tmp_path), "bob", ["ep1:0"])


def test_a_killed_update_leaves_the_previous_index(tmp_path):
    write_casts(tmp_path)
    update_index(tmp_path)
    before = files_of(tmp_path)
    write_video(tmp_path, "ep4", ["bob", "gus"], seed=4)
    # The worst moment: every new table written, the pointer not yet swapped. The process is SIGKILLed there.
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import vcn.persons.store as store
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        store._swap_pointer = die
        from vcn.persons import update_index
        update_index({str(tmp_path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    after = files_of(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before        # nothing changed ...
    assert any(k.startswith("persons/gen-") and k not in before for k in after)   # ... but an orphan folder
    assert "ep4" not in read_state(IndexRoot(tmp_path)).videos.column("video_id").to_pylist()
    report = update_index(tmp_path, wait_s=0)                               # the kernel freed the lock
    assert report.added_videos == ["ep4"]
    gens = {p.name for p in (tmp_path / "persons").glob("gen-*")}
    assert len(gens) == 2                                                   # orphan swept, previous kept


# The updater leaves with os._exit once its result is printed: twice in this session's full runs (loaded machine) the
# interpreter's shutdown aborted in native code ("terminate called without an active exception", exit -6) after
# the update had finished; the test is about the lock, and that shutdown abort is recorded as an open issue.
_UPDATER = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    from vcn.persons import update_index
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    r = update_index(sys.argv[2], wait_s=120)
    print(json.dumps({"gen": r.generation, "added": r.added_videos, "written": r.written}), flush=True)
    os._exit(0)
""")


def test_two_updaters_at_once_serialise_on_the_lock(tmp_path):
    write_casts(tmp_path)
    start = time.time() + 4.0          # both processes start their update at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _UPDATER, str(REPO), str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"exit {p.returncode}: {err.decode()[-2000:]}"
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    # One linked all three videos; the other waited for it, then found nothing new.
    assert sorted(r["written"] for r in results) == [False, True]
    assert sorted(len(r["added"]) for r in results) == [0, 3]
    state = read_state(IndexRoot(tmp_path))
    assert state.generation == 1
    assert_right_persons(state)
    # And while one process holds the lock, another cannot update.
    write_video(tmp_path, "ep4", ["gus"], seed=4)
    with index_lock(IndexRoot(tmp_path)):
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import sys; sys.path.insert(0, {str(REPO)!r})
            from vcn.persons import update_index
            update_index({str(tmp_path)!r}, wait_s=0)
        """)], capture_output=True, timeout=120)
    assert proc.returncode != 0 and b"being updated by another run" in proc.stderr


def test_cli_lists_names_and_explains(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["persons", "--help"])
    capsys.readouterr()
    assert cli(["persons", "--index", str(tmp_path)]) == 2
    assert "vcn persons update --index" in capsys.readouterr().err
    write_casts(tmp_path)
    assert cli(["persons", "update", "--index", str(tmp_path)]) == 0
    assert "person index updated (generation 1): 6 persons" in capsys.readouterr().out
    state = load_persons(str(tmp_path))
    eve = next(iter(persons_by_name(state)["eve"]))
    assert cli(["persons", "name", "--index", str(tmp_path), str(eve), "Eve Example"]) == 0
    capsys.readouterr()
    assert cli(["persons", "--index", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Eve Example" in lines[1]                                         # named first
    assert cli(["persons", "show", "--index", str(tmp_path), str(eve), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "Eve Example" and {c["video_id"] for c in shown["clusters"]} == {"ep2", "ep3"}
    assert cli(["persons", "split", "--index", str(tmp_path), str(eve), "ep2"]) == 2
    assert "VIDEO_ID:CLUSTER_ID" in capsys.readouterr().err
    assert cli(["persons", "merge", "--index", str(tmp_path), str(eve), str(eve)]) == 2
    assert "two or more different person ids" in capsys.readouterr().err


# ----- S3 -----------------------------------------------------------------------------------------------------

def test_the_index_on_an_s3_server(tmp_path, s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="archive")
    local = tmp_path / "out"
    write_casts(local, catalogue=True)
    storage.upload_folder(local, "s3://archive/vcn")
    uri = "s3://archive/vcn/"
    report = update_index(uri)
    assert report.added_videos == ["ep1", "ep2", "ep3"]
    state = load_persons(uri)
    assert_right_persons(state)
    ann = next(iter(persons_by_name(state)["ann"]))
    name_person(uri, ann, "Ann")
    assert not update_index(uri).written                                    # nothing new: nothing written
    storage.delete_prefix("s3://archive/vcn/videos/ep3/")
    assert update_index(uri).removed_videos == ["ep3"]
    state = load_persons(uri)
    assert names_of(state)[ann] == "Ann" and state.videos.num_rows == 2
    from vcn.persons.page import write_persons_page

    page = write_persons_page(uri, tmp_path / "persons.html").read_text()    # crops fetched from S3
    assert page.count("<img") == 7 and page.index("Ann") < page.index("Person ")
    with pytest.raises(VcnError, match="pass --out FILE.html"):
        write_persons_page(uri)
    keys = [k for k, _ in IndexRoot(uri).list("persons")]
    assert sum(k.startswith("persons/gen-") for k in keys) == 2 * 3          # two generations kept, 3 tables each
    # The lease: one holder at a time; a holder that died frees it when the lease expires.
    root = IndexRoot(uri)
    # 4 s, not 1: the two refusals below must happen while `first` still holds it, even on a loaded machine.
    first = Lease(root, lease_s=4.0)
    assert first.try_acquire()
    second = Lease(root, lease_s=60.0)
    assert not second.try_acquire()
    with pytest.raises(VcnError, match="being updated by another run"):
        update_index(uri, wait_s=0)
    time.sleep(4.2)                                                          # `first` never released: expired
    assert second.try_acquire()
    with pytest.raises(VcnError, match="lost the lease"):
        first.renew()
    second.release()
    assert root.read("persons/LOCK") is None


def test_a_catalogue_run_ends_with_the_index_updated(tmp_path):
    from vcn.catalogue import run_catalogue, video_id_for_relpath

    src = tmp_path / "in"
    out = tmp_path / "out"
    for vid, people in CASTS.items():
        # Videos already processed by an earlier run (the outputs are complete and the sources unchanged), so this
        # run skips them all and only its last step, the person index, has work to do.
        video = src / f"{vid}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(vid.encode() * 100)
        vid_id = video_id_for_relpath(video.name)
        folder = write_video(out, vid_id, people, seed=len(people), catalogue=True)
        st = video.stat()
        (folder / "source.json").write_text(json.dumps({"uri": str(video), "size": st.st_size, "mtime": st.st_mtime}))
    lines: list[str] = []
    report = run_catalogue(str(src), str(out), log=lines.append)
    assert report.counts == {"done": 0, "skipped": 3, "failed": 0}
    assert any("person index updated (generation 1): 6 persons" in line for line in lines), lines
    casts = {f"{vid}.mp4": people for vid, people in CASTS.items()}
    assert_right_persons(load_persons(str(out)), casts)
    lines.clear()
    run_catalogue(str(src), str(out), log=lines.append)                     # the next night: nothing new
    assert any("person index unchanged (generation 1)" in line for line in lines), lines


def test_catalogue_hook_updates_the_index(tmp_path):
    from vcn.catalogue import OutputStore, update_persons_after_run
    from vcn.config import RunConfig

    write_casts(tmp_path, catalogue=True)
    lines: list[str] = []
    assert update_persons_after_run(OutputStore(tmp_path), RunConfig(), lines.append).persons == 6
    assert lines and "6 persons" in lines[0]
    (tmp_path / "persons" / CURRENT.split("/")[-1]).write_text("{broken")
    assert update_persons_after_run(OutputStore(tmp_path), RunConfig(), lines.append) is None
    assert "person index not updated" in lines[-1] and "vcn persons update" in lines[-1]


# Cheap stage 2 for the real `vcn run`s below (one round, heads on 2 views for 2 epochs, tail finetune): the index
# links base embeddings, so the finetune's quality does not matter here, only that every stage runs.
CHEAP = ["--quiet", "--no-report", "--set", "ssl.rounds=1", "--set", "ssl.warmup_epochs=2", "--set",
         "ssl.warmup_views=2", "--set", "ssl.backbone_layers=tail", "--set", "serfiq.passes=8"]


def test_vcn_run_over_two_videos_keeps_the_person_index(tmp_path, face_clips, capsys):
    """`vcn run` of two real rendered videos into one --out: the index covers both videos' clusters and links
    the people they share; re-runs with nothing new leave it byte for byte; --no-index leaves it alone."""
    out = tmp_path / "out"
    for generation, name in enumerate(("a", "b"), start=1):
        assert cli(["run", str(face_clips[name]), "--out", str(out), *CHEAP]) == 0
        assert f"person index updated (generation {generation})" in capsys.readouterr().out
    state = load_persons(str(out))
    own = {(vid, c) for vid in ("a", "b")
           for c in pq.read_table(out / vid / "clusters.parquet").column("cluster_id").to_pylist() if c >= 0}
    rows = set(zip(state.clusters.column("video_id").to_pylist(), state.clusters.column("cluster_id").to_pylist()))
    assert rows == own and len({v for v, _ in own}) == 2                   # one row per cluster of both videos
    persons = state.persons.to_pylist()
    assert set(state.clusters.column("person_id").to_pylist()) == {p["person_id"] for p in persons}
    assert sum(p["n_clusters"] for p in persons) == len(own)
    # Both clips show the portrait and the group's left half: those people are one person across the two videos.
    assert any(p["n_videos"] == 2 for p in persons), persons
    cur = json.loads((out / CURRENT).read_text())
    assert pq.read_table(out / "persons" / cur["dir"] / "persons.parquet").num_rows == len(persons)

    before = files_of(out)
    for name in ("a", "b"):                                                 # nothing new: skipped, index as it was
        assert cli(["run", str(face_clips[name]), "--out", str(out), *CHEAP]) == 0
        assert "person index unchanged (generation 2)" in capsys.readouterr().out
    assert files_of(out) == before

    # A run that changes a video (a's clusters dropped by a detect+track-only --force) with --no-index: the index
    # is untouched until the next update, which takes a's clusters out.
    assert cli(["run", str(face_clips["a"]), "--out", str(out), "--stages", "detect,track", "--force",
                "--no-index", *CHEAP]) == 0
    assert "person index" not in capsys.readouterr().out and files_of(out) == before
    assert cli(["persons", "update", "--index", str(out)]) == 0
    assert {v for v in load_persons(str(out)).clusters.column("video_id").to_pylist()} == {"b"}


# ----- the page -------------------------------------------------------------------------------------------------

def test_persons_page_in_headless_chromium(tmp_path):
    from vcn.persons.page import write_persons_page
    from vcn.report.browser import check_page, find_chromium

    write_casts(tmp_path)
    update_index(tmp_path)
    state = load_persons(str(tmp_path))
    eve = next(iter(persons_by_name(state)["eve"]))
    name_person(str(tmp_path), eve, "Eve <Example>")
    page = write_persons_page(str(tmp_path))
    assert page == tmp_path / "persons.html"
    text = page.read_text()
    assert "Eve &lt;Example&gt;" in text and "http" not in text.replace("http-equiv", "")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium: install it with `apt-get install -y chromium` (Debian) to run the browser check")
    check = check_page(page, screenshot=True, expression="""
        [...document.querySelectorAll('section.person')].map(s => ({
            id: Number(s.dataset.person), named: s.dataset.named === '1',
            visible: s.getBoundingClientRect().height > 0,
            images: s.querySelectorAll('img').length,
            loaded: [...s.querySelectorAll('img')].every(i => i.complete && i.naturalWidth === 112)}))
    """, executable=chromium)
    assert check.network_requests == [] and check.console_errors == []
    facts = check.facts
    assert len(facts) == 6 and facts[0]["id"] == eve and facts[0]["named"]
    assert not any(f["named"] for f in facts[1:])
    assert all(f["visible"] and f["images"] >= 1 and f["loaded"] for f in facts), facts
    assert sum(f["images"] for f in facts) == 11                            # one per cluster, all six persons


# ----- search by photo, answered with persons (the real Hamilton clip) ----------------------------------------------

def test_search_answers_with_persons_on_real_footage(tmp_path_factory, tmp_path, capsys):
    from tests.test_report import HAMILTON, SHARED, clustered_hamilton
    from vcn.search import search_persons

    if not HAMILTON.is_file():
        pytest.skip(f"shared data not found at {HAMILTON} (the repo's sibling ../shared)")
    clip = clustered_hamilton(tmp_path_factory)
    # The clip twice, as two videos of an archive: every person of one is in the other.
    for vid in ("clip_a", "clip_b"):
        import shutil

        shutil.copytree(clip, tmp_path / vid)
        summary = json.loads((tmp_path / vid / "summary.json").read_text())
        (tmp_path / vid / "summary.json").write_text(json.dumps({**summary, "video_id": vid}))
    report = update_index(tmp_path)
    state = load_persons(str(tmp_path))
    n_clusters = state.clusters.num_rows // 2
    assert report.threshold["distance"] is not None
    assert state.persons.num_rows == n_clusters                             # each cluster met its twin
    assert all(r["n_videos"] == 2 for r in state.persons.to_pylist())
    photo = SHARED / "data" / "videos" / "lin-manuel-miranda.png"
    persons, _ = search_persons(photo, tmp_path, top=3)
    best = persons[0]
    assert {c.video_id for c in best.clusters} == {"clip_a", "clip_b"} and best.score > 0.6
    name_person(str(tmp_path), best.person_id, "Lin-Manuel Miranda")
    assert cli(["search", str(photo), "--index", str(tmp_path), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "answers by person" in out and "Lin-Manuel Miranda" in out and "clip_a" in out and "clip_b" in out


def test_decision_names_sort_in_the_order_they_were_made_across_a_second_boundary():
    from vcn.persons.decisions import time_stamp

    second = 1_790_000_000 * 10**9
    made = [second - 1_000, second - 1, second, second + 1_000, second + 999_999_000]
    stamps = [time_stamp(ns) for ns in made]
    assert stamps == sorted(stamps)
    assert stamps[1] < stamps[2] and stamps[1].endswith(".999999Z") and stamps[2].endswith(".000000Z")
