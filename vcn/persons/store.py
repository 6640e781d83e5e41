"""The person index on disk: immutable generation folders and one pointer written last.

    OUT/persons/CURRENT.json                 {"dir": "gen-000007-1a2b3c", "generation": 7, "threshold": ..., ...}
    OUT/persons/gen-000007-1a2b3c/clusters.parquet   PERSON_CLUSTERS: (video_id, cluster_id) -> person_id
    OUT/persons/gen-000007-1a2b3c/persons.parquet    PERSONS: one row per person, name, videos, screen time
    OUT/persons/gen-000007-1a2b3c/videos.parquet     PERSON_VIDEOS: the videos indexed and their fingerprints
    OUT/persons/decisions/*.json             the archivist's decisions, one object each, never rewritten
    OUT/persons/LOCK                         the writer's lock or lease

An update writes a whole new generation folder, then replaces CURRENT.json (a rename locally, one conditional
PUT on S3). A killed update leaves at most an unreferenced folder; readers follow CURRENT.json and always see one
complete generation. Any Parquet reader can do the same: read CURRENT.json, then the three tables under "dir".
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vcn import storage
from vcn.errors import VcnError
from vcn.persons.root import PERSONS_DIR, IndexRoot
from vcn.tables import PERSON_CLUSTERS, PERSON_VIDEOS, PERSONS

CURRENT = f"{PERSONS_DIR}/CURRENT.json"
TABLES = {"clusters": PERSON_CLUSTERS, "persons": PERSONS, "videos": PERSON_VIDEOS}
KEEP_GENERATIONS = 2     # the current one and the one a reader may have just resolved


@dataclass
class IndexState:
    """One generation of the index in memory, plus the pointer's metadata."""

    clusters: pa.Table = field(default_factory=PERSON_CLUSTERS.empty_table)
    persons: pa.Table = field(default_factory=PERSONS.empty_table)
    videos: pa.Table = field(default_factory=PERSON_VIDEOS.empty_table)
    meta: dict[str, Any] = field(default_factory=lambda: {"format": 1, "generation": 0, "next_person_id": 1,
                                                           "decisions_applied": [], "evidence": {}})
    pointer_etag: str | None = None     # what CURRENT.json was when read (for the conditional write)

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation", 0))


def _table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def with_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` cast to `schema`, with null columns for fields added after it was written (older indexes)."""
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def read_state(root: IndexRoot) -> IndexState:
    """The current generation, or an empty index when there is none yet."""
    raw = root.read(CURRENT)
    if raw is None:
        return IndexState()
    try:
        meta = json.loads(raw)
        folder = meta["dir"]
    except (ValueError, KeyError, TypeError):
        raise VcnError(f"{root.join(CURRENT)} is damaged; restore it from a backup, or delete {PERSONS_DIR}/ "
                       "to rebuild the index (the decisions/ folder keeps the archivist's work)") from None
    tables = {}
    for name, schema in TABLES.items():
        data = root.read(f"{PERSONS_DIR}/{folder}/{name}.parquet")
        if data is None:
            raise VcnError(f"{root.join(CURRENT)} names {folder}/{name}.parquet, which is missing; delete "
                           f"{PERSONS_DIR}/CURRENT.json and re-run `vcn persons --index {root.uri} --update`")
        tables[name] = with_schema(pq.read_table(pa.BufferReader(data)), schema)
    etag = storage.head_object(root.join(CURRENT), root.client)["etag"] if root.is_s3 else raw.decode()
    return IndexState(tables["clusters"], tables["persons"], tables["videos"], meta, etag)


def write_state(root: IndexRoot, state: IndexState, lease=None) -> IndexState:
    """Write `state` as the next generation and point CURRENT.json at it, if CURRENT.json is still what
    `state` was read from; VcnError otherwise (another writer got in between; nothing is lost)."""
    gen = state.generation + 1
    folder = f"gen-{gen:06d}-{uuid.uuid4().hex[:6]}"
    for name in TABLES:
        root.write(f"{PERSONS_DIR}/{folder}/{name}.parquet", _table_bytes(getattr(state, name)))
    meta = {**state.meta, "generation": gen, "dir": folder,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    data = json.dumps(meta, indent=1, sort_keys=True).encode()
    if lease is not None:
        lease.renew()
    _swap_pointer(root, data, state.pointer_etag)
    _drop_old_generations(root, folder, state.meta.get("dir"))
    return read_state(root)


def _swap_pointer(root: IndexRoot, data: bytes, expected: str | None) -> None:
    conflict = VcnError(f"the person index at {root.uri} changed while this update ran (another writer without "
                        "the lock?); nothing was written, run the update again")
    if root.is_s3:
        from botocore.exceptions import ClientError

        bucket, key = storage.split_s3(root.join(CURRENT))
        condition = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        try:
            root.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise conflict from None
            raise
        return
    now = root.read(CURRENT)
    if (now.decode() if now is not None else None) != expected:
        raise conflict
    root.write(CURRENT, data)


def _drop_old_generations(root: IndexRoot, current: str, previous: str | None) -> None:
    keep = {current, previous}
    folders = {rel.split("/")[1] for rel, _ in root.list(PERSONS_DIR) if rel.count("/") >= 2}
    stale = sorted(f for f in folders if f.startswith("gen-") and f not in keep)
    for f in stale:
        root.delete_prefix(f"{PERSONS_DIR}/{f}")
