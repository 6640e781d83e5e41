"""Update the person index: drop what left, link only what is new, replay pending decisions, write atomically.

    update_index("results/")              # vcn run outputs in results/<video_id>/
    update_index("s3://archive/vcn/")     # a catalogue output (videos/<video_id>/)

A video is new when it is not in the index or its summary.json changed since it was indexed (then its old
clusters leave first). Links between clusters already indexed are never recomputed and existing persons are
never merged or split automatically (vcn.persons.assign), so a nightly run that adds videos costs the new
clusters' neighbour search, and a run with nothing new reads one listing and writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from vcn.errors import VcnError
from vcn.persons import decisions as decision_log
from vcn.persons.assign import assign_persons
from vcn.persons.lease import DEFAULT_LEASE_S, index_lock
from vcn.persons.link import VideoEvidence, catalogue_threshold, find_links, video_evidence
from vcn.persons.represent import VideoClusters, cluster_representatives, unit
from vcn.persons.root import IndexRoot
from vcn.persons.store import IndexState, read_state, write_state
from vcn.report.data import list_column_matrix
from vcn.tables import PERSON_CLUSTERS, PERSON_VIDEOS, PERSONS

THUMBNAILS = 6


@dataclass
class UpdateReport:
    generation: int
    written: bool
    added_videos: list[str] = field(default_factory=list)
    removed_videos: list[str] = field(default_factory=list)
    skipped_videos: dict[str, str] = field(default_factory=dict)
    new_clusters: int = 0
    links: int = 0
    decisions_applied: int = 0
    persons: int = 0
    clusters: int = 0
    threshold: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        from vcn.persons.query import threshold_text

        state = "updated" if self.written else "unchanged"
        return (f"person index {state} (generation {self.generation}): {self.persons} persons, {self.clusters} "
                f"clusters; +{len(self.added_videos)} videos, -{len(self.removed_videos)} videos, "
                f"{self.new_clusters} new clusters, {self.links} links, {self.decisions_applied} decisions; "
                f"{threshold_text(self.threshold)}")


def update_index(index: str | Path, relink: bool = False, wait_s: float = 60.0,
                 lease_s: float = DEFAULT_LEASE_S, log: Callable[[str], None] = lambda s: None) -> UpdateReport:
    """Bring the index at `index` (a local folder or s3:// prefix of video outputs) up to date, under its lock.

    relink=True drops every automatic link and links all clusters again (person ids kept where the same clusters
    are together, archivist decisions replayed); otherwise only new clusters are linked.
    """
    root = IndexRoot(index)
    with index_lock(root, wait_s=wait_s, lease_s=lease_s) as lease:
        t0 = time.perf_counter()
        state = read_state(root)
        entries = {e.video_id: e for e in root.videos()}
        indexed = dict(zip(state.videos.column("video_id").to_pylist(),
                           state.videos.column("video_fingerprint").to_pylist()))
        gone = sorted(v for v, fp in indexed.items() if v not in entries or entries[v].fingerprint != fp)
        fresh = sorted(v for v, e in entries.items() if relink or indexed.get(v) != e.fingerprint)
        every = decision_log.read_all(root)
        applied = set(state.meta.get("decisions_applied", []))
        pending = every if relink else [d for d in every if d.decision_id not in applied]
        report = UpdateReport(state.generation, False, threshold=state.meta.get("threshold", {}))
        if not (gone or fresh or pending or relink):
            _count(report, state)
            return report
        t_list = time.perf_counter()
        new_parts: list[VideoClusters] = []
        model = state.meta.get("model")
        with root.scratch() as tmp:
            for vid in fresh:
                try:
                    vc = cluster_representatives(root.fetch_video(entries[vid], Path(tmp)), vid)
                except VcnError as e:       # not clustered yet (--stages detect,track): indexed once it is
                    report.skipped_videos[vid] = str(e)
                    continue
                if vc.model is not None and model is not None and vc.model != model and not relink:
                    report.skipped_videos[vid] = (f"base model {vc.model} differs from the index's {model}; "
                                                  "index one backbone per output")
                    continue
                model = model or vc.model
                new_parts.append(vc)
        t_read = time.perf_counter()
        if not (new_parts or gone or pending or relink):    # only videos that cannot be indexed yet
            _count(report, state)
            return report
        state = _relinked(state, new_parts, entries, gone, relink, pending, report)
        t_link = time.perf_counter()
        state.meta["model"] = model
        done = applied | {d.decision_id for d in pending}
        state.meta["decisions_applied"] = [d.decision_id for d in every if d.decision_id in done]
        report.seconds = {"list": round(t_list - t0, 3), "read": round(t_read - t_list, 3),
                          "link": round(t_link - t_read, 3)}
        state.meta["last_update"] = {k: v for k, v in report.to_dict().items() if k != "generation"}
        state = write_state(root, state, lease)
        report.seconds["write"] = round(time.perf_counter() - t_link, 3)
        report.generation, report.written = state.generation, True
        _count(report, state)
        log(report.describe())
        return report


def _count(report: UpdateReport, state: IndexState) -> None:
    report.persons, report.clusters = state.persons.num_rows, state.clusters.num_rows


def _relinked(state: IndexState, parts: list[VideoClusters], entries: dict, gone: list[str], relink: bool,
              pending: list, report: UpdateReport) -> IndexState:
    """The next state: old rows kept (all dropped when relinking), new rows linked and assigned."""
    old = state.clusters
    drop = set(gone) | ({p.video_id for p in parts} if not relink else set(old.column("video_id").to_pylist()))
    keep_mask = np.array([v not in drop for v in old.column("video_id").to_pylist()], bool)
    kept = old.filter(pa.array(keep_mask)) if old.num_rows else old
    previous_ids = {(v, c, f): p for v, c, f, p in zip(*(old.column(n).to_pylist() for n in
                    ("video_id", "cluster_id", "video_fingerprint", "person_id")))}
    videos_old = state.videos.filter(pa.array([v not in drop and v not in {p.video_id for p in parts}
                                               for v in state.videos.column("video_id").to_pylist()], pa.bool_())) \
        if state.videos.num_rows else state.videos
    # Evidence and own-nearest distances of the new videos.
    evidence: dict[str, VideoEvidence] = {
        v: VideoEvidence(*(float("nan") if x is None else x for x in (mc, nc, mw, nw)))
        for v, mc, nc, mw, nw in zip(*(videos_old.column(n).to_pylist() for n in
                                       ("video_id", "min_cooccurring", "n_cooccurring", "min_within", "n_within")))}
    own: dict[str, np.ndarray] = {}
    for p in parts:
        evidence[p.video_id], own[p.video_id] = video_evidence(p.embedding, p.cooccurring)
    report.added_videos = [p.video_id for p in parts]
    report.removed_videos = [v for v in gone if v not in entries]

    # One array of every row: kept old rows first, then the new ones.
    n_old = kept.num_rows
    old_emb = list_column_matrix(kept.column("embedding")) if n_old else None
    new_emb = [p.embedding for p in parts if len(p)]
    dims = {m.shape[1] for m in ([old_emb] if old_emb is not None else []) + new_emb}
    dim = dims.pop() if dims else 0
    embedding = np.concatenate(([old_emb] if old_emb is not None else [])
                               + new_emb).astype(np.float32) if (n_old or new_emb) else np.zeros((0, dim), np.float32)
    video_ids = kept.column("video_id").to_pylist() + [p.video_id for p in parts for _ in range(len(p))]
    cluster_ids = kept.column("cluster_id").to_pylist() + [int(c) for p in parts for c in p.cluster_id]
    fingerprints = kept.column("video_fingerprint").to_pylist() + \
        [entries[p.video_id].fingerprint for p in parts for _ in range(len(p))]
    codes, video_code = np.unique(np.array(video_ids, dtype=object).astype(str), return_inverse=True) \
        if video_ids else (np.array([]), np.zeros(0, np.int64))
    person = np.concatenate([kept.column("person_id").to_numpy().astype(np.int64),
                             np.full(len(video_ids) - n_old, -1, np.int64)])
    new = person < 0
    report.new_clusters = int(new.sum())
    threshold = catalogue_threshold(evidence, embedding, video_code.astype(np.int64))
    report.threshold = threshold.to_dict()
    next_id = int(state.meta.get("next_person_id", 1))
    links = find_links(embedding, video_code.astype(np.int64), new, threshold) if len(video_ids) else None
    report.links = len(links) if links is not None else 0
    keys = list(zip(video_ids, cluster_ids, fingerprints))
    shares_with = kept.column("shares_frame_with").to_pylist() + \
        [others for p in parts for others in p.shares_frame_with()]
    if links is not None:
        assignment = assign_persons(video_code, person, links, next_id, [(v, c) for v, c, _ in keys],
                                    shares_frame_rows(video_ids, cluster_ids, shares_with))
        person, link_distance, next_id = assignment.person_id, assignment.link_distance, assignment.next_person_id
    else:
        link_distance = np.zeros(0, np.float32)
    if relink:
        person, next_id = _keep_old_ids(person, [previous_ids.get(k) for k in keys], next_id,
                                        [(v, c) for v, c, _ in keys])
    names = dict(zip(state.persons.column("person_id").to_pylist(), state.persons.column("name").to_pylist()))
    person, names, next_id, by_archivist = decision_log.apply(pending, keys, person, names, next_id)
    report.decisions_applied = len(pending)

    old_link = kept.column("link_distance").to_numpy(zero_copy_only=False).astype(np.float32) if n_old \
        else np.zeros(0, np.float32)
    link_distance = np.where(new, link_distance, np.concatenate([old_link, np.full(len(new) - n_old, np.nan)])) \
        if len(new) else link_distance
    old_by = kept.column("linked_by").to_pylist()
    linked_by = [("archivist" if by_archivist[i] else old_by[i]) if i < n_old else
                 ("archivist" if by_archivist[i] else ("founder" if np.isnan(link_distance[i]) else "auto"))
                 for i in range(len(new))]
    own_all = np.concatenate([kept.column("own_nearest").to_numpy(zero_copy_only=False).astype(np.float32)]
                             + [own[p.video_id] for p in parts]) if len(new) else np.zeros(0, np.float32)

    def new_col(attr: str) -> list:
        return [x for p in parts for x in getattr(p, attr).tolist()]

    clusters = pa.table({
        "video_id": video_ids, "cluster_id": cluster_ids, "person_id": person,
        "n_tracks": kept.column("n_tracks").to_pylist() + new_col("n_tracks"),
        "n_crops": kept.column("n_crops").to_pylist() + new_col("n_crops"),
        "screen_s": kept.column("screen_s").to_pylist() + new_col("screen_s"),
        "embedding": matrix_column(embedding),
        "own_nearest": own_all, "link_distance": link_distance, "linked_by": linked_by,
        "thumb_crop_id": kept.column("thumb_crop_id").to_pylist() + new_col("thumb_crop_id"),
        "video_fingerprint": fingerprints, "shares_frame_with": shares_with,
    }, schema=PERSON_CLUSTERS)
    order = np.lexsort((np.array(cluster_ids, np.int64), np.array(video_ids, dtype=object).astype(str))) \
        if video_ids else np.zeros(0, np.int64)
    clusters = clusters.take(pa.array(order, pa.int64()))
    added = pa.table({
        "video_id": [p.video_id for p in parts],
        "video_fingerprint": [entries[p.video_id].fingerprint for p in parts],
        "n_clusters": [len(p) for p in parts], "generation": [state.generation + 1] * len(parts),
        "min_cooccurring": [evidence[p.video_id].min_cooccurring for p in parts],
        "n_cooccurring": [evidence[p.video_id].n_cooccurring for p in parts],
        "min_within": [evidence[p.video_id].min_within for p in parts],
        "n_within": [evidence[p.video_id].n_within for p in parts],
    }, schema=PERSON_VIDEOS)
    videos = pa.concat_tables([videos_old.cast(PERSON_VIDEOS), added])
    videos = videos.take(pa.array(np.argsort(np.array(videos.column("video_id").to_pylist(), dtype=object)
                                             .astype(str), kind="stable"), pa.int64())) if videos.num_rows else videos
    meta = {**state.meta, "next_person_id": next_id, "threshold": threshold.to_dict()}
    return IndexState(clusters, persons_table(clusters, names), videos, meta, state.pointer_etag)


def _keep_old_ids(person: np.ndarray, old: list[int | None], next_id: int,
                  order_key: list[tuple[str, int]]) -> tuple[np.ndarray, int]:
    """After a full re-link: each new group takes the old id most of its clusters had, if still free."""
    overlap: dict[tuple[int, int], int] = {}
    for p, o in zip(person.tolist(), old):
        if o is not None:
            overlap[(p, o)] = overlap.get((p, o), 0) + 1
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for (p, o), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if p not in mapping and o not in used:
            mapping[p], _ = o, used.add(o)
    rest = sorted({p for p in person.tolist() if p not in mapping},
                  key=lambda p: min(order_key[i] for i in np.flatnonzero(person == p).tolist()))
    start = max([next_id, *(o + 1 for o in used)])
    for p in rest:
        mapping[p], start = start, start + 1
    return np.array([mapping[p] for p in person.tolist()], np.int64), start


def persons_table(clusters: pa.Table, names: dict[int, str | None]) -> pa.Table:
    """One row per person from the cluster rows: counts, screen time, crop-weighted mean embedding, thumbnails."""
    if clusters.num_rows == 0:
        return PERSONS.empty_table()
    pid = clusters.column("person_id").to_numpy()
    ids, inv = np.unique(pid, return_inverse=True)
    emb = list_column_matrix(clusters.column("embedding")).astype(np.float64)
    crops = clusters.column("n_crops").to_numpy().astype(np.float64)
    sums = np.zeros((len(ids), emb.shape[1]))
    np.add.at(sums, inv, emb * crops[:, None])
    screen = clusters.column("screen_s").to_numpy()
    video = np.array(clusters.column("video_id").to_pylist(), dtype=object).astype(str)
    pairs = np.unique(np.stack([inv, np.unique(video, return_inverse=True)[1]]), axis=1)
    n_videos = np.bincount(pairs[0], minlength=len(ids))
    order = np.lexsort((-screen, inv))
    first = np.searchsorted(inv[order], np.arange(len(ids)))
    thumbs_crop = clusters.column("thumb_crop_id").to_numpy()
    thumbnails = []
    for i in range(len(ids)):
        rows = order[first[i]:first[i + 1] if i + 1 < len(ids) else len(order)][:THUMBNAILS]
        thumbnails.append([{"video_id": str(video[r]), "crop_id": int(thumbs_crop[r])} for r in rows])
    return pa.table({
        "person_id": ids, "name": [names.get(int(p)) for p in ids],
        "n_videos": n_videos.astype(np.int32), "n_clusters": np.bincount(inv).astype(np.int32),
        "n_tracks": np.bincount(inv, clusters.column("n_tracks").to_numpy()).astype(np.int32),
        "screen_s": np.bincount(inv, screen),
        "embedding": matrix_column(unit(sums)),
        "thumbnails": thumbnails,
    }, schema=PERSONS)


def matrix_column(matrix: np.ndarray) -> pa.Array:
    """A float32 matrix [n, d] as a list<float32> column, without a Python loop."""
    m = np.ascontiguousarray(matrix, np.float32)
    if m.ndim != 2 or m.shape[1] == 0:
        return pa.array([[] for _ in range(len(m))], pa.list_(pa.float32()))
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1]).cast(pa.list_(pa.float32()))


def shares_frame_rows(video_ids: list[str], cluster_ids: list[int], shares_with: list[list[int] | None]
                      ) -> list[set[int] | None]:
    """Per row, the rows of its video that share a frame with it (None where the index does not know)."""
    row_of = {(v, c): r for r, (v, c) in enumerate(zip(video_ids, cluster_ids))}
    return [None if others is None else {row_of[(v, c)] for c in others if (v, c) in row_of}
            for v, others in zip(video_ids, shares_with)]
