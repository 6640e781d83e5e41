"""Leftovers of killed runs (vcn/leftovers.py): the next run removes what dead processes left half-written and
never what a live run (another process, or itself) is still writing. Real processes are SIGKILLed here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from vcn.cli import main as cli
from vcn.leftovers import (UNKNOWN_OWNER_AGE_S, old_name, owner_tag, sweep, sweep_output, sweep_work_dirs,
                           tmp_prefix, video_work_dir)
from vcn.outputs import VideoOutput

REPO = Path(__file__).resolve().parents[1]
DAYS_AGO = time.time() - 2 * UNKNOWN_OWNER_AGE_S

# A writer that stops mid-way: it makes one of every temporary entry vcn makes, with the helpers the writing code
# uses, says where they are and waits to be killed.
WRITER = textwrap.dedent("""
    import json, os, sys, tempfile, time
    from pathlib import Path
    from vcn.leftovers import old_name, scratch_dir, tmp_prefix, video_work_dir
    from vcn.outputs import VideoOutput

    out, cache = Path(sys.argv[1]), Path(sys.argv[2])
    made = {"spill": str(VideoOutput(out, "v1").spill_path("crops"))}
    commit = Path(tempfile.mkdtemp(prefix=tmp_prefix("v1"), suffix=".tmp", dir=out))
    (commit / "tracks.parquet").write_bytes(b"half")
    made["commit"] = str(commit)
    for vid in ("v1", "v2"):                    # v1's folder is there again, v2's is not: killed between renames
        old = out / old_name(vid)
        old.mkdir()
        (old / "summary.json").write_text(json.dumps({"video_id": vid}))
        made["old_" + vid] = str(old)
    fd, part = tempfile.mkstemp(prefix=tmp_prefix("part-0.parquet"), suffix=".tmp", dir=out / "tracks" / "video_id=v1")
    made["dataset"] = part
    fd, download = tempfile.mkstemp(prefix=tmp_prefix("abc.mp4"), suffix=".part", dir=cache)
    made["download"] = download
    with video_work_dir() as work, scratch_dir("persons") as persons, scratch_dir("index") as index:
        (Path(work) / "frames.bin").write_bytes(b"x" * 1000)
        made.update(work=work, persons_scratch=persons, index_download=index)
        print(json.dumps(made), flush=True)
        time.sleep(600)
""")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The system temp folder of this test and of its child processes (where vcn-video-* scratch folders go)."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_only_entries_of_dead_owners_go(tmp_path, private_tmp):
    out, cache = tmp_path / "out", tmp_path / "cache"
    (out / "v1").mkdir(parents=True)
    (out / "v1" / "summary.json").write_text("{}")
    (out / "tracks" / "video_id=v1").mkdir(parents=True)
    (out / "persons").mkdir()
    cache.mkdir()

    # This process's own live entries: a spilled table, an index file being written, a scratch folder.
    own_spill = VideoOutput(out, "v3").spill_path("crops")
    own_index = Path(tempfile.mkstemp(prefix=tmp_prefix("CURRENT.json"), suffix=".tmp", dir=out / "persons")[1])
    # Owners this process cannot check (another host or container): age decides. Foreign names are never touched.
    foreign_new = out / ".v4.00000000-7-7.abcd1234.tmp"
    foreign_old = out / ".v5.00000000-7-7.abcd1234.tmp"
    not_ours = [out / ".v6.abcd1234.tmp", out / ".keep", out / ".v7.old"]
    for p in [foreign_new, foreign_old, *not_ours]:
        p.write_bytes(b"")
    for p in [foreign_old, *not_ours]:
        os.utime(p, (DAYS_AGO, DAYS_AGO))
    legacy_old, legacy_new = private_tmp / "vcn-video-abcd1234", private_tmp / "vcn-video-efgh5678"
    legacy_old.mkdir(), legacy_new.mkdir(), (private_tmp / "vcn-video-cache").mkdir()
    os.utime(legacy_old, (DAYS_AGO, DAYS_AGO))
    os.utime(private_tmp / "vcn-video-cache", (DAYS_AGO, DAYS_AGO))

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(cache)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    with video_work_dir() as own_work:       # making a scratch folder removes the stale ones first
        assert not legacy_old.exists() and legacy_new.exists()
        try:
            made = {k: Path(v) for k, v in json.loads(writer.stdout.readline()).items()}
            assert all(p.exists() for p in made.values())
            # Two runs at once: the writer is alive, so nothing of its is touched, nor of this process.
            assert sweep_output(out) == [f"removed {foreign_old}"]
            assert sweep_work_dirs() == []
            assert sweep(cache) == []
            assert all(p.exists() for p in made.values()) and not (out / "v2").exists()
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL

        done = sweep_output(out) + sweep_work_dirs() + sweep(cache)
        assert not any(p.exists() for k, p in made.items() if k != "old_v2"), done
        assert (out / "v2" / "summary.json").is_file() and f"restored {out / 'v2'} from {made['old_v2'].name}" in done
        assert (out / "v1" / "summary.json").read_text() == "{}"        # the newer folder stays
        assert own_spill.exists() and own_index.exists() and Path(own_work).is_dir()
        assert foreign_new.exists() and all(p.exists() for p in not_ours)
        assert _entries(private_tmp) == {Path(own_work).name, legacy_new.name, "vcn-video-cache"}
        assert sweep_output(out) + sweep_work_dirs() + sweep(cache) == []    # nothing more to do
    own_spill.unlink()
    own_index.unlink()


def test_tags_name_this_process_and_change_in_a_child():
    me = owner_tag()
    node, pid, start = me.split("-")
    assert int(pid) == os.getpid() and len(node) == 8
    assert tmp_prefix("a.mp4") == f".a.mp4.{me}." and old_name("a.mp4") == f".a.mp4.{me}.old"
    child = subprocess.run([sys.executable, "-c", "from vcn.leftovers import owner_tag; print(owner_tag())"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    other = child.stdout.strip().split("-")
    assert other[0] == node and other[1] != pid


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as ready() is true (checked every 20 ms)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"finished before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "never saw the moment to kill"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def test_vcn_run_after_a_killed_run_removes_its_leftovers(tmp_path, private_tmp, face_clips):
    """`vcn run` SIGKILLed while its crops table is spilled beside the output (from tracking until the commit after
    the finetune), then run again while another run is at work in the same folder."""
    out = tmp_path / "out"
    video = shutil.copy(face_clips["a"], tmp_path / "a.mp4")
    cheap = ["--quiet", "--no-report", "--no-index"]
    proc = subprocess.Popen([sys.executable, "-m", "vcn.cli", "run", str(video), "--out", str(out), *cheap],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    _kill_when(proc, lambda: any(out.glob(".a.crops.*.parquet.tmp")))
    left = list(out.glob(".a.crops.*.parquet.tmp"))
    assert len(left) == 1 and not (out / "a").exists()

    live = VideoOutput(out, "b").spill_path("crops")       # another run at work in the same folder
    assert cli(["run", str(video), "--out", str(out), "--stages", "detect,track", *cheap]) == 0
    assert not left[0].exists() and live.exists()
    assert json.loads((out / "a" / "summary.json").read_text())["stages_done"] == ["detect", "track"]
    assert {p.name for p in out.iterdir()} == {"a", live.name}
    live.unlink()


def test_catalogue_after_a_killed_worker_removes_its_scratch_folder(tmp_path, private_tmp, face_clips):
    """The catalogue job (serial) SIGKILLed while a video is in its scratch folder; the next run's worker removes
    that folder, and not the one of a worker still at work."""
    from vcn.catalogue import run_catalogue
    from vcn.config import RunConfig

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(face_clips["b"], src / "b.mp4")
    cmd = [sys.executable, str(REPO / "ray_jobs/index_catalogue.py"), "--input", str(src), "--output", str(out),
           "--mode", "serial", "--stages", "detect,track", "--set", "persons.update_after_catalogue=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    _kill_when(proc, lambda: any(os.listdir(d) for d in private_tmp.glob("vcn-video-*")))
    dead = [p for p in private_tmp.iterdir() if p.name.startswith("vcn-video-")]
    assert len(dead) == 1

    cfg = RunConfig()
    cfg.persons.update_after_catalogue = False
    with video_work_dir() as live:
        report = run_catalogue(str(src), str(out), cfg, stages=["detect", "track"], log=lambda line: None)
        assert report.counts["done"] == 1
        assert not dead[0].exists() and Path(live).is_dir()
    assert not list(private_tmp.glob("vcn-video-*"))
