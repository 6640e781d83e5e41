"""Reading a person index: the current generation, one person's clusters, and photo-search hits grouped by person."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vcn.errors import VcnError
from vcn.persons.root import IndexRoot
from vcn.persons.store import IndexState, read_state


def load_persons(index: str | IndexRoot) -> IndexState:
    """The current index; VcnError naming the command that builds it when there is none."""
    root = index if isinstance(index, IndexRoot) else IndexRoot(index)
    state = read_state(root)
    if state.generation == 0:
        raise VcnError(f"no person index at {root.uri} yet; build it with `vcn persons update --index {root.uri}`")
    return state


def person_row(state: IndexState, person_id: int) -> dict[str, Any]:
    hit = [r for r in state.persons.to_pylist() if r["person_id"] == person_id]
    if not hit:
        raise VcnError(f"person {person_id} is not in the index; `vcn persons list --index ...` shows the ids")
    return hit[0]


def clusters_of(state: IndexState, person_id: int) -> list[dict[str, Any]]:
    pid = state.clusters.column("person_id").to_numpy()
    rows = np.flatnonzero(pid == person_id)
    cols = ["video_id", "cluster_id", "video_fingerprint", "n_tracks", "screen_s", "linked_by", "link_distance"]
    table = state.clusters.select(cols).take(rows)
    return table.to_pylist()


def person_of_cluster(state: IndexState) -> dict[tuple[str, int], int]:
    c = state.clusters
    return dict(zip(zip(c.column("video_id").to_pylist(), c.column("cluster_id").to_pylist()),
                    c.column("person_id").to_pylist()))


def names_of(state: IndexState) -> dict[int, str | None]:
    return dict(zip(state.persons.column("person_id").to_pylist(), state.persons.column("name").to_pylist()))


def format_persons(state: IndexState, top: int | None = None) -> str:
    """Named persons first (by name), then by screen time."""
    from vcn.report.html import format_time

    rows = sorted(state.persons.to_pylist(), key=lambda r: (r["name"] is None, r["name"] or "", -r["screen_s"]))
    lines = [f"{'person':>7}  {'name':<24} {'videos':>6} {'clusters':>8}  on screen"]
    for r in rows[:top] if top else rows:
        lines.append(f"{r['person_id']:>7}  {(r['name'] or '-'):<24} {r['n_videos']:>6} {r['n_clusters']:>8}  "
                     f"{format_time(r['screen_s'])}")
    rule = threshold_text(state.meta.get("threshold") or {})
    lines.append(f"{len(rows)} persons, {state.clusters.num_rows} clusters, {state.videos.num_rows} videos; "
                 f"generation {state.generation}; {rule}")
    return "\n".join(lines)


def threshold_text(t: dict[str, Any]) -> str:
    """The link threshold of an index in words, with where it came from."""
    if t.get("distance") is None:
        return "no automatic links yet (too few clusters)"
    where = {"shared_frame": f"the closest two clusters sharing a frame, in {t.get('video_id')}",
             "chance": f"how close two of the {t.get('pairs')} cross-video pairs come by chance",
             # Indexes written before the rule changed.
             "same_video": f"the closest two clusters of one video, in {t.get('video_id')}"}
    return (f"clusters of different videos linked when one is the other's nearest in its video (and the other is "
            f"too, or is close to that nearest) and closer than {t['distance']:.3f} "
            f"(cosine distance: {where.get(t.get('source'), t.get('source'))})")


@dataclass
class PersonHit:
    rank: int
    person_id: int | None            # None: the cluster is not in the person index (a video added since)
    name: str | None
    score: float                     # best cosine similarity of its clusters to the query
    clusters: list[Any] = field(default_factory=list)    # vcn.search.ClusterHit, best first

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "person_id": self.person_id, "name": self.name, "score": round(self.score, 4),
                "videos": sorted({c.video_id for c in self.clusters}),
                "screen_s": round(sum(c.screen_s for c in self.clusters), 3),
                "clusters": [c.to_dict() for c in self.clusters]}


def group_hits(hits: list[Any], state: IndexState, top: int | None = None) -> list[PersonHit]:
    """Cluster hits (best first) grouped by person; a person ranks by its best cluster."""
    person = person_of_cluster(state)
    names = names_of(state)
    groups: dict[Any, PersonHit] = {}
    for h in hits:
        pid = person.get((h.video_id, h.cluster_id))
        key = pid if pid is not None else ("cluster", h.video_id, h.cluster_id)
        if key not in groups:
            groups[key] = PersonHit(0, pid, names.get(pid) if pid is not None else None, h.score)
        groups[key].clusters.append(h)
    ranked = sorted(groups.values(), key=lambda g: -g.score)[:top] if top else \
        sorted(groups.values(), key=lambda g: -g.score)
    for i, g in enumerate(ranked, 1):
        g.rank = i
    return ranked


def format_person_hits(hits: list[PersonHit]) -> str:
    from vcn.report.html import format_time

    if not hits:
        return "no persons in the index"
    lines = []
    for h in hits:
        who = f"person {h.person_id}" if h.person_id is not None else "not yet in the person index"
        lines.append(f"{h.rank:>3}. {h.score:+.3f}  {h.name or '(unnamed)'}  [{who}]  "
                     f"{len({c.video_id for c in h.clusters})} videos, "
                     f"{format_time(sum(c.screen_s for c in h.clusters))} on screen")
        for c in h.clusters:
            spans = ", ".join(f"shot {a.shot_id} {format_time(a.start_s)}-{format_time(a.end_s)}"
                              for a in c.appearances)
            lines.append(f"       {c.score:+.3f}  {c.video_id}  cluster {c.cluster_id}: {spans}")
    return "\n".join(lines)
