"""Freed C-heap memory handed back to the OS between stages and before stage 2's big no-gradient passes (issue 13:
`vcn run` within 2 GB on the 82-s sitcom).

glibc's malloc keeps the memory a process frees for its own reuse instead of returning it, and serves every
request below a moving threshold (up to 32 MiB) from its heaps. Stage 2 allocates and frees tensors below that
size all the time (the activations of each 2-pair micro-batch, SER-FIQ's dropout masks). On the sitcom the heaps
held 240-470 MiB of such freed but resident memory whenever the teacher ran its no-gradient pass over a whole
64-crop batch, which adds ~490 MiB of activations of its own (most in blocks above the threshold: fresh
mappings): the run peaked at 2,194 MiB. With the free pages returned just before each such pass it peaked at
1,875 MiB, with the same clusters and embeddings bit for bit. Nothing here changes a computed value, only where
freed memory goes:

- `release_memory`: collect garbage, then `malloc_trim(0)`, which returns every whole free page of every heap.
  Called at the boundaries between stages, once what the last one freed (the detector, decoded frames,
  SER-FIQ's copies) is garbage.
- `trim_before_no_grad_passes`: while open, that trim runs just before each forward pass of the backbone
  without gradients (the teacher's pass at every training step, the embedding passes between rounds), so the
  micro-batches' freed memory is not resident under that pass. The micro-batches themselves keep reusing the
  heap: serving them from fresh mappings instead (a fixed 1 MiB M_MMAP_THRESHOLD) saved less (peak 2,023 MiB)
  and made a full training step 60% slower in page faults; one trim per step cost no measurable time.

With the default `ssl.backbone_layers=low_res` no pass of the whole backbone runs while finetuning (the trunk and
the tail are other modules), so `trim_before_no_grad_passes` acts only when every layer trains (`all`, the paper
preset), where the figures above were measured. Trimming before every low_res step instead was measured in session
15 (the sitcom's stage 2 on its own, 2 cores): peak 1,677 MiB against 1,717 MiB, 7% more time in page faults; not
done. Stage 2's peak there is SER-FIQ's pass (1,659 MiB before `release_memory`) and the heap the rounds keep.

Both do nothing where the C library is not glibc (macOS, musl, Windows).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
from typing import Iterator


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process, libc's among them
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "malloc_trim")):
        return None
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def release_memory() -> bool:
    """Collect unreachable Python objects, then give the heaps' free pages back to the OS (malloc_trim(0)).

    True when glibc returned memory; False when it had none to return or the C library is not glibc."""
    gc.collect()
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


@contextlib.contextmanager
def trim_before_no_grad_passes(module_type: type) -> Iterator[None]:
    """While open, give the heaps' free pages back just before every forward pass of a module of exactly
    `module_type` (the backbone's class: the student's and teacher's copies of it share it) that runs with
    gradients off. A global forward pre-hook (torch's register_module_forward_pre_hook), removed on exit."""
    libc = _glibc()
    if libc is None:
        yield
        return
    import torch

    def trim(module, _args) -> None:
        if type(module) is module_type and not torch.is_grad_enabled():
            libc.malloc_trim(0)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(trim)
    try:
        yield
    finally:
        handle.remove()
