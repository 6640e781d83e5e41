"""vcn.heap (issue 13): memory handed back to the OS between and during stages, and stage 1's detector gone
before stage 2 stacks up on top of it."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from tests import videos
from vcn import heap, pipeline
from vcn.config import RunConfig
from vcn.tables import empty_table

REPO = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(heap._glibc() is None, reason="the C library here is not glibc")


def test_release_memory_runs_and_answers_a_bool():
    assert heap.release_memory() in (True, False)
    assert heap.release_memory() in (True, False)  # twice in a row: nothing left to return is not an error


class _CountingLibc:
    def __init__(self):
        self.trims = 0

    def malloc_trim(self, pad):
        self.trims += 1
        return 0


def test_helpers_are_no_ops_without_glibc(monkeypatch):
    import torch

    monkeypatch.setattr(heap, "_glibc", lambda: None)
    assert heap.release_memory() is False
    with heap.trim_before_no_grad_passes(torch.nn.Linear):
        torch.nn.Linear(2, 2)(torch.zeros(1, 2))


@glibc
def test_release_memory_gives_freed_heap_pages_back():
    # In a child, whose heap holds nothing else: 64 MiB in 64-KiB blocks (below glibc's mmap threshold, so in the
    # heap), every other one freed. The holes cannot be trimmed from the heap's top; malloc_trim(0) returns them.
    code = """
import ctypes, json
from vcn import heap

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def anon_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon:")).split()[1])

blocks = [libc.malloc(1 << 16) for _ in range(1024)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 16)
for b in blocks[::2]:
    libc.free(b)
held = anon_kib()
returned = heap.release_memory()
print(json.dumps({"returned": returned, "freed_kib": held - anon_kib()}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(out.stdout)
    assert result["returned"] is True
    assert result["freed_kib"] > 16 * 1024  # of the 32 MiB freed in holes


def test_trim_runs_before_no_grad_passes_of_the_module_type_only(monkeypatch):
    import torch

    libc = _CountingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    x = torch.zeros(1, 2)
    with heap.trim_before_no_grad_passes(torch.nn.Sequential):
        net(x)                      # with gradients: a training micro-batch, no trim
        assert libc.trims == 0
        with torch.no_grad():
            net(x)                  # the Sequential once; its Linear is another type
        assert libc.trims == 1
    with torch.no_grad():
        net(x)                      # the hook is gone once the block closes
    assert libc.trims == 1


@pytest.mark.parametrize("during_scan", ["never", "always"])
def test_stage_one_detector_is_released_before_tracking_and_stage_two(tmp_path, monkeypatch, during_scan):
    # Tracked after the scan (the default on a CPU), tracking starts with the detector gone; tracked during the scan
    # tracking runs beside it by design (the default on a GPU) and stage 2 starts with it gone.
    import vcn.models

    made: list[weakref.ref] = []
    seen: dict[str, bool] = {}
    load_detector = vcn.models.load_detector

    def tracked_load_detector(*args, **kwargs):
        detector = load_detector(*args, **kwargs)
        made.append(weakref.ref(detector))
        return detector

    track_shots = pipeline.track_shots

    def checking_track_shots(*args, **kwargs):
        seen["track"] = made[0]() is None
        return track_shots(*args, **kwargs)

    def checking_cluster_crops(crops, tracks, detections, cfg, video_id, backbone=None):
        seen["cluster"] = made[0]() is None
        return empty_table("clusters"), empty_table("embeddings"), {}

    monkeypatch.setattr(vcn.models, "load_detector", tracked_load_detector)
    monkeypatch.setattr(pipeline, "track_shots", checking_track_shots)
    monkeypatch.setattr(pipeline, "cluster_crops", checking_cluster_crops)
    video = videos.write_video(tmp_path / "clip.mp4", n_frames=20)
    cfg = RunConfig()
    cfg.track.during_scan = during_scan
    result = pipeline.run_video(video, tmp_path / "out", cfg, report=False)
    assert result.summary["stages_done"] == ["detect", "track", "cluster"]
    expected = {"cluster": True} if during_scan == "always" else {"track": True, "cluster": True}
    assert len(made) == 1 and seen == expected
