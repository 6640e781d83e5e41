"""BoT-SORT per shot (no ReID) and time-based crop sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vcn.config import ShotConfig, TrackConfig
from vcn.errors import VcnError
from vcn.tracking.botsort import link_shots, track_shot
from vcn.tracking.sample import sample_crops

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HAMILTON = SHARED / "data" / "videos" / "short_hamilton_clip.mp4"
needs_hamilton = pytest.mark.skipif(not HAMILTON.is_file(), reason=f"shared test data not found at {HAMILTON}")


def two_walking_faces(n_frames=40, skip=()):
    """Detections of two faces drifting right at different heights, optionally missing in some frames."""
    frames, boxes, scores = [], [], []
    for f in range(n_frames):
        if f in skip:
            continue
        for k, y in enumerate((40, 200)):
            x = 20 + 3 * f + 60 * k
            frames.append(f)
            boxes.append([x, y, x + 50, y + 60])
            scores.append(0.95 - 0.05 * k)
    return np.array(frames), np.array(boxes, np.float32), np.array(scores, np.float32)


def test_two_faces_give_two_whole_tracks():
    frames, boxes, scores = two_walking_faces(skip={12, 13})  # two frames without any detection
    ids = track_shot(frames, boxes, scores, TrackConfig(), fps=30, first_track_id=7)
    upper = boxes[:, 1] < 100
    assert len(set(ids[upper])) == 1 and len(set(ids[~upper])) == 1
    assert sorted(set(ids.tolist())) == [7, 8]
    assert ids[0] == 7  # numbered in order of first appearance


def test_input_order_does_not_matter():
    frames, boxes, scores = two_walking_faces()
    ids = track_shot(frames, boxes, scores)
    perm = np.random.default_rng(0).permutation(len(frames))
    shuffled = track_shot(frames[perm], boxes[perm], scores[perm])
    np.testing.assert_array_equal(shuffled, ids[perm])


def test_short_tracks_are_dropped():
    frames, boxes, scores = two_walking_faces(n_frames=20)
    # A face seen on two frames only.
    frames = np.append(frames, [5, 6])
    boxes = np.vstack([boxes, [[400, 400, 450, 460], [401, 400, 451, 460]]]).astype(np.float32)
    scores = np.append(scores, [0.9, 0.9]).astype(np.float32)
    ids = track_shot(frames, boxes, scores, TrackConfig(min_track_len=3))
    assert ids[-1] == ids[-2] == -1
    assert sorted(set(ids[:-2].tolist())) == [0, 1]
    kept = track_shot(frames, boxes, scores, TrackConfig(min_track_len=2))
    assert kept[-1] == kept[-2] == 2


def test_no_track_crosses_a_cut_and_ids_are_unique_per_video():
    frames, boxes, scores = two_walking_faces(n_frames=30)
    # The same boxes continue after a cut at frame 15: same place, but a new shot.
    shot_ids = (frames >= 15).astype(np.int32)
    ids = link_shots(shot_ids, frames, boxes, scores, TrackConfig(), fps=30, first_track_id=100)
    assert set(ids[shot_ids == 0].tolist()) == {100, 101}
    assert set(ids[shot_ids == 1].tolist()) == {102, 103}


def test_empty_shot():
    assert track_shot(np.zeros(0), np.zeros((0, 4)), np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("cfg", [TrackConfig(with_reid=True), TrackConfig(tracker="bytetrack")])
def test_unavailable_tracker_settings_are_config_errors(cfg):
    frames, boxes, scores = two_walking_faces(n_frames=3)
    with pytest.raises(VcnError, match="track\\."):
        track_shot(frames, boxes, scores, cfg)


@needs_hamilton
def test_hamilton_tracks_per_shot():
    from vcn.models.retinaface import RetinaFaceDetector
    from vcn.video.decode import iter_frames, probe_video
    from vcn.video.shots import ShotDetector

    info = probe_video(HAMILTON)
    shot_detector = ShotDetector(ShotConfig(), fps=info.fps)
    detector = RetinaFaceDetector()
    frames, boxes, scores = [], [], []
    for batch in iter_frames(HAMILTON, 32, info=info):  # one decode pass feeds both detectors
        shot_detector.feed(batch.frames, batch.indices)
        for i in range(0, len(batch), 8):
            for index, faces in zip(batch.indices[i:i + 8], detector.detect(batch.frames[i:i + 8])):
                frames += [int(index)] * len(faces)
                boxes.append(faces.boxes)
                scores.append(faces.scores)
    frames, boxes, scores = np.array(frames), np.concatenate(boxes), np.concatenate(scores)
    shots = shot_detector.shots(info.times, info.end_times)
    starts = np.array([s.start_frame for s in shots])
    shot_of = np.searchsorted(starts, frames, side="right") - 1
    ids = link_shots(shot_of, frames, boxes, scores, TrackConfig(), fps=info.fps)

    tracks = {int(t): (set(shot_of[ids == t].tolist()), int((ids == t).sum())) for t in np.unique(ids[ids >= 0])}
    assert all(len(shots_of_track) == 1 for shots_of_track, _ in tracks.values())  # never across a cut
    per_shot = {k: sorted(n for t, (s, n) in tracks.items() if k in s) for k in range(len(shots))}
    # Wide stage view (frames 0-19): performer and pianist, each tracked through the whole shot.
    assert per_shot[0] == [20, 20]
    # Performer close-up (frames 82-210): one face, one track, nearly every frame.
    assert len(per_shot[2]) == 1 and per_shot[2][0] >= 120
    # Audience row (frames 211-274): several people, the steady ones tracked through the shot.
    assert len(per_shot[3]) >= 4 and sum(n >= 60 for n in per_shot[3]) >= 3
    assert (ids >= 0).mean() > 0.95


@pytest.mark.parametrize("fps", [25, 30, 60, 30000 / 1001, 24])
def test_sampling_is_by_time_whatever_the_frame_rate(fps):
    times = 3.7 + np.arange(int(4.2 * fps)) / fps  # a 4.2 s track starting mid-video
    picked = times[sample_crops(times, 0.5)] - times[0]
    targets = np.arange(9) * 0.5
    assert len(picked) == len(targets)
    # Each pick is the first frame at or after its target: within one frame period after it.
    assert np.all(picked >= targets - 1e-9) and np.all(picked - targets < 1 / fps)


def test_sampling_variable_frame_rate_matches_the_definition():
    rng = np.random.default_rng(1)
    for _ in range(20):
        times = np.cumsum(rng.exponential(0.08, size=60))
        times = np.round(times, 3)
        times = times[np.r_[True, np.diff(times) > 0]]
        picked = sample_crops(times, 0.5)
        # Brute force: for each grid time from the first detection, the first detection at or after it.
        expected = []
        t0 = times[0]
        k = 0
        while t0 + k * 0.5 <= times[-1] + 1e-9:
            i = int(np.flatnonzero(times >= t0 + k * 0.5 - 1e-9)[0])
            if i not in expected:
                expected.append(i)
            k += 1
        assert picked.tolist() == expected


def test_sampling_edges():
    assert sample_crops(np.array([]), 0.5).tolist() == []
    assert sample_crops(np.array([2.0]), 0.5).tolist() == [0]
    # A gap: the grid is kept (0, 0.5, 1.0, 1.5 ...) and one crop is taken after the gap.
    assert sample_crops(np.array([0.0, 0.1, 1.2, 1.3, 1.6]), 0.5).tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="ascending"):
        sample_crops(np.array([0.0, 1.0, 0.5]), 0.5)
