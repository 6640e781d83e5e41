"""The linking rule between clusters of different videos; it sets its one threshold from the catalogue itself.

Two clusters q and r of different videos are linked when
  1. one of them is the other's nearest cluster in its video, and the other is too or is within the threshold
     of the cluster that is: when a video split a person in two, both pieces have that person's cluster r of
     another video as their nearest, but r has only one of them as its nearest; the other piece links too when
     it is within the threshold of the one r prefers (the link will put those two in one person, so they must
     pass the same test). Two look-alikes of one video that the video's clustering kept apart, each the nearest
     of its own twin in another video, do not cross-link: neither is the other's nearest. And
  2. their cosine distance is below the catalogue's threshold, the smaller of
     - the closest two clusters of one video whose faces share a frame (two faces seen together are two people),
       over every video, and
     - how close two clusters of different videos come by chance (vcn.chance over the distances of the
       cross-video pairs: nearly all of them are two different people).
     A catalogue with neither (fewer than three clusters) makes no automatic link.

No number is chosen by hand. The threshold does not come from pairs of one video's clusters that never share a
frame: those are the same person whenever the video's clustering split someone (vcn splits more often than it
merges), and their distances had pulled the threshold down to 0.19-0.35 (README "People across the catalogue").
Chaining is checked in vcn.persons.assign.

The new rows are linked in blocks of BLOCK_QUERIES (`links_of_block`); with Ray up and more than RAY_MIN_QUERIES
new rows, one Ray task per block, the catalogue's arrays and IVF index shared through the object store. A query's
links do not depend on its block (vcn.persons.candidates), so both ways give the same links.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vcn.chance import chance_closest
from vcn.persons.candidates import BLOCK, EXACT_CELLS, exact_neighbours, ivf_index, ivf_search, uses_index

# Neighbours per query looked at: the rule only ever uses the nearest few clusters (anything further is beyond
# the threshold in practice).
K = 16
# Cross-video pairs drawn to estimate the chance bound when there are more (a fixed seed keeps an index's
# threshold the same from run to run); the median and MAD of 200,000 pairs vary by about 0.001.
CHANCE_SAMPLE = 200_000
# New rows linked at a time, one Ray task's work: about 25 s on one core in an index of 1,000,000 rows
# (benchmarks/results/persons_scale.json: 100,000 in 242 s on two), so 100,000 new rows spread over 20 tasks,
# while a task's fixed cost (reading the index back from its bytes, sorting the video codes) stays near a second.
BLOCK_QUERIES = 5_000
# Below this many new rows linking stays in this process even with Ray up: it takes seconds (10,000 new rows in an
# index of 100,000: 8 s on one core, benchmarks/persons_scale.py), about what starting the tasks' workers and
# copying the catalogue and its index into the object store cost (2-3 s on a fresh local Ray); a nightly
# update adds hundreds to thousands.
RAY_MIN_QUERIES = 20_000


@dataclass
class Threshold:
    """The catalogue's link threshold (cosine distance) and the evidence it came from."""

    distance: float | None        # None: no evidence yet, so no automatic link
    source: str                   # shared_frame | chance | none
    video_id: str | None = None   # shared_frame: the video holding the pair that set it
    pairs: int = 0                # the pairs it came from (sharing a frame, or of different videos)

    def to_dict(self) -> dict[str, Any]:
        return {"distance": None if self.distance is None else round(float(self.distance), 6),
                "source": self.source, "video_id": self.video_id, "pairs": self.pairs}


@dataclass
class VideoEvidence:
    """Per video: the closest pair of its clusters, and of those sharing a frame (cosine distance)."""

    min_cooccurring: float = math.nan
    n_cooccurring: int = 0
    min_within: float = math.nan
    n_within: int = 0


def video_evidence(embedding: np.ndarray, cooccurring: list[tuple[int, int]]) -> tuple[VideoEvidence, np.ndarray]:
    """(evidence, each cluster's distance to its nearest other cluster of the video, NaN when alone)."""
    k = len(embedding)
    own = np.full(k, np.nan, np.float32)
    ev = VideoEvidence()
    if k < 2:
        return ev, own
    dist = 1.0 - embedding @ embedding.T
    np.fill_diagonal(dist, np.inf)
    own[:] = dist.min(axis=1)
    ev.min_within, ev.n_within = float(dist.min()), k * (k - 1) // 2
    if cooccurring:
        i, j = np.array(cooccurring).T
        ev.min_cooccurring, ev.n_cooccurring = float(dist[i, j].min()), len(cooccurring)
    return ev, own


def cross_video_chance(embedding: np.ndarray, video: np.ndarray) -> tuple[float, int]:
    """(vcn.chance bound of the cross-video pair distances, the number of cross-video pairs); NaN when fewer
    than two such pairs. From every pair when there are few, else from at most CHANCE_SAMPLE random ones."""
    n = len(embedding)
    counts = np.bincount(video) if n else np.zeros(0, np.int64)
    pairs = int((n * n - int((counts.astype(np.int64) ** 2).sum())) // 2)
    if pairs < 2:
        return math.nan, pairs
    rng = np.random.default_rng(0)
    if n * (n - 1) // 2 <= 4 * CHANCE_SAMPLE:
        i, j = np.triu_indices(n, 1)
    else:
        i, j = rng.integers(n, size=(2, 4 * CHANCE_SAMPLE))
    keep = np.flatnonzero(video[i] != video[j])
    if len(keep) > CHANCE_SAMPLE:
        keep = rng.choice(keep, CHANCE_SAMPLE, replace=False)
    i, j = i[keep], j[keep]
    distances = 1.0 - np.einsum("ij,ij->i", embedding[i], embedding[j])
    return chance_closest(distances, pairs), pairs


def catalogue_threshold(evidence: dict[str, VideoEvidence], embedding: np.ndarray, video: np.ndarray) -> Threshold:
    """The smaller of the closest two clusters of one video sharing a frame (over the catalogue) and the chance
    bound of the cross-video pairs (None: neither exists yet). embedding: unit rows; video: int code per row."""
    shared = {v: e for v, e in evidence.items() if e.n_cooccurring > 0}
    chance, cross_pairs = cross_video_chance(embedding, video)
    if shared:
        v = min(shared, key=lambda k: (shared[k].min_cooccurring, k))
        closest = shared[v].min_cooccurring
        if math.isnan(chance) or closest <= chance:
            return Threshold(closest, "shared_frame", v, int(sum(e.n_cooccurring for e in shared.values())))
    if math.isnan(chance):
        return Threshold(None, "none")
    return Threshold(chance, "chance", None, cross_pairs)


@dataclass
class Links:
    """Accepted links (row pairs i < j of the cluster arrays) with their cosine distances, nearest first."""

    i: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    j: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    distance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.i)


def links_of_block(embedding: np.ndarray, video: np.ndarray, queries: np.ndarray, distance: float, k: int = K,
                   index=None) -> dict[tuple[int, int], float]:
    """The rule's links of these query rows, {(i, j), i < j: cosine distance}; exact search, or `index` (ivf_index)."""
    min_sim = 1.0 - distance
    if index is None:
        rows, sims = exact_neighbours(embedding[queries], video[queries], embedding, video, k)
    else:
        rows, sims = ivf_search(index, embedding[queries], video[queries], embedding, video, k)
    # Condition 2, then condition 1 both ways: q's nearest in r's video is the first of that video in q's list.
    pairs: dict[tuple[int, int], float] = {}
    order = np.argsort(video, kind="stable")
    starts = np.searchsorted(video[order], np.arange(video.max() + 2))

    def is_or_near(row: int, nearest: int) -> bool:
        return nearest == row or float(embedding[row] @ embedding[nearest]) > min_sim

    for qi, q in enumerate(queries.tolist()):
        nearest_in: dict[int, int] = {}
        own_rows = order[starts[video[q]]:starts[video[q] + 1]]
        for r, s in zip(rows[qi].tolist(), sims[qi].tolist()):
            if r < 0 or s <= min_sim:
                break
            nearest_of_q = nearest_in.setdefault(int(video[r]), r)
            nearest_of_r = int(own_rows[int(np.argmax(embedding[own_rows] @ embedding[r]))])
            if (nearest_of_q == r or nearest_of_r == q) and is_or_near(r, nearest_of_q) \
                    and is_or_near(q, nearest_of_r):
                pairs[(min(q, r), max(q, r))] = 1.0 - s
    return pairs


def find_links(embedding: np.ndarray, video: np.ndarray, new: np.ndarray, threshold: Threshold,
               method: str = "auto", k: int = K, parallel: str = "auto", block: int = BLOCK_QUERIES,
               stats: dict | None = None) -> Links:
    """Links of the rule above that involve at least one NEW row; links between old rows are never recomputed.

    embedding: unit rows [n, d]; video: int code per row; new: bool per row. parallel: 'local' (this process),
    'ray' (one task per `block` new rows; needs ray.init) or 'auto' (Ray when it is up and there are more than
    RAY_MIN_QUERIES new rows). stats, when given, gets how it ran: path, blocks, on Ray the workers' peak RSS.
    """
    if parallel not in ("auto", "ray", "local"):
        raise ValueError(f"parallel must be auto, ray or local, not {parallel!r}")
    queries = np.flatnonzero(new)
    if threshold.distance is None or len(queries) == 0 or len(embedding) < 2:
        return Links()
    index = ivf_index(embedding) if uses_index(len(embedding), method) else None     # once, for every block
    blocks = [queries[s:s + block] for s in range(0, len(queries), block)]
    on_ray = parallel == "ray" or (parallel == "auto" and len(queries) > RAY_MIN_QUERIES and _ray_is_up())
    if stats is not None:
        stats.update(path="ray" if on_ray else "local", blocks=len(blocks))
    if on_ray:
        parts = _blocks_on_ray(embedding, video, blocks, threshold.distance, k, index, stats)
    else:
        parts = [links_of_block(embedding, video, b, threshold.distance, k, index) for b in blocks]
    # In block order, as one loop over the queries would: a pair of two new rows found from both sides keeps the
    # later query's distance (the same number either way: the re-score is symmetric).
    pairs: dict[tuple[int, int], float] = {}
    for part in parts:
        pairs.update(part)
    if not pairs:
        return Links()
    keys = sorted(pairs, key=lambda p: (pairs[p], p))
    return Links(np.array([p[0] for p in keys], np.int64), np.array([p[1] for p in keys], np.int64),
                 np.array([pairs[p] for p in keys], np.float32))


def _ray_is_up() -> bool:
    """Whether this process is connected to Ray (the catalogue job is; `vcn persons update` is not)."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _blocks_on_ray(embedding: np.ndarray, video: np.ndarray, blocks: list[np.ndarray], distance: float, k: int,
                   index, stats: dict | None) -> list[dict[tuple[int, int], float]]:
    """`links_of_block` of every block as Ray tasks, in block order; the arrays and the index put once."""
    import faiss
    import ray

    if not ray.is_initialized():
        raise RuntimeError("find_links(parallel='ray') needs ray.init() first")
    serialised = None if index is None else faiss.serialize_index(index)     # uint8 array: zero-copy in tasks
    memory = _block_task_memory(embedding.shape, max(len(b) for b in blocks), k,
                                0 if serialised is None else serialised.nbytes)
    shared = [ray.put(embedding), ray.put(video), None if serialised is None else ray.put(serialised)]
    del serialised
    task = ray.remote(num_cpus=1, memory=memory)(_block_task)
    results = ray.get([task.remote(shared[0], shared[1], b, distance, k, shared[2]) for b in blocks])
    if stats is not None:
        stats.update(task_memory_mb=round(memory / 2**20, 1),
                     worker_peak_rss_mb=round(max(rss for _, rss in results), 1))
    return [part for part, _ in results]


def _block_task(embedding: np.ndarray, video: np.ndarray, queries: np.ndarray, distance: float, k: int,
                serialised: np.ndarray | None) -> tuple[dict[tuple[int, int], float], float]:
    """One Ray task: `links_of_block` with the index read back from its bytes; and this worker's peak RSS (MiB)."""
    import faiss

    index = None if serialised is None else faiss.deserialize_index(serialised)
    return links_of_block(embedding, video, queries, distance, k, index), \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _block_task_memory(shape: tuple[int, int], block: int, k: int, index_bytes: int) -> int:
    """Bytes one block task allocates (its Ray `memory`): the catalogue's arrays are not counted, tasks map them
    from the object store; the worker's interpreter and libraries (~250 MB) are not the task's."""
    n, d = shape
    own = block * d * 4 + block * k * 12                      # the queries' rows; rows (int64) + sims (float32)
    rescored = min(block, BLOCK) * 2 * k * (d * 4 + 8 + 4 + 8 + 1)    # gathered candidates, sims, order, mask
    if index_bytes:
        # faiss.deserialize_index copies the bytes into a buffer, then builds the index from it: twice the index
        # at the peak; the search returns 2k labels (int64) and scores (float32) per query.
        search = 2 * index_bytes + block * 2 * k * 12
    else:
        # One product block of the exact search: similarities and their negation (float32), argpartition's
        # int64 indices, the own-video mask.
        search = min(block, BLOCK, max(1, EXACT_CELLS // n)) * n * (4 + 4 + 8 + 1)
    return int(own + rescored + search)
