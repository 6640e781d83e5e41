"""From links to persons without chaining strangers: constrained union, stable ids.

Links are taken nearest first and join two groups only when
  - the groups hold no two clusters of one video that share a frame (two faces seen together are two people, so
    a chain of links that would join them is wrong somewhere, and the farther link loses). Two clusters of one
    video that never share a frame may end in one person: the video's clustering may have split that person
    (vcn over-splits more than it merges), and the links to other videos are the evidence that it did; and
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
                   order_key: list[tuple[str, int]], shares_frame: list[set[int] | None] | None = None
                   ) -> Assignment:
    """video: int code per row; person_id: existing id per row, -1 for new rows; order_key: (video_id,
    cluster_id) per row, for deterministic fresh ids; shares_frame: per row, the rows of its video with a track
    in one of its frames, or None where that is not known (then every other row of its video counts; the same
    for every row when shares_frame is None)."""
    n = len(video)
    new = person_id < 0
    # Nodes: an existing person is one node (its rows all map to it); each new row is its own node.
    node_of = np.where(new, np.arange(n), n + 0)            # filled for old rows below
    persons, person_node = np.unique(person_id[~new], return_inverse=True)
    node_of[~new] = n + person_node
    parent: dict[int, int] = {}
    # root -> {video: its rows of that video} (existing persons: filled when a link touches them)
    members: dict[int, dict[int, list[int]]] = {}
    anchor: dict[int, int] = {}

    def apart(x: int, y: int) -> bool:
        if video[x] != video[y]:
            return False
        if shares_frame is None or shares_frame[x] is None or shares_frame[y] is None:
            return True             # not known: any two clusters of one video count as two people
        return y in shares_frame[x]

    def conflict(a: dict[int, list[int]], b: dict[int, list[int]]) -> bool:
        return any(apart(x, y) for v in a.keys() & b.keys() for x in a[v] for y in b[v])

    def alone(r: int) -> dict[int, list[int]]:
        return {int(video[r]): [r]}

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
            members[n + p] = {}
            for r in rows_old[person_node == p].tolist():
                members[n + p].setdefault(int(video[r]), []).append(r)
            anchor[n + p] = int(persons[p])
    distance = np.full(n, np.nan, np.float32)
    for a, b, d in zip(links.i.tolist(), links.j.tolist(), links.distance.tolist()):
        ra, rb = find(int(node_of[a])), find(int(node_of[b]))
        if ra == rb:
            continue
        ma = members.get(ra) or alone(ra)
        mb = members.get(rb) or alone(rb)
        if (ra in anchor and rb in anchor) or conflict(ma, mb):
            continue
        if rb in anchor:            # the existing person stays the root
            ra, rb, ma, mb = rb, ra, mb, ma
        parent[rb] = ra
        members[ra] = {v: ma.get(v, []) + mb.get(v, []) for v in ma.keys() | mb.keys()}
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
