"""The Ray layer: moves vcn's stage functions onto Ray Data, Ray actors, Ray Train and Ray tasks, unchanged.

- `scan`: videos cut into frame-range work units; decoding and shot scoring in CPU tasks, face detection in an
  actor pool (GPUs declared from config); unit results merged into the tables `scan_video` gives.
- `track`: tracking actors, one shot per call (sequential inside a shot, parallel across shots).
- `train`: the per-video finetune and clustering under Ray Train's TorchTrainer (DDP; gloo on CPU, nccl on GPU).
- `blocks`: Algorithm 1's cluster-pair matrix computed by Ray tasks in blocks.
- `executors`: the catalogue executors `ray_units_executor` and `ray_videos_executor` for vcn.catalogue.
"""

from __future__ import annotations


def fit_torch_threads() -> int | None:
    """Give torch as many threads as CPUs Ray assigned to the calling task or actor (at least 1); returns that.

    Torch otherwise takes every core of the node in each worker process, so several workers on one node
    oversubscribe it (on a shared 2-core machine, 2 threads in each of 2 workers ran 8x slower than 1 each).
    Called once at the start of every task and actor that runs torch. Outside a Ray worker (the driver, a
    test calling the code directly) it changes nothing and returns None.
    """
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    import torch

    threads = max(1, int(context.get_assigned_resources().get("CPU", 0)))
    torch.set_num_threads(threads)
    return threads
