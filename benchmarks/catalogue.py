"""Catalogue throughput: serial `run_video` vs the Ray executors on 1 and 2 simulated nodes, same CPU budget.

    python benchmarks/catalogue.py [--videos 4] [--seconds 6] [--cpus 2] [--stages detect,track]
                                   [--out benchmarks/results/catalogue.json]

Renders the catalogue (640x360, 25 fps, face photos from the insightface wheel), then runs it
- serially (vcn.catalogue.serial_executor: run_video per video, no Ray) - the baseline;
- ray_units_executor on one node with --cpus CPUs, and on two nodes with --cpus/2 each;
- ray_videos_executor (one task per video) on two nodes.
Each Ray run gets a fresh local cluster (ray.cluster_utils.Cluster), started before the clock starts.
Writes JSON: per run wall seconds, videos/min, frames/s, the ratio to the serial wall time, the peak RSS
of the driver and of each kind of Ray worker (sampled every 0.2 s from /proc: Linux), and the peak memory
each kind of Ray work reported for itself in the run manifest (`manifest_peak_mib`: per kind, the highest
over the videos; what distributed.*_memory_mib should cover).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcn.catalogue import run_catalogue, serial_executor  # noqa: E402
from vcn.config import RunConfig  # noqa: E402


def render_catalogue(folder: Path, n_videos: int, seconds: float) -> list[Path]:
    from vcn.demo import demo_photos
    from vcn.render import Shot, render_video

    group, portrait = demo_photos()
    h, w = group.image.shape[:2]
    halves = [group.crop(0, 0, w // 2, h, name="left"), group.crop(w // 2, 0, w, h, name="right")]
    paths = []
    for i in range(n_videos):
        shots = [Shot([halves[i % 2]], duration_s=seconds * 0.4, zoom=(1.0, 1.3)),
                 Shot([portrait], duration_s=seconds * 0.2, photo_scales=[0.6]),
                 Shot([group], duration_s=seconds * 0.4, zoom=(1.1, 1.4), pan=((0.3, 0.5), (0.7, 0.5)))]
        paths.append(render_video(shots, folder / f"video_{i:02d}.mp4", seed=i).video)
    return paths


class RssSampler:
    """Peak RSS of this process (the driver) and of every `ray::` worker process it started, by worker kind.

    Only descendants of this process count (a local Cluster's raylets are its children), so other Ray
    instances on a shared machine are left out. Kinds: MapBatches = decode tasks, MapWorker = detection
    actors, ShotTracker = tracking actors, _write_scan / _probe / process_video = tasks, IDLE = pooled workers.
    """

    def __init__(self, period_s: float = 0.2):
        self.period_s = period_s
        self.driver_peak = 0
        self.worker_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            procs = {pid: (ppid, title, rss) for pid, ppid, title, rss in _processes()}
            for pid, (_, title, rss) in procs.items():
                if pid == me:
                    self.driver_peak = max(self.driver_peak, rss)
                elif title.startswith("ray::") and _descends_from(pid, me, procs):
                    kind = title[len("ray::"):].split()[0].split("(")[0].split(".")[0].rstrip(":")
                    self.worker_peak[kind] = max(self.worker_peak.get(kind, 0), rss)
            self._stop.wait(self.period_s)


def _descends_from(pid: int, ancestor: int, procs: dict) -> bool:
    for _ in range(64):
        pid = procs.get(pid, (0,))[0]
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _processes():
    """(pid, parent pid, process title, resident bytes) of every readable process, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
            if "VmRSS" in status:
                yield int(entry.name), int(status["PPid"]), title, int(status["VmRSS"].split()[0]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


def mib(n: int) -> float:
    return round(n / 2**20, 1)


def run_one(name: str, src: Path, work: Path, cfg: RunConfig, stages: list[str], executor, nodes: list[int] | None):
    import ray

    cluster = None
    start_s = 0.0
    if nodes:
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": nodes[0], "include_dashboard": False})
        for cpus in nodes[1:]:
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        start_s = time.perf_counter() - t0
    out = work / name
    try:
        with RssSampler() as rss:
            t0 = time.perf_counter()
            report = run_catalogue(str(src), str(out), cfg, stages=stages, executor=executor, log=lambda _: None)
            wall = time.perf_counter() - t0
    finally:
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
    summaries = [json.loads(p.read_text()) for p in (out / "videos").glob("*/summary.json")]
    manifest = json.loads((out / "manifest.json").read_text())["videos"]
    peaks: dict[str, float] = {}
    for entry in manifest.values():
        for kind, value in (entry.get("peak_mib") or {}).items():
            peaks[kind] = max(peaks.get(kind, 0.0), value)
    scan_s = max((s.get("seconds", {}).get("scan_wave_s", 0.0) for s in summaries), default=0.0)
    result = {
        "name": name, "nodes_cpus": nodes, "cluster_start_s": round(start_s, 2), "wall_s": round(wall, 2),
        "counts": report.counts, "frames": report.frames,
        "videos_per_min": round(report.counts["done"] / (wall / 60), 2),
        "frames_per_s": round(report.frames / wall, 1),
        "driver_peak_rss_mib": mib(rss.driver_peak),
        "worker_peak_rss_mib": {k: mib(v) for k, v in sorted(rss.worker_peak.items())},
        "manifest_peak_mib": dict(sorted(peaks.items())),  # empty for the serial run (no Ray tasks)
    }
    if scan_s:
        # Decode + detection phase of the units executor alone (Ray Data over every unit of the wave).
        result["scan_phase_s"] = scan_s
        result["scan_frames_per_s"] = round(report.frames / scan_s, 1)
    print(json.dumps(result), flush=True)
    return result


RUNS = {
    # name: (executor, CPUs per simulated node or None for no Ray)
    "serial_run_video": ("serial", None),
    "ray_units_1node": ("units", "all"),
    "ray_units_2nodes": ("units", "halves"),
    "ray_videos_2nodes": ("videos", "halves"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0, help="length of each rendered video")
    p.add_argument("--cpus", type=int, default=2, help="the CPU budget every run gets")
    p.add_argument("--stages", default="detect,track")
    p.add_argument("--frames-per-unit", type=int, default=64)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "catalogue.json"))
    p.add_argument("--one", choices=sorted(RUNS), help=argparse.SUPPRESS)  # internal: one run in this process
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")            # a private local cluster
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")   # the machine is shared with other work
    stages = [s for s in args.stages.split(",") if s]
    if args.one:
        return _one(args, stages)

    work = Path(tempfile.mkdtemp(prefix="vcn-bench-"))
    try:
        src = work / "in"
        src.mkdir()
        t0 = time.perf_counter()
        paths = render_catalogue(src, args.videos, args.seconds)
        render_s = time.perf_counter() - t0
        runs = []
        for name in RUNS:
            # Each run in a fresh process: the driver's peak RSS is then that run's alone.
            cmd = [sys.executable, __file__, "--one", name, "--src", str(src), "--work", str(work),
                   "--cpus", str(args.cpus), "--stages", args.stages, "--frames-per-unit", str(args.frames_per_unit)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            runs.append(json.loads(lines[-1]))
            print(lines[-1], flush=True)
        base = runs[0]["wall_s"]
        for r in runs:
            r["wall_vs_serial"] = round(r["wall_s"] / base, 2)
        result = {
            "benchmark": "catalogue", "stages": stages, "videos": args.videos, "seconds_per_video": args.seconds,
            "frame_size": [640, 360], "fps": 25, "frames_per_unit": args.frames_per_unit, "cpu_budget": args.cpus,
            "render_s": round(render_s, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
            "video_bytes": sum(p.stat().st_size for p in paths), "runs": runs,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


def _one(args: argparse.Namespace, stages: list[str]) -> int:
    from vcn.distributed.executors import ray_units_executor, ray_videos_executor

    kind, layout = RUNS[args.one]
    executor = {"serial": serial_executor, "units": ray_units_executor, "videos": ray_videos_executor}[kind]
    half = max(1, args.cpus // 2)
    nodes = None if layout is None else ([args.cpus] if layout == "all" else [half, args.cpus - half])
    cfg = RunConfig()
    cfg.distributed.frames_per_unit = args.frames_per_unit
    run_one(args.one, Path(args.src), Path(args.work), cfg, stages, executor, nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
