"""Shot threading (cluster.join_same_setup): the frame's look stored by stage 1, the same-set-up track pairs, and
their join in stage 3."""

import numpy as np

from vcn.clustering.setups import same_setup_pairs
from vcn.tables import make_table
from vcn.video.looks import LOOK_BYTES, frame_look, look_distance

THRESHOLD = 27.0   # ShotConfig.threshold


def _room(colour, size=(180, 320)) -> np.ndarray:
    """A set-up: a wall of one colour with a darker band (a sofa) across it."""
    rng = np.random.default_rng(sum(colour))
    frame = np.empty((*size, 3), np.uint8)
    frame[:] = colour
    frame[size[0] // 2:size[0] // 2 + 40] = [c // 3 for c in colour]
    return np.clip(frame + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8)


KITCHEN, PORCH, GARDEN = _room((40, 120, 200)), _room((160, 200, 60)), _room((210, 40, 20))


def test_a_frames_look_is_a_small_hsv_thumbnail_and_tells_set_ups_apart():
    look = frame_look(KITCHEN)
    assert look.shape == (18, 32, 3) and look.dtype == np.uint8 and look.nbytes == LOOK_BYTES
    lit = np.clip(KITCHEN.astype(int) + 8, 0, 255).astype(np.uint8)   # the same set-up, a little brighter
    assert look_distance(look, look) == 0.0
    assert look_distance(look, frame_look(lit)) < THRESHOLD < look_distance(look, frame_look(PORCH))


def _crops(tracks):
    """tracks: (track id, shot id, box, [pictures of its crops' frames]) -> a crops table with their looks."""
    rows = {k: [] for k in ("video_id", "crop_id", "track_id", "shot_id", "frame", "t_s", "x1", "y1", "x2", "y2",
                            "score", "landmarks", "face_px", "blur_var", "quality_ok", "image", "frame_look")}
    for t, shot, box, pictures in tracks:
        for picture in pictures:
            k = len(rows["crop_id"])
            for name, value in zip(("video_id", "crop_id", "track_id", "shot_id", "frame", "t_s", "score",
                                    "landmarks", "face_px", "blur_var", "quality_ok", "image"),
                                   ("v", k, t, shot, 10 * shot + k, k / 10, 0.9, [0.0] * 10, 40.0, 50.0, True, b"")):
                rows[name].append(value)
            for name, value in zip(("x1", "y1", "x2", "y2"), box):
                rows[name].append(float(value))
            rows["frame_look"].append(None if picture is None else frame_look(picture).tobytes())
    return make_table("crops", rows)


LEFT, RIGHT, LEFT_SHIFTED = (40, 30, 100, 100), (200, 30, 260, 100), (60, 40, 120, 110)


def test_tracks_at_one_spot_of_one_set_up_in_two_shots_pair_up_most_alike_first():
    lit = np.clip(KITCHEN.astype(int) + 10, 0, 255).astype(np.uint8)
    crops = _crops([(1, 0, LEFT, [KITCHEN, KITCHEN]),
                    (2, 0, RIGHT, [KITCHEN]),
                    (3, 1, LEFT_SHIFTED, [PORCH, lit]),   # the kitchen again at the end of shot 1, same spot as 1
                    (4, 2, RIGHT, [KITCHEN]),             # the kitchen's right-hand seat again
                    (5, 3, LEFT, [GARDEN])])              # another set-up
    assert same_setup_pairs(crops, THRESHOLD) == [(2, 4), (1, 3)]


def test_no_pair_within_one_shot_at_another_spot_or_without_looks():
    assert same_setup_pairs(_crops([(1, 0, LEFT, [KITCHEN]), (2, 0, LEFT, [KITCHEN])]), THRESHOLD) == []
    assert same_setup_pairs(_crops([(1, 0, LEFT, [KITCHEN]), (2, 1, RIGHT, [KITCHEN])]), THRESHOLD) == []
    old = _crops([(1, 0, LEFT, [None]), (2, 1, LEFT, [None])])
    assert same_setup_pairs(old, THRESHOLD) == []
    assert same_setup_pairs(old.drop_columns(["frame_look"]), THRESHOLD) == []


def test_stage_3_joins_same_set_up_tracks_only_when_asked_and_never_across_a_shared_frame():
    import torch

    from vcn.config import RunConfig
    from vcn.stage23 import FinetunedVideo, _Prepared, cluster_finetuned

    # Tracks 1 and 3: one person at one spot of the kitchen, faces far apart (a profile); 2: someone else.
    faces = {1: (1.0, 0.0), 2: (0.0, 1.0), 3: (-0.2, -1.0)}
    toc = np.repeat(list(faces), 2)
    emb = torch.tensor([faces[t] for t in toc], dtype=torch.float32)
    tracks = np.array(sorted(faces))
    prep = _Prepared(tracks, np.arange(len(toc)), toc, torch.zeros(len(toc), 3, 112, 112, dtype=torch.uint8), emb,
                     {int(t): 1.0 for t in tracks}, {int(t): "clustered" for t in tracks}, np.ones(len(toc), bool),
                     {}, [(1, 3)])
    ft = FinetunedVideo(prep, emb, None, [], {}, "sface")
    ask = ["cluster.metric=cosine", "cluster.join_final_matches=false"]

    def clusters(extra, apart):
        table = cluster_finetuned(ft, RunConfig.load(None, overrides=ask + extra), "v", apart)
        return dict(zip(table.column("track_id").to_pylist(), table.column("cluster_id").to_pylist()))

    off = clusters(["cluster.join_same_setup=false"], {(1, 2)})
    on = clusters(["cluster.join_same_setup=true"], {(1, 2)})
    assert len(set(off.values())) == 3 and on[1] == on[3] != on[2]
    assert clusters(["cluster.join_same_setup=true"], {(1, 2), (1, 3)}) == off


def test_an_empty_crops_table_has_no_pairs():
    assert same_setup_pairs(_crops([]), THRESHOLD) == []


def test_a_crops_table_without_looks_says_how_to_get_them_when_the_options_would_read_them():
    import warnings

    import pytest

    from vcn.config import RunConfig
    from vcn.stage23 import _same_setup_pairs

    old = _crops([(1, 0, LEFT, [None]), (2, 1, LEFT, [None])])
    with pytest.warns(UserWarning, match="re-run the track stage with --force"):
        assert _same_setup_pairs(old.drop_columns(["frame_look"]), RunConfig()) == []
    with pytest.warns(UserWarning, match="carry no frame look"):   # the column there, every look null
        assert _same_setup_pairs(old, RunConfig()) == []
    off = RunConfig.load(None, overrides=["cluster.join_same_setup=false", "ssl.train_same_setup=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _same_setup_pairs(old, off) == []
        assert _same_setup_pairs(_crops([(1, 0, LEFT, [KITCHEN]), (2, 1, LEFT, [KITCHEN])]), RunConfig()) == [(1, 2)]
