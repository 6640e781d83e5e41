"""Where a person index lives: a local folder or an s3:// prefix holding video outputs, with byte-level access.

The index sits beside the videos it links (OUT/persons/ next to OUT/tracks/ and OUT/videos/ of a catalogue, or
next to the OUT/<video_id>/ folders of `vcn run --out OUT`). Everything the index code reads or writes goes
through `IndexRoot`, so one algorithm serves both kinds of storage.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from vcn import storage
from vcn.errors import VcnError
from vcn.leftovers import scratch_dir

SUMMARY = "summary.json"
PERSONS_DIR = "persons"
# Files of a video output the index reads; crops (pixels) only for thumbnails on the catalogue page.
VIDEO_FILES = ("summary.json", "clusters.parquet", "embeddings.parquet", "tracks.parquet")


@dataclass(frozen=True)
class VideoEntry:
    video_id: str
    rel: str              # the video's folder relative to the root ("videos/<id>" or "<id>")
    fingerprint: str      # changes whenever the video's output is rewritten


class IndexRoot:
    """A local folder or s3:// prefix; paths below it are '/'-separated relative names."""

    def __init__(self, uri: str | os.PathLike):
        uri = str(uri)
        self.is_s3 = storage.is_s3(uri)
        if self.is_s3:
            storage.split_s3(uri)
            self.uri = uri.rstrip("/")
        else:
            path = Path(uri).expanduser()
            if not path.is_dir():
                raise VcnError(f"--index {uri}: no such folder; pass the --out folder of `vcn run` or a catalogue "
                               "output folder (or an s3:// prefix of one)")
            self.uri = str(path.resolve())
        self._client = None

    def __repr__(self) -> str:
        return f"IndexRoot({self.uri!r})"

    @property
    def client(self):
        if self._client is None:
            self._client = storage.s3_client()
        return self._client

    def join(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if self.is_s3 else str(Path(self.uri, rel))

    def local_path(self, rel: str) -> Path:
        if self.is_s3:
            raise AssertionError("local_path on an s3:// root")
        return Path(self.uri, rel)

    # ----- bytes ---------------------------------------------------------------------------------------------
    def read(self, rel: str) -> bytes | None:
        if self.is_s3:
            return storage.get_bytes(self.join(rel), self.client)
        try:
            return Path(self.join(rel)).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, rel: str, data: bytes) -> None:
        """Whole or not at all: a single PUT on S3, temp file + rename locally."""
        if self.is_s3:
            storage.put_bytes(self.join(rel), data, self.client)
        else:
            storage.atomic_write_bytes(self.join(rel), data)

    def delete(self, rel: str) -> None:
        if self.is_s3:
            bucket, key = storage.split_s3(self.join(rel))
            storage._s3_call(self.join(rel), "delete", lambda: self.client.delete_object(Bucket=bucket, Key=key))
        else:
            Path(self.join(rel)).unlink(missing_ok=True)

    def list(self, rel_prefix: str) -> list[tuple[str, str]]:
        """(relative name, etag or '') of every file under a folder, sorted."""
        if self.is_s3:
            prefix = self.join(rel_prefix).rstrip("/") + "/"
            _, root_key = storage.split_s3(self.uri + "/")
            return sorted((o["key"][len(root_key):], o["etag"]) for o in storage.list_objects(prefix, self.client))
        base = Path(self.uri, rel_prefix)
        if not base.is_dir():
            return []
        return sorted((p.relative_to(self.uri).as_posix(), "") for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def delete_prefix(self, rel_prefix: str) -> None:
        if self.is_s3:
            storage.delete_prefix(self.join(rel_prefix).rstrip("/") + "/", self.client)
        else:
            import shutil

            shutil.rmtree(self.join(rel_prefix), ignore_errors=True)

    # ----- videos -------------------------------------------------------------------------------------------
    def videos(self) -> list[VideoEntry]:
        """Every complete video output under the root (summary.json present), with its fingerprint.

        A catalogue output keeps videos under videos/<id>/; `vcn run --out OUT` under OUT/<id>/. The
        fingerprint is the summary.json's ETag on S3 (one listing, no reads) and its SHA-1 locally: `vcn run`
        and the catalogue rewrite summary.json last whenever a video is (re)processed.
        """
        if self.is_s3:
            _, root_key = storage.split_s3(self.uri + "/")
            found = []
            for o in storage.list_objects(self.uri + "/", self.client):
                parts = o["key"][len(root_key):].split("/")
                if parts[-1] != SUMMARY:
                    continue
                if len(parts) == 3 and parts[0] == "videos" or len(parts) == 2 and parts[0] != PERSONS_DIR:
                    found.append(VideoEntry(parts[-2], "/".join(parts[:-1]), o["etag"]))
            return _one_per_id(found)
        root = Path(self.uri)
        files = sorted(root.glob(f"videos/*/{SUMMARY}")) + sorted(root.glob(f"*/{SUMMARY}"))
        found = [VideoEntry(f.parent.name, f.parent.relative_to(root).as_posix(),
                            hashlib.sha1(f.read_bytes()).hexdigest())
                 for f in files if not f.parent.name.startswith(".") and f.parent.name != PERSONS_DIR]
        return _one_per_id(found)

    def fetch_video(self, entry: VideoEntry, dest: Path, names: tuple[str, ...] = VIDEO_FILES) -> Path:
        """A local folder with the named files of one video output (the folder itself when local)."""
        if not self.is_s3:
            return Path(self.uri, entry.rel)
        folder = dest / entry.video_id
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            data = self.read(f"{entry.rel}/{name}")
            if data is not None:
                (folder / name).write_bytes(data)
        return folder

    def scratch(self):
        """A private local scratch folder (a context manager giving its path), swept if a run is killed."""
        return scratch_dir("persons")


def _one_per_id(found: list[VideoEntry]) -> list[VideoEntry]:
    """A catalogue's videos/<id> wins over a top-level <id> folder of the same name."""
    by_id: dict[str, VideoEntry] = {}
    for v in found:
        if v.video_id not in by_id or v.rel.startswith("videos/"):
            by_id[v.video_id] = v
    return [by_id[k] for k in sorted(by_id)]
