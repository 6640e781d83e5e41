"""The catalogue's persons page: one self-contained HTML file, every person with thumbnails, named ones first.

Thumbnails are the most typical crop of each of a person's longest clusters, read from each video's crops table
(only the crops shown; on S3 the crops table of each shown video is downloaded once). Like the per-video report
it loads nothing from anywhere: images are data: URIs, styles inline, no scripts.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from vcn.errors import VcnError
from vcn.persons.query import load_persons, threshold_text
from vcn.persons.root import IndexRoot
from vcn.report.data import read_crop_images
from vcn.report.html import _CSS, CSP, _thumb_uri, format_time
from vcn.storage import atomic_write_bytes

PAGE_NAME = "persons.html"

_PAGE_CSS = """
.person { border:1px solid var(--line); border-radius:8px; padding:10px 12px; margin:10px 0; }
.person.unnamed h3 { color:var(--muted); font-weight:500; }
.videos { color:var(--muted); font-size:12px; margin:4px 0 8px; }
.videos span { white-space:nowrap; margin-right:10px; }
"""


def _crop_images(root: IndexRoot, wanted: dict[str, set[int]]) -> dict[tuple[str, int], str | None]:
    """(video_id, crop_id) -> data: URI for the wanted crops."""
    rel_of = {v.video_id: v for v in root.videos()}
    out: dict[tuple[str, int], str | None] = {}
    with root.scratch() as tmp:
        for video_id, crops in sorted(wanted.items()):
            entry = rel_of.get(video_id)
            if entry is None:
                continue
            folder = root.fetch_video(entry, Path(tmp), names=("crops.parquet",))
            if not (folder / "crops.parquet").is_file():
                continue
            for cid, data in read_crop_images(folder, sorted(crops)).items():
                out[(video_id, int(cid))] = _thumb_uri(data)
    return out


def render_persons_page(index: str, thumbs_per_person: int = 6) -> str:
    root = IndexRoot(index)
    state = load_persons(root)
    persons = sorted(state.persons.to_pylist(),
                     key=lambda r: (r["name"] is None, (r["name"] or "").lower(), -r["screen_s"], r["person_id"]))
    wanted: dict[str, set[int]] = {}
    for p in persons:
        for t in p["thumbnails"][:thumbs_per_person]:
            wanted.setdefault(t["video_id"], set()).add(int(t["crop_id"]))
    images = _crop_images(root, wanted)
    clusters = state.clusters.select(["video_id", "person_id", "screen_s"]).to_pylist()
    per_person: dict[int, dict[str, float]] = {}
    for c in clusters:
        d = per_person.setdefault(c["person_id"], {})
        d[c["video_id"]] = d.get(c["video_id"], 0.0) + c["screen_s"]
    sections = []
    for p in persons:
        named = p["name"] is not None
        title = html.escape(p["name"]) if named else f"Person {p['person_id']}"
        thumbs = "".join(
            f'<img src="{images[(t["video_id"], int(t["crop_id"]))]}" width="88" height="88" '
            f'alt="{html.escape(t["video_id"])}" title="{html.escape(t["video_id"])}">'
            for t in p["thumbnails"][:thumbs_per_person] if images.get((t["video_id"], int(t["crop_id"]))))
        videos = "".join(f"<span>{html.escape(v)} &middot; {format_time(s)}</span>"
                         for v, s in sorted(per_person.get(p["person_id"], {}).items(), key=lambda kv: -kv[1]))
        sections.append(
            f'<section class="person{"" if named else " unnamed"}" id="person-{p["person_id"]}" '
            f'data-person="{p["person_id"]}" data-named="{int(named)}"><div class="head"><h3>{title}</h3>'
            f'<span class="stat">id <b>{p["person_id"]}</b></span>'
            f'<span class="stat"><b>{p["n_videos"]}</b> video{"s" if p["n_videos"] != 1 else ""}</span>'
            f'<span class="stat">screen time <b>{format_time(p["screen_s"])}</b></span></div>'
            f'<div class="videos">{videos}</div><div class="thumbs">{thumbs}</div></section>')
    rule = html.escape(threshold_text(state.meta.get("threshold") or {}))
    n_named = sum(p["name"] is not None for p in persons)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<title>Persons of {html.escape(root.uri)}</title><style>{_CSS}{_PAGE_CSS}</style></head><body>'
            f'<header><h1>Persons across the catalogue</h1><p class="sub">{len(persons)} persons ({n_named} named) '
            f'in {state.videos.num_rows} videos &middot; index generation {state.generation} &middot; {rule} '
            f'&middot; written {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}</p></header>'
            f'<main>{"".join(sections)}</main></body></html>')


def write_persons_page(index: str, out: str | Path | None = None) -> Path:
    root = IndexRoot(index)
    if out is None:
        if root.is_s3:
            raise VcnError(f"--index {index} is on S3; pass --out FILE.html for the page")
        out = Path(root.uri) / PAGE_NAME
    return atomic_write_bytes(out, render_persons_page(index).encode())
