"""The archivist's decisions (name, merge, split): an append-only log that wins over automatic linking.

Each decision is one JSON object under OUT/persons/decisions/, named by time and a random suffix, never rewritten,
so recording one needs no lock and two archivists cannot overwrite each other. A decision names CLUSTERS, not
only person ids: (video_id, cluster_id, video fingerprint) of every cluster the person had when it was made. So it
still means the same people after a full re-link renumbers or regroups persons, and it stops applying to a video
whose output was recomputed (its clusters are new clusters). Decisions are replayed in the order they were made;
a later one wins over an earlier one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcn.errors import VcnError
from vcn.persons.root import PERSONS_DIR, IndexRoot

DECISIONS_DIR = f"{PERSONS_DIR}/decisions"
OPS = ("name", "merge", "split")

Ref = tuple[str, int, str]      # (video_id, cluster_id, video fingerprint)


@dataclass
class Decision:
    decision_id: str
    op: str                              # name | merge | split
    groups: list[list[Ref]]              # name: [person]; merge: [into, other, ...]; split: [moved, rest]
    name: str | None = None              # name only (None clears a name)
    person_ids: list[int] | None = None  # the ids the archivist typed (for the record)
    new_person_id: int | None = None     # split: the id the moved clusters got

    def to_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "op": self.op, "name": self.name, "person_ids": self.person_ids,
                "new_person_id": self.new_person_id, "groups": [[list(r) for r in g] for g in self.groups]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision":
        return cls(d["decision_id"], d["op"], [[(str(v), int(c), str(f)) for v, c, f in g] for g in d["groups"]],
                   d.get("name"), d.get("person_ids"), d.get("new_person_id"))


def time_stamp(ns: int) -> str:
    """UTC time to the microsecond, e.g. 20261130T061512.000731Z: names that sort as the decisions were made.

    One clock reading for seconds and fraction: two readings once named a decision made just after a second
    boundary with the earlier second and a small fraction, sorting it before the decision made just before it."""
    seconds, micro = divmod(ns // 1000, 1_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{micro:06d}Z"


def record(root: IndexRoot, op: str, groups: list[list[Ref]], name: str | None = None,
           person_ids: list[int] | None = None, new_person_id: int | None = None) -> Decision:
    if op not in OPS:
        raise VcnError(f"decision {op!r}: choose one of {', '.join(OPS)}")
    stamp = time_stamp(time.time_ns())
    decision = Decision(f"{stamp}-{uuid.uuid4().hex[:8]}", op, groups, name, person_ids, new_person_id)
    root.write(f"{DECISIONS_DIR}/{decision.decision_id}.json",
               json.dumps({**decision.to_dict(), "recorded_at": stamp}, indent=1).encode())
    return decision


def read_all(root: IndexRoot) -> list[Decision]:
    """Every decision, oldest first (their names sort by time)."""
    out = []
    for rel, _ in root.list(DECISIONS_DIR):
        if rel.endswith(".json"):
            data = root.read(rel)
            if data is not None:
                try:
                    out.append(Decision.from_dict(json.loads(data)))
                except (ValueError, KeyError, TypeError):
                    raise VcnError(f"{root.join(rel)} is not a valid decision; move it out of "
                                   f"{DECISIONS_DIR}/ if it was not written by vcn") from None
    return sorted(out, key=lambda d: d.decision_id)


def apply(decisions: list[Decision], keys: list[Ref], person_id: np.ndarray, names: dict[int, str | None],
          next_person_id: int) -> tuple[np.ndarray, dict[int, str | None], int, np.ndarray]:
    """Replay decisions over an assignment. keys: (video_id, cluster_id, fingerprint) per row.

    Returns (person ids, names, next free id, rows an archivist placed). References to clusters no longer in the
    index are skipped.
    """
    person_id = person_id.copy()
    names = dict(names)
    row_of = {k: i for i, k in enumerate(keys)}
    by_archivist = np.zeros(len(keys), bool)

    def rows(group: list[Ref]) -> list[int]:
        return [row_of[r] for r in group if r in row_of]

    def majority(rs: list[int]) -> int | None:
        if not rs:
            return None
        counts = Counter(person_id[rs].tolist())
        return min(counts, key=lambda p: (-counts[p], p))

    for d in decisions:
        if d.op == "name":
            target = majority(rows(d.groups[0]))
            if target is not None:
                names[target] = d.name
        elif d.op == "merge":
            into = majority(rows(d.groups[0]))
            if into is None:
                continue
            for g in d.groups[1:]:
                for p in set(person_id[rows(g)].tolist()) - {into}:
                    moving = person_id == p
                    person_id[moving] = into
                    by_archivist |= moving
                    if names.get(into) is None and names.get(p) is not None:
                        names[into] = names[p]
                    names.pop(p, None)
        elif d.op == "split":
            moved, rest = rows(d.groups[0]), set(rows(d.groups[1]))
            if not moved:
                continue
            owners = set(person_id[moved].tolist())
            already_apart = len(owners) == 1 and not any(person_id[r] in owners for r in rest)
            if already_apart:
                continue
            in_use = set(person_id.tolist())
            new_id = d.new_person_id if d.new_person_id is not None and d.new_person_id not in in_use \
                else next_person_id
            person_id[moved] = new_id
            by_archivist[moved] = True
            next_person_id = max(next_person_id, new_id + 1)
    return person_id, names, next_person_id, by_archivist
