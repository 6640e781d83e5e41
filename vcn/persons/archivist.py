"""What an archivist can say about persons (name, merge, split), checked against the index, logged, applied.

Each call records the decision first (vcn.persons.decisions), then brings the index up to date under its lock,
which applies it. If another run holds the lock past `wait_s`, the decision stays recorded and the next update
applies it.
"""

from __future__ import annotations

from typing import Callable

from vcn.errors import VcnError
from vcn.persons import decisions as decision_log
from vcn.persons.index import UpdateReport, update_index
from vcn.persons.query import clusters_of, load_persons, person_of_cluster, person_row
from vcn.persons.root import IndexRoot
from vcn.persons.store import IndexState


def _refs(state: IndexState, person_id: int) -> list[decision_log.Ref]:
    person_row(state, person_id)
    return [(c["video_id"], int(c["cluster_id"]), c["video_fingerprint"]) for c in clusters_of(state, person_id)]


def _apply(root: IndexRoot, wait_s: float, log: Callable[[str], None]) -> UpdateReport | None:
    try:
        return update_index(root.uri, wait_s=wait_s, log=log)
    except VcnError as e:
        if "being updated by another run" not in str(e):
            raise
        log(f"recorded; the index is busy ({e}); the next update applies it")
        return None


def name_person(index: str, person_id: int, name: str, wait_s: float = 60.0,
                log: Callable[[str], None] = lambda s: None) -> UpdateReport | None:
    root = IndexRoot(index)
    name = name.strip()
    if not name:
        raise VcnError("the name is empty; pass the person's name in quotes, e.g. \"Ada Lovelace\"")
    decision_log.record(root, "name", [_refs(load_persons(root), person_id)], name=name, person_ids=[person_id])
    return _apply(root, wait_s, log)


def merge_persons(index: str, into: int | str, others: list[int | str], wait_s: float = 60.0,
                  log: Callable[[str], None] = lambda s: None) -> UpdateReport | None:
    """Make `others` one person with `into`. Each is a person id, or a cluster as VIDEO_ID:CLUSTER_ID standing
    for the person that holds it (as the video report's possible splits print them)."""
    root = IndexRoot(index)
    state = load_persons(root)
    into_id = _person_of(state, into)
    others_ids = [p for p in dict.fromkeys(_person_of(state, o) for o in others) if p != into_id]
    if not others_ids:
        if any(isinstance(o, str) and ":" in o for o in [into, *others]):
            raise VcnError(f"{' and '.join(map(str, [into, *others]))} are already one person ({into_id}); "
                           "nothing to merge")
        raise VcnError(f"merge {into} with what? pass two or more different person ids: INTO OTHER [OTHER ...]")
    into, others = into_id, others_ids
    groups = [_refs(state, into)] + [_refs(state, p) for p in others]
    decision_log.record(root, "merge", groups, person_ids=[into, *others])
    return _apply(root, wait_s, log)


def _person_of(state: IndexState, item: int | str) -> int:
    """A person id given as one, or as a cluster VIDEO_ID:CLUSTER_ID it holds."""
    if isinstance(item, int) or ":" not in item:
        try:
            return int(item)
        except ValueError:
            raise VcnError(f"{item!r}: pass a person id (a number) or a cluster as VIDEO_ID:CLUSTER_ID") from None
    video, cluster = parse_cluster_ref(item)
    person = person_of_cluster(state).get((video, cluster))
    if person is None:
        raise VcnError(f"{item}: the person index has no cluster {cluster} of video {video!r}; run `vcn persons "
                       "update` after the video (cluster ids are the video's clusters table's)")
    return person


def parse_cluster_ref(text: str) -> tuple[str, int]:
    video, sep, cluster = text.rpartition(":")
    if not sep or not video:
        raise VcnError(f"{text!r}: write a cluster as VIDEO_ID:CLUSTER_ID (see `vcn persons show PERSON`)")
    try:
        return video, int(cluster)
    except ValueError:
        raise VcnError(f"{text!r}: the cluster id after ':' must be a number") from None


def split_person(index: str, person_id: int, clusters: list[str], wait_s: float = 60.0,
                 log: Callable[[str], None] = lambda s: None) -> UpdateReport | None:
    """Move the given clusters (VIDEO:CLUSTER) of a person into one new person, apart from the rest forever."""
    root = IndexRoot(index)
    state = load_persons(root)
    refs = _refs(state, person_id)
    by_key = {(v, c): (v, c, f) for v, c, f in refs}
    wanted = [parse_cluster_ref(t) for t in clusters]
    missing = [f"{v}:{c}" for v, c in wanted if (v, c) not in by_key]
    if missing:
        raise VcnError(f"person {person_id} has no cluster {', '.join(missing)}; "
                       f"`vcn persons show --index {index} {person_id}` lists its clusters")
    moved = [by_key[k] for k in dict.fromkeys(wanted)]
    rest = [r for r in refs if r not in moved]
    if not rest:
        raise VcnError(f"that is every cluster of person {person_id}; leave at least one behind")
    new_id = int(state.meta.get("next_person_id", 1))
    decision_log.record(root, "split", [moved, rest], person_ids=[person_id], new_person_id=new_id)
    return _apply(root, wait_s, log)
