"""`vcn run` on one video: stage 1 tables on the real Hamilton clip, resume and skip, bad inputs via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests import videos
from vcn.config import RunConfig
from vcn.pipeline import run_video
from vcn.tables import SCHEMAS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HAMILTON = SHARED / "data" / "videos" / "short_hamilton_clip.mp4"
needs_hamilton = pytest.mark.skipif(not HAMILTON.is_file(), reason="../shared/data/videos is not beside the repo")


@pytest.fixture(scope="module")
def hamilton_run(tmp_path_factory):
    if not HAMILTON.is_file():
        pytest.skip("../shared/data/videos is not beside the repo")
    out = tmp_path_factory.mktemp("ham")
    result = run_video(HAMILTON, out, RunConfig(), stages=["detect", "track"])
    return result, out


def _table(path: Path, name: str):
    return pq.read_table(path / f"{name}.parquet")


@needs_hamilton
def test_hamilton_shots_are_the_hard_cuts(hamilton_run):
    result, _ = hamilton_run
    shots = _table(result.path, "shots").to_pylist()
    assert [s["start_frame"] for s in shots] == [0, 20, 82, 211]
    assert shots[-1]["end_frame"] == 275
    assert all(a["end_s"] == pytest.approx(b["start_s"]) for a, b in zip(shots, shots[1:]))


@needs_hamilton
def test_tables_have_the_declared_schemas_and_tracks_stay_in_their_shot(hamilton_run):
    result, _ = hamilton_run
    for name in ("shots", "detections", "tracks", "crops"):
        assert _table(result.path, name).schema.equals(SCHEMAS[name], check_metadata=False), name
    shots = {s["shot_id"]: s for s in _table(result.path, "shots").to_pylist()}
    tracks = _table(result.path, "tracks").to_pylist()
    assert len(tracks) >= 4
    for t in tracks:
        shot = shots[t["shot_id"]]
        assert shot["start_frame"] <= t["start_frame"] <= t["end_frame"] < shot["end_frame"]
    detections = _table(result.path, "detections")
    tracked = detections.filter(detections.column("track_id").to_numpy() >= 0).to_pylist()
    by_track = {t["track_id"]: t["shot_id"] for t in tracks}
    assert all(by_track[d["track_id"]] == d["shot_id"] for d in tracked)


@needs_hamilton
def test_crops_are_aligned_images_sampled_every_half_second(hamilton_run):
    result, _ = hamilton_run
    crops = _table(result.path, "crops").to_pylist()
    assert len(crops) >= 20
    for c in crops[:10]:
        img = cv2.imdecode(np.frombuffer(c["image"], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (112, 112, 3)
    by_track: dict[int, list[float]] = {}
    for c in crops:
        by_track.setdefault(c["track_id"], []).append(c["t_s"])
    tracks = {t["track_id"]: t for t in _table(result.path, "tracks").to_pylist()}
    for track_id, times in by_track.items():
        t = tracks[track_id]
        times = np.sort(times)
        # Crops sit on a 0.5 s grid from the track's first detection: one per grid cell, the first one at its start.
        assert times[0] == pytest.approx(t["start_s"])
        cells = np.floor((times - times[0]) / 0.5 + 1e-6)
        assert (np.diff(cells) >= 1).all()
        assert t["n_crops"] == len(times) <= int(np.floor((t["end_s"] - t["start_s"]) / 0.5 + 1e-6)) + 1
    long_track = max(tracks.values(), key=lambda t: t["end_s"] - t["start_s"])
    assert long_track["n_crops"] >= int((long_track["end_s"] - long_track["start_s"]) / 0.5)
    assert any(c["quality_ok"] for c in crops) and not all(c["quality_ok"] for c in crops)


@needs_hamilton
def test_crops_carry_the_torso_colours_of_their_own_frame(hamilton_run):
    from vcn.faces.clothes import TORSO_BINS, torso_histogram
    from vcn.video.decode import probe_video, read_frames

    result, _ = hamilton_run
    crops = _table(result.path, "crops").to_pylist()
    dressed = [c for c in crops if c["torso_hist"] is not None]
    assert len(dressed) >= len(crops) // 2
    for c in dressed:
        assert len(c["torso_hist"]) == TORSO_BINS and sum(c["torso_hist"]) == pytest.approx(1.0, abs=1e-4)
    picks = {c["frame"]: c for c in dressed[::max(1, len(dressed) // 4)]}
    for frame, picture in read_frames(HAMILTON, sorted(picks), probe_video(HAMILTON)):
        c = picks[frame]
        again = torso_histogram(picture, (c["x1"], c["y1"], c["x2"], c["y2"]))
        np.testing.assert_allclose(again, c["torso_hist"], atol=1e-6)


@needs_hamilton
def test_summary_records_counts_timings_models_and_config(hamilton_run):
    result, _ = hamilton_run
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["stages_done"] == ["detect", "track"]
    assert summary["counts"]["shots"] == 4 and summary["counts"]["tracks"] == len(_table(result.path, "tracks"))
    assert summary["frames_per_second"]["detect"] > 0
    assert summary["versions"]["vcn"] and summary["models"]["detector"] == "retinaface"
    assert summary["config"]["sample"]["interval_s"] == 0.5
    # The auto batch sizes as they ran (a CPU here: onnxruntime, 8 frames a call, decode batches of 16).
    assert summary["config"]["detect"]["batch_size"] == 0
    assert summary["scan_ran_with"] == {"detector": summary["scan_ran_with"]["detector"], "detect.batch_size": 8,
                                        "decode.batch_frames": 16}
    assert summary["scan_ran_with"]["detector"].startswith("onnxruntime")
    assert summary["video_info"]["n_frames"] == 275 and summary["partial"] is False


@needs_hamilton
def test_rerun_skips_a_finished_video_and_resume_keeps_earlier_tables(hamilton_run, tmp_path):
    result, out = hamilton_run
    again = run_video(HAMILTON, out, RunConfig(), stages=["detect"])
    assert again.skipped
    # Resume: a folder with only the detect stage done gains the track stage without redoing detection.
    partial = run_video(HAMILTON, tmp_path, RunConfig(), stages=["detect"])
    detect_seconds = partial.summary["seconds"]["detect_s"]
    resumed = run_video(HAMILTON, tmp_path, RunConfig(), stages=["detect", "track"])
    assert not resumed.skipped and resumed.summary["stages_done"] == ["detect", "track"]
    assert resumed.summary["seconds"]["detect_s"] == detect_seconds
    assert _table(resumed.path, "crops").num_rows == _table(result.path, "crops").num_rows
    assert not list(tmp_path.glob(".*tmp"))  # no temporary folders left behind


def test_video_without_faces_gives_empty_valid_tables(tmp_path):
    video = videos.write_video(tmp_path / "nofaces.mp4", n_frames=40, fps=Fraction(30000, 1001))
    result = run_video(video, tmp_path / "out", RunConfig(), stages=["detect", "track"])
    assert result.summary["counts"]["detections"] == 0 and result.summary["counts"]["tracks"] == 0
    assert _table(result.path, "crops").schema.equals(SCHEMAS["crops"], check_metadata=False)
    assert _table(result.path, "shots").num_rows >= 1


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), 60])
def test_odd_frame_rates_time_shots_from_the_container(tmp_path, fps):
    video = videos.write_video(tmp_path / "odd.mp4", n_frames=45, fps=fps)
    result = run_video(video, tmp_path / "out", RunConfig(), stages=["detect"])
    shots = _table(result.path, "shots").to_pylist()
    assert shots[-1]["end_s"] == pytest.approx(45 / float(fps), abs=1e-3)


def _vcn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcn.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("make, words", [
    (None, "no such file"),
    (videos.write_not_video, "not a video"),
    (videos.write_zero_length, "empty"),
    (videos.write_truncated, ""),
])
def test_bad_inputs_give_a_clear_error_naming_the_file(tmp_path, make, words):
    path = tmp_path / "bad.mp4"
    if make is not None:
        make(path)
    proc = _vcn("run", str(path), "--out", str(tmp_path / "out"), "--stages", "detect,track", "--quiet")
    if make is videos.write_truncated and proc.returncode == 0:
        # A file cut short may still decode up to the cut: then the output must say it is partial.
        summary = json.loads((tmp_path / "out" / "bad" / "summary.json").read_text())
        assert summary["partial"] is True
        return
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and words.lower() in proc.stderr.lower()


def test_cli_rejects_unknown_stages(tmp_path):
    proc = _vcn("run", "x.mp4", "--out", str(tmp_path), "--stages", "detect,bogus")
    assert proc.returncode == 2 and "choose from detect, track, cluster" in proc.stderr


def test_shots_are_tracked_during_the_scan_where_detection_runs_on_a_gpu():
    # "auto": on a CPU the tracking threads would take the detector's cores, so shots are tracked after the scan.
    import torch

    from vcn.errors import VcnError
    from vcn.models.retinaface import RetinaFaceDetector
    from vcn.tracking.shots import tracks_during_scan

    cfg = RunConfig()
    assert cfg.track.during_scan == "auto"
    assert tracks_during_scan(cfg) == torch.cuda.is_available()
    assert not tracks_during_scan(cfg, RetinaFaceDetector(device="cpu"))
    assert not tracks_during_scan(cfg, RetinaFaceDetector(device="torch-cpu"))
    cfg.detect.device = "cpu"
    assert not tracks_during_scan(cfg)
    cfg.track.during_scan = "always"
    assert tracks_during_scan(cfg, RetinaFaceDetector(device="cpu"))
    cfg.track.during_scan = "never"
    assert not tracks_during_scan(cfg)
    cfg.track.during_scan = "yes"
    with pytest.raises(VcnError, match=r"track.during_scan='yes': choose auto .*, always or never"):
        tracks_during_scan(cfg)


class _RecordingDetector:
    """The real detector, with the number of frames of every call it gets written down."""

    def __init__(self, inner):
        self.inner, self.sizes = inner, []
        self.backend = inner.backend

    def detect(self, frames):
        self.sizes.append(len(frames))
        return self.inner.detect(frames)


def test_detector_batches_follow_where_detection_runs_and_are_never_capped_by_decoding(tmp_path):
    from vcn.errors import VcnError
    from vcn.models.retinaface import RetinaFaceDetector
    from vcn.pipeline import scan_video, with_scan_batches

    cfg = RunConfig()
    assert cfg.detect.batch_size == 0   # auto
    cpu, gpu = with_scan_batches(cfg, on_gpu=False), with_scan_batches(cfg, on_gpu=True)
    assert (cpu.detect.batch_size, cpu.decode.batch_frames) == (8, 16)
    assert (gpu.detect.batch_size, gpu.decode.batch_frames) == (32, 32)
    assert (cfg.detect.batch_size, cfg.decode.batch_frames) == (0, 16)   # the caller's config is left as it was
    cfg.detect.batch_size = 12
    assert (with_scan_batches(cfg, True).detect.batch_size, with_scan_batches(cfg, True).decode.batch_frames) == (12, 16)

    # A detector batch larger than the decode batch: decoding follows, so the detector gets the frames asked for.
    cfg.detect.batch_size, cfg.decode.batch_frames = 24, 4
    path = videos.write_video(tmp_path / "v.mp4", n_frames=50)
    detector = _RecordingDetector(RetinaFaceDetector(device="cpu"))
    scan = scan_video(path, cfg, detector=detector, video_id="v")
    assert detector.sizes == [24, 24, 2] and len(scan.frame_times) == 50
    assert scan.ran_with["detect.batch_size"] == 24 and scan.ran_with["decode.batch_frames"] == 24
    detector.sizes.clear()
    cfg.detect.batch_size = 0
    scan_video(path, cfg, detector=detector, video_id="v")
    assert detector.sizes == [8] * 6 + [2]        # auto on a CPU: 8, the decode batch of 4 raised to it

    cfg.detect.batch_size = -1
    with pytest.raises(VcnError, match=r"detect.batch_size=-1 must be at least 0 \(the default is 0: auto"):
        with_scan_batches(cfg, False)
    cfg.detect.batch_size, cfg.decode.batch_frames = 0, 0
    with pytest.raises(VcnError, match=r"decode.batch_frames=0 must be at least 1 \(the default is 16\)"):
        with_scan_batches(cfg, False)


@pytest.mark.parametrize("setting, words", [
    ("cluster.metric=euclid", r"cluster.metric='euclid' is unknown; choose one of loss, cosine"),
    ("ssl.backbone_layers=half", r"ssl.backbone_layers='half' is unknown; choose one of all, low_res, tail"),
    ("ssl.device=gpu", r"ssl.device='gpu' is not a torch device; choose auto, cpu, cuda or cuda:N"),
    ("sample.image_format=xyz", r"sample.image_format='xyz' cannot be encoded; use png or jpg"),
    ("track.tracker=sort", r"track.tracker='sort' is not available"),
    ("track.during_scan=yes", r"track.during_scan='yes': choose auto"),
    ("decode.deinterlace=maybe", r"deinterlace='maybe': choose one of"),
    ("detect.device=gpu", r"detect.device='gpu': choose auto, cpu, cuda, cuda:N or torch-cpu"),
])
def test_a_bad_choice_stops_the_run_before_any_work(setting, words, tmp_path):
    # Checked up front (vcn.pipeline.check_settings), not when the stage that reads it comes: a typo in a stage-2
    # setting must not cost the scan of a long video first.
    from vcn.catalogue import run_catalogue
    from vcn.errors import VcnError

    video = videos.write_video(tmp_path / "v.mp4", n_frames=10)
    cfg = RunConfig.load(None, [setting])
    with pytest.raises(VcnError, match=words):
        run_video(video, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()
    if not setting.startswith(("ssl.device", "detect.device")):   # devices are the workers' to resolve
        with pytest.raises(VcnError, match=words):
            run_catalogue(str(tmp_path / "no such folder"), str(tmp_path / "cat"), cfg)
        assert not (tmp_path / "cat").exists()


def test_a_gpu_asked_for_where_there_is_none_is_named():
    import torch

    from vcn.errors import VcnError
    from vcn.ssl.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(VcnError, match=r"ssl.device='cuda:0' but torch sees no CUDA GPU here"):
            resolve_device("cuda:0")
