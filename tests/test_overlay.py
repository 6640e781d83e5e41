"""`vcn overlay`: boxes coloured and labelled per cluster, on a video with the input's frames and frame times."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests import videos
from tests.test_report import HAMILTON, clustered_hamilton
from vcn.errors import VcnError
from vcn.overlay import box_label, draw_boxes, overlay_video
from vcn.report.colours import cluster_bgr
from vcn.tables import make_table
from vcn.video.decode import iter_frames, probe_video


def _frame(path: Path, index: int) -> np.ndarray:
    return next(iter_frames(path, 1, start_frame=index, end_frame=index + 1)).frames[0]


def _near(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tol))


def test_box_label():
    assert box_label(-1) == "?" and box_label(0) == "0" and box_label(12) == "12"


def test_draw_boxes_in_cluster_colours():
    frame = np.zeros((120, 200, 3), np.uint8)
    draw_boxes(frame, np.array([[20, 40, 80, 100], [120, 30, 180, 90]]), np.array([2, -1]))
    assert tuple(frame[70, 20]) == cluster_bgr(2)      # left edge of box 1
    assert tuple(frame[60, 180]) == cluster_bgr(-1)    # right edge of box 2 (Unknown: grey)
    assert tuple(frame[70, 50]) == (0, 0, 0)           # inside a box stays untouched
    # The label tag sits above each box, filled with its colour.
    assert (frame[20:38, 20:30] == cluster_bgr(2)).all(axis=-1).any()
    # A box at the top edge keeps its tag inside the frame.
    top = np.zeros((60, 60, 3), np.uint8)
    draw_boxes(top, np.array([[5, 0, 50, 50]]), np.array([1]))
    assert (top[1:15, 6:12] == cluster_bgr(1)).all(axis=-1).any()


def _fake_output(root: Path, video: Path, n_frames: int, boxes: dict[int, list[tuple]], clusters: dict[int, int]):
    """A minimal output folder: detections (frame -> [(x1, y1, x2, y2, track)]) and a clusters table."""
    out = root / "fake"
    out.mkdir()
    rows = []
    for frame, items in boxes.items():
        for x1, y1, x2, y2, track in items:
            rows.append({"video_id": "fake", "det_id": len(rows), "shot_id": 0, "frame": frame, "t_s": 0.0,
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": 0.99, "landmarks": [0.0] * 10,
                         "face_px": min(x2 - x1, y2 - y1), "track_id": track})
    pq.write_table(make_table("detections", rows), out / "detections.parquet")
    pq.write_table(make_table("clusters", [{"video_id": "fake", "track_id": t, "cluster_id": c,
                                            "track_quality": 0.5, "reason": "clustered" if c >= 0 else "quality_gate"}
                                           for t, c in clusters.items()]), out / "clusters.parquet")
    (out / "summary.json").write_text(json.dumps({"video_id": "fake", "video": str(video),
                                                  "video_info": {"n_frames": n_frames}}))
    return out


def test_overlay_keeps_variable_frame_times(tmp_path):
    # Irregular gaps (a VFR screen recording): the overlay must keep every frame's own time.
    pts = np.cumsum([0.0] + [0.04, 0.1, 0.033, 0.2, 0.04, 0.04, 0.5, 0.04, 0.06] * 2)[:19]
    src = videos.write_video(tmp_path / "vfr.mp4", n_frames=len(pts), pts_s=pts.tolist(), width=160, height=96)
    folder = _fake_output(tmp_path, src, len(pts), {3: [(40, 40, 90, 90, 0)], 4: [(10, 40, 60, 90, 7)],
                                                    5: [(10, 40, 60, 90, -1)]}, {0: 4, 7: -1})
    out = tmp_path / "o.mp4"
    stats = overlay_video(src, folder, out)
    assert stats.frames == len(pts) and stats.boxes == 2   # the tracker's unassigned detection is not drawn
    a, b = probe_video(src), probe_video(out)
    assert b.n_frames == a.n_frames and b.codec == "h264"
    np.testing.assert_allclose(b.times, a.times, atol=1e-3)
    assert _near(_frame(out, 3)[65, 40], cluster_bgr(4))
    assert _near(_frame(out, 4)[65, 10], cluster_bgr(-1))
    assert not _near(_frame(out, 5)[65, 10], cluster_bgr(-1))
    assert not (tmp_path / ".o.mp4.part.mp4").exists()


def test_overlay_refuses_another_video(tmp_path):
    src = videos.write_video(tmp_path / "a.mp4", n_frames=12)
    folder = _fake_output(tmp_path, src, 30, {}, {})
    with pytest.raises(VcnError, match="30 frames"):
        overlay_video(src, folder, tmp_path / "o.mp4")
    (folder / "clusters.parquet").unlink()
    (folder / "summary.json").write_text(json.dumps({"video_info": {"n_frames": 12}}))
    with pytest.raises(VcnError, match="cluster stage"):
        overlay_video(src, folder, tmp_path / "o.mp4")


def test_overlay_of_hamilton(tmp_path_factory, tmp_path):
    if not HAMILTON.is_file():
        pytest.skip(f"shared data not found at {HAMILTON} (the repo's sibling ../shared)")
    from vcn.cli import main

    folder = clustered_hamilton(tmp_path_factory)
    out = tmp_path / "hamilton_faces.mp4"
    assert main(["overlay", str(HAMILTON), str(folder), "--out", str(out), "--quiet"]) == 0
    a, b = probe_video(HAMILTON), probe_video(out)
    assert (b.n_frames, b.width, b.height) == (a.n_frames, a.width, a.height)
    np.testing.assert_allclose(b.times, a.times, atol=1e-3)
    # Frame 150 (the performer's close-up) carries his box in his cluster's colour.
    det = pq.read_table(folder / "detections.parquet").to_pylist()
    cluster_of = {r["track_id"]: r["cluster_id"] for r in pq.read_table(folder / "clusters.parquet").to_pylist()}
    boxes = [d for d in det if d["frame"] == 150 and d["track_id"] >= 0]
    assert boxes
    d = max(boxes, key=lambda r: r["face_px"])
    frame = _frame(out, 150)
    y = int((d["y1"] + d["y2"]) / 2)
    assert _near(frame[y, int(round(d["x1"]))], cluster_bgr(cluster_of[d["track_id"]]))
    assert not _near(_frame(HAMILTON, 150)[y, int(round(d["x1"]))], cluster_bgr(cluster_of[d["track_id"]]), 20)
    shutil.rmtree(tmp_path, ignore_errors=True)
