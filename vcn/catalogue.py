"""The catalogue job's bookkeeping: list input videos, decide what to (re)process, the run manifest, the dataset.

Layout of a catalogue output (a local folder or an s3:// prefix):

    OUT/manifest.json                                   the run manifest (one entry per video, rewritten atomically)
    OUT/videos/<video_id>/*.parquet, source.json, summary.json   what `vcn run` writes, plus the source fingerprint
    OUT/tracks/video_id=<video_id>/part-0.parquet      the catalogue dataset: one row per track (hive partitions)

A video is complete when its summary.json exists (on S3 it is uploaded last; locally the folder is swapped in
whole) and lists the requested stages. It is skipped when it is complete and its source still has the size and
modification time (local) or ETag (S3) recorded for it. This module is the serial executor as well; the Ray
executors in vcn.distributed use the same planning, per-video finishing and manifest code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from vcn import storage
from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.leftovers import sweep, sweep_output, tmp_prefix, video_work_dir
from vcn.outputs import json_default, swap_in
from vcn.tables import CATALOGUE_TRACKS

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"})
MANIFEST = "manifest.json"
VIDEOS_DIR = "videos"
DATASET_DIR = "tracks"
SOURCE = "source.json"
SUMMARY = "summary.json"
STAGES = ("detect", "track", "cluster")

# One row per track over the whole catalogue; video_id is the hive partition key (a folder, not a column).
PARTITIONING_SCHEMA = pa.schema([pa.field("video_id", pa.string())])


# ----- inputs ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInput:
    """One video of the catalogue and the fingerprint that tells whether it changed since the last run."""

    uri: str                      # local path or s3://bucket/key
    video_id: str                 # unique, stable, folder-safe
    size: int = -1
    mtime: float | None = None    # local files: st_mtime (seconds)
    etag: str | None = None       # S3 objects
    error: str | None = None      # the input cannot be read (listed in a manifest file but missing)

    def fingerprint(self) -> dict[str, Any]:
        return {"size": self.size, "mtime": self.mtime, "etag": self.etag}

    def same_source(self, recorded: dict[str, Any] | None) -> bool:
        """True when `recorded` (a fingerprint from an earlier run) describes this same content."""
        if not recorded or recorded.get("size") != self.size or self.size < 0:
            return False
        if self.etag:
            return recorded.get("etag") == self.etag
        return recorded.get("mtime") is not None and recorded.get("mtime") == self.mtime


def video_id_for_relpath(rel: str) -> str:
    """A folder-safe, unique, stable id from a video's path relative to the catalogue root.

    Folders are joined with '__' and the extension is kept ('show/ep1.mp4' -> 'show__ep1.mp4'), so ep1.mp4 and
    ep1.mkv stay apart. When that mapping loses information (characters replaced, '__' already in a name, a
    leading '.'), a hash of the relative path is appended so two inputs never share an id.
    """
    parts = [p for p in rel.replace("\\", "/").split("/") if p]
    joined = "__".join(parts)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", joined)
    lossy = safe != joined or any("__" in p for p in parts) or safe.startswith(".") or not safe
    if safe.startswith("."):
        safe = "_" + safe[1:]
    digest = hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8]
    if len(safe) > 180:
        safe, lossy = safe[:170], True
    return f"{safe}-{digest}" if lossy else safe


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def list_inputs(source: str | os.PathLike, max_videos: int | None = None) -> list[VideoInput]:
    """The catalogue's videos, sorted by id: a local folder (recursive), an s3:// prefix, or a manifest file.

    A manifest file lists one URI (local path, relative to the manifest's folder, or s3://) per line; a line
    may add a tab and an explicit video id; blank lines and lines starting with '#' are ignored.
    """
    source = str(source)
    if storage.is_s3(source):
        videos = _list_s3(source)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            videos = _list_folder(path)
        elif path.is_file() and is_video_name(path.name):
            st = path.stat()
            videos = [VideoInput(str(path.resolve()), video_id_for_relpath(path.name), st.st_size, st.st_mtime)]
        elif path.is_file():
            videos = _list_manifest_file(path)
        else:
            raise VcnError(f"--input {source}: no such folder or file; pass a folder of videos, an s3:// prefix, "
                           "or a text file listing one video URI per line")
    videos.sort(key=lambda v: v.video_id)
    seen: dict[str, str] = {}
    for v in videos:
        if v.video_id in seen and seen[v.video_id] != v.uri:
            raise VcnError(f"--input {source}: {seen[v.video_id]} and {v.uri} both map to video id {v.video_id!r}; "
                           "give one of them another id (manifest line: URI<TAB>id)")
        seen[v.video_id] = v.uri
    unique = list({v.video_id: v for v in videos}.values())
    return unique[:max_videos] if max_videos else unique


def _list_folder(root: Path) -> list[VideoInput]:
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        # Hidden files and folders (.part downloads, .Trash) are never catalogue videos.
        if any(p.startswith(".") for p in rel.parts) or not path.is_file() or not is_video_name(path.name):
            continue
        st = path.stat()
        found.append(VideoInput(str(path.resolve()), video_id_for_relpath(rel.as_posix()), st.st_size, st.st_mtime))
    return found


def _list_s3(uri: str) -> list[VideoInput]:
    bucket, key = storage.split_s3(uri)
    prefix = key if (not key or key.endswith("/")) else key + "/"
    found = []
    for obj in storage.list_objects(f"s3://{bucket}/{prefix}"):
        rel = obj["key"][len(prefix):]
        if not rel or not is_video_name(rel) or any(p.startswith(".") for p in rel.split("/")):
            continue
        found.append(VideoInput(obj["uri"], video_id_for_relpath(rel), obj["size"], etag=obj["etag"]))
    return found


def _list_manifest_file(path: Path) -> list[VideoInput]:
    found = []
    base = path.resolve().parent
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        uri, _, explicit_id = (s.strip() for s in line.partition("\t"))
        if storage.is_s3(uri):
            rel = "/".join(storage.split_s3(uri))
            video_id = explicit_id or video_id_for_relpath(rel)
            head = storage.head_object(uri)
            if head is None:
                found.append(VideoInput(uri, video_id, error=f"{uri} (line {number} of {path}) does not exist; "
                                                             "fix the URI or remove the line"))
            else:
                found.append(VideoInput(uri, video_id, head["size"], etag=head["etag"]))
            continue
        p = Path(uri).expanduser()
        p = p if p.is_absolute() else base / p
        try:
            rel = p.resolve().relative_to(base).as_posix()
        except ValueError:
            rel = p.resolve().as_posix().lstrip("/")
        video_id = explicit_id or video_id_for_relpath(rel)
        if not p.is_file():
            found.append(VideoInput(str(p), video_id, error=f"{p} (line {number} of {path}) is not a file; "
                                                            "fix the path or remove the line"))
            continue
        st = p.stat()
        found.append(VideoInput(str(p.resolve()), video_id, st.st_size, st.st_mtime))
    if explicit := [v.video_id for v in found if not re.fullmatch(r"[A-Za-z0-9._-]+", v.video_id)]:
        raise VcnError(f"{path}: video ids may hold only letters, digits, '.', '_' and '-'; fix {explicit[:3]}")
    return found


def stages_through(stages: Iterable[str]) -> list[str]:
    """A requested stage needs every earlier one: 'cluster' alone means all three."""
    stages = list(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise VcnError(f"stages {stages}: choose from {', '.join(STAGES)}")
    return list(STAGES[: max(STAGES.index(s) for s in stages) + 1])


# ----- where a local copy of an input video lives on a worker ------------------------------------------------------

def video_cache_dir() -> Path:
    return Path(os.environ.get("VCN_VIDEO_CACHE") or Path(tempfile.gettempdir()) / "vcn-video-cache")


def local_video(video: VideoInput) -> Path:
    """A local file with the video's bytes: the file itself, or a node-local cached download of an S3 object.

    The cache name includes the ETag, so a changed object is downloaded again; concurrent tasks on one node
    share a download (the file appears by atomic rename).
    """
    if not storage.is_s3(video.uri):
        return Path(video.uri)
    key = hashlib.sha1(f"{video.uri}\0{video.etag}".encode()).hexdigest()[:20]
    target = video_cache_dir() / f"{key}{Path(video.uri).suffix.lower()}"
    if not target.is_file():
        sweep(target.parent)    # downloads (.part) of killed workers
        storage.download_file(video.uri, target)
    return target


def drop_cached_video(video: VideoInput) -> None:
    if storage.is_s3(video.uri):
        key = hashlib.sha1(f"{video.uri}\0{video.etag}".encode()).hexdigest()[:20]
        (video_cache_dir() / f"{key}{Path(video.uri).suffix.lower()}").unlink(missing_ok=True)


# ----- the output store ---------------------------------------------------------------------------------------

class OutputStore:
    """A catalogue output root, a local folder or an s3:// prefix. Holds only the URI, so it pickles to workers."""

    def __init__(self, uri: str | os.PathLike):
        uri = str(uri)
        self.is_s3 = storage.is_s3(uri)
        self.uri = uri.rstrip("/") if self.is_s3 else str(Path(uri).expanduser().resolve())
        if self.is_s3:
            storage.split_s3(self.uri)  # validates the bucket part

    def __repr__(self) -> str:
        return f"OutputStore({self.uri!r})"

    def _join(self, *parts: str) -> str:
        return "/".join([self.uri, *parts]) if self.is_s3 else str(Path(self.uri, *parts))

    def video_uri(self, video_id: str) -> str:
        return self._join(VIDEOS_DIR, video_id)

    # small JSON files
    def read_json(self, *parts: str) -> dict[str, Any] | None:
        target = self._join(*parts)
        if self.is_s3:
            data = storage.get_bytes(target)
        else:
            try:
                data = Path(target).read_bytes()
            except FileNotFoundError:
                return None
        if data is None:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            return None  # damaged or foreign: treated as absent

    def write_json(self, obj: Any, *parts: str) -> None:
        data = json.dumps(obj, indent=1, default=json_default).encode()
        target = self._join(*parts)
        if self.is_s3:
            storage.put_bytes(target, data)
        else:
            storage.atomic_write_bytes(target, data)

    def complete_video_ids(self) -> set[str]:
        """Ids whose summary.json exists (one listing, not one request per video)."""
        if self.is_s3:
            prefix = self._join(VIDEOS_DIR) + "/"
            _, key = storage.split_s3(prefix)
            ids = set()
            for obj in storage.list_objects(prefix):
                rel = obj["key"][len(key):].split("/")
                if len(rel) == 2 and rel[1] == SUMMARY:
                    ids.add(rel[0])
            return ids
        root = Path(self.uri, VIDEOS_DIR)
        return {p.parent.name for p in root.glob(f"*/{SUMMARY}")} if root.is_dir() else set()

    def summary(self, video_id: str) -> dict[str, Any] | None:
        return self.read_json(VIDEOS_DIR, video_id, SUMMARY)

    def source(self, video_id: str) -> dict[str, Any] | None:
        return self.read_json(VIDEOS_DIR, video_id, SOURCE)

    def fetch_video(self, video_id: str, dest_root: str | os.PathLike) -> Path | None:
        """Copy a video's output folder to dest_root/<video_id> (to resume later stages); None when absent."""
        dest = Path(dest_root) / video_id
        if self.is_s3:
            if self.summary(video_id) is None:
                return None
            return storage.download_prefix(self.video_uri(video_id), dest)
        src = Path(self.video_uri(video_id))
        if not (src / SUMMARY).is_file():
            return None
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return dest

    def publish(self, folder: str | os.PathLike, video_id: str) -> str:
        """Make `folder` the video's complete output: nobody ever sees a mix of old and new files.

        Local: copy beside the old folder, then swap by rename. S3: remove the old summary.json first (the old
        output stops counting as complete), upload the new files, delete files the new output lacks, then
        upload summary.json last.
        """
        folder = Path(folder)
        if not (folder / SUMMARY).is_file():
            raise ValueError(f"{folder} has no {SUMMARY}; only finished outputs are published")
        target = self.video_uri(video_id)
        if self.is_s3:
            bucket, key = storage.split_s3(target + "/")
            client = storage.s3_client()
            client.delete_object(Bucket=bucket, Key=key + SUMMARY)
            existing = {o["key"] for o in storage.list_objects(target + "/", client)}
            uploaded = set(storage.upload_folder(folder, target, last=(SUMMARY,), client=client))
            for stale in sorted(existing - uploaded):
                client.delete_object(Bucket=bucket, Key=stale)
            return target
        final = Path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(video_id), suffix=".tmp", dir=final.parent))
        try:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
            swap_in(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def write_dataset_part(self, video_id: str, table: pa.Table) -> str:
        """Replace the video's partition of the catalogue dataset (one file, written atomically)."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        target = self._join(DATASET_DIR, f"video_id={video_id}", "part-0.parquet")
        if self.is_s3:
            storage.put_bytes(target, sink.getvalue().to_pybytes())
        else:
            storage.atomic_write_bytes(target, sink.getvalue().to_pybytes())
        return target


def read_catalogue(output: str | os.PathLike) -> pa.Table:
    """The catalogue dataset (one row per track, with its video_id) of a local or s3:// output."""
    store = OutputStore(output)
    if store.is_s3:
        parts = []
        for obj in storage.list_objects(store._join(DATASET_DIR) + "/"):
            m = re.search(r"/video_id=([^/]+)/[^/]+\.parquet$", obj["key"])
            if m:
                t = pq.read_table(pa.BufferReader(storage.get_bytes(obj["uri"])))
                parts.append(t.append_column("video_id", pa.array([m.group(1)] * t.num_rows, pa.string())))
        return pa.concat_tables(parts) if parts else CATALOGUE_TRACKS.append(PARTITIONING_SCHEMA.field(0)).empty_table()
    import pyarrow.dataset as ds

    root = Path(store.uri, DATASET_DIR)
    if not root.is_dir():
        return CATALOGUE_TRACKS.append(PARTITIONING_SCHEMA.field(0)).empty_table()
    # An explicit string partition key: hive inference would turn an id like "2024" into an integer.
    dataset = ds.dataset(root, format="parquet", partitioning=ds.partitioning(PARTITIONING_SCHEMA, flavor="hive"))
    return dataset.to_table()


# ----- per-video finishing (shared by every executor) ----------------------------------------------------------

def catalogue_tracks(video_dir: str | os.PathLike, source_uri: str) -> pa.Table:
    """The catalogue rows of one finished video folder: its tracks joined with their clusters when present."""
    video_dir = Path(video_dir)
    tracks = pq.read_table(video_dir / "tracks.parquet") if (video_dir / "tracks.parquet").is_file() else None
    if tracks is None or tracks.num_rows == 0:
        return CATALOGUE_TRACKS.empty_table()
    n = tracks.num_rows
    cluster = {"cluster_id": [None] * n, "reason": [None] * n, "track_quality": [None] * n}
    if (video_dir / "clusters.parquet").is_file():
        clusters = pq.read_table(video_dir / "clusters.parquet").to_pylist()
        by_track = {r["track_id"]: r for r in clusters}
        for i, t in enumerate(tracks.column("track_id").to_pylist()):
            row = by_track.get(t)
            if row is not None:
                cluster["cluster_id"][i] = row["cluster_id"]
                cluster["reason"][i] = row["reason"]
                cluster["track_quality"][i] = row["track_quality"]
    columns = {}
    for f in CATALOGUE_TRACKS:
        if f.name in cluster:
            columns[f.name] = pa.array(cluster[f.name], f.type)
        elif f.name == "source_uri":
            columns[f.name] = pa.array([source_uri] * n, f.type)
        else:
            columns[f.name] = tracks.column(f.name).cast(f.type)
    return pa.table(columns, schema=CATALOGUE_TRACKS)


def finish_video(video_dir: str | os.PathLike, video: VideoInput, store: OutputStore) -> dict[str, Any]:
    """Record the source fingerprint, write the dataset partition, then publish the folder (complete last).

    Returns the summary (what the manifest records of the video).
    """
    video_dir = Path(video_dir)
    storage.atomic_write_bytes(video_dir / SOURCE, json.dumps({"uri": video.uri, **video.fingerprint()}).encode())
    store.write_dataset_part(video.video_id, catalogue_tracks(video_dir, video.uri))
    summary = json.loads((video_dir / SUMMARY).read_text())
    store.publish(video_dir, video.video_id)
    return summary


def summary_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The parts of a video's summary.json that the manifest keeps."""
    seconds = summary.get("seconds", {})
    return {"stages": summary.get("stages_done", []), "counts": summary.get("counts", {}),
            "frames": int(seconds.get("frames_scanned") or summary.get("video_info", {}).get("n_frames") or 0),
            "partial": bool(summary.get("partial", False))}


def error_text(e: BaseException) -> str:
    """A VcnError's message as is; anything else with its type and the innermost frame (a bug, not an input)."""
    if isinstance(e, VcnError):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


# ----- planning ---------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    video: VideoInput
    action: str      # skip | resume | run | fail
    reason: str


def plan_videos(videos: list[VideoInput], store: OutputStore, manifest: "RunManifest",
                stages: Iterable[str]) -> list[Plan]:
    """Decide per video: skip (complete, same source), resume (same source, later stages missing), run, or fail."""
    wanted = set(stages_through(stages))
    complete = store.complete_video_ids()
    plans = []
    for v in videos:
        if v.error:
            plans.append(Plan(v, "fail", v.error))
            continue
        if v.video_id not in complete:
            plans.append(Plan(v, "run", "new" if v.video_id not in manifest.videos else "not complete"))
            continue
        entry = manifest.videos.get(v.video_id) or {}
        recorded = entry if entry.get("status") in ("done", "skipped") else None
        if not v.same_source(recorded):
            # The manifest may be missing or older than the output (a job killed before it was rewritten):
            # the output's own source.json is the authority then.
            recorded = store.source(v.video_id)
            entry = {}
        if not v.same_source(recorded):
            plans.append(Plan(v, "run", "changed since the last run"))
            continue
        done = set(entry.get("stages") or (store.summary(v.video_id) or {}).get("stages_done", []))
        if wanted <= done:
            plans.append(Plan(v, "skip", "complete and unchanged"))
        else:
            plans.append(Plan(v, "resume", f"stages {sorted(wanted - done)} missing"))
    return plans


# ----- the run manifest ---------------------------------------------------------------------------------------

@dataclass
class RunManifest:
    """manifest.json: per video the latest outcome; per run the counts and throughput."""

    videos: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, store: OutputStore) -> "RunManifest":
        data = store.read_json(MANIFEST) or {}
        return cls(videos=dict(data.get("videos", {})), runs=list(data.get("runs", [])))

    def save(self, store: OutputStore) -> None:
        store.write_json({"format": 1, "runs": self.runs, "videos": dict(sorted(self.videos.items()))}, MANIFEST)

    def record(self, video: VideoInput, status: str, run_id: str, error: str | None = None,
               seconds: float | None = None, **extra: Any) -> dict[str, Any]:
        entry = {"uri": video.uri, "status": status, "error": error, **video.fingerprint(),
                 "seconds": None if seconds is None else round(seconds, 3), "run_id": run_id,
                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        if status == "skipped":
            # A skip carries the last real run's figures forward.
            old = self.videos.get(video.video_id, {})
            for k in ("stages", "counts", "frames", "partial", "peak_mib"):
                entry.setdefault(k, old.get(k))
        self.videos[video.video_id] = entry
        return entry


# ----- the job ----------------------------------------------------------------------------------------------------

# An executor runs the plans it is given (never "skip"/"fail" ones) and calls on_result(plan, result) per video,
# where result is {"status": "done"|"failed", "error": str|None, "seconds": float, plus summary_record fields};
# the Ray executors add "peak_mib": {kind of work: peak resident MiB} (vcn.distributed.executors).
Executor = Callable[[list[Plan], OutputStore, RunConfig, list[str], Callable[[Plan, dict], None]], None]


def process_video(plan: Plan, store: OutputStore, cfg: RunConfig, stages: list[str]) -> dict[str, Any]:
    """Run one video through `run_video` in a scratch folder and publish it; never raises for a bad video."""
    from vcn.pipeline import run_video

    video = plan.video
    t0 = time.perf_counter()
    try:
        with video_work_dir() as work:
            if plan.action == "resume":
                store.fetch_video(video.video_id, work)
            path = local_video(video)
            try:
                result = run_video(path, work, cfg, stages=stages, video_id=video.video_id,
                                   force=plan.action != "resume")
            finally:
                drop_cached_video(video)
            summary = finish_video(result.path, video, store)
        return {"status": "done", "error": None, "seconds": time.perf_counter() - t0, **summary_record(summary)}
    except Exception as e:  # one broken video must not stop the catalogue
        return {"status": "failed", "error": error_text(e), "seconds": time.perf_counter() - t0}


def serial_executor(plans: list[Plan], store: OutputStore, cfg: RunConfig, stages: list[str],
                    on_result: Callable[[Plan, dict], None]) -> None:
    for plan in plans:
        on_result(plan, process_video(plan, store, cfg, stages))


@dataclass
class CatalogueReport:
    run_id: str
    counts: dict[str, int]
    wall_s: float
    frames: int
    videos_per_min: float
    frames_per_s: float
    failed: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        c = self.counts
        rows = [("done", c.get("done", 0)), ("skipped", c.get("skipped", 0)), ("failed", c.get("failed", 0)),
                ("wall seconds", f"{self.wall_s:.1f}"), ("frames processed", self.frames),
                ("videos / minute", f"{self.videos_per_min:.2f}"), ("frames / second", f"{self.frames_per_s:.1f}")]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"failed {vid}: {err}" for vid, err in self.failed.items()]
        return "\n".join(lines)


def run_catalogue(source: str, output: str, cfg: RunConfig | None = None, stages: Iterable[str] = STAGES,
                  max_videos: int | None = None, executor: Executor = serial_executor,
                  log: Callable[[str], None] = print) -> CatalogueReport:
    """List, plan, run and record a catalogue; a second call over the same inputs processes only what changed."""
    from vcn.pipeline import check_settings

    cfg = cfg or RunConfig()
    wanted = stages_through(stages)
    # A typo stops the job before any video is listed or started; devices are the workers' to resolve.
    check_settings(cfg, wanted, devices_here=False)
    store = OutputStore(output)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    started = time.time()
    t0 = time.perf_counter()
    videos = list_inputs(source, max_videos)
    if not store.is_s3:     # S3 objects are written whole: nothing half-written to sweep
        for line in sweep_output(store.uri):
            log(f"leftover of a killed run: {line}")
    manifest = RunManifest.load(store)
    plans = plan_videos(videos, store, manifest, wanted)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    failed: dict[str, str] = {}
    frames = 0
    finished = 0
    last_save = time.monotonic()
    log(f"catalogue {source} -> {store.uri}: {len(videos)} videos, "
        + ", ".join(f"{a} {sum(p.action == a for p in plans)}" for a in ("run", "resume", "skip", "fail")))

    def note(plan: Plan, status: str, text: str) -> None:
        nonlocal finished
        finished += 1
        log(f"[{finished}/{len(plans)}] {plan.video.video_id}: {status} {text}")

    for plan in plans:
        if plan.action == "skip":
            manifest.record(plan.video, "skipped", run_id, seconds=0.0)
            counts["skipped"] += 1
            note(plan, "skipped", f"({plan.reason})")
        elif plan.action == "fail":
            manifest.record(plan.video, "failed", run_id, error=plan.reason, seconds=0.0)
            counts["failed"] += 1
            failed[plan.video.video_id] = plan.reason
            note(plan, "failed", plan.reason)
    manifest.save(store)

    def on_result(plan: Plan, result: dict[str, Any]) -> None:
        nonlocal frames, last_save
        result = dict(result)
        status, error, seconds = result.pop("status"), result.pop("error", None), result.pop("seconds", None)
        manifest.record(plan.video, status, run_id, error=error, seconds=seconds, **result)
        counts[status] += 1
        if status == "done":
            frames += int(result.get("frames") or 0)
            counts_text = ", ".join(f"{v} {k}" for k, v in (result.get("counts") or {}).items())
            note(plan, "done", f"in {seconds:.1f} s ({result.get('frames', 0)} frames; {counts_text})")
        else:
            failed[plan.video.video_id] = error or "?"
            note(plan, "failed", error or "")
        if time.monotonic() - last_save >= cfg.distributed.manifest_interval_s:
            manifest.save(store)
            last_save = time.monotonic()

    todo = [p for p in plans if p.action in ("run", "resume")]
    try:
        if todo:
            executor(todo, store, cfg, wanted, on_result)
    finally:
        wall = time.perf_counter() - t0
        report = CatalogueReport(run_id, counts, round(wall, 3), frames,
                                 round(counts["done"] / (wall / 60.0), 3) if wall > 0 else 0.0,
                                 round(frames / wall, 2) if wall > 0 else 0.0, failed)
        manifest.runs.append({"run_id": run_id, "input": str(source), "stages": wanted,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "counts": counts, "wall_s": report.wall_s, "frames": frames,
                              "videos_per_min": report.videos_per_min, "frames_per_s": report.frames_per_s,
                              "complete": sum(counts.values()) == len(plans)})
        manifest.save(store)
    if cfg.persons.update_after_catalogue and counts["done"] + counts["skipped"]:
        update_persons_after_run(store, cfg, log)
    return report


def update_persons_after_run(output: "OutputStore | str | os.PathLike", cfg: RunConfig,
                             log: Callable[[str], None], warn: Callable[[str], None] | None = None):
    """Bring OUT/persons/ up to date with the videos now complete in `output` (a catalogue output, or the --out
    folder of `vcn run`, which calls this after each video): the incremental update under the index's lock
    (vcn.persons.index.update_index), so a run with nothing new writes nothing. A failure goes to `warn`
    (default: `log`), never raises: the videos are done, and the next run or `vcn persons update` catches the
    index up. Returns the UpdateReport, or None when the update failed."""
    from vcn.persons import update_index

    uri = output.uri if isinstance(output, OutputStore) else str(output)
    try:
        report = update_index(uri, wait_s=cfg.persons.wait_s, lease_s=cfg.persons.lease_s)
    except Exception as e:  # the videos' outputs are complete whatever happens to the index
        (warn or log)(f"person index not updated: {error_text(e)}; run `vcn persons update --index {uri}`")
        return None
    log(report.describe())
    return report
