"""Every crop is cut from its detection's own frame (issue 11): stage 1 on real clips against PyAV's plain
sequential decode (from the first frame, no seeking) of the same frame index, with the same landmarks.

simplefr_Video_2.mp4 (B-frame H.264, keyframes at cuts) is the file where decord's random access returned other
pictures for about half the frames; the other real clips in ../shared are checked on a few seconds each, started
mid-file so both the scan and the crops reach their frames by seeking. `benchmarks/frame_exact.py` checks every
frame of every clip.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pytest

from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.faces.align import align_face
from vcn.pipeline import ShotsAsTheyEnd, scan_video, shots_table
from vcn.tracking.shots import ShotTracking, assign_shots, track_shots
from vcn.video.decode import _to_display, iter_frames, probe_video

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "real"
SITCOM = REAL / "simplefr_Video_2.mp4"
needs_sitcom = pytest.mark.skipif(not SITCOM.is_file(), reason=f"shared real footage not found at {SITCOM}")
CLIPS = sorted(p.name for p in REAL.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".avi", ".wmv")) \
    if REAL.is_dir() else []


@pytest.fixture(scope="module")
def detector():
    from vcn.models import load_detector

    return load_detector("retinaface", RunConfig().detect)


def sequential_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Frame index -> display picture (BGR) for the `wanted` indices: the k-th picture PyAV's decoder puts out
    when it decodes the file from the start without seeking, through vcn's display corrections."""
    info = probe_video(path)
    last = max(wanted)
    found = {}
    with av.open(str(path)) as container:
        stream = container.streams[info.stream_index]
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                found[k] = _to_display(frame.to_ndarray(format="rgb24")[None], info, turned=False, rgb=True)[0]
            if k >= last:
                break
    return found


def stage1(path: Path, start: int, end: int, detector) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Scan frames [start, end), then track and crop every shot: (shots, crops, tracked detections)."""
    cfg = RunConfig()
    info = probe_video(path)
    scan = scan_video(path, cfg, detector=detector, video_id="v", start_frame=start, end_frame=end, info=info)
    assert scan.decode_error is None
    shots = shots_table("v", scan.cuts, scan.frame_times, first_frame=start)
    detections = assign_shots(scan.detections, shots)
    detections, _, crops = track_shots(path, shots, detections, cfg, info=info)
    return shots, crops, detections


def assert_crops_from_their_frames(path: Path, crops: pa.Table) -> None:
    size = RunConfig().sample.crop_size
    frames = crops.column("frame").to_numpy()
    points = np.asarray(crops.column("landmarks").to_pylist(), np.float32).reshape(-1, 5, 2)
    reference = sequential_frames(path, set(frames.tolist()))
    wrong = []
    for k, (frame, image) in enumerate(zip(frames, crops.column("image").to_pylist())):
        stored = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        expected = align_face(reference[int(frame)], points[k], size)
        if stored is None or not np.array_equal(stored, expected):  # PNG is lossless: the very same pixels
            wrong.append((int(frame), None if stored is None else float(np.abs(stored.astype(int) - expected).mean())))
    assert not wrong, f"{path.name}: {len(wrong)} of {len(frames)} crops differ from their frame: {wrong[:10]}"


@pytest.fixture(scope="module")
def sitcom_window(detector):
    # Frames 150-390 (10 s): several shot/reverse-shot cuts where decord's random access went wrong.
    if not SITCOM.is_file():
        pytest.skip(f"shared real footage not found at {SITCOM}")
    return stage1(SITCOM, 150, 390, detector)


@needs_sitcom
def test_every_sitcom_crop_is_cut_from_its_own_frame(sitcom_window):
    shots, crops, _ = sitcom_window
    assert shots.num_rows >= 3
    assert crops.num_rows >= 20 and len(np.unique(crops.column("shot_id").to_numpy())) >= 3
    assert_crops_from_their_frames(SITCOM, crops)


@needs_sitcom
def test_shots_scored_beside_detection_find_the_serial_cuts(detector):
    # With background threads (decode.prefetch_batches > 0) the shot detector scores a batch while the face
    # detector works on it; the cuts and detections must be what the one-thread scan finds.
    info = probe_video(SITCOM)
    scans = {}
    for prefetch in (0, 1):
        cfg = RunConfig()
        cfg.decode.prefetch_batches = prefetch
        scans[prefetch] = scan_video(SITCOM, cfg, detector=detector, video_id="v", start_frame=150, end_frame=390,
                                     info=info)
    assert len(scans[0].cuts) >= 2 and scans[1].cuts == scans[0].cuts
    assert scans[1].detections.equals(scans[0].detections)
    assert np.array_equal(scans[1].frame_times, scans[0].frame_times)


@needs_sitcom
def test_shots_tracked_at_once_give_what_one_after_another_gives(sitcom_window):
    # track.workers tracks several shots at once (threads); ids must still run in shot order, as serially.
    shots, _, detections = sitcom_window
    assert shots.num_rows >= 3, "the window should hold several shots"
    info = probe_video(SITCOM)
    results = {}
    for workers in (1, 3):
        cfg = RunConfig()
        cfg.track.workers = workers
        results[workers] = track_shots(SITCOM, shots, detections, cfg, info=info)
    for serial, threaded in zip(results[1], results[3]):
        assert threaded.equals(serial)
    tracks = results[3][1]
    assert tracks.column("track_id").to_pylist() == list(range(tracks.num_rows))
    with pytest.raises(VcnError, match=r"track.workers=-1: use 0 \(one per CPU core\)"):
        cfg.track.workers = -1
        track_shots(SITCOM, shots, detections, cfg, info=info)


@needs_sitcom
def test_shots_tracked_during_the_scan_give_the_tables_of_tracking_after_it(detector, sitcom_window):
    # track.during_scan: each shot is tracked once the cut after it is found, while the scan goes on; the
    # tables must be those of scanning first and tracking every shot after (the sitcom_window fixture).
    shots, crops, detections = sitcom_window
    cfg = RunConfig()
    info = probe_video(SITCOM)
    sunk: list[pa.Table] = []
    with ShotTracking(SITCOM, cfg, info, crops_sink=sunk.append) as tracking:
        ending = ShotsAsTheyEnd("v", tracking, first_frame=150)
        scan = scan_video(SITCOM, cfg, detector=detector, video_id="v", start_frame=150, end_frame=390, info=info,
                          on_batch=ending)
        during = len(ending.bounds) - 1     # shots handed to tracking before the scan returned
        assert len(scan.frame_times) == 240
        tracked, tracks, kept = ending.tracked(shots)
    assert shots.num_rows >= 3 and during == shots.num_rows - 1   # all but the last, whose end is the window's
    assert tracked.equals(detections) and kept.num_rows == 0
    assert pa.concat_tables(sunk).equals(crops)
    assert tracks.column("track_id").to_pylist() == list(range(tracks.num_rows)) and tracks.num_rows >= 3
    with ShotTracking(SITCOM, cfg, info) as tracking:   # a shots table other than the cuts seen is refused
        ending = ShotsAsTheyEnd("v", tracking, first_frame=150)
        ending({k: [] for k in ("frame", "t_s", "box", "score", "landmarks")}, [200])   # no faces, a cut at 200
        with pytest.raises(RuntimeError, match=r"shots tracked during the scan \[150, 200, 390\] differ"):
            ending.tracked(shots_table("v", [250], np.arange(240) / 24.0, first_frame=150))


@needs_sitcom
def test_sitcom_crops_carry_their_own_frames_look_and_same_setup_pairs_are_one_person(detector):
    from vcn.clustering.setups import same_setup_pairs
    from vcn.evaluate import label_tracks
    from vcn.render import read_truth
    from vcn.video.looks import frame_look

    # Frames 638-794 (6.5 s): the family at the table, two camera set-ups cut back and forth three times.
    _, crops, detections = stage1(SITCOM, 638, 794, detector)
    frames = crops.column("frame").to_numpy()
    reference = sequential_frames(SITCOM, set(frames.tolist()))
    for frame, look in zip(frames, crops.column("frame_look").to_pylist()):
        assert look == frame_look(reference[int(frame)]).tobytes()
    # Tracks at one spot of a returning set-up are one person.
    pairs = same_setup_pairs(crops, RunConfig().shots.threshold)
    truth = read_truth(SITCOM.parents[2] / "truth" / "simplefr_Video_2.truth.csv")
    person = {r["track_id"]: r["identity"] for r in label_tracks(detections, truth).to_pylist() if r["identity"]}
    labelled = [(a, b) for a, b in pairs if a in person and b in person]
    assert len(labelled) >= 4 and all(person[a] == person[b] for a, b in labelled), (labelled, person)


@pytest.mark.skipif(not CLIPS, reason=f"shared real footage not found at {REAL}")
@pytest.mark.parametrize("name", CLIPS)
def test_frames_reached_by_seeking_are_the_sequential_ones(name):
    """Decoding started mid-file (as a shot's crops and a Ray work unit start) gives the very pictures that
    sequential decoding gives for those indices."""
    path = REAL / name
    info = probe_video(path)
    for start in (info.n_frames // 3, (2 * info.n_frames) // 3 + 1):
        end = min(info.n_frames, start + 12)
        reference = sequential_frames(path, set(range(start, end)))
        batches = list(iter_frames(path, 5, start_frame=start, end_frame=end, info=info))
        got = np.concatenate([b.frames for b in batches])
        assert np.concatenate([b.indices for b in batches]).tolist() == list(range(start, end))
        for k in range(start, end):
            assert np.array_equal(got[k - start], reference[k]), f"{name}: frame {k} differs"


@pytest.mark.skipif(not CLIPS, reason=f"shared real footage not found at {REAL}")
@pytest.mark.parametrize("name", [c for c in CLIPS if c != SITCOM.name])
def test_crops_of_every_real_clip_come_from_their_frames(name, detector):
    path = REAL / name
    info = probe_video(path)
    start = info.n_frames // 2
    end = min(info.n_frames, start + max(12, int(round(1.5 * info.fps))))  # 1.5 s from the middle
    _, crops, _ = stage1(path, start, end, detector)
    if crops.num_rows == 0:
        pytest.skip(f"{name}: no face tracked in frames {start}-{end}")
    assert_crops_from_their_frames(path, crops)


@needs_sitcom
def test_track_workers_benchmark_times_each_setting_and_compares_the_tables(sitcom_window, tmp_path):
    import json

    import pyarrow.parquet as pq

    from tests.benchmark_scripts import load_benchmark

    shots, _, detections = sitcom_window
    pq.write_table(shots, tmp_path / "shots.parquet")
    pq.write_table(detections, tmp_path / "detections.parquet")
    out = tmp_path / "track_workers.json"
    bench = load_benchmark("track_workers")
    assert bench.main([str(tmp_path), str(SITCOM), "--workers", "1,2", "--shots", "3", "--repeats", "1",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["shots"] == 3 and result["same_tables_as_first"] == {"1": True, "2": True}
    assert all(len(v) == 1 and v[0] > 0 for v in result["seconds"].values())


def test_track_workers_default_follows_the_cores_this_process_may_use(monkeypatch):
    from vcn.tracking.shots import shot_workers

    assert shot_workers(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")          # as Ray sets it for a task of 2 CPUs
    assert shot_workers(0) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert shot_workers(0) == 8
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= shot_workers(0) <= 8
