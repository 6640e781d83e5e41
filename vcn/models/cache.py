"""The user cache folder for converted models and downloaded packs, with content-addressed keys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV_VAR = "VCN_CACHE_DIR"


def cache_dir() -> Path:
    """$VCN_CACHE_DIR if set, else the platform's user cache folder for vcn (e.g. ~/.cache/vcn)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("vcn"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(*parts: str) -> Path:
    """A path inside the cache folder; the parent folder exists, the file may not."""
    path = cache_dir().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
