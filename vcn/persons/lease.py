"""One writer at a time for a person index: an OS file lock locally, an expiring lease object on S3.

Locally `flock` on OUT/persons/LOCK: the kernel releases it when the holder exits or is killed, so a crashed
update never blocks the next. On S3 the lease is the object OUT/persons/LOCK, created with a conditional PUT
(If-None-Match: *) so two runs cannot both create it; an expired lease (its holder died) is taken over with a
PUT conditional on the stale object's ETag, so two runs cannot both take it over. The index pointer is also
written conditionally (vcn.persons.store), so even a holder that lost its lease cannot overwrite a newer index.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vcn import storage
from vcn.errors import VcnError
from vcn.persons.root import PERSONS_DIR, IndexRoot

LOCK = f"{PERSONS_DIR}/LOCK"
DEFAULT_LEASE_S = 900.0


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "lease_id": uuid.uuid4().hex}


@contextmanager
def index_lock(root: IndexRoot, wait_s: float = 0.0, lease_s: float = DEFAULT_LEASE_S,
               poll_s: float = 0.2) -> Iterator["Lease"]:
    """Hold the index's write lock for the `with` body; VcnError when another run holds it past `wait_s`."""
    lease = Lease(root, lease_s)
    deadline = time.monotonic() + wait_s
    while not lease.try_acquire():
        if time.monotonic() >= deadline:
            raise VcnError(f"the person index at {root.uri} is being updated by another run ({lease.holder()}); "
                           "try again when it finishes, or pass a longer --wait")
        time.sleep(poll_s)
    try:
        yield lease
    finally:
        lease.release()


class Lease:
    def __init__(self, root: IndexRoot, lease_s: float):
        self.root, self.lease_s = root, lease_s
        self.owner = _owner()
        self._fd: int | None = None
        self._etag: str | None = None

    # ----- local: flock ------------------------------------------------------------------------------
    def _try_local(self) -> bool:
        import fcntl

        path = Path(self.root.join(LOCK))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.owner).encode())
        self._fd = fd
        return True

    # ----- S3: conditional PUTs ----------------------------------------------------------------------
    def _body(self) -> bytes:
        return json.dumps({**self.owner, "expires_at": time.time() + self.lease_s}).encode()

    def _put(self, **condition) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = storage.split_s3(self.root.join(LOCK))
        try:
            r = self.root.client.put_object(Bucket=bucket, Key=key, Body=self._body(), **condition)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                           "412", "409"):
                return False
            raise
        self._etag = str(r.get("ETag", "")).strip('"')
        return True

    def _try_s3(self) -> bool:
        if self._put(IfNoneMatch="*"):
            return True
        head = storage.head_object(self.root.join(LOCK), self.root.client)
        data = self.root.read(LOCK)
        if head is None or data is None:
            return False            # released in between: the next try creates it
        try:
            expires = float(json.loads(data).get("expires_at", 0))
        except (ValueError, AttributeError):
            expires = 0.0
        if expires > time.time():
            return False
        return self._put(IfMatch=head["etag"])

    def try_acquire(self) -> bool:
        return self._try_s3() if self.root.is_s3 else self._try_local()

    def renew(self) -> None:
        """Extend an S3 lease before a long step; VcnError when it was lost (another run took it over)."""
        if self.root.is_s3 and not self._put(IfMatch=self._etag):
            raise VcnError(f"lost the lease on the person index at {self.root.uri} (the update took longer "
                           f"than {self.lease_s:.0f} s and another run took over); nothing was written")

    def holder(self) -> str:
        data = self.root.read(LOCK)
        try:
            info = json.loads(data or b"{}")
            return f"host {info.get('host')}, pid {info.get('pid')}"
        except ValueError:
            return "unknown holder"

    def release(self) -> None:
        if self.root.is_s3:
            data = self.root.read(LOCK)
            try:
                mine = json.loads(data or b"{}").get("lease_id") == self.owner["lease_id"]
            except ValueError:
                mine = False
            if mine:
                self.root.delete(LOCK)
        elif self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
