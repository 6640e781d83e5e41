"""From links to persons without chaining strangers: constrained union, stable ids.

Links are taken nearest first and join two groups only when
  - the groups hold no cluster of the same video (the video's own clustering says those are two people, so a
    chain of links that would join them is wrong somewhere, and the farther link loses), and
  - at most one of them is an existing person: automatic linking never merges (or splits) persons that exist.
    Only an archivist does, so ids stay stable and an archivist's split is never undone by a later night.
New clusters left without a person get fresh ids, in (video_id, cluster_id) order so a rerun gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcn.persons.link import Links


@dataclass
class Assignment:
    person_id: np.ndarray       # int64 [n]: every row's person
    link_distance: np.ndarray   # float32 [n]: distance of the link that joined a new row to its group (NaN: none)
    next_person_id: int         # first id never handed out


def assign_persons(video: np.ndarray, person_id: np.ndarray, links: Links, next_person_id: int,
                   order_key: list[tuple[str, int]]) -> Assignment:
    """video: int code per row; person_id: existing id per row, -1 for new rows; order_key: (video_id,
    cluster_id) per row, for deterministic fresh ids."""
    n = len(video)
    new = person_id < 0
    # Nodes: an existing person is one node (its rows all map to it); each new row is its own node.
    node_of = np.where(new, np.arange(n), n + 0)            # filled for old rows below
    persons, person_node = np.unique(person_id[~new], return_inverse=True)
    node_of[~new] = n + person_node
    parent: dict[int, int] = {}
    videos: dict[int, set[int]] = {}
    anchor: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    touched_persons = {int(node_of[r]) - n for r in np.concatenate([links.i, links.j]).tolist() if not new[r]}
    if touched_persons:
        rows_old = np.flatnonzero(~new)
        for p in touched_persons:
            sel = rows_old[person_node == p]
            videos[n + p] = set(video[sel].tolist())
            anchor[n + p] = int(persons[p])
    distance = np.full(n, np.nan, np.float32)
    for a, b, d in zip(links.i.tolist(), links.j.tolist(), links.distance.tolist()):
        ra, rb = find(int(node_of[a])), find(int(node_of[b]))
        if ra == rb:
            continue
        va = videos.get(ra, {int(video[ra])} if ra < n else set())
        vb = videos.get(rb, {int(video[rb])} if rb < n else set())
        if va & vb or (ra in anchor and rb in anchor):
            continue
        if rb in anchor:            # the existing person stays the root
            ra, rb, va, vb = rb, ra, vb, va
        parent[rb] = ra
        videos[ra] = va | vb
        for r in (a, b):
            if new[r] and np.isnan(distance[r]):
                distance[r] = d
    out = person_id.copy()
    groups: dict[int, list[int]] = {}
    for r in np.flatnonzero(new).tolist():
        root = find(r)
        if root in anchor:
            out[r] = anchor[root]
        else:
            groups.setdefault(root, []).append(r)
    for rows in sorted(groups.values(), key=lambda rs: min(order_key[r] for r in rs)):
        out[rows] = next_person_id
        next_person_id += 1
    return Assignment(out, distance, next_person_id)
