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


def _cut(merges: np.ndarray, tracks: list[int], cannot_link: set[tuple[int, int]] | frozenset) -> dict[int, int]:
    """Apply the linkage's merges up to the majority cut; a merge that would join two tracks sharing a frame is
    not made, nor any later merge that contains it."""
    n = len(tracks)
    members: dict[int, list[int] | None] = {i: [tracks[i]] for i in range(n)}
    for row, (a, b, height, _) in enumerate(merges):
        a, b, node = int(a), int(b), n + row
        left, right = members.get(a), members.get(b)
        blocked = (height > 1.0 - MAJORITY or left is None or right is None
                   or any((min(x, y), max(x, y)) in cannot_link for x in left for y in right))
        if blocked:
            members[node] = None           # the groups stay as they are, and nothing built on this merge forms
            continue
        members[node] = left + right       # a and b are absorbed: their tracks live on in the new node
        del members[a], members[b]
    groups = sorted((sorted(g) for g in members.values() if g), key=lambda g: g[0])
    return {t: label for label, group in enumerate(groups) for t in group}
