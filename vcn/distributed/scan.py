"""Stage 1's decode pass on Ray Data: frame-range work units, decoding in CPU tasks, detection in an actor pool.

A video is cut into units of `distributed.frames_per_unit` frames (rounded to whole decode batches). A decode
task decodes its unit in the same batches `scan_video` uses and scores every frame for shot changes; it
also decodes the frame just before the unit (the one-frame overlap) so a cut on the unit's first frame is seen.
Frames then go through the object store to detection actors, which load the detector once each.

Merging gives exactly what `scan_video` gives over the whole file:
- cuts: each unit reports the frames whose content score is above the threshold (scenedetect's ContentDetector
  with its minimum-length filter off); the merge replays that filter (scenedetect's own FlashFilter) over the
  whole video in order, so min_scene_len acts across unit borders as it does in one pass.
- detections: frames are detected in the same sub-batches as in `scan_video` (batch composition could change
  a batched detector's output), then concatenated in frame order and numbered.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from vcn.catalogue import VideoInput, error_text, local_video
from vcn.config import RunConfig, ShotConfig
from vcn.distributed import PeakMemory, fit_torch_threads, memory_bytes
from vcn.pipeline import ScanResult, shots_table, with_scan_batches
from vcn.tracking.shots import assign_shots
from vcn.tables import empty_table, make_table


@dataclass(frozen=True)
class WorkUnit:
    """Frames [start_frame, end_frame) of one video; end_frame None = to the end of the file."""

    video_id: str
    uri: str
    etag: str | None
    unit: int
    start_frame: int
    end_frame: int | None


def split_into_units(video: VideoInput, n_frames: int, cfg: RunConfig) -> list[WorkUnit]:
    """Units of about frames_per_unit frames, each starting on a decode-batch boundary; the last runs to the end."""
    batch = max(1, cfg.decode.batch_frames)
    per_unit = max(batch, -(-max(1, cfg.distributed.frames_per_unit) // batch) * batch)
    starts = list(range(0, max(1, n_frames), per_unit))
    units = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        units.append(WorkUnit(video.video_id, video.uri, video.etag, i, start, end))
    return units


# ----- the two Ray Data stages (plain callables; Ray only schedules them) ------------------------------------------

def decode_units(batch: dict[str, np.ndarray], cfg: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF (CPU task): for each unit row, yield one row per decoded batch and a final 'end' row.

    Every row is {video_id, unit, payload}; the payload (pickled, so frames of any size travel as they are)
    is {"kind": "frames", indices, times, frames} or {"kind": "end", above, n_frames, error, peak_mib}, where
    peak_mib is this task's peak resident memory (MiB) over the unit.
    """
    from vcn.video.decode import DecodeError, iter_frames, probe_video
    from vcn.video.shots import ShotDetector

    run_cfg = RunConfig.from_dict(cfg)
    for i in range(len(batch["video_id"])):
        unit = WorkUnit(**{k: _scalar(batch[k][i]) for k in WorkUnit.__dataclass_fields__})
        with PeakMemory() as peak:  # a with spanning yields: it ends when the unit does, or the generator
            # min_scene_len 0 switches scenedetect's filter off: the detector reports every above-threshold frame.
            scorer = ShotDetector(ShotConfig(threshold=run_cfg.shots.threshold, min_scene_len_frames=0))
            above: list[int] = []
            n = 0
            error = decode_error = None
            try:
                path = local_video(VideoInput(unit.uri, unit.video_id, etag=unit.etag))
                info = probe_video(path, deinterlace=run_cfg.decode.deinterlace)
                if unit.start_frame > 0:
                    for b in iter_frames(path, 1, start_frame=unit.start_frame - 1, end_frame=unit.start_frame,
                                         info=info):
                        scorer.feed(b.frames, b.indices)
                for b in iter_frames(path, run_cfg.decode.batch_frames, start_frame=unit.start_frame,
                                     end_frame=unit.end_frame, info=info):
                    above.extend(scorer.feed(b.frames, b.indices))
                    n += len(b)
                    yield _row(unit, {"kind": "frames", "indices": b.indices, "times": b.times, "frames": b.frames})
            except DecodeError as e:
                # As scan_video: what decoded before a corrupt stretch is kept (merge_scan stops the video there).
                decode_error = str(e)
            except Exception as e:  # recorded on the video; the dataset (other videos) carries on
                error = error_text(e)
            yield _row(unit, {"kind": "end", "above": [a for a in above if a >= unit.start_frame], "n_frames": n,
                              "start_frame": unit.start_frame, "error": error, "decode_error": decode_error,
                              "peak_mib": peak.mib})


class DetectFaces:
    """Ray Data UDF (actor): the detector is loaded once per actor; frames in, face arrays out.

    Every faces payload carries the actor's peak resident memory (MiB): over this call, or over loading the
    detector if that was higher.
    """

    def __init__(self, cfg: dict[str, Any]):
        from vcn.models import detects_on_gpu, load_detector

        fit_torch_threads()
        with PeakMemory() as peak:
            self.cfg = RunConfig.from_dict(cfg)
            self.detector = load_detector(self.cfg.detect.model, self.cfg.detect)
        # Where the driver left detect.batch_size on auto, the detector's own device decides (as in scan_video).
        self.cfg = with_scan_batches(self.cfg, detects_on_gpu(self.cfg.detect, self.detector))
        self.load_peak_mib = peak.mib

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        with PeakMemory() as peak:
            for raw in batch["payload"]:
                item = pickle.loads(raw)
                if item["kind"] == "frames":
                    try:
                        item = self._detect(item)
                        item["peak_mib"] = max(self.load_peak_mib, peak.mib)
                    except Exception as e:
                        item = {"kind": "end", "above": [], "n_frames": 0,
                                "error": f"detection failed: {error_text(e)}\n{traceback.format_exc(limit=3)}"}
                payloads.append(pickle.dumps(item, protocol=5))
        return {"video_id": batch["video_id"], "unit": batch["unit"], "payload": np.array(payloads, dtype=object)}

    def _detect(self, item: dict[str, Any]) -> dict[str, Any]:
        frames = item.pop("frames")
        size = self.cfg.detect.batch_size
        counts, boxes, scores, landmarks = [], [], [], []
        # The same sub-batches as scan_video: a decode batch split into detect.batch_size pieces from its start.
        for s in range(0, len(frames), size):
            for faces in self.detector.detect(frames[s:s + size]):
                counts.append(len(faces))
                boxes.append(faces.boxes.reshape(-1, 4))
                scores.append(faces.scores)
                landmarks.append(faces.landmarks.reshape(-1, 10))
        item.update(kind="faces", counts=np.asarray(counts, np.int64), boxes=np.concatenate(boxes),
                    scores=np.concatenate(scores), landmarks=np.concatenate(landmarks))
        return item


def _row(unit: WorkUnit, payload: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"video_id": np.array([unit.video_id]), "unit": np.array([unit.unit], np.int64),
            "payload": np.array([pickle.dumps(payload, protocol=5)], dtype=object)}


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None  # Ray Data turns None into NaN in numeric columns (end_frame of a last unit)
    return value


# ----- merging unit results ---------------------------------------------------------------------------------------

@dataclass
class VideoScan:
    """What the units of one video produced, gathered as rows arrive (in any order)."""

    video_id: str
    n_units: int
    faces: list[dict[str, Any]]
    ends: dict[int, dict[str, Any]]

    @property
    def finished(self) -> bool:
        return len(self.ends) == self.n_units

    @property
    def error(self) -> str | None:
        errors = [e["error"] for _, e in sorted(self.ends.items()) if e.get("error")]
        return errors[0] if errors else None

    def add(self, unit: int, payload: dict[str, Any]) -> None:
        if payload["kind"] == "end":
            self.ends[unit] = payload
        else:
            self.faces.append(payload)


def replay_min_scene_len(above: list[int], n_frames: int, min_scene_len: int) -> list[int]:
    """The cuts scenedetect's ContentDetector emits over frames 0..n-1 given its above-threshold frames."""
    from scenedetect import FrameTimecode
    from scenedetect.detector import FlashFilter

    flash = FlashFilter(mode=FlashFilter.Mode.MERGE, length=min_scene_len)
    hits = set(above)
    cuts: list[int] = []
    # Only the filter's state changes matter, but it must see every frame (its merge state counts frames below).
    for f in range(n_frames):
        cuts.extend(int(c.frame_num) for c in flash.filter(FrameTimecode(f, fps=30.0), f in hits))
    return sorted(set(cuts))


def merge_scan(scan: VideoScan, cfg: RunConfig) -> ScanResult:
    """The ScanResult `scan_video` returns over the whole file, from one video's unit results.

    If a unit stopped on a corrupt stretch, the video ends where it stopped (later units are dropped), which
    is where one pass over the file stops too; decode_error carries the message.
    """
    cutoff, decode_error = None, None
    for unit in sorted(scan.ends):
        end = scan.ends[unit]
        if end.get("decode_error"):
            cutoff, decode_error = end["start_frame"] + end["n_frames"], end["decode_error"]
            break
    items = [it for it in scan.faces if cutoff is None or int(it["indices"][0]) < cutoff]
    items = sorted(items, key=lambda it: int(it["indices"][0]))
    frame_times = np.concatenate([it["times"] for it in items]) if items else np.zeros(0)
    indices = np.concatenate([it["indices"] for it in items]) if items else np.zeros(0, np.int64)
    if len(indices) and not np.array_equal(indices, np.arange(len(indices))):
        raise RuntimeError(f"{scan.video_id}: units did not cover frames 0..{len(indices) - 1} exactly once")
    above = sorted(a for e in scan.ends.values() for a in e["above"] if cutoff is None or a < cutoff)
    cuts = replay_min_scene_len(above, len(frame_times), cfg.shots.min_scene_len_frames)
    detections = _detections(scan.video_id, items)
    return ScanResult(cuts=[c for c in cuts if c > 0], frame_times=frame_times, first_frame=0,
                      detections=detections, seconds={}, decode_error=decode_error)


def _detections(video_id: str, items: list[dict[str, Any]]) -> pa.Table:
    """The DETECTIONS table scan_video builds: rows in frame order, det_id 0..n-1, shot and track ids -1."""
    if not items or sum(int(it["counts"].sum()) for it in items) == 0:
        return empty_table("detections")
    frame = np.concatenate([np.repeat(it["indices"], it["counts"]) for it in items]).astype(np.int64)
    t_s = np.concatenate([np.repeat(it["times"], it["counts"]) for it in items]).astype(np.float64)
    box = np.concatenate([it["boxes"] for it in items]).astype(np.float32)
    score = np.concatenate([it["scores"] for it in items]).astype(np.float32)
    marks = np.concatenate([it["landmarks"] for it in items]).astype(np.float32)
    n = len(box)
    return make_table("detections", {
        "video_id": [video_id] * n,
        "det_id": np.arange(n, dtype=np.int64),
        "shot_id": np.full(n, -1, np.int32),
        "frame": frame,
        "t_s": t_s,
        "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 2], "y2": box[:, 3],
        "score": score,
        "landmarks": list(marks),
        "face_px": np.minimum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]),
        "track_id": np.full(n, -1, np.int64),
    })


def scan_tables(video_id: str, scan: ScanResult) -> tuple[pa.Table, pa.Table]:
    """shots and detections (shot ids assigned), as run_video makes them from a ScanResult."""
    shots = shots_table(video_id, scan.cuts, scan.frame_times)
    return shots, assign_shots(scan.detections, shots)


# ----- the pipeline ----------------------------------------------------------------------------------------------

def detection_pool(cfg: RunConfig, resources: dict[str, float]) -> tuple[int, int, float]:
    """(min actors, max actors, GPUs per actor) of the detection pool."""
    d = cfg.distributed
    if d.detect_gpus >= 1:
        # From one actor up: on an autoscaling cluster the GPU nodes for the rest are added while it works.
        return 1, int(d.detect_gpus), 1.0
    if d.detect_gpus > 0:
        return 1, 1, float(d.detect_gpus)
    n = d.detect_actors if d.detect_actors > 0 else max(1, int(resources.get("CPU", 1)) // 2)
    return n, n, 0.0


def scan_peaks(scan: VideoScan) -> dict[str, float]:
    """Peak resident memory (MiB) of the decode tasks and detection actors that worked on one video."""
    peaks = {"decode": max((e.get("peak_mib") or 0.0 for e in scan.ends.values()), default=0.0),
             "detect": max((f.get("peak_mib") or 0.0 for f in scan.faces), default=0.0)}
    return {k: v for k, v in peaks.items() if v > 0}


def scan_memory(cfg: RunConfig) -> tuple[dict[str, int], dict[str, int]]:
    """Ray `memory` options of the decode tasks and the detection actors (distributed.*_memory_mib).

    Ray Data fuses a task operator into the next actor operator when their resource requests are equal, which
    would run decoding inside the detection actors (one node's worth of them) instead of in CPU tasks any node
    can run. So decoding never asks exactly what detection asks: when the two are configured equal (both 0
    included) it asks one byte more.
    """
    decode, detect = memory_bytes(cfg.distributed.decode_memory_mib), memory_bytes(cfg.distributed.detect_memory_mib)
    if decode.get("memory", 0) == detect.get("memory", 0):
        decode = {"memory": decode.get("memory", 0) + 1}
    return decode, detect


def scan_units(units: list[WorkUnit], cfg: RunConfig, n_units: dict[str, int],
               on_video=None) -> dict[str, VideoScan]:
    """Run the units through Ray Data; returns each video's gathered results (call merge_scan on them).

    `on_video(scan)` is called as soon as every unit of a video has ended, while other videos still stream.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    cfg_dict = cfg.to_dict()
    low, high, gpus = detection_pool(cfg, ray.cluster_resources())
    ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=max(1, len(units)))
    # Decoding and detection declare the memory measured for them (scan_memory: never equal, so Ray Data does
    # not fuse decoding into the detection actors; decoding stays in CPU tasks that any node can run).
    decode_memory, detect_memory = scan_memory(cfg)
    ds = ds.map_batches(decode_units, fn_kwargs={"cfg": cfg_dict}, batch_size=1, num_cpus=1, **decode_memory)
    ds = ds.map_batches(DetectFaces, fn_constructor_kwargs={"cfg": cfg_dict}, batch_size=1,
                        compute=ActorPoolStrategy(min_size=low, max_size=high), num_gpus=gpus,
                        num_cpus=0 if gpus > 0 else 1, **detect_memory)
    scans = {vid: VideoScan(vid, n, [], {}) for vid, n in n_units.items()}
    for row in ds.iter_rows():
        scan = scans[str(row["video_id"])]
        scan.add(int(row["unit"]), pickle.loads(row["payload"]))
        if scan.finished and on_video is not None:
            on_video(scan)
    return scans
