"""The GPU benchmark's prepared command runs anywhere with --tiny, and the detector's torch path (the one used on
CUDA, since the installed onnxruntime has no CUDA provider) finds the same faces as onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces" / "deepface13"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"shared face photos not found at {FACES}")


@needs_faces
def test_gpu_benchmark_tiny_runs_on_cpu_and_writes_json(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--stages", "detect,track", "--budget-s", "120",
                           "--set", "detect.batch_size=4", "--against-set", "detect.batch_size=2"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    env = report["environment"]
    assert set(env) >= {"cuda_available", "onnxruntime_has_cuda", "detector_backend_auto"}
    rows = report["detector"]["torch"] + report["detector"]["onnxruntime_cpu"]
    assert all(r["fps"] > 0 for r in rows) and {r["size"] for r in rows} == {"160x96", "320x180"}
    assert all(p["steps"] > 0 and p["steps_per_s"] > 0 for p in report["finetune"]["phases"])
    e2e = report["end_to_end"]
    assert e2e["returncode"] == 0 and e2e["counts"]["detections"] > 0, e2e
    assert e2e["settings"] == ["detect.batch_size=4"] and e2e["scan_ran_with"]["detect.batch_size"] == 4
    summary = json.loads(next((tmp_path / "work" / "vcn").glob("*/summary.json")).read_text())
    assert summary["config"]["detect"]["batch_size"] == 4   # the setting reached the run
    against = e2e["against"]     # the same video again, the other setting instead
    assert against["settings"] == ["detect.batch_size=2"] and against["returncode"] == 0, against
    assert against["counts"] == e2e["counts"]
    summary = json.loads(next((tmp_path / "work" / "vcn_against").glob("*/summary.json")).read_text())
    assert summary["config"]["detect"]["batch_size"] == 2


@needs_faces
def test_torch_detector_finds_what_onnxruntime_finds():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from long_video_memory import frame_at, shot_canvases

    from vcn.models.retinaface import RetinaFaceDetector

    canvases = shot_canvases(1280, 720)  # above detect.max_side: both paths resize to 960x540
    frames = np.stack([frame_at(canvases, t, 1280, 720) for t in (0.0, 7.0, 13.0)])
    a = RetinaFaceDetector(device="cpu").detect(frames)
    b = RetinaFaceDetector(device="torch-cpu").detect(frames)
    assert RetinaFaceDetector(device="torch-cpu").backend == "torch (cpu)"
    assert [len(f) for f in a] == [len(f) for f in b] and sum(len(f) for f in a) >= 4
    for fa, fb in zip(a, b):
        # Faces of near-equal score may swap order: compare them left to right.
        ia, ib = np.argsort(fa.boxes[:, 0]), np.argsort(fb.boxes[:, 0])
        boxes_a, boxes_b = fa.boxes[ia], fb.boxes[ib]
        # Resizing differs a little (cv2 INTER_AREA against torch's area pooling): within 3% of the face's size.
        size = np.minimum(boxes_a[:, 2] - boxes_a[:, 0], boxes_a[:, 3] - boxes_a[:, 1])
        assert (np.abs(boxes_a - boxes_b).max(axis=1) <= 0.03 * size).all()
        assert (np.abs(fa.landmarks[ia] - fb.landmarks[ib]).max(axis=(1, 2)) <= 0.03 * size).all()


@needs_faces
def test_torch_detector_keeps_on_the_device_exactly_the_candidates_the_host_filter_keeps():
    """On a GPU only the priors over the score threshold come back; they must be the very rows that filtering the
    whole outputs on the host keeps, and one upload of a frame array must equal frames sent one by one."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from long_video_memory import frame_at, shot_canvases

    from vcn.models.retinaface import MEAN_BGR, RetinaFaceDetector

    canvases = shot_canvases(640, 360)
    frames = np.stack([frame_at(canvases, t, 640, 360) for t in (0.0, 3.0, 7.0, 13.0)])
    detector = RetinaFaceDetector(device="torch-cpu", score_threshold=0.5)
    sizes = [(360, 640)] * len(frames)
    on_device = detector._run_torch(frames, sizes, 360, 640)
    with torch.inference_mode():
        x = torch.from_numpy((frames.astype(np.float32) - MEAN_BGR).transpose(0, 3, 1, 2).copy())
        outputs = [o.numpy() for o in detector.net(x.contiguous(memory_format=torch.channels_last))]
    on_host = detector.candidates(*outputs)
    assert sum(len(c[0]) for c in on_host) >= 4
    for dev, host in zip(on_device, on_host):
        assert np.array_equal(dev[0], host[0])
        for a, b in zip(dev[1:], host[1:]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    as_array = detector.detect(frames)
    one_by_one = detector.detect(list(frames))
    assert [len(f) for f in as_array] == [len(f) for f in one_by_one] and sum(map(len, as_array)) >= 4
    for a, b in zip(as_array, one_by_one):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)


def test_detector_device_setting_errors_name_the_fix():
    import torch

    from vcn.errors import VcnError
    from vcn.models.retinaface import resolve_device

    assert resolve_device("cpu") == "onnxruntime" and resolve_device("torch-cpu") == "cpu"
    with pytest.raises(VcnError, match=r"detect.device='gpu': choose auto, cpu, cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(VcnError, match="no CUDA GPU here; use detect.device=auto or cpu"):
            resolve_device("cuda:0")
