"""Positive pairs for self-distillation: two crops of one track (round 1) or of coarsely matched tracks (later)."""

from __future__ import annotations

import numpy as np


def pairs_within_tracks(track_of_crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For every crop, a random other crop of the same track (itself when the track has one crop).

    Returns crop indices (a, b), one pair per crop, in crop order.
    """
    return pairs_across_matches(track_of_crop, {}, rng)


def pairs_across_matches(track_of_crop: np.ndarray, matches: dict[int, list[int]], rng: np.random.Generator,
                         pose: np.ndarray | None = None, pose_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """For every crop of track k, pick one of k's matched tracks at random, then a random crop of that track.

    A track with no match (absent from `matches` or with an empty list) pairs within itself, preferring a
    different crop of the track when it has one (METHOD.md, "Pair sampling for the next round"). With `pose`
    (a number per crop, vcn.faces.align.nose_offset) and `pose_prob` > 0 (ssl.pose_pairs), such a crop instead
    takes, with that probability, the crop of its track whose pose differs most from its own: the pairs that
    teach one person's profile and frontal looks as one. At 0 no extra number is drawn, so the pairs are
    those drawn without it.
    """
    track_of_crop = np.asarray(track_of_crop)
    n = len(track_of_crop)
    a = np.arange(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    members = {int(t): np.flatnonzero(track_of_crop == t) for t in np.unique(track_of_crop)}
    for i in range(n):
        k = int(track_of_crop[i])
        partners = [j for j in matches.get(k, []) if j in members and j != k]
        if partners:
            j = partners[rng.integers(len(partners))]
            b[i] = members[j][rng.integers(len(members[j]))]
            continue
        own = members[k]
        if len(own) == 1:
            b[i] = i
        elif pose_prob > 0 and rng.random() < pose_prob:
            apart = np.abs(pose[own] - pose[i])
            apart[own == i] = -1.0
            b[i] = own[np.argmax(apart)]
        else:
            # Uniform over the track's other crops.
            pick = own[rng.integers(len(own) - 1)]
            b[i] = pick if pick != i else own[-1]
    return a, b


def with_pairs(matches: dict[int, list[int]], pairs: list[tuple[int, int]]) -> dict[int, list[int]]:
    """`matches` with each (a, b) of `pairs` added both ways (a new dict; lists keep their order, no repeats)."""
    out = {k: list(v) for k, v in matches.items()}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            if y not in out.setdefault(x, []):
                out[x].append(y)
    return out


def subsample_pairs(a: np.ndarray, b: np.ndarray, max_pairs: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the pairs and keep at most `max_pairs` (bounds an epoch's cost on long videos)."""
    order = rng.permutation(len(a))
    if max_pairs > 0:
        order = order[:max_pairs]
    return a[order], b[order]
