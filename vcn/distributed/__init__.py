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


class PeakMemory:
    """Peak resident memory of this process over one piece of work, outside Ray's object store, in MiB:
    `with PeakMemory() as peak: ...`, then `peak.mib` (inside the block: the peak so far; after it: the block's peak,
    fixed at its exit, so memory held later is not counted in).

    Sampled: a daemon thread reads /proc/self/status every `period_s` (10 ms; ~50 us a read) and keeps the
    highest VmRSS - RssShmem, i.e. heap plus mapped files (interpreter, libraries, models, frames, tensors):
    what a Ray `memory` reservation must cover. The kernel's own peak (getrusage's ru_maxrss, VmHWM) is no
    use here: it is the worker's lifetime peak (Ray reuses a worker for many tasks, so one task's peak would
    carry into the next), and it counts the object-store pages the worker wrote or read (shared memory that Ray
    reserves separately as object_store_memory: a task that ray.put 320 MB showed VmHWM 483 MiB, 57 MiB of it
    heap). A spike shorter than one period can be missed; the frames, model calls and training steps measured
    here last far longer. Off Linux it reports ru_maxrss, the lifetime peak (an upper bound).
    """

    period_s = 0.01

    def __init__(self):
        self.peak_kib = 0
        self.samples = 0  # readings taken so far (the tests wait on it: a busy machine can delay the thread)
        self._stop = None

    def __enter__(self) -> "PeakMemory":
        import threading

        self.note()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="vcn-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.note()
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            self.note()

    def note(self) -> None:
        kib = _private_rss_kib()
        self.samples += 1
        if kib > self.peak_kib:
            self.peak_kib = kib

    @property
    def mib(self) -> float:
        if self._stop is not None and not self._stop.is_set():  # inside the block: take the latest reading too
            self.note()
        return round(self.peak_kib / 1024, 1)


def _private_rss_kib() -> int:
    """VmRSS - RssShmem of this process in KiB (Linux); elsewhere ru_maxrss, the lifetime peak."""
    try:
        with open("/proc/self/status") as f:
            fields = {k: v for k, _, v in (line.partition(":") for line in f) if k in ("VmRSS", "RssShmem")}
        return int(fields["VmRSS"].split()[0]) - int(fields.get("RssShmem", "0 kB").split()[0])
    except (OSError, KeyError, ValueError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak // 1024 if sys.platform == "darwin" else peak


def memory_bytes(mb: float) -> dict[str, int]:
    """Ray's `memory=` option for `mb` MiB, as kwargs to ray.remote/options/map_batches; {} for 0 (declare none)."""
    return {"memory": int(mb * 2**20)} if mb and mb > 0 else {}
