"""One clustering from several of the same tracks (finetunes with other seeds): average linkage on how often they agree.

A finetune of tens of steps is noisy: the seed alone moves which pair of look-alikes one run merges or which of a
person's looks it splits off (docs/measurements.md "Accuracy"). Most such errors are each one run's own, so a
majority of runs undoes them. No number is chosen: two groups of tracks join while, on average over their pairs
of tracks, at least half of the runs put the two tracks of a pair in one cluster (average linkage on the share of
runs that disagree, cut at one half), and never when a pair of them shares a frame.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

# Join while the mean share of runs that agree is at least this: a majority, the one natural cut.
MAJORITY = 0.5


def consensus_labels(labelings: list[dict[int, int]],
                     cannot_link: set[tuple[int, int]] | frozenset = frozenset()) -> dict[int, int]:
    """track id -> consensus cluster (0, 1, ...) over the tracks every labeling clusters (label >= 0)."""
    if not labelings:
        return {}
    tracks = sorted(set.intersection(*({t for t, c in lab.items() if c >= 0} for lab in labelings)))
    if len(tracks) < 2:
        return {t: i for i, t in enumerate(tracks)}
    together = np.zeros((len(tracks), len(tracks)))
    for lab in labelings:
        labels = np.array([lab[t] for t in tracks])
        together += labels[:, None] == labels[None, :]
    disagree = 1.0 - together / len(labelings)
    np.fill_diagonal(disagree, 0.0)
    merges = linkage(squareform(disagree, checks=False), "average")
    return _cut(merges, tracks, cannot_link)


def consensus_clusters(labelings: list[dict[int, int]],
                       cannot_link: set[tuple[int, int]] | frozenset = frozenset()) -> dict[int, int]:
    """Every track of the first labeling -> its consensus cluster, or -1 (Unknown) where that labeling has it
    Unknown: the gates do not depend on the seed, so a track is Unknown in every run or in none."""
    agreed = consensus_labels(labelings, cannot_link)
    return {t: agreed.get(t, -1) if c >= 0 else -1 for t, c in labelings[0].items()} if labelings else {}


def _cut(merges: np.ndarray, tracks: list[int], cannot_link: set[tuple[int, int]] | frozenset) -> dict[int, int]:
    """Apply the linkage's merges up to the majority cut; a merge that would join two tracks sharing a frame is
    not made, nor any later merge that contains it."""
    n = len(tracks)
    members = {i: [tracks[i]] for i in range(n)}     # the groups formed so far, by linkage node
    for row, (a, b, height, _) in enumerate(merges):
        a, b = int(a), int(b)
        if height > 1.0 - MAJORITY or a not in members or b not in members:
            continue       # past the cut, or built on a merge not made: the groups stay as they are
        if any((min(x, y), max(x, y)) in cannot_link for x in members[a] for y in members[b]):
            continue
        members[n + row] = members.pop(a) + members.pop(b)
    groups = sorted((sorted(g) for g in members.values()), key=lambda g: g[0])
    return {t: label for label, group in enumerate(groups) for t in group}
