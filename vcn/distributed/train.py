"""Stages 2-3 of one video under Ray Train: TorchTrainer runs `cluster_crops` on N workers (DDP).

`vcn.ssl.train.finetune` is DDP-ready: when torch.distributed is initialised (Ray Train does it: gloo on CPU,
nccl on GPU) it wraps the student in DistributedDataParallel, every rank draws the same pairs from the same
seed and trains on its shard, and the loss centre is all-reduced, so all ranks end each step with identical
student, teacher and centre. Everything after training (embeddings, matching, Algorithm 1) is deterministic
given those weights, so every rank computes the same clusters; rank 0 hands its tables back.

What DDP changes against one worker: each rank runs `ssl.batch_size` pairs per step, so N workers take steps of
N x batch_size pairs (fewer, larger steps) and augmentations are drawn per rank. The trained weights therefore
differ from a 1-worker run; the clusters of a video whose identities are well separated do not.
"""

from __future__ import annotations

import tempfile
import uuid
from typing import Any

import pyarrow as pa

from vcn.config import RunConfig
from vcn.distributed import PeakMemory, fit_torch_threads, memory_bytes


class ResultBox:
    """A tiny actor rank 0 drops its result into (results never go through Train's metrics channel), and every
    rank its peak resident memory."""

    def __init__(self):
        self.value = None
        self.peaks: dict[int, float] = {}

    def put(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value

    def put_peak(self, rank: int, mib: float) -> None:
        self.peaks[rank] = mib

    def get_peaks(self) -> dict[int, float]:
        return self.peaks


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker, inside the process group Ray Train set up."""
    import ray
    import ray.train

    from vcn.pipeline import cluster_crops

    fit_torch_threads()
    with PeakMemory() as peak:
        cfg = RunConfig.from_dict(config["cfg"])
        crops, tracks, detections = ray.get(config["inputs"])
        result = cluster_crops(crops, tracks, detections, cfg, config["video_id"])
    rank = ray.train.get_context().get_world_rank()
    ray.get(config["box"].put_peak.remote(rank, peak.mib))
    if rank == 0:
        ray.get(config["box"].put.remote(result))


def train_gpus(cfg: RunConfig) -> float:
    """GPUs per Ray Train worker; -1 (the default) follows detection: one GPU on a GPU job, else none."""
    d = cfg.distributed
    if d.train_gpus >= 0:
        return float(d.train_gpus)
    return 1.0 if d.detect_gpus > 0 else 0.0


def cluster_on_ray(crops: pa.Table, tracks: pa.Table, detections: pa.Table, cfg: RunConfig, video_id: str,
                   workers: int | None = None, gpus_per_worker: float | None = None,
                   peaks: dict[int, float] | None = None) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """`cluster_crops` on `workers` Ray Train workers (default cfg.distributed.train_workers); rank 0's result.

    With 0 workers it runs `cluster_crops` in this process. GPUs per worker default to
    `train_gpus(cfg)`; with GPUs the process group uses nccl, otherwise gloo. Each worker reserves
    distributed.cluster_memory_mib; `peaks`, when given, receives each rank's peak resident memory (MiB).
    """
    import ray
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    workers = cfg.distributed.train_workers if workers is None else workers
    gpus = train_gpus(cfg) if gpus_per_worker is None else gpus_per_worker
    if workers <= 0:
        from vcn.pipeline import cluster_crops

        return cluster_crops(crops, tracks, detections, cfg, video_id)
    box = ray.remote(num_cpus=0)(ResultBox).remote()
    try:
        inputs = ray.put((crops, tracks, detections))
        resources = {"GPU": gpus} if gpus > 0 else {"CPU": 1}
        resources.update(memory_bytes(cfg.distributed.cluster_memory_mib))
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"cfg": cfg.to_dict(), "inputs": inputs, "box": box, "video_id": video_id},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
            # Nothing is checkpointed; the storage only holds Train's run records (node-local is enough).
            run_config=TrainRunConfig(name=f"vcn-{video_id}-{uuid.uuid4().hex[:8]}",
                                      storage_path=tempfile.gettempdir() + "/vcn-ray-train"),
        )
        trainer.fit()
        result = ray.get(box.get.remote())
        if peaks is not None:
            peaks.update(ray.get(box.get_peaks.remote()))
    finally:
        ray.kill(box)
    if result is None:
        raise RuntimeError(f"{video_id}: Ray Train finished without a result from rank 0")
    return result
