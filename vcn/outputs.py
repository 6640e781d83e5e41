"""A video's output folder `OUT/<video_id>/`: its Parquet tables and summary.json, written atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vcn.errors import VcnError
from vcn.leftovers import old_name, tmp_prefix
from vcn.tables import SCHEMAS, conform

SUMMARY = "summary.json"


def video_id_for(path: str | Path) -> str:
    """A folder-safe id from the file name: letters, digits, '-', '_' and '.' kept, the rest become '_'."""
    stem = Path(str(path)).stem or "video"
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


class VideoOutput:
    """The finished output of one video. Nothing here is ever half-written: `commit` swaps in a whole folder."""

    def __init__(self, out_dir: str | Path, video_id: str):
        self.root = Path(out_dir)
        self.video_id = video_id
        self.path = self.root / video_id

    def summary(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / SUMMARY).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a foreign or damaged file: treat the video as not done

    def stages_done(self) -> list[str]:
        summary = self.summary()
        return list(summary.get("stages_done", [])) if summary else []

    def has(self, name: str) -> bool:
        return (self.path / f"{name}.parquet").is_file()

    def load(self, name: str) -> pa.Table:
        file = self.path / f"{name}.parquet"
        if not file.is_file():
            raise VcnError(f"{file} is missing: run `vcn run` on the video with the stage that writes {name!r} first")
        table = pq.read_table(file)
        if name not in SCHEMAS:
            return table
        try:
            return conform(name, table)
        except (ValueError, pa.ArrowInvalid) as e:
            raise VcnError(f"{file} is not a {name} table of this vcn ({e}): re-run `vcn run` on the video with "
                           f"--force to rebuild it") from None

    def spill_path(self, name: str) -> Path:
        """A private file beside the output folder for table `name` written piece by piece (same filesystem, so
        `commit(files=...)` moves it in by a rename). The caller removes it if the run fails."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=tmp_prefix(f"{self.video_id}.{name}"), suffix=".parquet.tmp",
                                    dir=self.root)
        os.close(fd)
        return Path(path)

    def commit(self, tables: dict[str, pa.Table], summary: dict[str, Any], keep: list[str] | None = None,
               extra_files: dict[str, bytes] | None = None, files: dict[str, Path] | None = None) -> Path:
        """Write a new complete folder beside the old one, then swap it in.

        Earlier tables not given are carried over when named in `keep` (None keeps all), so a resumed run
        keeps what it did not recompute and drops what a recomputed stage made stale. `files`: tables already
        written as Parquet (from `spill_path`), moved in under their names.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(self.video_id), suffix=".tmp", dir=self.root))
        try:
            if self.path.is_dir():
                for old in self.path.iterdir():
                    if old.is_file() and old.suffix == ".parquet" and (keep is None or old.stem in keep):
                        shutil.copy2(old, tmp / old.name)
            for name, table in tables.items():
                pq.write_table(table, tmp / f"{name}.parquet")
            for name, source in (files or {}).items():
                os.replace(source, tmp / f"{name}.parquet")
            for name, data in (extra_files or {}).items():
                (tmp / name).write_bytes(data)
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, default=json_default))
            swap_in(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.path


def swap_in(new: Path, final: Path) -> None:
    """Put the folder `new` at `final` by renames, replacing any folder already there (no half folder at `final`).

    Killed between the two renames, the previous output waits under `old_name`; the next run's sweep
    (vcn.leftovers) renames it back."""
    if not final.exists():
        os.rename(new, final)
        return
    old = final.with_name(old_name(final.name))
    shutil.rmtree(old, ignore_errors=True)
    os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def json_default(value: Any) -> Any:
    """json.dumps `default`: numpy scalars become Python numbers, paths become strings."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
