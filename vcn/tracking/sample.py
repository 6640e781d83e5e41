"""Pick a track's crops by time: one every interval_s of track time from its first detection (METHOD.md 1.5)."""

from __future__ import annotations

import numpy as np

# Timestamps come from integer ticks times a time base; allow float rounding when comparing to the grid.
_EPS_S = 1e-6


def sample_crops(times: np.ndarray, interval_s: float = 0.5) -> np.ndarray:
    """Indices into a track's detections (times in seconds, ascending): the first detection, then the first
    detection at or after each further `interval_s` from it. By time, not frame count, so 25/30/60 fps and
    variable-frame-rate footage sample the same moments. A gap longer than the interval yields one crop
    after it (the grid is kept; missed grid points are not back-filled)."""
    times = np.asarray(times, np.float64)
    if times.size == 0:
        return np.zeros(0, np.int64)
    if interval_s <= 0:
        return np.arange(times.size, dtype=np.int64)
    if np.any(np.diff(times) < 0):
        raise ValueError("sample_crops: times must be in ascending order (sort the track's detections by frame)")
    elapsed = times - times[0]
    # Grid point each detection has reached; a detection is sampled when it is the first to reach a new one.
    reached = np.floor((elapsed + _EPS_S) / interval_s).astype(np.int64)
    first = np.ones(times.size, bool)
    first[1:] = reached[1:] != reached[:-1]
    return np.flatnonzero(first).astype(np.int64)
