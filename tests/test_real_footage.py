"""Footage as archives hold it, through `run_video` with the real detector and tracker: variable frame rate,
rotation metadata, anamorphic pixels, interlacing, and files that are not usable video (issue 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests import videos
from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.faces.align import align_face
from vcn.pipeline import run_video
from vcn.video.decode import DecodeError, iter_frames, probe_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
needs_faces = pytest.mark.skipif(not (SHARED / "data" / "faces" / "deepface13").is_dir(),
                                 reason=f"shared face photos not found at {SHARED}/data/faces/deepface13")


@pytest.fixture(scope="module")
def detector():
    from vcn.models import load_detector

    return load_detector("retinaface", RunConfig().detect)


def run(video: Path, out: Path, detector) -> dict:
    """detect + track on one video; its tables (sorted by frame) and summary."""
    result = run_video(video, out, RunConfig(), stages=["detect", "track"], detector=detector)
    tables = {name: pq.read_table(result.path / f"{name}.parquet") for name in ("detections", "tracks", "crops")}
    # Faces of one frame in left-to-right order, so two runs' rows line up.
    tables = {name: t.sort_by([("frame", "ascending"), ("x1", "ascending")] if "frame" in t.column_names
                              else [("start_frame", "ascending"), ("track_id", "ascending")])
              for name, t in tables.items()}
    return {**tables, "summary": json.loads((result.path / "summary.json").read_text())}


def by_track(table, column):
    """track_id -> values of `column` in frame order, tracks ordered by their first frame then left edge."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["frame"], r["x1"]))
    order: list[int] = []
    values: dict[int, list] = {}
    for r in rows:
        if r["track_id"] not in values:
            order.append(r["track_id"])
            values[r["track_id"]] = []
        values[r["track_id"]].append(r[column])
    return [values[t] for t in order]


def crop_images(crops) -> list[np.ndarray]:
    return [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in crops.column("image").to_pylist()]


def landmarks(table) -> np.ndarray:
    return np.asarray(table.column("landmarks").to_pylist(), np.float32).reshape(-1, 5, 2)


def face_shape(points: np.ndarray) -> np.ndarray:
    """Eye distance over eye-to-mouth height per face: a face squashed sideways scores lower."""
    eyes = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    height = (points[:, 3:5].mean(1) - points[:, 0:2].mean(1))[:, 1]
    return eyes / height


# --- 1. time from the container ---------------------------------------------------------------------------------

@needs_faces
def test_variable_frame_rate_crops_are_at_the_same_moments_as_constant_rate(tmp_path, detector):
    fps = 30
    scene = videos.face_scene(320, 180, face_height=0.6)
    cfr = videos.write_video(tmp_path / "cfr.mp4", n_frames=60, fps=fps, width=320, height=180,
                             make_frame=lambda i: scene(i / fps))
    pts = videos.vfr_times(2.0, fps, seed=3)
    vfr = videos.write_video(tmp_path / "vfr.mp4", n_frames=len(pts), fps=fps, width=320, height=180, pts_s=pts,
                             make_frame=lambda i: scene(pts[i]))
    a, b = run(cfr, tmp_path / "out", detector), run(vfr, tmp_path / "out", detector)

    np.testing.assert_allclose(sorted(set(b["detections"].column("t_s").to_pylist())), pts, atol=1e-6)
    times_a, times_b = by_track(a["crops"], "t_s"), by_track(b["crops"], "t_s")
    assert len(times_a) == len(times_b) == 2 and [len(t) for t in times_a] == [len(t) for t in times_b] == [4, 4]
    for ta, tb in zip(times_a, times_b):
        for t_cfr, t_vfr in zip(ta, tb):
            # The VFR crop is the first VFR frame at or after the CFR crop's moment: within one of its frames.
            k = pts.index(round(t_vfr, 3))
            assert t_cfr - 1e-6 <= t_vfr and (k == 0 or pts[k - 1] < t_cfr - 1e-6)
            assert t_vfr - t_cfr < 2 / fps
    # Frame index / nominal rate would have put them elsewhere: the VFR crops sit at other frame indices.
    frames_b = by_track(b["crops"], "frame")[0]
    info = b["summary"]["video_info"]
    assert max(abs(f / info["fps"] - t) for f, t in zip(frames_b, times_b[0])) > 1 / fps
    assert a["summary"]["video_info"]["timestamps_from"] == info["timestamps_from"] == "container"


# --- 2. rotation ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upright(tmp_path_factory, detector):
    if not videos.DEEPFACE13.is_dir():
        pytest.skip(f"shared face photos not found at {videos.DEEPFACE13}")
    root = tmp_path_factory.mktemp("rotation")
    scene = videos.face_scene(320, 180, face_height=0.6)
    video = videos.write_video(root / "upright.mp4", n_frames=20, fps=10, width=320, height=180,
                               make_frame=lambda i: scene(i / 10))
    return scene, root, run(video, root / "out", detector)


@needs_faces
@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_copy_gives_the_same_tracks_in_the_displayed_orientation(upright, detector, rotation):
    scene, root, a = upright
    video = videos.write_rotated(root / f"rot{rotation}.mp4", rotation, scene, 20, fps=10)
    with av.open(str(video)) as container:
        stored = container.streams.video[0].codec_context
        assert (stored.width, stored.height) == (180, 320)  # stored on its side, as a phone writes it
    b = run(video, root / "out", detector)

    info = b["summary"]["video_info"]
    assert (info["rotation"], info["width"], info["height"]) == (rotation, 320, 180)
    assert any(f"turned {rotation} degrees" in c for c in info["corrections"])
    assert a["tracks"].num_rows == b["tracks"].num_rows == 2
    for name in ("start_frame", "end_frame", "n_detections", "n_crops"):
        assert a["tracks"].column(name).to_pylist() == b["tracks"].column(name).to_pylist(), name
    assert a["detections"].column("frame").to_pylist() == b["detections"].column("frame").to_pylist()
    for name in ("x1", "y1", "x2", "y2"):
        np.testing.assert_allclose(b["detections"].column(name).to_numpy(), a["detections"].column(name).to_numpy(),
                                   atol=2.0, err_msg=name)
    np.testing.assert_allclose(landmarks(b["detections"]), landmarks(a["detections"]), atol=2.0)
    assert a["crops"].column("frame").to_pylist() == b["crops"].column("frame").to_pylist()
    for ca, cb in zip(crop_images(a["crops"]), crop_images(b["crops"])):
        assert np.abs(ca.astype(int) - cb).mean() < 6


# --- 3. non-square pixels ---------------------------------------------------------------------------------------

@needs_faces
@pytest.mark.parametrize("sar, display_width", [(Fraction(64, 45), 1024), (Fraction(16, 15), 768)])
def test_anamorphic_footage_is_detected_and_aligned_on_square_pixels(tmp_path, detector, sar, display_width):
    scene = videos.face_scene(display_width, 576, face_height=0.5)
    square = videos.write_video(tmp_path / "square.mp4", n_frames=10, fps=10, width=display_width, height=576,
                                make_frame=lambda i: scene(i / 10))
    anamorphic = videos.write_anamorphic(tmp_path / "pal.mp4", scene, 10, fps=10, sample_aspect_ratio=sar)
    a, b = run(square, tmp_path / "out", detector), run(anamorphic, tmp_path / "out", detector)

    info = b["summary"]["video_info"]
    assert (info["coded_width"], info["coded_height"], info["width"], info["height"]) == (720, 576, display_width, 576)
    assert info["sample_aspect_ratio"] == pytest.approx(float(sar))
    assert any(f"resampled 720x576 to {display_width}x576" in c and f"{sar.numerator}:{sar.denominator}" in c
               for c in info["corrections"])
    assert a["detections"].num_rows == b["detections"].num_rows == 20
    # Landmarks in display pixels, where the square original has them; the face keeps its shape.
    np.testing.assert_allclose(landmarks(b["detections"]), landmarks(a["detections"]), atol=4.0)
    shape_a, shape_b = face_shape(landmarks(a["detections"])), face_shape(landmarks(b["detections"]))
    np.testing.assert_allclose(shape_b, shape_a, rtol=0.04)
    # The aligned crops match the square original's.
    crops_a, crops_b = crop_images(a["crops"]), crop_images(b["crops"])
    assert len(crops_a) == len(crops_b) == 4
    diffs = [np.abs(ca.astype(int) - cb).mean() for ca, cb in zip(crops_a, crops_b)]
    assert max(diffs) < 8

    if sar == Fraction(64, 45):
        # What it would be without the correction: the stored 720-wide picture squashes faces by 45/64.
        with av.open(str(anamorphic)) as container:
            stored = next(container.decode(video=0)).to_ndarray(format="bgr24")
        faces = detector.detect(stored[None])[0]
        squashed = face_shape(faces.landmarks)
        assert np.median(squashed) < 0.85 * np.median(shape_a)
        stored_crops = [align_face(stored, p) for p in faces.landmarks]
        nearest = min(np.abs(c.astype(int) - crops_a[0]).mean() for c in stored_crops)
        assert nearest > 2 * max(diffs)


# --- 4. interlacing ---------------------------------------------------------------------------------------------

@needs_faces
def test_interlaced_footage_is_deinterlaced_before_detection(tmp_path, detector):
    # 576i: 50 fields/s of a fast pan; woven frames comb wherever the picture moves.
    scene = videos.face_scene(720, 576, face_height=0.35, amplitude=0.2, period_s=1.5)
    video = videos.write_interlaced(tmp_path / "576i.mp4", scene, 20, field_rate=50)
    b = run(video, tmp_path / "out", detector)

    info = b["summary"]["video_info"]
    assert info["interlaced"] and info["deinterlaced"] and info["field_order"] == "tff"
    assert any(c.startswith("deinterlaced") for c in info["corrections"])
    crops = crop_images(b["crops"])
    assert b["tracks"].num_rows == 2 and len(crops) == 4
    assert max(videos.combing(c) for c in crops) < 0.6
    assert max(videos.combing(scene(t)) for t in (0.0, 0.5)) < 0.6  # the progressive pictures, for scale

    # The same crops cut from the frames as stored (not deinterlaced) are combed.
    woven = probe_video(video, deinterlace="never")
    assert woven.interlaced and not woven.deinterlaced and woven.corrections == []
    frames = np.concatenate([batch.frames for batch in iter_frames(video, 32, info=woven)])
    combed = [align_face(frames[f], p) for f, p in zip(b["crops"].column("frame").to_pylist(), landmarks(b["crops"]))]
    assert min(videos.combing(c) for c in combed) > 1.0


@needs_faces
@pytest.mark.parametrize("top_field_first", [True, False])
def test_deinterlacing_keeps_the_field_shown_first(tmp_path, top_field_first):
    scene = videos.face_scene(360, 288, face_height=0.5, amplitude=0.3, period_s=4.0)  # fast all along
    video = videos.write_interlaced(tmp_path / "i.mp4", scene, 8, field_rate=50, top_field_first=top_field_first)
    info = probe_video(video)
    assert info.interlaced and info.deinterlaced and info.field_order == ("tff" if top_field_first else "bff")
    frames = next(iter_frames(video, 8, info=info)).frames
    for i, frame in enumerate(frames):
        assert videos.combing(frame) < 0.6
        first, second = scene(2 * i / 50), scene((2 * i + 1) / 50)
        # The picture is the first field's instant (the frame's timestamp), not the second's.
        assert np.abs(frame.astype(int) - first).mean() < 0.6 * np.abs(frame.astype(int) - second).mean()


def test_progressive_video_is_left_alone(tmp_path):
    info = probe_video(videos.write_video(tmp_path / "p.mp4", n_frames=6))
    assert not info.interlaced and not info.deinterlaced and info.field_order == "progressive"
    assert info.corrections == []


# --- 6. inputs that are not usable video ------------------------------------------------------------------------

@pytest.mark.parametrize("name, make, words", [
    ("photo.mp4", videos.write_still_image, "is a still image (PNG), not a video"),
    ("photo_jpeg.mp4", lambda p: videos.write_still_image(p, ext=".jpg"), "is a still image (JPEG), not a video"),
    ("sound.m4a", videos.write_audio_only, "has no video stream"),
    ("song.m4a", videos.write_audio_with_cover, "has no video stream (an audio file with cover art)"),
    ("one.mp4", lambda p: videos.write_video(p, n_frames=1), "holds a single frame"),
    ("frozen.mkv", videos.write_same_timestamps, "all 10 frames carry the same timestamp (a zero-duration stream)"),
    ("blank.avi", videos.write_no_frames, "has a video stream but no frames"),
])
def test_unusable_inputs_are_refused_with_a_message_naming_the_file(tmp_path, name, make, words):
    path = make(tmp_path / name)
    with pytest.raises(VcnError) as caught:
        run_video(path, tmp_path / "out", RunConfig(), stages=["detect", "track"])
    assert str(path) in str(caught.value) and words in str(caught.value)
    assert not (tmp_path / "out" / path.stem).exists()  # nothing half-made is left


def test_cli_refuses_a_renamed_photo_without_a_traceback(tmp_path):
    path = videos.write_still_image(tmp_path / "holiday.mp4")
    proc = subprocess.run([sys.executable, "-m", "vcn.cli", "run", str(path), "--out", str(tmp_path / "out"),
                           "--stages", "detect", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path} is a still image (PNG)" in proc.stderr


def pyav_frames_before_error(path: Path) -> int:
    """How many frames FFmpeg decodes, synchronously, before the first error: the reference."""
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        try:
            for _ in container.decode(stream):
                count += 1
        except av.error.FFmpegError:
            pass
    return count


@pytest.mark.parametrize("rotation", [None, 90])
def test_decoding_stops_at_the_same_frame_every_time_and_delivers_all_before_it(tmp_path, rotation):
    path = videos.write_corrupt_middle(tmp_path / "bad.mp4", n_frames=120, rotation=rotation)
    reference = pyav_frames_before_error(path)
    assert 0 < reference < 120
    k = (rotation or 0) // 90
    for batch_frames in (64, 16, 7):  # decord reports its error at a varying frame: the answer must not vary
        shown = []
        with pytest.raises(DecodeError) as caught:
            for batch in iter_frames(path, batch_frames):
                shown += [videos.read_index(np.rot90(f, -k)) for f in batch.frames]
        assert caught.value.frames_decoded == reference, batch_frames
        assert shown == list(range(reference))
        assert f"bad.mp4: decoding failed after frame {reference - 1} of 120" in str(caught.value)


def test_file_corrupt_part_way_gives_a_partial_result(tmp_path):
    path = videos.write_corrupt_middle(tmp_path / "bad.mp4", n_frames=120)
    reference = pyav_frames_before_error(path)
    result = run_video(path, tmp_path / "out", RunConfig(), stages=["detect", "track"])
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["partial"] is True
    assert summary["seconds"]["frames_scanned"] == reference
    assert f"after frame {reference - 1}" in summary["decode_error"] and str(path) in summary["decode_error"]
    shots = pq.read_table(result.path / "shots.parquet")
    assert shots.column("end_frame").to_pylist()[-1] == reference


# --- 5. long files (the benchmark, small) -----------------------------------------------------------------------

@pytest.mark.slow
@needs_faces
def test_peak_memory_does_not_grow_with_length(tmp_path):
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "long_video_memory.py"
    subprocess.run([sys.executable, str(bench), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                    "--minutes", "0.5", "3", "--size", "160x96", "--material-s", "30"],
                   check=True, capture_output=True, timeout=900)
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(r["returncode"] == 0 for r in report["results"])
    assert report["within_20_percent"], report["peak_ratio_longest_to_shortest"]
