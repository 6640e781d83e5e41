"""Join clusters of one person that the face splits but the clothes tie together (cluster.join_same_clothes).

The splits Algorithm 1 leaves on real footage are one person's looks that SFace puts farther apart than two
strangers (a profile and a frontal view, a dark shot and a lit one), so no face distance can join them. Within a
video a person mostly keeps their clothes. Two clusters are joined when
- they dress more alike than any two people seen in one frame (tracks sharing a frame are two people) and than
  two clusters of the video come by chance (vcn.chance, on the similarities of all cluster pairs), and
- one is the other's nearest cluster by face (the finetuned embedding), so clothes pick among the faces rather
  than override them, and
- no track of one shares a frame with a track of the other.
Nearest face first, one join at a time, the joined cluster judged again, until nothing joins. A video with no two
people in one frame, both torsos visible, joins nothing: nothing says how alike two people there dress.
"""

from __future__ import annotations

import math

import numpy as np

from vcn.chance import chance_closest
from vcn.clustering.baselines import mean_track_embeddings
from vcn.clustering.join import join_matched_clusters
from vcn.faces.clothes import similarity


def alike_by_chance(similarities: np.ndarray) -> float:
    """The similarity above which fewer than one of the pairs given is expected by chance (vcn.chance's bound,
    mirrored); NaN for fewer than two."""
    bound = chance_closest(-np.asarray(similarities, dtype=np.float64))
    return -bound if math.isfinite(bound) else math.nan


def join_same_clothes(labels: dict[int, int], torso: dict[int, np.ndarray], embeddings: np.ndarray,
                      track_of_crop: np.ndarray, cannot_link: set[tuple[int, int]]) -> dict[int, int]:
    """track id -> cluster with clusters joined as the module says. `torso`: track id -> its torso histogram
    (tracks whose torso was never in frame are absent); `embeddings`, `track_of_crop`: the clustered crops'
    finetuned embeddings and tracks; `cannot_link`: (track, track) pairs sharing a frame."""
    apart = [(a, b) for a, b in cannot_link if a in torso and b in torso]
    if not apart:
        return labels
    seen_together = float(max(similarity(torso[a], torso[b])[0, 0] for a, b in apart))
    track_of_crop = np.asarray(track_of_crop)
    while True:
        members: dict[int, list[int]] = {}
        for t, c in labels.items():
            if c >= 0:
                members.setdefault(c, []).append(t)
        if len(members) < 2:
            return labels
        crop_cluster = np.array([labels.get(int(t), -1) for t in track_of_crop])
        inside = crop_cluster >= 0
        ids, means = mean_track_embeddings(embeddings[inside], crop_cluster[inside])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        ids = [int(c) for c in ids]
        face = 1.0 - means @ means.T
        blocked = np.eye(len(ids), dtype=bool)
        row = {c: i for i, c in enumerate(ids)}
        for a, b in cannot_link:
            if labels.get(a, -1) >= 0 and labels.get(b, -1) >= 0:
                i, j = row[labels[a]], row[labels[b]]
                blocked[i, j] = blocked[j, i] = True
        dressed = [[torso[t] for t in members[c] if t in torso] for c in ids]
        has = np.array([len(d) > 0 for d in dressed])
        hist = np.array([np.mean(d, axis=0) if d else np.zeros_like(next(iter(torso.values()))) for d in dressed])
        alike = similarity(hist, hist)
        upper = np.triu(~blocked, 1) & has[:, None] & has[None, :]
        bound = max(seen_together, np.nan_to_num(alike_by_chance(alike[upper]), nan=-np.inf))
        face_free = np.where(blocked, np.inf, face)
        nearest = face_free.argmin(axis=1)
        candidates = [(float(face[i, j]), i, j) for i, j in zip(*np.nonzero(upper & (alike > bound)))
                      if nearest[i] == j or nearest[j] == i]
        if not candidates:
            return labels
        _, i, j = min(candidates)
        joined = join_matched_clusters(labels, [(members[ids[i]][0], members[ids[j]][0])], cannot_link)
        if len({c for c in joined.values() if c >= 0}) == len(members):
            return labels   # the join was refused (a shared frame the blocking did not see): stop, not loop
        labels = joined
