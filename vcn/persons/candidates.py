"""Nearest clusters of OTHER videos: exact (blocked matrix products) or through a vector index, re-scored exactly.

Up to EXACT_LIMIT index rows the search is exact; above it (`uses_index`), candidates come from a faiss
inverted-file index (IVF-Flat, inner product on unit vectors, 4 sqrt(n) lists, an eighth of them probed), and every
candidate's similarity is recomputed exactly in float32 before sorting, so an approximate index can miss a
neighbour but never misorder or misscore one.
The exact search re-scores its candidates the same way: a matrix product's last bits depend on the other rows in
it (BLAS blocking, threads), a pair's re-score does not, so a query's neighbours are the same whichever block of
queries it is searched in (vcn.persons.link searches in blocks, on Ray tasks for a large catalogue).
benchmarks/persons_scale.py measures the recall of this against the exact search.
"""

from __future__ import annotations

import math

import numpy as np

# Below this many index rows the exact search costs less than building a vector index.
EXACT_LIMIT = 50_000
BLOCK = 2048
EXACT_CELLS = 32_000_000      # similarities held at once by the exact search (128 MB of float32)


def exact_neighbours(queries: np.ndarray, query_video: np.ndarray, base: np.ndarray, base_video: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows [q, k], similarities [q, k]) of each query's k most similar base rows of another video, best
    first; rows are -1 (similarity -inf) where fewer exist."""
    q = len(queries)
    if q == 0 or len(base) == 0 or k == 0:
        return np.full((q, k), -1, np.int64), np.full((q, k), -np.inf, np.float32)
    # 2k from the matrix product, then the k best re-scored pair by pair (module docstring): the margin covers
    # the product's last-bit error at the k-th.
    kk = min(2 * k, len(base))
    found = np.full((q, kk), -1, np.int64)
    step = max(1, min(BLOCK, EXACT_CELLS // len(base)))     # bounded memory: a block is step x len(base)
    for s in range(0, q, step):
        block = queries[s:s + step] @ base.T
        block[query_video[s:s + step, None] == base_video[None, :]] = -np.inf
        top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
        found[s:s + step] = np.where(np.isfinite(np.take_along_axis(block, top, axis=1)), top, -1)
    # By row: argpartition's order follows the product's last bits, and the re-score keeps it among equal
    # similarities (the rule takes the first of a video).
    found.sort(axis=1)
    return rescore(queries, query_video, base, base_video, found, k)


def ivf_index(base: np.ndarray, nprobe: int | None = None):
    """A faiss IVF-Flat index (inner product) over `base`, trained on a fixed sample, probing `nprobe` lists
    (default an eighth); built once per catalogue and searched block by block (`ivf_search`)."""
    import faiss

    n, d = base.shape
    nlist = int(max(1, min(4 * math.sqrt(n), n // 39)))     # faiss wants >= 39 training points per list
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = base[rng.choice(n, min(n, 64 * nlist), replace=False)] if n > 64 * nlist else base
    index.train(np.ascontiguousarray(train, np.float32))
    index.add(np.ascontiguousarray(base, np.float32))
    index.nprobe = nprobe or max(1, nlist // 8)
    return index


def ivf_search(index, queries: np.ndarray, query_video: np.ndarray, base: np.ndarray, base_video: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Like `exact_neighbours`, with candidates from `index` (an `ivf_index` over `base`), re-scored exactly."""
    import faiss

    # faiss scores the lists to probe with BLAS when a thread's share of the queries reaches this threshold, and
    # BLAS's last bits depend on that share (module docstring): per query, always, so that a near-tie of two
    # lists is decided the same way in every block and on any number of threads. It costs little: the lists
    # are ~4 sqrt(n) vectors, the probed ones n / 8.
    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
    try:
        # Ask for more than k: the query's own video may hold some of the nearest rows.
        _, found = index.search(np.ascontiguousarray(queries, np.float32), 2 * k)
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    return rescore(queries, query_video, base, base_video, found, k)


def ivf_neighbours(queries: np.ndarray, query_video: np.ndarray, base: np.ndarray, base_video: np.ndarray,
                   k: int, nprobe: int | None = None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like `exact_neighbours`, with candidates from a faiss IVF-Flat index over `base`, re-scored exactly."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    return ivf_search(ivf_index(base, nprobe), queries, query_video, base, base_video, k)


def rescore(queries: np.ndarray, query_video: np.ndarray, base: np.ndarray, base_video: np.ndarray,
            found: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities of candidate rows (-1 = none), own-video rows dropped, best k first."""
    rows = np.full((len(queries), k), -1, np.int64)
    sims = np.full((len(queries), k), -np.inf, np.float32)
    kk = min(k, found.shape[1])
    for s in range(0, len(queries), BLOCK):
        f = found[s:s + BLOCK]
        valid = f >= 0
        safe = np.where(valid, f, 0)
        sim = np.einsum("qd,qkd->qk", queries[s:s + BLOCK], base[safe]).astype(np.float32)
        sim[~valid | (base_video[safe] == query_video[s:s + BLOCK, None])] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
        rows[s:s + BLOCK, :kk] = np.take_along_axis(safe, order, axis=1)
        sims[s:s + BLOCK, :kk] = np.take_along_axis(sim, order, axis=1)
    rows[~np.isfinite(sims)] = -1
    return rows, sims


def uses_index(n_base: int, method: str = "auto") -> bool:
    """Whether a search of `n_base` rows goes through an IVF index: 'auto' above EXACT_LIMIT, or 'ivf'."""
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"method must be auto, exact or ivf, not {method!r}")
    return method == "ivf" or (method == "auto" and n_base > EXACT_LIMIT)
