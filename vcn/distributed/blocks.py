"""Algorithm 1's cluster-pair matrix computed by Ray tasks in blocks, for track counts one process cannot hold.

Sim[j, k] = -(P_j . L_k + P_k . L_j) / 2 (vcn.clustering.algorithm1.cluster_pair_losses). Block (a, b) needs
only rows a and b of P and L, so the [C, K] matrices go to the object store once and each task computes one
block of the upper triangle. `cluster_pair_losses_blocked` assembles the dense matrix (the same values as the
single-process function); `matching_pairs_blocked` keeps only the matched pairs, so memory stays linear in
the matches instead of quadratic in the clusters.
"""

from __future__ import annotations

import numpy as np

from vcn.clustering.algorithm1 import cluster_pair_losses, pair_matches


def block_ranges(n: int, block: int) -> list[tuple[int, int]]:
    block = max(1, int(block))
    return [(s, min(n, s + block)) for s in range(0, n, block)]


def block_losses(p: np.ndarray, l: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Sim[rows, cols] with the single-process formula's arithmetic (float64 products, then the mean)."""
    (a0, a1), (b0, b1) = rows, cols
    pa, la = np.asarray(p[a0:a1], np.float64), np.asarray(l[a0:a1], np.float64)
    pb, lb = np.asarray(p[b0:b1], np.float64), np.asarray(l[b0:b1], np.float64)
    return -0.5 * (pa @ lb.T + (pb @ la.T).T)


def _block_task(p, l, rows, cols, thresholds=None, merge_rule="either"):
    sim = block_losses(p, l, rows, cols)
    if thresholds is None:
        return rows, cols, sim
    t = np.asarray(thresholds)
    match = pair_matches(sim, t[rows[0]:rows[1]], t[cols[0]:cols[1]], merge_rule)
    if rows == cols:
        match &= np.triu(np.ones_like(match, dtype=bool), 1)  # each unordered pair once, no self pairs
    jj, kk = np.nonzero(match)
    return rows, cols, (jj + rows[0], kk + cols[0], sim[jj, kk])


def _blocks(n: int, block: int):
    ranges = block_ranges(n, block)
    return [(ranges[i], ranges[j]) for i in range(len(ranges)) for j in range(i, len(ranges))]


def cluster_pair_losses_blocked(p_means: np.ndarray, l_means: np.ndarray, block: int = 2048,
                                max_retries: int = 2) -> np.ndarray:
    """The dense [C, C] Sim matrix of `cluster_pair_losses`, one Ray task per upper-triangle block."""
    import ray

    p = np.asarray(p_means, np.float64)
    l = np.asarray(l_means, np.float64)
    n = len(p)
    if n == 0:
        return np.zeros((0, 0))
    if n <= block:
        return cluster_pair_losses(p, l)
    task = ray.remote(num_cpus=1, max_retries=max_retries)(_block_task)
    p_ref, l_ref = ray.put(p), ray.put(l)
    refs = [task.remote(p_ref, l_ref, rows, cols) for rows, cols in _blocks(n, block)]
    out = np.empty((n, n))
    for (a0, a1), (b0, b1), sim in ray.get(refs):
        out[a0:a1, b0:b1] = sim
        out[b0:b1, a0:a1] = sim.T
    return out


def matching_pairs_blocked(p_means: np.ndarray, l_means: np.ndarray, thresholds: np.ndarray, block: int = 2048,
                           max_retries: int = 2, merge_rule: str = "either") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs j < k that Algorithm 1's match rule (`pair_matches`, cluster.merge_rule) accepts, and their Sim values.

    The same pairs as thresholding the dense matrix, without ever holding it: each task returns its matches.
    """
    import ray

    p = np.asarray(p_means, np.float64)
    l = np.asarray(l_means, np.float64)
    t = np.asarray(thresholds, np.float64)
    n = len(p)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    blocks = _blocks(n, block)
    if len(blocks) == 1:
        results = [_block_task(p, l, *blocks[0], thresholds=t, merge_rule=merge_rule)]
    else:
        task = ray.remote(num_cpus=1, max_retries=max_retries)(_block_task)
        p_ref, l_ref, t_ref = ray.put(p), ray.put(l), ray.put(t)
        results = ray.get([task.remote(p_ref, l_ref, rows, cols, t_ref, merge_rule) for rows, cols in blocks])
    jj = np.concatenate([r[2][0] for r in results]).astype(np.int64)
    kk = np.concatenate([r[2][1] for r in results]).astype(np.int64)
    sim = np.concatenate([r[2][2] for r in results])
    order = np.lexsort((kk, jj))
    return jj[order], kk[order], sim[order]
