"""Per-group means of rows (crops by track, tracks by cluster): one sum-and-count for every caller."""

from __future__ import annotations

import numpy as np


def group_means(rows: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct groups sorted, the float64 mean of each group's rows), for `rows` [N, d] and a group per row."""
    ids, index = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.zeros((len(ids), rows.shape[1]))
    np.add.at(sums, index, rows)
    return ids, sums / np.bincount(index, minlength=len(ids))[:, None]
