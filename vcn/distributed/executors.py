"""Catalogue executors on Ray: per work unit (Ray Data, tracking actors, Ray Train) or per video (Ray tasks).

Both have the signature of vcn.catalogue.Executor and report every video through `on_result`, so planning,
the manifest and the catalogue dataset are the same code as the serial path.

The units executor takes videos in waves of `distributed.videos_per_wave`; within a wave the phases run one
after another, each with the whole cluster: probe -> scan (Ray Data: decode tasks + detection actors) ->
track (actors, one shot per call) and write -> cluster (Ray Train per video). A video's detect+track output
is published as soon as it is written, so a job killed while clustering resumes from it.

Every task and actor that works on a video measures its process's peak resident memory over that work
(vcn.distributed.PeakMemory) and hands it back with its result; the manifest records per video, per kind of
work, the peak in MiB (`peak_mib`: video = the per-video task; probe, decode, detect, track, write, cluster,
train = the pieces of the units executor, each the highest over the video's calls). Each kind reserves Ray
`memory` from the distributed.*_memory_mib settings, so Ray never packs more of them on a node than it holds.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from vcn.catalogue import (OutputStore, Plan, VideoInput, drop_cached_video, error_text, finish_video,
                           local_video, process_video, summary_record)
from vcn.config import RunConfig
from vcn.distributed import PeakMemory, fit_torch_threads, memory_bytes
from vcn.leftovers import video_work_dir
from vcn.outputs import VideoOutput

OnResult = Callable[[Plan, dict], None]


def init_ray(address: str | None = None, **kwargs) -> None:
    """Connect to the cluster (RAY_ADDRESS or `address`), or start a local one; quiet on repeat calls."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, **kwargs)


def _failure(e: BaseException, seconds: float) -> dict[str, Any]:
    cause = getattr(e, "cause", None)  # RayTaskError wraps the exception the task raised
    return {"status": "failed", "error": error_text(cause if isinstance(cause, BaseException) else e),
            "seconds": seconds}


def _drain(refs: dict, on_done: Callable[[Any, Any, BaseException | None], None]) -> None:
    """Wait for every ref in `refs` (ref -> context) and call on_done(context, value, error) as each finishes."""
    import ray

    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            context = refs.pop(ref)
            try:
                value, error = ray.get(ref), None
            except Exception as e:  # a task's own failure or a lost worker: the video fails, others go on
                value, error = None, e
            on_done(context, value, error)


# ----- per video ----------------------------------------------------------------------------------------------

def ray_videos_executor(plans: list[Plan], store: OutputStore, cfg: RunConfig, stages: list[str],
                        on_result: OnResult) -> None:
    """One Ray task per video running `run_video` (via catalogue.process_video), as many at once as CPUs allow."""
    import ray

    # Named after process_video, so the worker's process title (ray::process_video) stays what it was.
    task = ray.remote(num_cpus=1, max_retries=cfg.distributed.max_retries, name="process_video",
                      **memory_bytes(cfg.distributed.video_task_memory_mib))(_process_video)
    started = time.perf_counter()
    refs = {task.remote(p, store, cfg, stages): p for p in plans}
    _drain(refs, lambda plan, value, error: on_result(
        plan, value if error is None else _failure(error, time.perf_counter() - started)))


def _process_video(plan: Plan, store: OutputStore, cfg: RunConfig, stages: list[str]) -> dict[str, Any]:
    """Ray task: catalogue.process_video with torch's threads fitted to the task's CPUs; adds its peak memory."""
    fit_torch_threads()
    with PeakMemory() as peak:
        result = process_video(plan, store, cfg, stages)
    return {**result, "peak_mib": {"video": peak.mib}}


# ----- per work unit ------------------------------------------------------------------------------------------

def _probe(video: VideoInput, deinterlace: str = "auto") -> dict[str, Any]:
    from vcn.video.decode import probe_video

    with PeakMemory() as peak:
        info = probe_video(local_video(video), deinterlace=deinterlace)
    return {"n_frames": info.n_frames, "info": info.to_dict(), "video_info": info, "peak_mib": peak.mib}


def video_summary(video: VideoInput, info: dict[str, Any], cfg: RunConfig, stages_done: list[str],
                  tables: dict[str, pa.Table], seconds: dict[str, float],
                  decode_error: str | None = None, peak_mib: dict[str, float] | None = None) -> dict[str, Any]:
    """A summary.json with the fields run_video writes (the source is the catalogue URI, not a cache path), and
    the peak memory (MiB) per kind of work known when it is written."""
    from vcn.pipeline import package_versions

    counts = {name: tables[name].num_rows for name in ("shots", "detections", "tracks", "crops") if name in tables}
    if "clusters" in tables:
        ids = tables["clusters"].column("cluster_id").to_numpy()
        counts["clusters"] = int(len(np.unique(ids[ids >= 0])))
        counts["unknown_tracks"] = int((ids < 0).sum())
    return {
        "video_id": video.video_id,
        "video": video.uri,
        "video_size": video.size,
        "video_info": info,
        "stages_done": stages_done,
        "partial": bool(info.get("partial", False) or decode_error),
        "decode_error": decode_error,
        "counts": counts,
        "seconds": seconds,
        "frames_per_second": {},
        "models": {"detector": cfg.detect.model, "backbone": cfg.embed.backbone},
        "versions": package_versions(),
        "config": cfg.to_dict(),
        "executor": "ray-units",
        "peak_mib": dict(peak_mib or {}),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_scan(plan: Plan, store: OutputStore, cfg: RunConfig, probe: dict[str, Any], shots: pa.Table,
                detections: pa.Table, seconds: dict[str, float], decode_error: str | None, track: bool,
                peaks: dict[str, float], *parts) -> dict[str, Any]:
    """Ray task: join the per-shot tracking results (when tracked), write the video's output and publish it.

    `peaks` holds the peak memory of the earlier pieces (probe, decode, detect); each part from a tracking
    actor carries its call's; this task adds its own.
    """
    from vcn.distributed.track import renumber_parts
    from vcn.tables import empty_table

    t0 = time.perf_counter()
    with PeakMemory() as peak:
        video = plan.video
        peaks = dict(peaks)
        if parts:
            peaks["track"] = max(p[3] for p in parts)
        tables = {"shots": shots, "detections": detections}
        if track:
            if parts:
                tables["detections"], tables["tracks"], tables["crops"] = renumber_parts(list(parts))
            else:  # a video without shots (no frames) still gets its (empty) tables
                tables["tracks"], tables["crops"] = empty_table("tracks"), empty_table("crops")
        done = ["detect", "track"] if track else ["detect"]
        with video_work_dir() as work:
            out = VideoOutput(work, video.video_id)
            seconds["write_s"] = round(time.perf_counter() - t0, 3)
            peaks["write"] = peak.mib  # so far: the summary is written before the task ends
            out.commit(tables, video_summary(video, probe["info"], cfg, done, tables, seconds, decode_error, peaks))
            summary = finish_video(out.path, video, store)
    peaks["write"] = peak.mib
    return {"status": "done", "error": None, "seconds": 0.0, **summary_record(summary), "peak_mib": peaks}


def _cluster_video(plan: Plan, store: OutputStore, cfg: RunConfig) -> dict[str, Any]:
    """Ray task: fetch a video's detect+track output, run stages 2-3 (Ray Train when configured), publish.

    Its peak memory is `cluster`; with Ray Train, the highest of the workers' is `train`.
    """
    from vcn.distributed.train import cluster_on_ray

    fit_torch_threads()  # with train_workers 0, stages 2-3 run torch in this task
    video = plan.video
    with PeakMemory() as peak, video_work_dir() as work:
        folder = store.fetch_video(video.video_id, work)
        if folder is None:
            raise RuntimeError(f"{video.video_id}: its detect+track output vanished from {store.uri}")
        out = VideoOutput(work, video.video_id)
        crops, tracks, detections = out.load("crops"), out.load("tracks"), out.load("detections")
        t0 = time.perf_counter()
        ranks: dict[int, float] = {}
        clusters, embeddings, timings = cluster_on_ray(crops, tracks, detections, cfg, video.video_id, peaks=ranks)
        summary = out.summary() or {}
        seconds = dict(summary.get("seconds", {}))
        seconds.update({k if k.endswith("_s") else f"{k}_s": round(float(v), 3) for k, v in timings.items()})
        seconds["cluster_wall_s"] = round(time.perf_counter() - t0, 3)
        tables = {"shots": out.load("shots"), "detections": detections, "tracks": tracks, "crops": crops,
                  "clusters": clusters, "embeddings": embeddings}
        peaks = dict(summary.get("peak_mib") or {})
        if ranks:
            peaks["train"] = max(ranks.values())
        peaks["cluster"] = peak.mib  # so far: the summary is written before the task ends
        new = video_summary(video, summary.get("video_info", {}), cfg, ["detect", "track", "cluster"], tables,
                            seconds, summary.get("decode_error"), peaks)
        new["train_workers"] = cfg.distributed.train_workers
        out.commit({"clusters": clusters, "embeddings": embeddings}, new)
        final = finish_video(out.path, video, store)
        peaks["cluster"] = peak.mib
    return {**summary_record(final), "peak_mib": peaks}


def _drop_cache_task(videos: list[VideoInput]) -> None:
    for v in videos:
        drop_cached_video(v)


def _clear_node_caches(videos: list[VideoInput]) -> None:
    """Remove this wave's S3 downloads from every node's cache (local inputs are never copied)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    s3 = [v for v in videos if v.uri.startswith("s3://")]
    if not s3:
        return
    task = ray.remote(num_cpus=0)(_drop_cache_task)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(s3)
            for n in ray.nodes() if n.get("Alive")]
    ray.wait(refs, num_returns=len(refs), timeout=60)


def ray_units_executor(plans: list[Plan], store: OutputStore, cfg: RunConfig, stages: list[str],
                       on_result: OnResult) -> None:
    """Work-unit parallelism (a long movie spreads over the cluster); resumed videos go per video."""
    from vcn.pipeline import with_scan_batches

    # Decode tasks, work units and detection actors must agree on the batches: settle detect.batch_size's auto
    # once, by whether the detection actors get GPUs.
    cfg = with_scan_batches(cfg, cfg.distributed.detect_gpus > 0)
    resume = [p for p in plans if p.action == "resume"]
    fresh = [p for p in plans if p.action != "resume"]
    if resume:
        ray_videos_executor(resume, store, cfg, stages, on_result)
    size = max(1, cfg.distributed.videos_per_wave)
    for i in range(0, len(fresh), size):
        _run_wave(fresh[i:i + size], store, cfg, stages, on_result)


def _run_wave(plans: list[Plan], store: OutputStore, cfg: RunConfig, stages: list[str],
              on_result: OnResult) -> None:
    import ray

    from vcn.distributed.scan import merge_scan, scan_peaks, scan_tables, scan_units, split_into_units
    from vcn.distributed.track import tracking_actors
    from vcn.tracking.shots import shot_detections

    retries = cfg.distributed.max_retries
    started = {p.video.video_id: time.perf_counter() for p in plans}
    by_id = {p.video.video_id: p for p in plans}
    alive: dict[str, dict[str, Any]] = {}   # video_id -> what the next phase needs

    def fail(plan: Plan, error: BaseException | str) -> None:
        vid = plan.video.video_id
        alive.pop(vid, None)
        elapsed = time.perf_counter() - started[vid]
        on_result(plan, _failure(error, elapsed) if isinstance(error, BaseException)
                  else {"status": "failed", "error": error, "seconds": elapsed})

    # 1. probe (also fetches S3 inputs into the node cache)
    probe = ray.remote(num_cpus=1, max_retries=retries)(_probe)

    def probed(plan: Plan, value, error) -> None:
        if error is not None:
            fail(plan, error)
        else:
            alive[plan.video.video_id] = {"probe": value}

    _drain({probe.remote(p.video, cfg.decode.deinterlace): p for p in plans}, probed)

    # 2. scan: decode tasks and detection actors over every unit of every video in the wave
    units, n_units = [], {}
    for vid, state in alive.items():
        mine = split_into_units(by_id[vid].video, state["probe"]["n_frames"], cfg)
        units.extend(mine)
        n_units[vid] = len(mine)
    t0 = time.perf_counter()
    if units:
        scans = scan_units(units, cfg, n_units)
        for vid, scan in scans.items():
            if scan.error or not scan.finished:
                fail(by_id[vid], scan.error or "some work units never reported back")
                continue
            try:
                merged = merge_scan(scan, cfg)
                shots, detections = scan_tables(vid, merged)
            except Exception as e:
                fail(by_id[vid], e)
                continue
            alive[vid].update(shots=shots, detections=detections, decode_error=merged.decode_error,
                              frames=len(merged.frame_times),
                              peaks={"probe": alive[vid]["probe"].pop("peak_mib"), **scan_peaks(scan)})
    scan_s = round(time.perf_counter() - t0, 3)

    # 3. track (one call per shot, when asked for) and write each video's output
    write = ray.remote(num_cpus=0, max_retries=retries, **memory_bytes(cfg.distributed.write_memory_mib))(_write_scan)
    want_track = "track" in stages
    writes = {}
    pool = None
    if alive and want_track:
        n_shots = sum(s["shots"].num_rows for s in alive.values())
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = tracking_actors(cfg, cfg.distributed.track_actors or max(1, min(n_shots, cpus)))
    try:
        track_refs = []
        for vid, state in alive.items():
            plan = by_id[vid]
            parts = []
            if pool is not None:
                info = ray.put(state["probe"].pop("video_info"))
                parts = [pool.submit("track", plan.video, shot,
                                     shot_detections(state["detections"], shot["shot_id"]), info)
                         for shot in state["shots"].to_pylist()]
            state["probe"].pop("video_info", None)
            track_refs.extend(parts)
            seconds = {"scan_wave_s": scan_s, "frames_scanned": state["frames"]}
            writes[write.remote(plan, store, cfg, state["probe"], state["shots"], state["detections"],
                                seconds, state["decode_error"], want_track, state["peaks"], *parts)] = plan
        ray.wait(track_refs, num_returns=len(track_refs))
    finally:
        if pool is not None:
            pool.shutdown()  # frees the CPUs for Ray Train
    want_cluster = "cluster" in stages

    def written(plan: Plan, value, error) -> None:
        vid = plan.video.video_id
        if error is not None:
            fail(plan, error)
        elif not want_cluster:
            alive.pop(vid, None)
            on_result(plan, {**value, "seconds": time.perf_counter() - started[vid]})
        else:
            alive[vid]["peaks"] = value["peak_mib"]

    _drain(writes, written)

    # 4. cluster: stages 2-3 per video (the task only waits while Ray Train's workers hold the CPUs)
    if want_cluster and alive:
        # With Ray Train the task only launches the workers (each reserving cluster_memory_mib) and loads and
        # rewrites the video's tables, as the write task does; without, it finetunes itself.
        train = cfg.distributed.train_workers > 0
        memory = cfg.distributed.write_memory_mib if train else cfg.distributed.cluster_memory_mib
        cluster = ray.remote(num_cpus=0 if train else 1, max_retries=retries, **memory_bytes(memory))(_cluster_video)

        def clustered(plan: Plan, value, error) -> None:
            vid = plan.video.video_id
            if error is not None:
                fail(plan, error)
            else:
                peaks = {**alive.pop(vid, {}).get("peaks", {}), **value.pop("peak_mib", {})}
                on_result(plan, {"status": "done", "error": None, "seconds": time.perf_counter() - started[vid],
                                 **value, "peak_mib": peaks})

        _drain({cluster.remote(by_id[vid], store, cfg): by_id[vid] for vid in list(alive)}, clustered)
    _clear_node_caches([p.video for p in plans])
