"""How close two different people come by chance: the bound the track matching and the person linking stay below.

Most pairs of tracks in a video, and nearly all pairs of clusters of different videos in a catalogue, are two
different people; the few pairs of one person are the close outliers a matching rule is looking for. The median
and the MAD of all the pair distances describe that bulk without being moved by the outliers, and over N pairs
the closest one drawn from the bulk is expected near the bulk's 1/(N+1) quantile. A pair closer than that is
closer than chance puts two strangers. No number is chosen: N is how many pairs there are.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

# The MAD of a Normal sample times this estimates its standard deviation.
MAD_TO_SD = 1.4826


def chance_closest(distances: np.ndarray, pairs: int | None = None) -> float:
    """The distance below which fewer than one of `pairs` pairs (default: one per distance given) is expected to
    fall, when pairs are drawn from the bulk of `distances` (a Normal fitted by median and MAD). NaN for fewer
    than two distances."""
    d = np.asarray(distances, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return math.nan
    n = len(d) if pairs is None else max(int(pairs), 1)
    median = float(np.median(d))
    spread = MAD_TO_SD * float(np.median(np.abs(d - median)))
    return median - float(norm.isf(1.0 / (n + 1))) * spread
