"""The catalogue job without Ray: inputs, video ids, nightly skip logic, manifest, dataset, S3 paths, a killed job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from vcn import storage
from vcn.catalogue import (OutputStore, RunManifest, VideoInput, list_inputs, plan_videos, read_catalogue,
                           run_catalogue, video_id_for_relpath)
from vcn.config import RunConfig
from vcn.errors import VcnError

REPO = Path(__file__).resolve().parents[1]
STAGES = ["detect", "track"]


def quiet(_line: str) -> None:
    pass


def make_catalogue(root: Path, face_clips: dict[str, Path]) -> Path:
    """a.mp4, show/b.mp4 and a corrupt broken.mp4 (the first 4 KB of a real video)."""
    (root / "show").mkdir(parents=True)
    shutil.copy(face_clips["a"], root / "a.mp4")
    shutil.copy(face_clips["b"], root / "show" / "b.mp4")
    (root / "broken.mp4").write_bytes(Path(face_clips["c"]).read_bytes()[:4096])
    return root


def statuses(output: str | Path) -> dict[str, str]:
    return {vid: e["status"] for vid, e in RunManifest.load(OutputStore(output)).videos.items()}


# ----- ids and inputs ---------------------------------------------------------------------------------------------

def test_video_ids_are_stable_unique_and_folder_safe():
    assert video_id_for_relpath("show/ep1.mp4") == "show__ep1.mp4"
    assert video_id_for_relpath("show/ep1.mp4") != video_id_for_relpath("show/ep1.mkv")
    # Lossy mappings get a hash of the path, so they cannot collide with each other or with a clean name.
    a, b, c = (video_id_for_relpath(p) for p in ("a b.mp4", "a_b.mp4", "a?b.mp4"))
    assert len({a, b, c}) == 3 and b == "a_b.mp4"
    assert video_id_for_relpath("x__y.mp4") != video_id_for_relpath("x/y.mp4")
    assert not video_id_for_relpath(".hidden.mp4").startswith(".")
    assert len(video_id_for_relpath("d/" * 200 + "v.mp4")) < 200
    for rel in ("a b.mp4", "ü/ß.mkv", "x__y.mp4"):
        assert video_id_for_relpath(rel) == video_id_for_relpath(rel)
        assert all(ch.isalnum() or ch in "._-" for ch in video_id_for_relpath(rel))


def test_list_inputs_from_folder_and_manifest_file(tmp_path):
    (tmp_path / "v" / "deep" / ".trash").mkdir(parents=True)
    for rel in ("one.mp4", "deep/two.MKV", "deep/.trash/gone.mp4", "notes.txt", ".part.mp4"):
        (tmp_path / "v" / rel).write_bytes(b"x" * 10)
    found = list_inputs(tmp_path / "v")
    assert [v.video_id for v in found] == ["deep__two.MKV", "one.mp4"]
    assert all(v.size == 10 and v.mtime and v.etag is None for v in found)
    assert list_inputs(tmp_path / "v", max_videos=1)[0].video_id == "deep__two.MKV"

    listing = tmp_path / "list.txt"
    listing.write_text(f"# nightly list\nv/one.mp4\n{tmp_path / 'v/deep/two.MKV'}\tepisode-2\nv/missing.mp4\n\n")
    found = {v.video_id: v for v in list_inputs(listing)}
    assert set(found) == {"v__one.mp4", "episode-2", "v__missing.mp4"}
    assert found["episode-2"].uri == str((tmp_path / "v/deep/two.MKV").resolve())
    assert found["v__missing.mp4"].error and "missing.mp4" in found["v__missing.mp4"].error

    with pytest.raises(VcnError, match="no such folder"):
        list_inputs(tmp_path / "nowhere")


def test_same_source_needs_size_and_mtime_or_etag():
    local = VideoInput("/x.mp4", "x.mp4", 100, mtime=5.0)
    assert local.same_source({"size": 100, "mtime": 5.0, "etag": None})
    assert not local.same_source({"size": 100, "mtime": 6.0})
    assert not local.same_source({"size": 101, "mtime": 5.0})
    assert not local.same_source(None)
    s3 = VideoInput("s3://b/x.mp4", "x.mp4", 100, etag="abc")
    assert s3.same_source({"size": 100, "etag": "abc"}) and not s3.same_source({"size": 100, "etag": "abd"})


# ----- the nightly cycle on local folders ------------------------------------------------------------------------

def test_catalogue_done_failed_skipped_and_changed(tmp_path, face_clips):
    src = make_catalogue(tmp_path / "in", face_clips)
    out = tmp_path / "out"
    cfg = RunConfig()

    first = run_catalogue(str(src), str(out), cfg, stages=STAGES, log=quiet)
    assert first.counts == {"done": 2, "skipped": 0, "failed": 1}
    assert statuses(out) == {"a.mp4": "done", "show__b.mp4": "done", "broken.mp4": "failed"}
    manifest = json.loads((out / "manifest.json").read_text())
    broken = manifest["videos"]["broken.mp4"]
    assert "broken.mp4" in broken["error"] and "re-encode" in broken["error"]  # names the input and the fix
    done = manifest["videos"]["a.mp4"]
    assert done["size"] == (src / "a.mp4").stat().st_size and done["mtime"] == (src / "a.mp4").stat().st_mtime
    assert done["stages"] == STAGES and done["frames"] > 0 and done["seconds"] > 0
    # The per-video tables are those of `vcn run`, plus the source fingerprint.
    folder = out / "videos" / "a.mp4"
    assert {p.name for p in folder.iterdir()} == {"shots.parquet", "detections.parquet", "tracks.parquet",
                                                  "crops.parquet", "summary.json", "source.json"}
    dataset = read_catalogue(out)
    tracks = sum(pq.read_table(out / "videos" / v / "tracks.parquet").num_rows for v in ("a.mp4", "show__b.mp4"))
    assert dataset.num_rows == tracks > 0
    assert set(dataset.column("video_id").to_pylist()) == {"a.mp4", "show__b.mp4"}
    assert dataset.column("cluster_id").null_count == dataset.num_rows  # not clustered in this run

    written = (folder / "summary.json").stat().st_mtime_ns
    second = run_catalogue(str(src), str(out), cfg, stages=STAGES, log=quiet)
    assert second.counts == {"done": 0, "skipped": 2, "failed": 1}
    assert (folder / "summary.json").stat().st_mtime_ns == written  # skipped means untouched

    # A changed video (new bytes, new size and mtime) is processed again; the other stays skipped.
    shutil.copy(face_clips["c"], src / "a.mp4")
    third = run_catalogue(str(src), str(out), cfg, stages=STAGES, log=quiet)
    assert third.counts == {"done": 1, "skipped": 1, "failed": 1}
    assert json.loads((folder / "summary.json").read_text())["video_size"] == (src / "a.mp4").stat().st_size
    assert statuses(out)["a.mp4"] == "done" and statuses(out)["show__b.mp4"] == "skipped"
    assert len(json.loads((out / "manifest.json").read_text())["runs"]) == 3

    # Touching a file without changing it changes its mtime: processed again (the nightly rule is size+mtime).
    os.utime(src / "show" / "b.mp4", (time.time(), time.time() + 10))
    fourth = run_catalogue(str(src), str(out), cfg, stages=STAGES, log=quiet)
    assert fourth.counts == {"done": 1, "skipped": 1, "failed": 1}


def test_planning_trusts_the_output_over_a_stale_manifest(tmp_path, face_clips):
    src = make_catalogue(tmp_path / "in", face_clips)
    (src / "broken.mp4").unlink()
    out = tmp_path / "out"
    run_catalogue(str(src), str(out), stages=["detect"], log=quiet)
    store = OutputStore(out)
    videos = list_inputs(src)
    # Lost manifest (job killed before writing it): source.json in each output still proves the match.
    (out / "manifest.json").unlink()
    assert [p.action for p in plan_videos(videos, store, RunManifest.load(store), ["detect"])] == ["skip", "skip"]
    # More stages wanted than done: resume from the saved tables instead of starting over.
    assert [p.action for p in plan_videos(videos, store, RunManifest(), STAGES)] == ["resume", "resume"]
    # An output without summary.json (an interrupted S3 upload) is not complete.
    (out / "videos" / "a.mp4" / "summary.json").unlink()
    assert [p.action for p in plan_videos(videos, store, RunManifest(), ["detect"])] == ["run", "skip"]

    report = run_catalogue(str(src), str(out), stages=STAGES, log=quiet)
    assert report.counts == {"done": 2, "skipped": 0, "failed": 0}
    assert json.loads((out / "videos/show__b.mp4/summary.json").read_text())["stages_done"] == STAGES


def test_killed_job_loses_nothing_complete(tmp_path, face_clips):
    """SIGKILL the job after its first video is done; the re-run skips that video and finishes the rest."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        shutil.copy(face_clips["b"], src / f"v{i}.mp4")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "ray_jobs/index_catalogue.py"), "--input", str(src), "--output", str(out),
           "--stages", "detect,track", "--mode", "serial"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if ": done" in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    complete = {p.parent.name for p in (out / "videos").glob("*/summary.json")}
    assert len(complete) >= 1
    # Nothing half-written is visible: every video folder is complete or absent.
    assert {p.name for p in (out / "videos").iterdir() if not p.name.startswith(".")} == complete

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert statuses(out) == {f"v{i}.mp4": ("skipped" if f"v{i}.mp4" in complete else "done") for i in range(3)}
    assert "skipped" in rerun.stdout and "done" in rerun.stdout


# ----- S3 in and out (moto's server on 127.0.0.1) ---------------------------------------------------------------

def test_catalogue_on_s3_prefixes(s3_server, tmp_path, face_clips, monkeypatch):
    monkeypatch.setenv("VCN_VIDEO_CACHE", str(tmp_path / "cache"))
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="archive")
    s3.upload_file(str(face_clips["a"]), "archive", "videos/a.mp4")
    s3.upload_file(str(face_clips["b"]), "archive", "videos/show/b.mp4")
    s3.put_object(Bucket="archive", Key="videos/broken.mp4", Body=Path(face_clips["c"]).read_bytes()[:4096])
    s3.put_object(Bucket="archive", Key="videos/readme.txt", Body=b"not a video")

    found = list_inputs("s3://archive/videos/")
    assert [v.video_id for v in found] == ["a.mp4", "broken.mp4", "show__b.mp4"]
    assert all(v.etag and v.size > 0 and v.mtime is None for v in found)

    out = "s3://archive/catalogue"
    first = run_catalogue("s3://archive/videos", out, stages=STAGES, log=quiet)
    assert first.counts == {"done": 2, "skipped": 0, "failed": 1}
    keys = {o["key"] for o in storage.list_objects("s3://archive/catalogue/")}
    assert {"catalogue/manifest.json", "catalogue/videos/a.mp4/summary.json", "catalogue/videos/a.mp4/crops.parquet",
            "catalogue/videos/a.mp4/source.json", "catalogue/tracks/video_id=a.mp4/part-0.parquet"} <= keys
    assert not any(k.startswith("catalogue/videos/broken.mp4") for k in keys)
    assert statuses(out)["a.mp4"] == "done"
    assert RunManifest.load(OutputStore(out)).videos["a.mp4"]["etag"] == found[0].etag
    assert set(read_catalogue(out).column("video_id").to_pylist()) == {"a.mp4", "show__b.mp4"}
    assert not any((tmp_path / "cache").glob("*.mp4"))  # downloads are dropped once a video is done

    second = run_catalogue("s3://archive/videos", out, stages=STAGES, log=quiet)
    assert second.counts == {"done": 0, "skipped": 2, "failed": 1}

    # A new version of an object has a new ETag: processed again; its stale files are replaced.
    s3.upload_file(str(face_clips["c"]), "archive", "videos/show/b.mp4")
    third = run_catalogue("s3://archive/videos", out, stages=STAGES, log=quiet)
    assert third.counts == {"done": 1, "skipped": 1, "failed": 1}
    summary = json.loads(storage.get_bytes("s3://archive/catalogue/videos/show__b.mp4/summary.json"))
    assert summary["video_size"] == Path(face_clips["c"]).stat().st_size


def test_s3_publish_marks_complete_last(s3_server, tmp_path, monkeypatch):
    """Re-publishing first withdraws summary.json, uploads, removes stale files, then puts summary.json back."""
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="bucket-b")
    store = OutputStore("s3://bucket-b/out")
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text("{}")
    (old / "stale.parquet").write_bytes(b"1")
    store.publish(old, "v")
    assert store.complete_video_ids() == {"v"}
    new = tmp_path / "new"
    new.mkdir()
    (new / "summary.json").write_text('{"stages_done": ["detect"]}')
    (new / "shots.parquet").write_bytes(b"2")
    calls = []
    real_upload = storage.upload_folder

    def spy(folder, uri, last=(), client=None):
        calls.append(store.complete_video_ids())  # what a reader sees while the new files go up
        return real_upload(folder, uri, last=last, client=client)

    monkeypatch.setattr(storage, "upload_folder", spy)
    store.publish(new, "v")
    assert calls == [set()]
    keys = {o["key"] for o in storage.list_objects("s3://bucket-b/out/")}
    assert keys == {"out/videos/v/summary.json", "out/videos/v/shots.parquet"}
    assert store.summary("v") == {"stages_done": ["detect"]}
