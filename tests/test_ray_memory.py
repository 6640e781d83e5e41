"""Issue 13 on Ray: every task and actor that works on a video reports its peak memory (the run manifest keeps it
per video and kind of work), and reserves the Ray `memory` its distributed.*_memory_mib setting asks for.

Each kind gets its own small reservation here (301-306 MiB: schedulable on any machine, and each one tells its
kind apart in Ray's record of the tasks and actors, read through the state API).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

try:  # tests/*.py: top-level modules when tests/ is on sys.path, tests.* when tests/ is a package
    from ports import free_ports
    from ray_env import in_process_ray_env
    from test_distributed import tiny_ssl
except ImportError:
    from tests.ports import free_ports
    from tests.ray_env import in_process_ray_env
    from tests.test_distributed import tiny_ssl
from vcn.catalogue import OutputStore, RunManifest, run_catalogue
from vcn.config import RunConfig
from vcn.distributed import PeakMemory, memory_bytes

MIB = 2**20
MEMORY = {"video_task_memory_mib": 301, "decode_memory_mib": 302, "detect_memory_mib": 303,
          "track_memory_mib": 304, "write_memory_mib": 305, "cluster_memory_mib": 306}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 logical CPUs (the machine's 2-core budget) and the dashboard (Ray's state API)."""
    import ray

    with in_process_ray_env():
        ray.init(num_cpus=2, include_dashboard=True, dashboard_port=free_ports(1)[0], log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def config() -> RunConfig:
    cfg = RunConfig()
    cfg.persons.update_after_catalogue = False
    cfg.distributed.frames_per_unit = 10  # several decode units per video
    for name, mib in MEMORY.items():
        setattr(cfg.distributed, name, mib)
    return cfg


def declared_memory() -> dict[str, set[float]]:
    """Ray's record: task or actor class name -> the `memory` (MiB) each of them reserved."""
    from ray.util.state import list_actors, list_tasks

    def memory(required: dict | None) -> float:
        # Inside a placement group (Ray Train's workers) Ray renames it memory_group_<pg> / _<bundle>_<pg>.
        values = [v for k, v in (required or {}).items() if k == "memory" or k.startswith("memory_group_")]
        return max(values, default=0) / MIB

    found: dict[str, set[float]] = {}
    for t in list_tasks(detail=True, limit=10000, raise_on_missing_output=False):
        found.setdefault(t.name, set()).add(memory(t.required_resources))
    for a in list_actors(detail=True, limit=10000, raise_on_missing_output=False):
        found.setdefault(a.class_name, set()).add(memory(a.required_resources))
    return found


def peaks(out: Path, status: str = "done") -> dict[str, dict[str, float]]:
    """The manifest's peak_mib of every video, all of which must have `status`."""
    videos = RunManifest.load(OutputStore(out)).videos
    assert videos and all(e["status"] == status for e in videos.values()), videos
    return {vid: e.get("peak_mib") for vid, e in videos.items()}


def assert_plausible(peak: dict[str, float], kinds: set[str]) -> None:
    """Every kind present, each a whole Python worker process (> 50 MiB) on a small machine (< 8 GiB)."""
    assert set(peak) == kinds, peak
    assert all(50 < v < 8192 for v in peak.values()), peak


def test_peak_memory_measures_one_piece_of_work():
    import mmap
    import time

    with PeakMemory() as before:
        pass
    with PeakMemory() as outer:
        with PeakMemory() as inner:
            # 200 MiB of private anonymous pages (shared ones would count as RssShmem), touched, held until both
            # samplers have read it, then unmapped. mmap, not numpy: free() may keep a large block in the process
            # (CI once saw RSS stay up after `del`), munmap always gives it back.
            block = mmap.mmap(-1, 200 * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            block.write(b"\1" * (200 * MIB))
            # Wait on the samplers' own readings, not a fixed sleep: on a loaded 2-core CI machine a 0.1 s
            # sleep once passed with neither thread scheduled, and the spike went unseen.
            taken = inner.samples, outer.samples
            deadline = time.monotonic() + 30
            while (inner.samples < taken[0] + 2 or outer.samples < taken[1] + 2) and time.monotonic() < deadline:
                time.sleep(0.01)
            block.close()
        with PeakMemory() as later:
            pass
    assert inner.mib > before.mib + 190 and outer.mib > before.mib + 190  # the spike, seen by both
    assert later.mib < inner.mib - 150  # a later piece of work does not inherit it (ru_maxrss would)
    frozen = inner.mib
    held = bytearray(100 * MIB)  # memory taken after a block has ended is not counted in it
    assert inner.mib == frozen and before.mib < frozen
    del held
    assert memory_bytes(0) == {} and memory_bytes(2) == {"memory": 2 * MIB}


def test_scan_memory_keeps_decoding_apart_from_detection():
    from vcn.distributed.scan import scan_memory

    cfg = RunConfig()
    assert scan_memory(cfg) == ({"memory": cfg.distributed.decode_memory_mib * MIB},
                                {"memory": cfg.distributed.detect_memory_mib * MIB})
    cfg.distributed.decode_memory_mib = cfg.distributed.detect_memory_mib = 0  # "declare none"
    decode, detect = scan_memory(cfg)
    assert detect == {} and decode == {"memory": 1}  # unequal requests: Ray Data never fuses the two


def test_every_task_and_actor_reports_and_declares_its_memory(local_ray, tmp_path, face_clips):
    from vcn.distributed.executors import ray_units_executor, ray_videos_executor

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        shutil.copy(face_clips[name], src / f"{name}.mp4")
    cfg = config()
    stages = ["detect", "track"]

    units = run_catalogue(str(src), str(tmp_path / "units"), cfg, stages=stages, executor=ray_units_executor,
                          log=lambda _: None)
    assert units.counts == {"done": 2, "skipped": 0, "failed": 0}, units.failed
    for vid, peak in peaks(tmp_path / "units").items():
        assert_plausible(peak, {"probe", "decode", "detect", "track", "write"})
        summary = json.loads((tmp_path / "units" / "videos" / vid / "summary.json").read_text())
        assert set(summary["peak_mib"]) == set(peak)  # the summary has them too (write's as far as it got)

    videos = run_catalogue(str(src), str(tmp_path / "videos"), cfg, stages=stages, executor=ray_videos_executor,
                           log=lambda _: None)
    assert videos.counts == {"done": 2, "skipped": 0, "failed": 0}, videos.failed
    for peak in peaks(tmp_path / "videos").values():
        assert_plausible(peak, {"video"})
    # A skipped video keeps the figures of the run that made it.
    again = run_catalogue(str(src), str(tmp_path / "videos"), cfg, stages=stages, executor=ray_videos_executor,
                          log=lambda _: None)
    assert again.counts["skipped"] == 2
    assert all(p and "video" in p for p in peaks(tmp_path / "videos", "skipped").values())

    declared = declared_memory()
    expect = {"process_video": 301, "MapBatches(decode_units)": 302, "MapWorker(MapBatches(DetectFaces))": 303,
              "ShotTracker": 304, "_write_scan": 305}
    assert {name: declared.get(name) for name in expect} == {name: {mib} for name, mib in expect.items()}, declared


@pytest.mark.slow  # about a minute on the shared 2-core machine (one finetune)
def test_cluster_stage_reports_and_declares_its_memory(local_ray, tmp_path, face_clips):
    from vcn.distributed.executors import ray_units_executor

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(face_clips["c"], src / "c.mp4")
    cfg = tiny_ssl(config())
    cfg.quality.min_face_px = 8.0
    cfg.distributed.train_workers = 1
    report = run_catalogue(str(src), str(tmp_path / "out"), cfg, executor=ray_units_executor, log=lambda _: None)
    assert report.counts["done"] == 1, report.failed
    peak = peaks(tmp_path / "out")["c.mp4"]
    assert_plausible(peak, {"probe", "decode", "detect", "track", "write", "cluster", "train"})
    assert peak["train"] > peak["write"]  # the finetune holds torch, the model and its activations

    declared = declared_memory()
    # With Ray Train the cluster task only launches and writes: it reserves write_memory_mib, each worker the
    # finetune's cluster_memory_mib.
    assert declared.get("_cluster_video") == {305}, declared
    assert declared.get("RayTrainWorker") == {306}, {k: v for k, v in declared.items() if "Train" in k}
