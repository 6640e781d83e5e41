"""Tests of the multi-shot renderer, the demo video and the benchmark episodes (real photos, real H.264 files)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.benchmark_scripts import load_benchmark
from vcn.errors import VcnError
from vcn.evaluate import box_iou
from vcn.render import (
    TRUTH_SCHEMA,
    Photo,
    Shot,
    detect_photo_faces,
    load_photo,
    random_shot,
    read_truth,
    render_video,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.pts * frame.time_base))
    return frames, times


def truth_by_frame(path: Path) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in read_truth(path).to_pylist():
        out.setdefault(row["frame"], []).append(row)
    return out


def square_photo(h=400, w=300, box=(80, 120, 200, 260), name="square") -> Photo:
    """A dark photo with one bright rectangle whose box is known exactly (no detector involved)."""
    image = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return Photo(image=image, boxes=np.array([box], np.float32), identities=[name], name=name)


def test_truth_boxes_follow_the_pixels_through_zoom_and_pan(tmp_path):
    # The bright rectangle is the "face": wherever the camera puts it, the truth box must cover it.
    shots = [
        Shot([square_photo()], duration_s=0.6, zoom=(1.0, 2.0), pan=((0.0, 0.0), (1.0, 1.0))),
        Shot([square_photo(name="a"), square_photo(300, 500, (300, 40, 420, 200), name="b")], duration_s=0.6,
             zoom=(1.3, 1.0), pan=((1.0, 0.2), (0.0, 0.8)), photo_scales=[0.7, 1.0]),
    ]
    result = render_video(shots, tmp_path / "sq.mp4", seed=3)
    frames, times = decode(result.video)
    assert len(frames) == result.n_frames == 30
    assert frames[0].shape == (360, 640, 3)
    assert times[:3] == pytest.approx([0.0, 0.04, 0.08])
    truth = truth_by_frame(result.truth)
    checked = 0
    for i, frame in enumerate(frames):
        for row in truth.get(i, []):
            x1, y1, x2, y2 = (row[k] for k in ("x1", "y1", "x2", "y2"))
            if x1 <= 1 or y1 <= 1 or x2 >= 639 or y2 >= 359:
                continue  # clipped by the frame edge: the visible part is checked by the others
            pad = 3
            region = frame[max(0, int(y1) - pad):int(y2) + pad, max(0, int(x1) - pad):int(x2) + pad]
            ys, xs = np.nonzero(region.min(axis=2) > 200)
            found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
            found += [max(0, int(x1) - pad), max(0, int(y1) - pad)] * 2
            assert np.abs(found - [x1, y1, x2, y2]).max() < 2.5, (i, row, found)
            checked += 1
    assert checked >= 30
    assert result.shot_starts == [0, 15]
    assert set(result.identities) == {"square", "a", "b"}


def test_truth_of_real_photos_matches_a_detector_on_the_decoded_video(tmp_path, demo_photos):
    group, portrait = demo_photos
    shots = [
        Shot([group], duration_s=0.8, zoom=(1.0, 1.6), pan=((0.2, 0.5), (0.8, 0.5)), gain=(0.8, 1.2)),
        Shot([portrait, group.crop(0, 0, 600, group.image.shape[0])], duration_s=0.8, photo_scales=[0.6, 1.0],
             blur_sigma=(1.0, 0.0), tint=(0.1, -0.1)),
    ]
    result = render_video(shots, tmp_path / "real.mp4", seed=0)
    frames, _ = decode(result.video)
    truth = truth_by_frame(result.truth)
    ious = []
    for i in range(0, len(frames), 4):
        boxes, _ = detect_photo_faces(frames[i])
        rows = truth.get(i, [])
        assert rows, f"frame {i} has no truth boxes"
        t = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in rows])
        best = box_iou(t, boxes).max(axis=1) if len(boxes) else np.zeros(len(t))
        ious.extend(best.tolist())
    ious = np.array(ious)
    # The truth box of a face is where a detector finds that face in the rendered frame.
    assert np.mean(ious >= 0.5) >= 0.9, np.round(ious, 2)
    assert np.median(ious) >= 0.7


def test_render_is_deterministic_and_seeded(tmp_path):
    photos = [square_photo(), square_photo(300, 500, (300, 40, 420, 200), name="b")]

    def shots(seed):
        rng = np.random.default_rng(seed)
        return [random_shot(photos, rng, duration_s=(0.4, 0.6)), random_shot(photos[:1], rng, duration_s=(0.4, 0.6))]

    a = render_video(shots(5), tmp_path / "a.mp4", seed=5)
    b = render_video(shots(5), tmp_path / "b.mp4", seed=5)
    c = render_video(shots(6), tmp_path / "c.mp4", seed=6)
    assert a.video.read_bytes() == b.video.read_bytes()
    assert pq.read_table(a.truth).equals(pq.read_table(b.truth))
    assert a.video.read_bytes() != c.video.read_bytes()
    assert pq.read_table(a.truth).schema.equals(TRUTH_SCHEMA)
    manifest = json.loads(a.manifest.read_text())
    assert manifest["n_frames"] == a.n_frames and len(manifest["shots"]) == 2
    assert not list(tmp_path.glob(".*partial*")), "temporary files left behind"


def test_photo_crop_keeps_faces_mostly_inside():
    photo = Photo(image=np.zeros((100, 200, 3), np.uint8),
                  boxes=np.array([[10, 10, 50, 50], [90, 10, 130, 50], [150, 10, 190, 50]], np.float32),
                  identities=["in", "half", "out"])
    crop = photo.crop(0, 0, 115, 100)
    assert crop.identities == ["in", "half"]      # "half" has 25/40 of its width inside
    np.testing.assert_allclose(crop.boxes, [[10, 10, 50, 50], [90, 10, 115, 50]])
    assert crop.image.shape == (100, 115, 3)


def test_bad_render_inputs_are_user_errors(tmp_path):
    p = square_photo()
    with pytest.raises(VcnError, match="1 to 3"):
        render_video([Shot([p, p, p, p])], tmp_path / "x.mp4")
    with pytest.raises(VcnError, match="even"):
        render_video([Shot([p])], tmp_path / "x.mp4", size=(641, 360))
    with pytest.raises(VcnError, match="at least one shot"):
        render_video([], tmp_path / "x.mp4")
    with pytest.raises(VcnError, match="cannot be read"):
        load_photo(tmp_path / "missing.jpg")
    with pytest.raises(VcnError, match="does not exist"):
        read_truth(tmp_path / "missing.parquet")


def test_demo_video(tmp_path):
    from scenedetect import ContentDetector, detect

    from vcn.config import ShotConfig
    from vcn.demo import render_demo_video

    video = render_demo_video(tmp_path / "demo.mp4")
    manifest = json.loads(video.with_name("demo.shots.json").read_text())
    assert 11.0 <= manifest["n_frames"] / manifest["fps"] <= 13.0
    assert 4 <= len(manifest["shots"]) <= 6
    frames, _ = decode(video)
    assert len(frames) == manifest["n_frames"]

    truth = read_truth(video.with_name("demo.truth.parquet")).to_pylist()
    starts = [s["start_frame"] for s in manifest["shots"]]
    shot_of = lambda f: int(np.searchsorted(starts, f, side="right")) - 1  # noqa: E731
    heights: dict[str, dict[int, list[float]]] = {}
    for row in truth:
        heights.setdefault(row["identity"], {}).setdefault(shot_of(row["frame"]), []).append(row["y2"] - row["y1"])
    assert "tom_hanks" in heights and sum(k.startswith("group_person_") for k in heights) == 6
    for identity, per_shot in heights.items():
        # Everyone comes back in another shot, and at a clearly different size.
        assert len(per_shot) >= 2, identity
        medians = sorted(np.median(h) for h in per_shot.values())
        assert medians[-1] / medians[0] >= 1.4, (identity, medians)

    # The cuts are real cuts for the project's shot detector settings.
    cfg = ShotConfig()
    scenes = detect(str(video), ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_len_frames))
    found = [s[0].frame_num for s in scenes]
    assert len(found) == len(starts)
    assert all(abs(f - s) <= 1 for f, s in zip(found, starts)), (found, starts)


@pytest.fixture(scope="module")
def demo_photos():
    from vcn.demo import demo_photos as load

    return load()


@pytest.fixture(scope="module")
def episodes_module():
    return load_benchmark("episodes")


def test_episode_from_deepface13(tmp_path, episodes_module):
    faces = SHARED / "data" / "faces" / "deepface13"
    if not (faces / "identities.json").is_file():
        pytest.skip(f"shared test data not found at {faces} (the repository's sibling ../shared)")
    rc = episodes_module.main(["--faces", str(faces), "--out", str(tmp_path), "--seed", "1", "--shots", "5",
                                "--shot-seconds", "0.5", "0.8"])
    assert rc == 0
    manifest = json.loads((tmp_path / "episode.shots.json").read_text())
    held = json.loads((tmp_path / "held_out.json").read_text())
    identities = json.loads((faces / "identities.json").read_text())["identities"]
    assert len(manifest["shots"]) == 5
    used = [p for s in manifest["shots"] for p in s["photos"]]
    assert all(1 <= len(s["photos"]) <= 3 for s in manifest["shots"])
    held_files = {f for files in held["held_out"].values() for f in files}
    assert held_files and not held_files & set(used)
    for person, files in held["held_out"].items():
        assert set(files) <= set(identities[person])
        assert (faces / files[0]).is_file()
    # Round robin: with more photo slots than 13 people, nobody appears twice before everyone appears once.
    truth_ids = set(read_truth(tmp_path / "episode.truth.parquet")["identity"].to_pylist())
    people = set(held["in_video"])
    assert people <= truth_ids
    for s in manifest["shots"]:
        named = [i for i in s["identities"] if i.startswith("person_")]
        assert len(named) == len(set(named))
    if len(used) >= 13:
        assert len(people) == 13

    again = episodes_module.render_episode(faces, tmp_path / "again", seed=1, n_shots=5, shot_seconds=(0.5, 0.8))
    assert again.render.video.read_bytes() == (tmp_path / "episode.mp4").read_bytes()


def test_episode_scenes_keep_one_look_per_person(tmp_path, episodes_module):
    """With shots_per_scene, a person shows the same photo in every shot of a scene (TV structure) and
    other photos in other scenes while unused ones remain."""
    faces = SHARED / "data" / "faces" / "deepface13"
    if not (faces / "identities.json").is_file():
        pytest.skip(f"shared test data not found at {faces} (the repository's sibling ../shared)")
    episodes_module.render_episode(faces, tmp_path, seed=2, n_shots=7, shot_seconds=(0.3, 0.4),
                                   shots_per_scene=3, n_people=3)
    shots = json.loads((tmp_path / "episode.shots.json").read_text())["shots"]
    assert len(shots) == 9                       # 7 rounded up to 3 scenes of 3
    owner = {f: person for person, files in json.loads((faces / "identities.json").read_text())["identities"].items()
             for f in files}
    scenes = [shots[i:i + 3] for i in range(0, 9, 3)]
    seen: dict[str, set[str]] = {}
    for scene in scenes:
        looks = set(scene[0]["photos"])
        assert all(set(shot["photos"]) <= looks for shot in scene[1:])
        # Someone who appears in two scenes appears in two different photos (each person has 5+ photos).
        for photo in looks:
            assert photo not in seen.get(owner[photo], set())
            seen.setdefault(owner[photo], set()).add(photo)
    assert any(len(photos) > 1 for photos in seen.values())
