"""Install checks: exactly one working cv2 although two OpenCV wheels write it, and pip sees no broken requirement."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from importlib import metadata

import numpy as np

OPENCV_DISTS = ("opencv-python", "opencv-python-headless")


def test_one_cv2_matching_both_opencv_wheels():
    import cv2

    for dist in OPENCV_DISTS:
        installed = metadata.version(dist)
        # Wheels are versioned 4.12.0.88; cv2.__version__ is the OpenCV release 4.12.0.
        assert installed.startswith(cv2.__version__ + "."), f"{dist} {installed} but cv2 is {cv2.__version__}"
        files = [str(f) for f in metadata.files(dist) or []]
        assert any(f.startswith("cv2/") for f in files), f"{dist} does not provide cv2"
    assert len({metadata.version(d) for d in OPENCV_DISTS}) == 1, "both OpenCV wheels must be the same release"


def test_cv2_video_round_trip(tmp_path):
    import cv2

    path = tmp_path / "round_trip.avi"
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened(), "cv2.VideoWriter cannot open an MJPG .avi"
    for frame in frames:
        writer.write(frame)
    writer.release()

    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    capture.release()
    assert len(read) == len(frames) and read[0].shape == (48, 64, 3)
    assert np.allclose([f.mean() for f in read], [f.mean() for f in frames], atol=3)


def test_cv2_dnn_runs_an_onnx_model():
    import cv2
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), buffer, dynamo=False, opset_version=11)
    net = cv2.dnn.readNetFromONNX(np.frombuffer(buffer.getvalue(), np.uint8))
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (16, 16), swapRB=True)
    assert blob.shape == (1, 3, 16, 16)
    net.setInput(blob)
    with torch.no_grad():
        expected = model(torch.from_numpy(blob)).numpy()
    assert np.abs(net.forward() - expected).max() < 1e-4


def test_pip_check_passes():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
