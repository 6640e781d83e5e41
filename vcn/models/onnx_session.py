"""One way to open an ONNX detector: onnxruntime on the GPU when it has CUDA, with torch's thread budget."""

from __future__ import annotations

from typing import Any


def onnx_session(model: bytes | str, threads: int | None = None, providers: list[str] | None = None) -> Any:
    """An onnxruntime InferenceSession for a model file path or its bytes.

    Providers default to CUDA then CPU, whichever this onnxruntime has. Threads default to torch's count:
    inside a Ray task that is fitted to the task's CPUs (vcn.distributed.fit_torch_threads), so a detector
    actor does not take every core of a node shared with other workers; elsewhere it is the machine's.
    """
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(torch.get_num_threads() if threads is None else threads)
    options.log_severity_level = 3  # unused-initializer warnings from exported files are noise here
    available = ort.get_available_providers()
    providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(model, options, providers=providers)
