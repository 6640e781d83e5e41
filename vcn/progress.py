"""Progress bars per stage on a terminal; silent when output is not a terminal or when asked to be quiet."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class Progress:
    """One bar per stage. Disabled instances accept the same calls and print nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    @classmethod
    def for_terminal(cls, enabled: bool = True) -> "Progress":
        return cls(enabled and sys.stderr.isatty())

    @contextmanager
    def stage(self, name: str, total: int | None) -> Iterator["Progress"]:
        if not self.enabled:
            yield self
            return
        from tqdm import tqdm

        unit = "frame" if name == "detect" else ("shot" if name == "track" else "step")
        self._bar = tqdm(total=total, desc=f"{name:>8}", unit=unit, file=sys.stderr, leave=True,
                         dynamic_ncols=True)
        try:
            yield self
        finally:
            self._bar.close()
            self._bar = None

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)
