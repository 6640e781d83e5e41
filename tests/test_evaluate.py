"""Tests of scoring a run's output tables against a ground-truth table (hand-built tables, then a rendered video)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vcn.errors import VcnError
from vcn.evaluate import IOU_THRESHOLD, box_iou, evaluate, label_tracks, main, match_detections
from vcn.render import TRUTH_SCHEMA, Photo, Shot, render_video
from vcn.tables import make_table

A1, B1, A2 = (10, 10, 50, 50), (100, 10, 140, 50), (200, 100, 260, 160)


def truth_table() -> pa.Table:
    """Frames 0-9: a at A1 and b at B1; frames 10-19 (another shot): a at A2."""
    rows = []
    for f in range(20):
        boxes = [("a", A1), ("b", B1)] if f < 10 else [("a", A2)]
        for ident, (x1, y1, x2, y2) in boxes:
            rows.append({"frame": f, "t_s": f / 25, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "identity": ident})
    return pa.Table.from_pylist(rows, schema=TRUTH_SCHEMA)


def det(det_id, frame, box, track_id, video_id="v"):
    x1, y1, x2, y2 = box
    return {"video_id": video_id, "det_id": det_id, "shot_id": int(frame >= 10), "frame": frame, "t_s": frame / 25,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": 0.9, "landmarks": [0.0] * 10,
            "face_px": float(min(x2 - x1, y2 - y1)), "track_id": track_id}


def shift(box, dx):
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def write_run(folder, detections, clusters, video_id="v"):
    folder.mkdir(parents=True, exist_ok=True)
    det_table = make_table("detections", detections)
    tracks = []
    for tid in sorted({d["track_id"] for d in detections if d["track_id"] >= 0}):
        frames = [d["frame"] for d in detections if d["track_id"] == tid]
        vid = next(d["video_id"] for d in detections if d["track_id"] == tid)
        tracks.append({"video_id": vid, "track_id": tid, "shot_id": int(frames[0] >= 10),
                       "start_frame": min(frames), "end_frame": max(frames), "start_s": min(frames) / 25,
                       "end_s": max(frames) / 25, "n_detections": len(frames), "n_crops": 1, "n_good_crops": 1,
                       "mean_score": 0.9})
    pq.write_table(det_table, folder / "detections.parquet")
    pq.write_table(make_table("tracks", tracks), folder / "tracks.parquet")
    pq.write_table(make_table("clusters", [
        {"video_id": video_id, "track_id": t, "cluster_id": c, "track_quality": float("nan"),
         "reason": "clustered" if c >= 0 else "serfiq_outlier"} for t, c in clusters.items()]),
        folder / "clusters.parquet")
    path = folder.parent / "truth.parquet"
    pq.write_table(truth_table(), path)
    return path


def hand_built_detections():
    dets, k = [], 0
    # One box per face and frame (matching is one to one): track 5 holds b in frames 0-5 and a in 6-7, so
    # track 1 (a) skips frames 6-7 and track 2 (b) starts at frame 6.
    for f in range(10):
        if f not in (6, 7):
            dets.append(det(k := k + 1, f, shift(A1, 4), 1))    # track 1: a (IoU 36*40/(44*40) > 0.3)
        if f >= 6:
            dets.append(det(k := k + 1, f, shift(B1, -3), 2))   # track 2: b
        if f < 6:
            dets.append(det(k := k + 1, f, B1, 5))              # track 5: b six times ...
        elif f < 8:
            dets.append(det(k := k + 1, f, A1, 5))              # ... then a twice: majority b, agreement 6/8
        if f < 5:
            dets.append(det(k := k + 1, f, (300, 300, 320, 320), 4))   # track 4: matches nothing
    for f in range(10, 20):
        dets.append(det(k := k + 1, f, A2, 3))                  # track 3: a, in the second shot
    dets.append(det(k := k + 1, 13, (300, 300, 320, 320), -1))  # tracker left it unassigned
    return dets


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])


def test_match_detections_needs_the_same_frame_and_enough_overlap():
    truth_boxes = np.array([A1, B1], float)
    # IoU of A1 shifted right by 25 px: 15*40 / (65*40) = 0.23 < 0.3 -> no match; by 15 px: 25/55 = 0.45.
    det_boxes = np.array([shift(A1, 25), shift(A1, 15), A1, B1], float)
    match, iou = match_detections(np.array([0, 0, 1, 0]), det_boxes, np.array([0, 0]), truth_boxes)
    assert match.tolist() == [-1, 0, -1, 1]
    assert iou[1] == pytest.approx(25 / 55)


def test_a_second_box_on_one_face_takes_no_truth_box_and_stays_unlabelled():
    # Frame 0: a at A1, b at B1. Detection 0 sits on A1, detection 1 on B1, detection 2 is a looser box around A1
    # that overlaps it at IoU 0.44: matched one to one, the better-placed box keeps a and detection 2 names no one.
    loose = (A1[0] - 10, A1[1] - 10, A1[2] + 10, A1[3] + 10)
    det_boxes = np.array([A1, B1, loose], float)
    match, iou = match_detections(np.zeros(3, int), det_boxes, np.array([0, 0]), np.array([A1, B1], float))
    assert box_iou(np.array([loose]), np.array([A1]))[0, 0] > IOU_THRESHOLD
    assert match.tolist() == [0, 1, -1] and iou[2] == 0
    # Alone in its frame, the same loose box is matched.
    match, _ = match_detections(np.zeros(1, int), np.array([loose], float), np.array([0]), np.array([A1], float))
    assert match.tolist() == [0]


def test_label_tracks_majority_and_unlabelled():
    labels = {r["track_id"]: r for r in label_tracks(make_table("detections", hand_built_detections()),
                                                     truth_table()).to_pylist()}
    assert set(labels) == {1, 2, 3, 4, 5}                       # the unassigned detection makes no track
    assert [labels[t]["identity"] for t in (1, 2, 3, 4, 5)] == ["a", "b", "a", None, "b"]
    assert (labels[5]["votes"], labels[5]["n_detections"]) == (6, 8)


def test_evaluate_by_hand(tmp_path):
    # Clusters: tracks 1 and 3 (both a) together, 2 (b) alone, 5 (b) Unknown, 4 (unlabelled) in a cluster.
    truth = write_run(tmp_path / "run", hand_built_detections(), {1: 0, 3: 0, 2: 1, 5: -1, 4: 2})
    r = evaluate(tmp_path / "run", truth)
    assert (r["tracks_predicted"], r["tracks_labelled"], r["tracks_unlabelled"]) == (5, 4, 1)
    assert r["truth_identities"] == 2 and r["identities_found"] == 2
    assert r["n_tracks"] == 4 and r["n_unknown"] == 1 and r["unknown_share"] == pytest.approx(0.25)
    assert r["wcp"] == 1.0 and r["wcp_clustered"] == 1.0
    assert r["pcr"] == pytest.approx(3 / 2)                     # {1,3}, {2}, {5} for 2 people
    assert r["pcr_clustered"] == pytest.approx(2 / 2)
    assert r["bcubed_recall"] == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)
    assert r["track_label_agreement"] == pytest.approx((1 + 1 + 1 + 6 / 8) / 4)
    # Truth boxes: 30; matched: a and b in frames 0-9 (tracks 1, 2, 5) and a in 10-19 -> all 30.
    assert r["truth_box_recall"] == 1.0
    # Detections: 8 + 4 + 8 + 5 + 10 + 1 = 36, of which track 4's five and the unassigned one match nothing.
    assert r["detection_precision"] == pytest.approx(30 / 36)


def test_evaluate_reads_a_csv_truth_without_t_s(tmp_path):
    write_run(tmp_path / "run", hand_built_detections(), {1: 0, 3: 0, 2: 1, 5: -1, 4: 2})
    csv = tmp_path / "truth.csv"
    rows = truth_table().drop(["t_s"]).to_pylist()
    csv.write_text("frame,x1,y1,x2,y2,identity\n" + "".join(
        f"{r['frame']},{r['x1']},{r['y1']},{r['x2']},{r['y2']},{r['identity']}\n" for r in rows))
    r = evaluate(tmp_path / "run", csv)
    assert r["tracks_labelled"] == 4 and r["pcr"] == pytest.approx(3 / 2)
    csv.write_text("frame,x1,y1,x2,identity\n0,1,2,3,a\n")
    with pytest.raises(VcnError, match="lacks columns"):
        evaluate(tmp_path / "run", csv)


def test_evaluate_merging_two_people(tmp_path):
    truth = write_run(tmp_path / "run", hand_built_detections(), {1: 7, 2: 7, 3: 7, 5: 7, 4: 7})
    r = evaluate(tmp_path / "run", truth)
    # One cluster {a, b, a, b}: majority 2 of 4.
    assert r["wcp"] == pytest.approx(0.5) and r["pcr"] == pytest.approx(0.5) and r["bcubed_recall"] == 1.0


def test_evaluate_missing_tables_and_several_videos(tmp_path):
    truth = write_run(tmp_path / "run", hand_built_detections(), {1: 0})
    (tmp_path / "run" / "clusters.parquet").unlink()
    with pytest.raises(VcnError, match="clusters.parquet"):
        evaluate(tmp_path / "run", truth)
    dets = hand_built_detections() + [det(999, 0, A1, 77, video_id="w")]
    truth = write_run(tmp_path / "two", dets, {1: 0})
    with pytest.raises(VcnError, match="video_id"):
        evaluate(tmp_path / "two", truth)
    r = evaluate(tmp_path / "two", truth, video_id="v")
    assert r["tracks_predicted"] == 5
    assert r["tracks_without_cluster_row"] == 4                 # counted as Unknown
    assert main([str(tmp_path / "nowhere"), str(truth)]) == 2


def test_evaluate_a_rendered_video_with_perfect_predictions(tmp_path, capsys):
    # Detections copied from the rendered truth, one track per (shot, identity), one cluster per identity:
    # the scorer must read the renderer's table and give a perfect score.
    def photo(name, box):
        img = np.full((300, 300, 3), 60, np.uint8)
        return Photo(image=img, boxes=np.array([box], np.float32), identities=[name], name=name)

    shots = [Shot([photo("x", (50, 50, 150, 170)), photo("y", (100, 80, 200, 200))], duration_s=0.4),
             Shot([photo("y", (100, 80, 200, 200))], duration_s=0.4, zoom=(1.5, 1.2)),
             Shot([photo("x", (50, 50, 150, 170))], duration_s=0.4, zoom=(1.0, 2.0))]
    result = render_video(shots, tmp_path / "v.mp4")
    truth = pq.read_table(result.truth).to_pylist()
    starts = result.shot_starts
    track_ids: dict[tuple[int, str], int] = {}
    dets = []
    for i, row in enumerate(truth):
        shot = int(np.searchsorted(starts, row["frame"], side="right")) - 1
        tid = track_ids.setdefault((shot, row["identity"]), len(track_ids))
        dets.append(det(i, row["frame"], (row["x1"], row["y1"], row["x2"], row["y2"]), tid))
    identity_of_track = {t: ident for (_, ident), t in track_ids.items()}
    clusters = {t: {"x": 0, "y": 1}[ident] for t, ident in identity_of_track.items()}
    write_run(tmp_path / "run", dets, clusters)
    assert main([str(tmp_path / "run"), str(result.truth)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tracks_labelled"] == 4 and r["identities_found"] == 2
    for key in ("wcp", "pcr", "nmi", "bcubed_f", "truth_box_recall", "detection_precision", "track_label_agreement"):
        assert r[key] == pytest.approx(1.0), key


def test_json_output_writes_nan_as_null():
    """A score that is undefined (no labelled track) is printed as null: json.dumps would write NaN, not JSON."""
    from vcn.evaluate import to_json

    text = to_json({"wcp": float("nan"), "nested": [{"f": float("nan")}, 1.5], "n": 3})
    assert "NaN" not in text
    assert json.loads(text) == {"wcp": None, "nested": [{"f": None}, 1.5], "n": 3}
