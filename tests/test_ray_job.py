"""The catalogue job as users run it: a real `ray start --head` on 127.0.0.1 with token authentication, `ray job
submit --working-dir` of ray_jobs/index_catalogue.py, S3 input and output on moto's server on 127.0.0.1.

Token auth (on by default in Ray 2.60) stays on: the test makes its own token and hands it to `ray start` and
`ray job submit` as RAY_AUTH_MODE=token + RAY_AUTH_TOKEN, so nothing is written to ~/.ray and a request without
the token is shown to be refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from tests.ports import free_ports, worker_port_range
from vcn import storage

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on 127.0.0.1, every port chosen free (other Ray instances may share the machine).

    --block keeps the head in the foreground, so the test stops exactly the processes it started by
    signalling that one process (never `ray stop`, which stops every Ray on the machine).
    """
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           # The machine is shared: Ray's OOM killer would count other people's processes against our workers.
           "RAY_memory_monitor_refresh_ms": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env, node_manager, object_manager = free_ports(9)
    worker_low, worker_high = worker_port_range()
    temp_dir = tempfile.mkdtemp(prefix="/tmp/vcnray")  # short: Ray's unix socket paths must fit 107 bytes
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
           "--runtime-env-agent-port", str(runtime_env), "--node-manager-port", str(node_manager),
           "--object-manager-port", str(object_manager), "--min-worker-port", str(worker_low),
           "--max-worker-port", str(worker_high), "--num-cpus", "2", "--temp-dir", temp_dir,
           "--disable-usage-stats"]
    log = open(Path(temp_dir) / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True,
                                   text=True, timeout=60)
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray head did not come up: {(Path(temp_dir) / 'head.log').read_text()[-3000:]}")
            time.sleep(2)
        yield {"address": address, "env": env, "token": token}
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head stops every process it started
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # the session start_new_session gave it: only our processes
            head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(head: dict, s3_endpoint: str, *args: str) -> subprocess.CompletedProcess:
    runtime_env = {"env_vars": {"VCN_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                                "RAY_memory_monitor_refresh_ms": "0"}}
    cmd = [RAY, "job", "submit", "--address", head["address"], "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--",
           sys.executable, "ray_jobs/index_catalogue.py", *args]
    # `ray job list` answers before the head's dashboard agent has registered; until it has, a submission is
    # refused with "No available agent" (seen on a loaded 2-core machine). Ray says to try again: do so.
    deadline = time.time() + 120
    while True:
        proc = subprocess.run(cmd, env=head["env"], capture_output=True, text=True, timeout=400)
        if "No available agent" not in proc.stderr + proc.stdout or time.time() > deadline:
            return proc
        time.sleep(3)


def manifest_counts(run: dict) -> dict[str, int]:
    return run["counts"]


def test_token_is_required(ray_head):
    env = {k: v for k, v in ray_head["env"].items() if k != "RAY_AUTH_TOKEN"}
    env["RAY_AUTH_TOKEN"] = "0" * 64
    refused = subprocess.run([RAY, "job", "list", "--address", ray_head["address"]], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0


def test_ray_job_submit_catalogue_on_s3(ray_head, s3_server, face_clips):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="archive")
    s3.upload_file(str(face_clips["a"]), "archive", "videos/a.mp4")
    s3.upload_file(str(face_clips["b"]), "archive", "videos/show/b.mp4")
    s3.put_object(Bucket="archive", Key="videos/broken.mp4", Body=Path(face_clips["c"]).read_bytes()[:4096])
    args = ["--input", "s3://archive/videos/", "--output", "s3://archive/catalogue/", "--stages", "detect,track",
            "--train-workers", "1", "--detect-gpus", "0", "--set", "distributed.frames_per_unit=10"]

    first = submit(ray_head, s3_server, *args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "succeeded" in (first.stdout + first.stderr).lower()
    for line in ("a.mp4: done", "show__b.mp4: done", "broken.mp4: failed", "videos / minute"):
        assert line in first.stdout, first.stdout[-4000:]
    manifest = json.loads(storage.get_bytes("s3://archive/catalogue/manifest.json"))
    assert manifest_counts(manifest["runs"][-1]) == {"done": 2, "skipped": 0, "failed": 1}
    assert {v: e["status"] for v, e in manifest["videos"].items()} == {
        "a.mp4": "done", "show__b.mp4": "done", "broken.mp4": "failed"}
    summary = json.loads(storage.get_bytes("s3://archive/catalogue/videos/a.mp4/summary.json"))
    assert summary["executor"] == "ray-units" and summary["stages_done"] == ["detect", "track"]
    assert storage.head_object("s3://archive/catalogue/tracks/video_id=show__b.mp4/part-0.parquet")

    second = submit(ray_head, s3_server, *args)
    assert second.returncode == 0, second.stdout[-4000:]
    manifest = json.loads(storage.get_bytes("s3://archive/catalogue/manifest.json"))
    assert manifest_counts(manifest["runs"][-1]) == {"done": 0, "skipped": 2, "failed": 1}

    # (A changed video being processed again is tested without Ray in tests/test_catalogue.py.)


def test_bad_input_is_a_usage_error(tmp_path):
    """Without Ray at all: a missing input exits 2 with a message naming it and the fix."""
    result = subprocess.run([sys.executable, str(REPO / "ray_jobs/index_catalogue.py"), "--input",
                             str(tmp_path / "nope"), "--output", str(tmp_path / "out"), "--mode", "serial"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "nope" in result.stderr and "folder of videos" in result.stderr
