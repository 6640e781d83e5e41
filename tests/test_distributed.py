"""The Ray layer on a local cluster of two simulated nodes: unit scan == scan_video, tracking actors == run_video,
Ray Train with 2 workers == 1 worker, blocked cluster-pair matrix == the single-process one."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

try:  # tests/*.py: top-level modules when tests/ is on sys.path, tests.* when tests/ is a package
    import videos
except ImportError:
    from tests import videos
from vcn.catalogue import OutputStore, RunManifest, VideoInput, run_catalogue
from vcn.config import RunConfig
from vcn.distributed.scan import (DetectFaces, VideoScan, decode_units, merge_scan, replay_min_scene_len,
                                  scan_units, split_into_units)
from vcn.pipeline import scan_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TABLES = ("shots", "detections", "tracks", "crops")


def run_units_locally(path: Path, cfg: RunConfig, n_frames: int) -> VideoScan:
    """The Ray Data stages' callables run in this process, unit by unit (what Ray would schedule)."""
    import pickle

    units = split_into_units(VideoInput(str(path), "v"), n_frames, cfg)
    detect = DetectFaces(cfg.to_dict())
    scan = VideoScan("v", len(units), [], {})
    for u in units:
        for row in decode_units({k: np.array([x], dtype=object) for k, x in asdict(u).items()}, cfg.to_dict()):
            out = detect(row)
            scan.add(int(out["unit"][0]), pickle.loads(out["payload"][0]))
    return scan


# ----- scan: cuts and detections over work units -------------------------------------------------------------

def test_unit_merge_reproduces_scan_video_cuts_across_borders(tmp_path):
    """Scene changes every few frames (some closer than min_scene_len, some on unit borders): the merged cuts
    equal one pass over the file for every unit size."""
    changes = [3, 8, 11, 12, 20, 24, 27, 36, 40, 44, 45, 52]
    palette = [(20, 20, 220), (220, 220, 20), (20, 200, 20), (200, 20, 200), (240, 240, 240), (10, 10, 10)]

    def frame(i: int) -> np.ndarray:
        scene = sum(i >= c for c in changes)
        img = np.full((48, 64, 3), palette[scene % len(palette)], np.uint8)
        img[8:20, (scene * 7) % 50:(scene * 7) % 50 + 12] = 128
        return img

    path = videos.write_video(tmp_path / "flashes.mp4", n_frames=60, width=64, height=48, make_frame=frame)
    cfg = RunConfig()
    cfg.decode.batch_frames = 4
    whole = scan_video(path, cfg, video_id="v")
    assert 3 <= len(whole.cuts) < len(changes)  # the filter dropped or merged changes: the replay matters
    assert set(whole.cuts) < set(changes)
    for per_unit in (4, 8, 12, 24):
        cfg.distributed.frames_per_unit = per_unit
        merged = merge_scan(run_units_locally(path, cfg, 60), cfg)
        assert merged.cuts == whole.cuts, per_unit
        np.testing.assert_array_equal(merged.frame_times, whole.frame_times)
    assert replay_min_scene_len([5, 30], 40, 8) == [30]      # too close to the first frame
    assert replay_min_scene_len([10, 30], 40, 0) == [10, 30]  # filter off


def test_ray_data_scan_equals_scan_video(two_nodes, face_clips):
    """Clip b has cuts at frames 13 and 23; units of 13 frames put the first cut on a unit's first frame."""
    cfg = RunConfig()
    cfg.decode.batch_frames = 13
    cfg.distributed.frames_per_unit = 13
    path = Path(face_clips["b"])
    whole = scan_video(path, cfg, video_id="b")
    assert whole.cuts == [13, 23] and whole.detections.num_rows > 20
    units = split_into_units(VideoInput(str(path), "b"), len(whole.frame_times), cfg)
    assert [u.start_frame for u in units] == [0, 13, 26]
    scans = scan_units(units, cfg, {"b": len(units)})
    assert scans["b"].finished and scans["b"].error is None
    merged = merge_scan(scans["b"], cfg)
    assert merged.cuts == whole.cuts
    np.testing.assert_array_equal(merged.frame_times, whole.frame_times)
    assert merged.detections.equals(whole.detections)


# ----- the catalogue on Ray ----------------------------------------------------------------------------------

def test_units_and_videos_executors_on_two_nodes(two_nodes, tmp_path, face_clips):
    from vcn.distributed.executors import ray_units_executor, ray_videos_executor

    src = tmp_path / "in"
    (src / "show").mkdir(parents=True)
    shutil.copy(face_clips["a"], src / "a.mp4")
    shutil.copy(face_clips["b"], src / "show" / "b.mp4")
    (src / "broken.mp4").write_bytes(Path(face_clips["c"]).read_bytes()[:4096])
    cfg = RunConfig()
    cfg.distributed.frames_per_unit = 10  # several units per video, spread over both nodes
    stages = ["detect", "track"]

    serial = run_catalogue(str(src), str(tmp_path / "serial"), cfg, stages=stages, log=lambda _: None)
    units = run_catalogue(str(src), str(tmp_path / "units"), cfg, stages=stages, executor=ray_units_executor,
                          log=lambda _: None)
    assert serial.counts == units.counts == {"done": 2, "skipped": 0, "failed": 1}
    manifest = RunManifest.load(OutputStore(tmp_path / "units")).videos
    assert "broken.mp4" in manifest["broken.mp4"]["error"]
    for vid in ("a.mp4", "show__b.mp4"):
        for name in TABLES:
            a = pq.read_table(tmp_path / "serial" / "videos" / vid / f"{name}.parquet")
            b = pq.read_table(tmp_path / "units" / "videos" / vid / f"{name}.parquet")
            assert a.equals(b), (vid, name)
        summary = json.loads((tmp_path / "units" / "videos" / vid / "summary.json").read_text())
        assert summary["stages_done"] == stages and summary["executor"] == "ray-units"

    again = run_catalogue(str(src), str(tmp_path / "units"), cfg, stages=stages, executor=ray_units_executor,
                          log=lambda _: None)
    assert again.counts == {"done": 0, "skipped": 2, "failed": 1}

    per_video = run_catalogue(str(src), str(tmp_path / "videos"), cfg, stages=["detect"],
                              executor=ray_videos_executor, log=lambda _: None)
    assert per_video.counts == {"done": 2, "skipped": 0, "failed": 1}
    # detect-only output of the per-video executor, resumed to track by the units executor (per video).
    resumed = run_catalogue(str(src), str(tmp_path / "videos"), cfg, stages=stages, executor=ray_units_executor,
                            log=lambda _: None)
    assert resumed.counts == {"done": 2, "skipped": 0, "failed": 1}
    assert pq.read_table(tmp_path / "videos/videos/a.mp4/crops.parquet").equals(
        pq.read_table(tmp_path / "serial/videos/a.mp4/crops.parquet"))


# ----- Ray Train ------------------------------------------------------------------------------------------------

def tiny_ssl(cfg: RunConfig) -> RunConfig:
    """Finetuning small enough for a 2-core test: 2 rounds (so matching runs between them), small head."""
    s = cfg.ssl
    s.batch_size, s.rounds, s.warmup_epochs, s.epochs_per_round = 8, 2, 1, 1
    s.head_hidden, s.head_bottleneck, s.head_out, s.eval_batch_size = 256, 64, 256, 32
    cfg.serfiq.passes = 10
    return cfg


def photo_tracks() -> tuple:
    """Three people of deepface13, one photo each, two tracks per photo of two jittered aligned crops."""
    import cv2

    from vcn.faces.align import align_face
    from vcn.models import load_detector
    from vcn.tables import make_table

    root = SHARED / "data" / "faces" / "deepface13"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (the shared test data sits beside the repository)")
    ids = json.loads((root / "identities.json").read_text())["identities"]
    detector = load_detector("retinaface")
    rng = np.random.default_rng(0)
    rows, truth = [], {}
    for person in ("person_00", "person_01", "person_02"):
        image = cv2.imread(str(root / ids[person][0]))
        faces = detector.detect(image[None])[0]
        k = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))
        box = faces.boxes[k]
        for _ in range(2):
            track = len(truth)
            truth[track] = person
            for _ in range(2):
                marks = faces.landmarks[k] + rng.normal(0, 1.0, (5, 2)).astype(np.float32)
                png = cv2.imencode(".png", align_face(image, marks))[1].tobytes()
                n = len(rows)
                rows.append(dict(video_id="v", crop_id=n, track_id=track, shot_id=track, frame=n, t_s=n / 2,
                                 x1=box[0], y1=box[1], x2=box[2], y2=box[3], score=float(faces.scores[k]),
                                 landmarks=marks.reshape(10).tolist(), face_px=float(box[3] - box[1]),
                                 blur_var=100.0, quality_ok=True, image=png))
    return make_table("crops", rows), truth


@pytest.mark.slow  # about 70 s on the shared 2-core machine (finetuning twice)
def test_ray_train_two_workers_give_the_clusters_of_one(two_nodes):
    """One process (world size 1, what a 1-worker TorchTrainer runs) against TorchTrainer with 2 DDP workers
    (gloo, one per simulated node), same seed."""
    from vcn.distributed.train import cluster_on_ray
    from vcn.pipeline import cluster_crops
    from vcn.tables import empty_table

    crops, truth = photo_tracks()
    cfg = tiny_ssl(RunConfig())
    results = {}
    for workers in (0, 2):
        run = cluster_crops if workers == 0 else (lambda *a: cluster_on_ray(*a, workers=2))
        clusters, embeddings, _ = run(crops, empty_table("tracks"), empty_table("detections"), cfg, "v")
        results[workers] = dict(zip(clusters.column("track_id").to_pylist(), clusters.column("cluster_id").to_pylist()))
        assert embeddings.num_rows == 2 * crops.num_rows  # base + finetuned per crop
    # DDP changes the step count and the augmentation draws, so the weights differ; the partition must not.
    assert results[0] == results[2]
    by_cluster: dict[int, set] = {}
    for track, cid in results[2].items():
        by_cluster.setdefault(cid, set()).add(truth[track])
    assert all(len(people) == 1 for people in by_cluster.values())  # pure
    assert len(by_cluster) == 3  # the two tracks of each photo merged


@pytest.mark.slow
def test_units_executor_runs_the_cluster_stage_with_ray_train(two_nodes, tmp_path, face_clips):
    from vcn.distributed.executors import ray_units_executor

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(face_clips["c"], src / "c.mp4")
    cfg = tiny_ssl(RunConfig())
    cfg.quality.min_face_px = 8.0
    cfg.distributed.train_workers = 2
    report = run_catalogue(str(src), str(tmp_path / "out"), cfg, executor=ray_units_executor, log=lambda _: None)
    assert report.counts["done"] == 1, report.failed
    folder = tmp_path / "out" / "videos" / "c.mp4"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stages_done"] == ["detect", "track", "cluster"] and summary["train_workers"] == 2
    clusters = pq.read_table(folder / "clusters.parquet")
    assert clusters.num_rows == pq.read_table(folder / "tracks.parquet").num_rows > 0
    from vcn.catalogue import read_catalogue

    assert read_catalogue(tmp_path / "out").column("cluster_id").null_count == 0


# ----- Algorithm 1's pair matrix in blocks ------------------------------------------------------------------------

def test_blocked_pair_matrix_equals_single_process(two_nodes):
    from vcn.clustering.algorithm1 import cluster_pair_losses
    from vcn.distributed.blocks import cluster_pair_losses_blocked, matching_pairs_blocked

    rng = np.random.default_rng(1)
    n, k = 300, 64
    z = rng.normal(size=(n, k)) * 3
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    logits = rng.normal(size=(n, k))
    l = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    dense = cluster_pair_losses(p, l)
    blocked = cluster_pair_losses_blocked(p, l, block=64)  # 15 Ray tasks, ragged last block
    np.testing.assert_allclose(blocked, dense, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(blocked, blocked.T)

    thresholds = np.quantile(dense, 0.05, axis=1)
    match = dense < np.maximum(thresholds[:, None], thresholds[None, :])
    jj, kk = np.nonzero(np.triu(match, 1))
    bj, bk, sim = matching_pairs_blocked(p, l, thresholds, block=64)
    assert len(jj) > 50
    np.testing.assert_array_equal(bj, jj)
    np.testing.assert_array_equal(bk, kk)
    np.testing.assert_allclose(sim, dense[jj, kk], rtol=1e-13)
    # The "both" reading of the rule goes through the same test in every block.
    both = np.nonzero(np.triu(dense < np.minimum(thresholds[:, None], thresholds[None, :]), 1))
    bj, bk, _ = matching_pairs_blocked(p, l, thresholds, block=64, merge_rule="both")
    assert 0 < len(bj) < len(jj)
    np.testing.assert_array_equal(bj, both[0])
    np.testing.assert_array_equal(bk, both[1])
