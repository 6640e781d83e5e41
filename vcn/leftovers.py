"""What a killed run leaves behind, and how the next run removes it without touching another live run's files.

vcn writes everything through temporary names that are renamed into place (vcn.outputs, vcn.catalogue,
vcn.storage) and works on a catalogue video in a scratch folder `vcn-video-*` of the system temp folder. A process
that is SIGKILLed (OOM killer, a lost Ray worker, a pod evicted) cannot remove them:

    OUT/.<video_id>.<owner>.<random>.tmp/              VideoOutput.commit / OutputStore.publish, being filled
    OUT/.<video_id>.<table>.<owner>.<random>.parquet.tmp   a table spilled shot by shot (spill_path)
    OUT/.<video_id>.<owner>.old/                       swap_in's previous output, between its two renames
    <folder>/.<file>.<owner>.<random>.tmp              storage.atomic_write_bytes (manifest, dataset parts, index)
    <folder>/.<name>.<owner>.<random>.part             storage.download_file / download_prefix
    $TMPDIR/vcn-<kind>-<owner>-<random>/               a scratch folder (`scratch_dir`): a catalogue worker's
                                                       video, a person-index update, an s3 index download

`vcn run` sweeps its --out folder and the catalogue job its output before they start (`sweep_output`); every
process sweeps the node's stale scratch folders whenever it makes one of its own (`scratch_dir`), and a catalogue
worker its download cache before it downloads.

How a run knows an entry is stale, and why this way: every name carries its owner, `owner_tag()` =
"<node>-<pid>-<start>": the process id, the process's start time (clock ticks since boot, /proc/<pid>/stat) and a
hash of the host name, boot id and pid namespace. An entry is stale when its owner can be checked and is gone:
same node, and no process with that pid started at that time (a reused pid has another start time, so a new
process never keeps a dead run's files alive, nor a dead run's pid makes a live run's files look stale). Two
runs at once (two `vcn run`s into one --out folder, Ray workers sharing a node's /tmp) therefore never delete each
other's files, however long a file sits untouched: a spilled table waits unmodified through the whole finetune, so
an age threshold alone would delete a live run's file. An owner that cannot be checked (another host writing to a
shared folder, another container with its own pid namespace, the machine rebooted since, or a scratch folder
from before owner tags) falls back to age: its entry is stale when nothing in it changed for UNKNOWN_OWNER_AGE_S.
Hidden names without an owner tag are never touched (they could be another program's). A lock held
per entry (flock) would also detect a dead owner, but needs an open descriptor kept for each entry's whole life,
including spill files handed to the pipeline, and locks on folders do not work over NFS.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

UNKNOWN_OWNER_AGE_S = 24 * 3600.0
# What scratch folders are for: vcn-<kind>-... in the system temp folder.
SCRATCH_KINDS = ("video", "persons", "index", "chromium")
_TAG = r"[0-9a-f]{8}-\d+-\d+"
_RANDOM = r"[a-z0-9_]{8}"                       # tempfile's random part
# Hidden temporary names: the stem, the owner, tempfile's random part. Only names with an owner are vcn's for sure
# (`.x.abcd1234.tmp` is any program's tempfile name), so hidden entries from before owner tags are left alone;
# scratch folders are vcn's by their prefix, so an untagged one goes by age.
_HIDDEN = re.compile(rf"\.(?P<stem>.+?)\.(?P<tag>{_TAG})\.{_RANDOM}(?:\.parquet)?\.(?:tmp|part)")
_OLD = re.compile(rf"\.(?P<stem>.+?)\.(?P<tag>{_TAG})\.old")
_WORK = re.compile(rf"vcn-(?:{'|'.join(SCRATCH_KINDS)})-(?:(?P<tag>{_TAG})-)?{_RANDOM}")

_cached: tuple[int, str] | None = None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _node() -> str:
    """This machine, boot and pid namespace: pids and start times compare only within one."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    text = "\0".join((socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), namespace))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _process(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of a process, None when there is none (or no /proc)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat[stat.rfind(")") + 2:].split()    # after "pid (comm) ": state is field 3, starttime field 22
    return int(fields[19]), fields[0]


def owner_tag() -> str:
    """This process as '<node>-<pid>-<start>' (start 0 without /proc). Recomputed in a forked child."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        me = _process(pid)
        _cached = (pid, f"{_node()}-{pid}-{me[0] if me else 0}")
    return _cached[1]


def tmp_prefix(stem: str) -> str:
    """The prefix of a hidden temporary entry for `stem` (tempfile.mkstemp/mkdtemp(prefix=...))."""
    return f".{stem}.{owner_tag()}."


def old_name(name: str) -> str:
    """Where swap_in parks the previous folder `name` between its two renames."""
    return f".{name}.{owner_tag()}.old"


def owner_alive(tag: str) -> bool | None:
    """Whether the process of an owner tag still runs; None when this process cannot tell (another node)."""
    node, pid, start = tag.split("-")
    if node != _node():
        return None
    pid, start = int(pid), int(start)
    if start == 0:                                  # no /proc: a pid check alone (a reused pid keeps files: safe)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    now = _process(pid)
    return now is not None and now[0] == start and now[1] not in ("Z", "X")


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for parent, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
                except OSError:
                    pass
    return newest


def is_stale(path: Path, tag: str | None, now: float | None = None) -> bool:
    alive = owner_alive(tag) if tag else None
    if alive is not None:
        return not alive
    try:
        return _newest_mtime(path) < (time.time() if now is None else now) - UNKNOWN_OWNER_AGE_S
    except OSError:
        return False                                # gone already


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep(folder: str | os.PathLike) -> list[str]:
    """Remove the stale hidden temporary entries directly in `folder`; returns what was done, one line each.

    A stale `.<name>.<owner>.old` whose `<name>` is missing is renamed back to `<name>` (its owner died between
    swap_in's two renames, so it is the last complete output); otherwise it is removed.
    """
    folder = Path(folder)
    done: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return done
    for entry in entries:
        name = entry.name
        old = _OLD.fullmatch(name)
        match = old or _HIDDEN.fullmatch(name)
        if not match:
            continue
        path = folder / name
        if not is_stale(path, match.group("tag")):
            continue
        final = folder / match.group("stem")
        try:
            if old and not final.exists():
                os.rename(path, final)
                done.append(f"restored {final} from {name}")
                continue
        except OSError:
            continue                                # another run restored or removed it first
        _remove(path)
        done.append(f"removed {path}")
    return done


def sweep_output(root: str | os.PathLike) -> list[str]:
    """Sweep an output folder where vcn writes: OUT itself, each folder in it (`vcn run`'s OUT/<video_id>/, a
    catalogue's videos/, tracks/, persons/) and the folders in tracks/ and persons/ (dataset partitions, index
    generations, decisions). Video folders of a catalogue are not entered: nothing is written in them in place."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = sweep(root)
    for level1 in _subfolders(root):
        done += sweep(level1)
        if level1.name in ("tracks", "persons"):
            for level2 in _subfolders(level1):
                done += sweep(level2)
    return done


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder)
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def sweep_work_dirs(parent: str | os.PathLike | None = None) -> list[str]:
    """Remove stale scratch folders (`vcn-<kind>-*`) of dead processes from the temp folder (or `parent`)."""
    parent = Path(parent or tempfile.gettempdir())
    done: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return done
    for entry in entries:
        match = _WORK.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and is_stale(Path(entry.path), match.group("tag")):
            shutil.rmtree(entry.path, ignore_errors=True)
            done.append(f"removed {entry.path}")
    return done


@contextmanager
def scratch_dir(kind: str) -> Iterator[str]:
    """A private scratch folder vcn-<kind>-<owner>-* in the temp folder (removed after), after removing those
    that dead processes left behind: a SIGKILL skips TemporaryDirectory's clean-up."""
    if kind not in SCRATCH_KINDS:
        raise ValueError(f"scratch folder kind {kind!r}; choose one of {SCRATCH_KINDS}")
    sweep_work_dirs()
    with tempfile.TemporaryDirectory(prefix=f"vcn-{kind}-{owner_tag()}-") as work:
        yield work


def video_work_dir():
    """A private scratch folder for one catalogue video (see scratch_dir)."""
    return scratch_dir("video")
