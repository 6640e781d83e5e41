"""The torso colour descriptor of stage 1 and the clothes join of stage 3 (cluster.join_same_clothes)."""

import numpy as np
import pyarrow as pa
import pytest

from vcn.clustering.clothes import alike_by_chance, join_same_clothes
from vcn.faces.clothes import TORSO_BINS, similarity, torso_box, torso_histogram
from vcn.outputs import VideoOutput
from vcn.stage23 import _track_torsos
from vcn.tables import conform, make_table

BGR = {"red": (0, 0, 200), "blue": (200, 0, 0), "green": (0, 180, 0), "white": (235, 235, 235)}


def _frame_with(shirt: str, face=(100, 40, 140, 90), size=(240, 320)) -> np.ndarray:
    frame = np.full((*size, 3), 60, np.uint8)
    x1, y1, x2, y2 = face
    frame[y2:, max(0, x1 - 40):x2 + 40] = BGR[shirt]   # shoulders and chest below the face
    frame[y1:y2, x1:x2] = (150, 170, 210)               # skin
    return frame


def test_torso_box_lies_under_the_face_inside_the_frame_or_is_none():
    left, top, right, bottom = torso_box(100, 40, 140, 90, 320, 240)
    assert top > 90 and left < 100 < 140 < right and bottom <= 240
    assert torso_box(100, 200, 140, 238, 320, 240) is None     # a face at the frame's bottom: no chest in frame
    assert torso_box(100, 40, 100, 90, 320, 240) is None       # an empty box


def test_same_shirt_in_two_frames_is_alike_and_two_colours_are_not():
    red = torso_histogram(_frame_with("red"), (100, 40, 140, 90))
    red_elsewhere = torso_histogram(_frame_with("red", face=(200, 20, 250, 80)), (200, 20, 250, 80))
    blue = torso_histogram(_frame_with("blue"), (100, 40, 140, 90))
    assert red.shape == (TORSO_BINS,) and red.sum() == pytest.approx(1.0)
    assert similarity(red, red_elsewhere)[0, 0] > 0.95
    assert similarity(red, blue)[0, 0] < 0.3
    assert torso_histogram(_frame_with("red"), (100, 200, 140, 238)) is None


def test_alike_by_chance_mirrors_the_distance_bound():
    rng = np.random.default_rng(0)
    s = rng.normal(0.3, 0.05, 200)
    assert 0.3 + 2 * 0.05 < alike_by_chance(s) < 0.3 + 4 * 0.05
    assert np.isnan(alike_by_chance(np.array([0.4])))


def _hist(colour: str) -> np.ndarray:
    return torso_histogram(_frame_with(colour), (100, 40, 140, 90))


def _scene(a2_colour="red", a2_face=(0.6, 0.8), cannot_link=frozenset({(1, 3), (3, 4)})):
    """Tracks 1 and 2: one person split by the face (0.4 apart in cosine) in one red shirt; 3 and 4: two people seen
    together with track 1 or each other. Each track is two crops of one embedding."""
    faces = {1: (1.0, 0.0), 2: a2_face, 3: (0.0, 1.0), 4: (-0.8, 0.6)}
    torso = {1: _hist("red"), 2: _hist(a2_colour), 3: _hist("blue"), 4: _hist("green")}
    toc = np.repeat(list(faces), 2)
    emb = np.array([faces[t] for t in toc], float)
    return {t: i for i, t in enumerate(faces)}, torso, emb, toc, set(cannot_link)


def test_one_person_split_by_face_is_joined_by_the_clothes():
    labels, torso, emb, toc, apart = _scene()
    joined = join_same_clothes(labels, torso, emb, toc, apart)
    assert joined[1] == joined[2] and len({joined[3], joined[4], joined[1]}) == 3


def test_no_join_across_a_shared_frame_or_other_clothes_or_without_people_seen_together():
    labels, torso, emb, toc, apart = _scene()
    assert join_same_clothes(labels, torso, emb, toc, apart | {(1, 2)}) == labels
    labels, torso, emb, toc, apart = _scene(a2_colour="white")
    assert join_same_clothes(labels, torso, emb, toc, apart) == labels
    labels, torso, emb, toc, _ = _scene()
    assert join_same_clothes(labels, torso, emb, toc, set()) == labels


def test_clothes_do_not_join_where_the_face_points_elsewhere():
    # Track 2's face is nearest to track 4's, and track 1's nearest is not 2: alike clothes are not enough.
    labels, torso, emb, toc, apart = _scene(a2_face=(-0.9, 0.45))
    assert join_same_clothes(labels, torso, emb, toc, apart) == labels


def test_unknown_tracks_and_tracks_without_a_torso_are_left_alone():
    labels, torso, emb, toc, apart = _scene()
    labels[5] = -1
    del torso[4]
    joined = join_same_clothes(labels, torso, emb, toc, apart)
    assert joined[5] == -1 and joined[1] == joined[2] and joined[4] not in (joined[1], joined[3])


def _crops(torso_column=True) -> pa.Table:
    rows = {"video_id": ["v"] * 3, "crop_id": [0, 1, 2], "track_id": [7, 7, 8], "shot_id": [0] * 3,
            "frame": [0, 5, 5], "t_s": [0.0, 0.2, 0.2], "x1": [0.0] * 3, "y1": [0.0] * 3, "x2": [9.0] * 3,
            "y2": [9.0] * 3, "score": [0.9] * 3, "landmarks": [[0.0] * 10] * 3, "face_px": [30.0] * 3,
            "blur_var": [50.0] * 3, "quality_ok": [True] * 3, "image": [b""] * 3,
            "torso_hist": [[1.0] + [0.0] * (TORSO_BINS - 1), [0.0, 1.0] + [0.0] * (TORSO_BINS - 2), None]}
    table = make_table("crops", rows)
    return table if torso_column else table.drop_columns(["torso_hist"])


def test_track_torsos_average_the_crops_that_show_one():
    torsos = _track_torsos(_crops())
    assert list(torsos) == [7] and torsos[7][:2].tolist() == [0.5, 0.5]
    assert _track_torsos(_crops(torso_column=False)) == {}


def test_a_crops_table_saved_before_torso_hist_still_loads(tmp_path):
    import pyarrow.parquet as pq

    old = _crops(torso_column=False)
    assert conform("crops", old).column("torso_hist").null_count == 3
    out = VideoOutput(tmp_path, "v")
    out.path.mkdir(parents=True)
    pq.write_table(old, out.path / "crops.parquet")
    assert out.load("crops").column("torso_hist").null_count == 3


def _finetuned(torso: dict[int, np.ndarray]):
    import torch

    from vcn.stage23 import FinetunedVideo, _Prepared

    labels, _, emb, toc, apart = _scene()
    emb = torch.tensor(emb, dtype=torch.float32)
    tracks = np.array(sorted(labels))
    prep = _Prepared(tracks, np.arange(len(toc)), toc, torch.zeros(len(toc), 3, 112, 112, dtype=torch.uint8), emb,
                     {int(t): 1.0 for t in tracks}, {int(t): "clustered" for t in tracks}, np.ones(len(toc), bool),
                     torso)
    return FinetunedVideo(prep, emb, None, [], {}, "sface"), apart


def test_stage_3_joins_by_clothes_only_when_asked_and_says_when_it_cannot():
    from vcn.config import RunConfig
    from vcn.stage23 import cluster_finetuned

    _, torso, _, _, _ = _scene()
    ft, apart = _finetuned(torso)
    # Algorithm 1 alone (the final joins would pair track 2 with 3, its nearest face, before the clothes are asked).
    ask = ["cluster.metric=cosine", "cluster.join_final_matches=false", "cluster.join_base_matches=false",
           "cluster.join_same_clothes=true"]
    cluster_of = lambda table: dict(zip(table.column("track_id").to_pylist(), table.column("cluster_id").to_pylist()))
    off = cluster_of(cluster_finetuned(ft, RunConfig.load(None, overrides=ask[:3]), "v", apart))
    on = cluster_of(cluster_finetuned(ft, RunConfig.load(None, overrides=ask), "v", apart))
    assert off[1] != off[2] and on[1] == on[2] and len(set(on.values())) == len(set(off.values())) - 1
    bare, apart = _finetuned({})
    with pytest.warns(UserWarning, match="torso_hist"):
        assert cluster_of(cluster_finetuned(bare, RunConfig.load(None, overrides=ask), "v", apart)) == off


def test_a_saved_table_missing_a_column_it_always_had_names_the_file_and_the_fix(tmp_path):
    import pyarrow.parquet as pq

    from vcn.errors import VcnError

    out = VideoOutput(tmp_path, "v")
    out.path.mkdir(parents=True)
    pq.write_table(_crops().drop_columns(["blur_var"]), out.path / "crops.parquet")
    with pytest.raises(VcnError, match=r"crops.parquet .*blur_var.*--force"):
        out.load("crops")


def test_degenerate_inputs_give_valid_labels():
    rng = np.random.default_rng(0)
    hist = lambda: rng.dirichlet(np.ones(TORSO_BINS)).astype(np.float32)
    # One cluster, and a video where every track is Unknown: nothing to join, labels as given.
    assert join_same_clothes({1: 0}, {1: hist()}, np.ones((1, 2)), np.array([1]), {(1, 2)}) == {1: 0}
    assert join_same_clothes({1: -1, 2: -1}, {1: hist(), 2: hist()}, np.ones((2, 2)), np.array([1, 2]),
                             {(1, 2)}) == {1: -1, 2: -1}
    # 300 one-crop tracks of 30 people (one shirt and one face each), neighbours seen together: it ends, every
    # track keeps a cluster, none holds two tracks that share a frame, and the joins are of one person each.
    people = np.arange(300) % 30
    shirts = [hist() for _ in range(30)]
    faces = rng.normal(size=(30, 16))
    emb = faces[people] + rng.normal(scale=0.3, size=(300, 16))
    apart = {(t, t + 1) for t in range(299) if people[t] != people[t + 1]}
    labels = {t: t for t in range(300)}
    joined = join_same_clothes(labels, {t: shirts[people[t]] for t in range(300)}, emb, np.arange(300), apart)
    assert set(joined) == set(labels) and min(joined.values()) >= 0
    assert all(joined[a] != joined[b] for a, b in apart)
    assert len(set(joined.values())) < 300
    for c in set(joined.values()):
        assert len({people[t] for t, k in joined.items() if k == c}) == 1
