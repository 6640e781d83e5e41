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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vcn.chance import chance_closest
from vcn.persons.candidates import neighbours

# Neighbours per query looked at: the rule only ever uses the nearest few clusters (anything further is beyond
# the threshold in practice).
K = 16
# Cross-video pairs drawn to estimate the chance bound when there are more (a fixed seed keeps an index's
# threshold the same from run to run); the median and MAD of 200,000 pairs vary by about 0.001.
CHANCE_SAMPLE = 200_000


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


def find_links(embedding: np.ndarray, video: np.ndarray, new: np.ndarray, threshold: Threshold,
               method: str = "auto", k: int = K) -> Links:
    """Links of the rule above that involve at least one NEW row; links between old rows are never recomputed.

    embedding: unit rows [n, d]; video: int code per row; new: bool per row.
    """
    queries = np.flatnonzero(new)
    if threshold.distance is None or len(queries) == 0 or len(embedding) < 2:
        return Links()
    min_sim = 1.0 - threshold.distance
    rows, sims = neighbours(embedding[queries], video[queries], embedding, video, k, method)
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
    if not pairs:
        return Links()
    keys = sorted(pairs, key=lambda p: (pairs[p], p))
    return Links(np.array([p[0] for p in keys], np.int64), np.array([p[1] for p in keys], np.int64),
                 np.array([pairs[p] for p in keys], np.float32))
