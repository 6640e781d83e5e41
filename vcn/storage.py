"""Local paths and s3:// URIs: parsing, an S3 client that honours custom endpoints, prefix download, atomic writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vcn.errors import VcnError
from vcn.leftovers import tmp_prefix

# Checked in this order; AWS_ENDPOINT_URL is boto3's own variable, VCN_S3_ENDPOINT_URL lets a user point only vcn
# at MinIO or another S3-compatible server without changing every other AWS tool on the machine.
ENDPOINT_ENV_VARS = ("VCN_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b'); the key may be empty."""
    if not is_s3(uri):
        raise VcnError(f"{uri!r} is not an s3:// URI; write it as s3://bucket/key")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise VcnError(f"{uri!r} names no bucket; write it as s3://bucket/key")
    return bucket, key


def s3_endpoint_url() -> str | None:
    for name in ENDPOINT_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return None


def s3_client():
    """A boto3 S3 client; the endpoint comes from VCN_S3_ENDPOINT_URL or AWS_ENDPOINT_URL when set."""
    import boto3  # imported here so algorithm modules that import storage for paths stay light

    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint_url())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def download_prefix(uri: str, dest_dir: str | os.PathLike) -> Path:
    """Download every object under an s3:// prefix into dest_dir (keys relative to the prefix), atomically.

    The files land in a temporary sibling folder that is renamed to dest_dir at the end, so an interrupted
    download leaves nothing at dest_dir and a later call starts again.
    """
    bucket, key = split_s3(uri)
    prefix = key if (not key or key.endswith("/")) else key + "/"
    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(dest.name), suffix=".part", dir=dest.parent))
    client = s3_client()

    def fetch_all() -> int:
        count = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if not rel or rel.endswith("/"):
                    continue  # folder marker objects some tools create
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(target))
                count += 1
        return count

    try:
        if _s3_call(uri, "read", fetch_all) == 0:
            raise VcnError(f"{uri} holds no files; upload the model files under that prefix or fix the URI")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
            # Another process finished the same download first; its copy is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----- object-level helpers for the catalogue job (listing with ETags, single puts, folder uploads) -----------------

def _s3_call(uri: str, what: str, call):
    """Run one boto3 call, turning credential, access and network failures into a VcnError naming `uri`."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return call()
    except NoCredentialsError:
        raise VcnError(
            f"no AWS credentials to {what} {uri}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile"
        ) from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        raise VcnError(f"cannot {what} {uri}: S3 said {code}; check the bucket name and your access") from None
    except BotoCoreError as e:
        raise VcnError(
            f"cannot reach S3 to {what} {uri}: {e}; check the network or set VCN_S3_ENDPOINT_URL for MinIO/other servers"
        ) from None


def list_objects(uri: str, client=None) -> list[dict]:
    """Every object under an s3:// prefix: dicts with uri, key, size, etag (quotes stripped) and mtime (epoch s)."""
    bucket, key = split_s3(uri)
    client = client or s3_client()

    def run() -> list[dict]:
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                found.append({"uri": f"s3://{bucket}/{obj['Key']}", "key": obj["Key"], "size": int(obj["Size"]),
                              "etag": str(obj.get("ETag", "")).strip('"'),
                              "mtime": obj["LastModified"].timestamp()})
        return found

    return _s3_call(uri, "list", run)


def _read_object(uri: str, client, call):
    """call(client, bucket, key) for the one s3:// object `uri`, or None when it does not exist."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    client = client or s3_client()

    def run():
        try:
            return call(client, bucket, key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    return _s3_call(uri, "read", run)


def head_object(uri: str, client=None) -> dict | None:
    """size, etag and mtime of one s3:// object, or None when it does not exist."""
    def head(client, bucket, key) -> dict:
        r = client.head_object(Bucket=bucket, Key=key)
        return {"uri": uri, "key": key, "size": int(r["ContentLength"]), "etag": str(r.get("ETag", "")).strip('"'),
                "mtime": r["LastModified"].timestamp()}

    return _read_object(uri, client, head)


def get_bytes(uri: str, client=None) -> bytes | None:
    """The content of one s3:// object, or None when it does not exist."""
    return _read_object(uri, client, lambda c, bucket, key: c.get_object(Bucket=bucket, Key=key)["Body"].read())


def put_bytes(uri: str, data: bytes, client=None) -> None:
    """One PUT: S3 makes the object visible whole or not at all, so this is already atomic."""
    bucket, key = split_s3(uri)
    client = client or s3_client()
    _s3_call(uri, "write", lambda: client.put_object(Bucket=bucket, Key=key, Body=data))


def download_file(uri: str, dest: str | os.PathLike, client=None) -> Path:
    """Download one s3:// object to `dest` through a temporary sibling file (no half file at `dest`)."""
    bucket, key = split_s3(uri)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    client = client or s3_client()
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(dest.name), suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        _s3_call(uri, "download", lambda: client.download_file(bucket, key, tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def upload_folder(local_dir: str | os.PathLike, uri: str, last: tuple[str, ...] = (), client=None) -> list[str]:
    """Upload every file under local_dir to the s3:// prefix `uri`; the files named in `last` go up last.

    Readers that treat a `last` file (e.g. summary.json) as the mark of a complete folder never see a folder
    marked complete before every other file is there.
    """
    bucket, key = split_s3(uri)
    prefix = key if (not key or key.endswith("/")) else key + "/"
    root = Path(local_dir)
    client = client or s3_client()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(root).as_posix() in last)
    keys = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        _s3_call(f"s3://{bucket}/{prefix}{rel}", "upload",
                 lambda: client.upload_file(str(path), bucket, prefix + rel))
        keys.append(prefix + rel)
    return keys


def delete_prefix(uri: str, client=None) -> int:
    """Delete every object under an s3:// prefix; returns how many went."""
    bucket, key = split_s3(uri)
    client = client or s3_client()
    keys = [o["key"] for o in list_objects(uri, client)]
    for i in range(0, len(keys), 1000):
        chunk = [{"Key": k} for k in keys[i:i + 1000]]
        _s3_call(uri, "delete", lambda: client.delete_objects(Bucket=bucket, Delete={"Objects": chunk}))
    return len(keys)
