"""The environment every in-process Ray of the tests starts with, restored afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def in_process_ray_env() -> Iterator[None]:
    """Token auth off (it is for real clusters; tests/test_ray_job.py runs one with a token) and Ray's OOM killer
    off (the machine is shared: it would count other people's processes against our workers)."""
    settings = {"RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
