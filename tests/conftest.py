"""Shared test fixtures: a real S3-compatible server on 127.0.0.1 (moto's server mode), a private model cache and
a local Ray cluster of two simulated nodes."""

from __future__ import annotations

import urllib.request

import pytest

try:  # tests/*.py: top-level modules when tests/ is on sys.path, tests.* when tests/ is a package
    from ray_env import in_process_ray_env
except ImportError:
    from tests.ray_env import in_process_ray_env


@pytest.fixture(scope="session")
def _moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_server(_moto_endpoint, monkeypatch):
    """Endpoint URL of an empty S3 server on 127.0.0.1; boto3 clients made in the test (and vcn.storage) use it."""
    # Wipe buckets left by earlier tests: the server process lives for the whole session.
    urllib.request.urlopen(urllib.request.Request(f"{_moto_endpoint}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("VCN_S3_ENDPOINT_URL", _moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", _moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return _moto_endpoint


@pytest.fixture
def vcn_cache(tmp_path, monkeypatch):
    """An empty VCN_CACHE_DIR private to one test."""
    path = tmp_path / "vcn-cache"
    monkeypatch.setenv("VCN_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def face_clips(tmp_path_factory):
    """Three short real-face videos (320x180, 10 fps, 2-3 shots each), rendered once per session from the
    photos in the insightface wheel: {"a": path, "b": path, "c": path}. Copy them; never modify them."""
    from vcn.demo import demo_photos
    from vcn.render import Shot, render_video

    group, portrait = demo_photos()
    h, w = group.image.shape[:2]
    left = group.crop(0, 0, int(w * 0.5), h, name="group[left]")
    right = group.crop(int(w * 0.5), 0, w, h, name="group[right]")
    plans = {
        "a": [Shot([portrait], duration_s=1.2, zoom=(1.0, 1.2), photo_scales=[0.7]),
              Shot([left], duration_s=1.4, zoom=(1.0, 1.1), background=((40, 90, 160), (160, 40, 40)))],
        "b": [Shot([right], duration_s=1.3, zoom=(1.1, 1.0)),
              Shot([portrait], duration_s=1.0, photo_scales=[0.7], background=((30, 30, 30), (200, 200, 200))),
              Shot([left], duration_s=1.0, zoom=(1.2, 1.2), pan=((0.2, 0.5), (0.6, 0.5)))],
        "c": [Shot([group], duration_s=1.6, zoom=(1.0, 1.3))],
    }
    root = tmp_path_factory.mktemp("face_clips")
    return {name: render_video(shots, root / f"{name}.mp4", size=(320, 180), fps=10, seed=i).video
            for i, (name, shots) in enumerate(plans.items())}


@pytest.fixture(scope="module")
def two_nodes():
    """A Ray cluster of two simulated nodes with one CPU each (the machine's 2-core budget)."""
    import ray
    from ray.cluster_utils import Cluster

    # Each node declares 8 GiB of Ray `memory` whatever the machine has free (Ray's own guess is ~70% of the
    # free memory at start), so the executors' default reservations (distributed.*_memory_mib, up to 3 GiB a
    # task) are schedulable on a small or busy machine too; the reservation is logical, nothing is allocated.
    with in_process_ray_env():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "memory": 8 * 2**30})
        cluster.add_node(num_cpus=1, memory=8 * 2**30)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        try:
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            assert ray.cluster_resources()["memory"] == 2 * 8 * 2**30
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
