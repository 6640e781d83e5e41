"""The per-video report: one self-contained HTML page (inline CSS and SVG, images as data: URIs, no scripts)."""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vcn.clustering import cooccurring_pairs, frames_of_tracks
from vcn.clustering.suggest import possible_splits
from vcn.report.colours import cluster_hex
from vcn.report.data import (ClusterSummary, VideoTables, load_video_tables, read_crop_images, read_embeddings,
                             read_table, summarise_clusters)
from vcn.report.embedmap import map_svg, project_2d, sample_points
from vcn.storage import atomic_write_bytes

REPORT_NAME = "report.html"
# The page may load nothing from anywhere: images are data: URIs, styles inline. The browser enforces it too.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
THUMB_JPEG_QUALITY = 85

_CSS = """
:root { --fg:#1d1d1f; --muted:#6e6e73; --line:#e3e3e6; --bg:#fff; --panel:#f6f6f8; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:18px 28px 10px; border-bottom:1px solid var(--line); }
h1 { margin:0; font-size:22px; } h2 { font-size:17px; margin:26px 0 10px; } h3 { margin:0; font-size:15px; }
.sub { color:var(--muted); margin:4px 0 0; }
main { padding:0 28px 40px; max-width:1280px; }
nav { display:flex; flex-wrap:wrap; gap:6px; padding:10px 28px; border-bottom:1px solid var(--line); }
nav a { text-decoration:none; color:var(--fg); border:1px solid var(--line); border-radius:12px; padding:1px 9px;
        font-size:12px; }
.chip { display:inline-block; width:12px; height:12px; border-radius:3px; vertical-align:-1px; margin-right:6px; }
.cluster { border:1px solid var(--line); border-radius:8px; padding:10px 12px; margin:10px 0; }
.cluster.unknown { background:var(--panel); border-style:dashed; }
.head { display:flex; flex-wrap:wrap; align-items:baseline; gap:6px 16px; }
.stat { color:var(--muted); } .stat b { color:var(--fg); font-weight:600; }
.shots { color:var(--muted); font-size:12px; margin:4px 0 8px; }
.shots span { white-space:nowrap; margin-right:10px; }
.thumbs { display:flex; flex-wrap:wrap; gap:4px; }
.thumbs img { width:88px; height:88px; border-radius:4px; display:block; background:#ddd; }
.map { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
.embmap { max-width:100%; height:auto; }
.legend { list-style:none; margin:0; padding:0; font-size:12px; columns:2; column-gap:24px; }
table { border-collapse:collapse; font-size:13px; }
td, th { text-align:left; padding:2px 14px 2px 0; vertical-align:top; } th { color:var(--muted); font-weight:500; }
.grid { display:flex; flex-wrap:wrap; gap:10px 40px; }
details pre { background:var(--panel); padding:10px; overflow:auto; font-size:12px; max-height:420px; }
.note { color:#8a5a00; }
.split { border:1px solid var(--line); border-radius:8px; padding:8px 12px; margin:8px 0; display:grid;
         grid-template-columns:1fr 1fr; gap:4px 16px; }
.split > a { text-decoration:none; color:var(--fg); font-weight:600; }
.split .thumbs { grid-row:2; } .split .thumbs img { width:64px; height:64px; }
.split p { grid-column:1 / span 2; margin:4px 0 0; } code { font-size:12px; background:var(--panel); padding:1px 4px; }
"""


@dataclass
class ReportStats:
    path: Path
    bytes: int
    seconds: float
    clusters: int
    thumbnails: int
    map_points: int
    map_method: str


def format_time(seconds: float) -> str:
    """0:07.3 under an hour, 1:02:03 above."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds >= 3600:
        h, rest = divmod(int(round(seconds)), 3600)
        return f"{h}:{rest // 60:02d}:{rest % 60:02d}"
    # Whole tenths first, so 59.97 s reads 1:00.0 (not 0:60.0).
    tenths = int(round(max(0.0, seconds) * 10))
    m, t = divmod(tenths, 600)
    return f"{m}:{t // 10:02d}.{t % 10}"


def _thumb_uri(data: bytes | None) -> str | None:
    if not data:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, THUMB_JPEG_QUALITY])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


def _crop_facts(tables: VideoTables) -> dict[int, tuple[int, int, float]]:
    c = tables.crops
    return {cid: (t, s, ts) for cid, t, s, ts in zip(c.column("crop_id").to_pylist(), c.column("track_id").to_pylist(),
                                                     c.column("shot_id").to_pylist(), c.column("t_s").to_pylist())}


def _cluster_section(c: ClusterSummary, images: dict[int, str | None], facts: dict[int, tuple[int, int, float]],
                     quality_of: dict[int, float]) -> str:
    unknown = c.cluster_id < 0
    name = "Unknown" if unknown else f"Cluster {c.cluster_id}"
    anchor = "unknown" if unknown else f"cluster-{c.cluster_id}"
    stats = [f'<span class="stat"><b>{len(c.track_ids)}</b> track{"s" if len(c.track_ids) != 1 else ""}</span>',
             f'<span class="stat">screen time <b>{format_time(c.screen_s)}</b></span>',
             f'<span class="stat">in <b>{len(c.appearances)}</b> shot{"s" if len(c.appearances) != 1 else ""}'
             f'</span>']
    if not math.isnan(c.mean_quality):
        stats.append(f'<span class="stat">mean track quality <b>{c.mean_quality:.2f}</b></span>')
    if unknown:
        reasons = ", ".join(f"{html.escape(r.replace('_', ' '))}: <b>{n}</b>" for r, n in sorted(c.reasons.items()))
        stats.append(f'<span class="stat">why: {reasons}</span>')
    shots = "".join(f'<span>shot {a.shot_id} &middot; {format_time(a.start_s)}&ndash;{format_time(a.end_s)}</span>'
                    for a in c.appearances)
    thumbs = []
    for cid in c.thumb_crop_ids:
        uri = images.get(cid)
        if uri is None:
            continue
        track, shot, t_s = facts.get(cid, (-1, -1, float("nan")))
        q = quality_of.get(track, float("nan"))
        tip = f"track {track} · shot {shot} · {format_time(t_s)}" + ("" if math.isnan(q) else f" · quality {q:.2f}")
        thumbs.append(f'<img src="{uri}" width="88" height="88" alt="{html.escape(tip)}" title="{html.escape(tip)}">')
    return (f'<section class="cluster{" unknown" if unknown else ""}" id="{anchor}" data-cluster="{c.cluster_id}">'
            f'<div class="head"><h3><span class="chip" style="background:{cluster_hex(c.cluster_id)}"></span>'
            f'{name}</h3>{"".join(stats)}</div><div class="shots">{shots}</div>'
            f'<div class="thumbs">{"".join(thumbs)}</div></section>')


def _splits_section(tables: VideoTables, found: tuple[str, np.ndarray, np.ndarray] | None,
                    cluster_of: dict[int, int], images: dict[int, str | None],
                    thumbs_of: dict[int, list[int]]) -> tuple[str, int]:
    """The pairs of clusters most likely to be one person split in two (vcn.clustering.suggest), for review."""
    if found is None:
        return "", 0
    detections = read_table(tables.path, "detections", ["track_id", "frame"])
    pairs = possible_splits(cluster_of, found[2], found[1], cooccurring_pairs(frames_of_tracks(detections)))
    if not pairs:
        return "", 0
    out_dir = tables.path.parent
    rows = []
    for pair in pairs:
        sides = []
        for c in (pair.cluster_a, pair.cluster_b):
            thumbs = "".join(f'<img src="{images[cid]}" width="64" height="64" alt="cluster {c}">'
                             for cid in thumbs_of.get(c, [])[:4] if images.get(cid))
            sides.append(f'<a href="#cluster-{c}"><span class="chip" style="background:{cluster_hex(c)}"></span>'
                         f'cluster {c}</a><div class="thumbs">{thumbs}</div>')
        command = (f"vcn persons merge --index {out_dir} {tables.video_id}:{pair.cluster_a} "
                   f"{tables.video_id}:{pair.cluster_b}")
        rows.append(f'<div class="split">{sides[0]}{sides[1]}<p class="sub">cosine distance '
                    f'{pair.distance:.2f}; if one person: <code>{html.escape(command)}</code></p></div>')
    intro = ('<p class="sub">vcn splits one person into two clusters far more often than it merges two people. '
             "These are the nearest pairs of clusters that never share a frame, nearest first: over the labelled "
             "development clips, the three nearest held most of the splits left, and more than half of the pairs "
             "shown were two different people, so look before you merge.</p>")
    return (f'<section id="possible-splits"><h2>Possibly one person: review</h2>{intro}{"".join(rows)}</section>',
            len(pairs))


def _map_section(found: tuple[str, np.ndarray, np.ndarray] | None, cluster_of: dict[int, int],
                 seed: int = 0) -> tuple[str, int, str]:
    if found is None:
        return '<p class="sub">No embeddings table: nothing to map.</p>', 0, ""
    model, track_ids, emb = found
    keep = sample_points(len(emb), seed=seed)
    track_ids, emb = track_ids[keep], emb[keep]
    labels = np.array([cluster_of.get(int(t), -1) for t in track_ids], np.int64)
    xy, method = project_2d(emb, seed=seed)
    tips = [("Unknown" if lab < 0 else f"cluster {lab}") for lab in labels.tolist()]
    svg = map_svg(xy, labels, tips, title=f"{method} map of {len(emb)} face crops")
    sampled = "" if len(keep) == len(found[1]) else f" (a seeded sample of {len(keep)} of {len(found[1])})"
    caption = (f'<p class="sub">{method} of {len(emb)} face crops{sampled}, embeddings of '
               f'<b>{html.escape(model)}</b>, cosine geometry; one colour per cluster, grey = Unknown. '
               'Hover a group for its cluster.</p>')
    counts = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    legend = "".join(f'<li><span class="chip" style="background:{cluster_hex(c)}"></span>'
                     f'{"Unknown" if c < 0 else f"cluster {c}"} &middot; {n} crops</li>'
                     for c, n in sorted(counts.items(), key=lambda kv: (kv[0] < 0, kv[0])))
    return f'<div class="map">{svg}<ul class="legend">{legend}</ul></div>{caption}', len(emb), method


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _summary_section(summary: dict[str, Any]) -> str:
    info = summary.get("video_info") or {}
    video_rows = [("file", summary.get("video", "?")),
                  ("frames", info.get("n_frames", "?")),
                  ("size", f"{info.get('width', '?')}x{info.get('height', '?')}"),
                  ("frame rate", f"{info.get('fps', 0):.3f} fps" if info.get("fps") else "?"),
                  ("duration", format_time(float(info.get("duration_s") or float("nan")))),
                  ("codec", info.get("codec", "?")),
                  ("stages done", ", ".join(summary.get("stages_done", []))),
                  ("finished", summary.get("finished_at", "?"))]
    if summary.get("partial"):
        video_rows.append(("note", "the file is cut off: only the frames it holds were processed"))
    counts = list((summary.get("counts") or {}).items())
    seconds = [(k, f"{v:.2f}" if isinstance(v, float) else v) for k, v in (summary.get("seconds") or {}).items()]
    fps = list((summary.get("frames_per_second") or {}).items())
    models = list((summary.get("models") or {}).items())
    versions = list((summary.get("versions") or {}).items())
    blocks = [("Video", video_rows), ("Counts", counts), ("Models", models), ("Seconds", seconds),
              ("Frames per second", fps), ("Versions", versions)]
    grid = "".join(f"<div><h3>{title}</h3>{_kv_table(rows)}</div>" for title, rows in blocks if rows)
    config = html.escape(json.dumps(summary.get("config", {}), indent=1))
    return (f'<section id="summary"><h2>Run summary</h2><div class="grid">{grid}</div>'
            f"<details><summary>Configuration</summary><pre>{config}</pre></details></section>")


def render_report(video_dir: str | Path, thumbs_per_cluster: int = 12, thumbs_unknown: int = 24,
                  seed: int = 0) -> tuple[str, dict[str, Any]]:
    """The report page of one video output folder, and facts about it (clusters, thumbnails, map points)."""
    tables = load_video_tables(video_dir)
    video_dir = tables.path
    clusters, unknown = summarise_clusters(tables, thumbs_per_cluster, thumbs_unknown)
    groups = clusters + ([unknown] if unknown else [])
    wanted = [cid for g in groups for cid in g.thumb_crop_ids]
    images = {cid: _thumb_uri(data) for cid, data in read_crop_images(video_dir, wanted).items()}
    facts = _crop_facts(tables)
    cl = tables.clusters
    quality_of = {t: (float("nan") if q is None else float(q))
                  for t, q in zip(cl.column("track_id").to_pylist(), cl.column("track_quality").to_pylist())}
    cluster_of = dict(zip(cl.column("track_id").to_pylist(), cl.column("cluster_id").to_pylist()))
    found = read_embeddings(video_dir)
    map_html, map_points, map_method = _map_section(found, cluster_of, seed)
    splits_html, n_splits = _splits_section(tables, found, cluster_of, images,
                                            {c.cluster_id: c.thumb_crop_ids for c in clusters})

    summary = tables.summary
    n_tracks = tables.tracks.num_rows
    n_unknown = len(unknown.track_ids) if unknown else 0
    duration = (summary.get("video_info") or {}).get("duration_s")
    title = html.escape(tables.video_id)
    sub = (f"{len(clusters)} cluster{'s' if len(clusters) != 1 else ''} &middot; {n_tracks} tracks "
           f"({n_unknown} Unknown) &middot; {tables.shots.num_rows} shots"
           + (f" &middot; {format_time(float(duration))} of video" if duration else "")
           + f" &middot; {html.escape(str((summary.get('models') or {}).get('backbone', '?')))} backbone")
    nav = "".join(f'<a href="#cluster-{c.cluster_id}"><span class="chip" style="background:'
                  f'{cluster_hex(c.cluster_id)}"></span>{c.cluster_id} &middot; {format_time(c.screen_s)}</a>'
                  for c in clusters) + ('<a href="#unknown">Unknown</a>' if unknown else "")
    body = ['<section id="clusters"><h2>Clusters, most screen time first</h2>']
    if not clusters:
        body.append('<p class="note">No track was clustered (every track is Unknown).</p>')
    body += [_cluster_section(c, images, facts, quality_of) for c in clusters]
    body.append("</section>")
    if unknown:
        body.append('<section id="unknown-group"><h2>Unknown</h2><p class="sub">Tracks kept out of clustering: '
                    "their crops failed the size/blur gate, or their SER-FIQ quality is a low outlier.</p>"
                    + _cluster_section(unknown, images, facts, quality_of) + "</section>")
    if splits_html:
        body.append(splits_html)
    body.append(f'<section id="map-section"><h2>Embedding map</h2>{map_html}</section>')
    body.append(_summary_section(summary))
    page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>vcn report &middot; {title}</title><style>{_CSS}</style></head><body>"
            f'<header><h1>{title}</h1><p class="sub">{sub}</p></header><nav>{nav}</nav>'
            f"<main>{''.join(body)}</main></body></html>\n")
    facts_out = {"clusters": len(clusters), "unknown_tracks": n_unknown,
                 "thumbnails": sum(1 for g in groups for cid in g.thumb_crop_ids if images.get(cid)),
                 "map_points": map_points, "map_method": map_method, "possible_splits": n_splits}
    return page, facts_out


def write_report(video_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Write `report.html` into the video's output folder (or to `out`), atomically; returns its path."""
    return write_report_with_stats(video_dir, out, **options).path


def write_report_with_stats(video_dir: str | Path, out: str | Path | None = None, **options: Any) -> ReportStats:
    t0 = time.perf_counter()
    page, facts = render_report(video_dir, **options)
    data = page.encode("utf-8")
    path = atomic_write_bytes(Path(out) if out else Path(video_dir) / REPORT_NAME, data)
    return ReportStats(path=path, bytes=len(data), seconds=time.perf_counter() - t0, clusters=facts["clusters"],
                       thumbnails=facts["thumbnails"], map_points=facts["map_points"], map_method=facts["map_method"])
