"""The HTML report: thumbnail order, screen time, the embedding map, and the real page in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vcn.errors import VcnError
from vcn.report import REPORT_NAME, render_report, write_report, write_report_with_stats
from vcn.report.browser import check_page, find_chromium
from vcn.report.colours import UNKNOWN_RGB, cluster_hex, cluster_rgb
from vcn.report.data import appearances, best_crops, crop_order, load_video_tables, summarise_clusters, track_seconds
from vcn.report.embedmap import map_svg, pca_2d, project_2d, sample_points
from vcn.report.html import format_time

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HAMILTON = SHARED / "data" / "videos" / "short_hamilton_clip.mp4"
needs_hamilton = pytest.mark.skipif(not HAMILTON.is_file(), reason=f"shared data not found at {HAMILTON} "
                                    "(the repo's sibling ../shared); the Hamilton clip is needed")

_CACHE: dict[str, Path] = {}


def clustered_hamilton(tmp_path_factory) -> Path:
    """OUT/short_hamilton_clip of the Hamilton clip with every table, made once per session.

    Detection and tracking are the real `run_video`; clusters and embeddings come from the real stage-2/3 code
    without finetuning (`cluster_without_finetuning`, HAC on base SFace embeddings with SER-FIQ and the gates),
    because finetuning costs minutes on CPU. The slow test below covers the full method. Shared with
    test_overlay.py and test_search.py; copy the folder before changing it.
    """
    if "hamilton" not in _CACHE:
        from vcn.config import RunConfig
        from vcn.models import load_backbone
        from vcn.outputs import VideoOutput
        from vcn.pipeline import run_video
        from vcn.stage23 import cluster_without_finetuning

        out = tmp_path_factory.mktemp("hamilton_out")
        result = run_video(HAMILTON, out, stages=["detect", "track"])
        cfg = RunConfig()
        cfg.cluster.method = "hac"
        crops = pq.read_table(result.path / "crops.parquet")
        clusters, embeddings, _ = cluster_without_finetuning(crops, load_backbone("sface"), cfg, result.path.name)
        video = VideoOutput(out, result.path.name)
        summary = video.summary()
        ids = clusters.column("cluster_id").to_numpy()
        summary["stages_done"] = ["detect", "track", "cluster"]
        summary["counts"].update(clusters=int(len(np.unique(ids[ids >= 0]))), unknown_tracks=int((ids < 0).sum()))
        video.commit({"clusters": clusters, "embeddings": embeddings}, summary)
        _CACHE["hamilton"] = result.path
    return _CACHE["hamilton"]


@pytest.fixture(scope="module")
def hamilton_dir(tmp_path_factory) -> Path:
    if not HAMILTON.is_file():
        pytest.skip(f"shared data not found at {HAMILTON} (the repo's sibling ../shared)")
    return clustered_hamilton(tmp_path_factory)


@pytest.fixture(scope="module")
def hamilton_report(hamilton_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(video folder, its report.html) in a private copy."""
    copy = tmp_path_factory.mktemp("report") / hamilton_dir.name
    shutil.copytree(hamilton_dir, copy)
    return copy, write_report(copy)


# ----- pure parts -------------------------------------------------------------------------------------------------

def test_format_time():
    assert format_time(0) == "0:00.0"
    assert format_time(7.34) == "0:07.3"
    assert format_time(61.06) == "1:01.1"
    assert format_time(59.97) == "1:00.0"
    assert format_time(3723.4) == "1:02:03"
    assert format_time(float("nan")) == "?"


def test_cluster_colours_are_stable_distinct_and_unknown_is_grey():
    assert cluster_rgb(-1) == UNKNOWN_RGB
    assert cluster_rgb(3) == cluster_rgb(3)
    first = [cluster_rgb(i) for i in range(24)]
    assert len(set(first)) == 24
    # Neighbouring ids must not look alike: at least 60 apart in some channel.
    for a, b in zip(first, first[1:]):
        assert max(abs(x - y) for x, y in zip(a, b)) >= 60, (a, b)
    assert re.fullmatch(r"#[0-9a-f]{6}", cluster_hex(7))


def test_track_seconds_adds_the_last_frame():
    assert track_seconds(np.array([1.0]), np.array([2.0]), 25.0)[0] == pytest.approx(1.04)
    assert track_seconds(np.array([1.0]), np.array([1.0]), 0.0)[0] == 0.0


def test_appearances_span_each_shot_in_time_order():
    got = appearances(np.array([2, 0, 2]), np.array([5.0, 1.0, 6.0]), np.array([5.5, 2.0, 7.0]), fps=10)
    assert [(a.shot_id, a.start_s, round(a.end_s, 6)) for a in got] == [(0, 1.0, 2.1), (2, 5.0, 7.1)]


def test_crop_order_gate_then_score_then_sharpness():
    ok = np.array([False, True, True, True])
    score = np.array([0.999, 0.991, 0.994, 0.95])
    blur = np.array([900.0, 50.0, 300.0, 999.0])
    # 0.991 and 0.994 tie at 0.99, so the sharper crop (2) wins; the failing crop (0) comes last.
    assert crop_order(ok, score, blur).tolist() == [2, 1, 3, 0]


def _crops(rows):
    return pa.table({"crop_id": pa.array([r[0] for r in rows], pa.int64()),
                     "track_id": pa.array([r[1] for r in rows], pa.int64()),
                     "quality_ok": pa.array([r[2] for r in rows]),
                     "score": pa.array([r[3] for r in rows], pa.float32()),
                     "blur_var": pa.array([r[4] for r in rows], pa.float32())})


def test_best_crops_take_each_tracks_best_first_by_track_quality():
    crops = _crops([(10, 1, True, 0.99, 100), (11, 1, True, 0.99, 500), (12, 1, True, 0.99, 50),
                    (20, 2, True, 0.99, 10), (21, 2, True, 0.99, 20),
                    (30, 3, False, 0.9, 5),
                    (40, 9, True, 0.99, 999)])   # another cluster's track: never shown here
    quality = {1: 0.5, 2: 0.9, 3: float("nan")}
    assert best_crops([1, 2, 3], quality, crops, 10) == [21, 11, 30, 20, 10, 12]
    assert best_crops([1, 2, 3], quality, crops, 2) == [21, 11]
    assert best_crops([5], quality, crops, 4) == []


def test_pca_and_projection_fallbacks():
    assert pca_2d(np.ones((1, 8))).shape == (1, 2)
    xy, method = project_2d(np.random.default_rng(0).normal(size=(5, 16)))
    assert method == "PCA" and xy.shape == (5, 2)   # too few points for t-SNE
    assert sample_points(10, 20).tolist() == list(range(10))
    s = sample_points(5000, 100, seed=3)
    assert len(s) == 100 and np.all(np.diff(s) > 0) and s.tolist() == sample_points(5000, 100, seed=3).tolist()


def test_tsne_map_keeps_identities_apart():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64))
    x = np.concatenate([c + 0.15 * rng.normal(size=(15, 64)) for c in centres])
    labels = np.repeat([0, 1, 2], 15)
    xy, method = project_2d(x)
    assert method == "t-SNE"
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.all(labels[d.argmin(1)] == labels)   # every point's nearest neighbour is of its own identity


def test_map_svg_groups_points_per_cluster():
    svg = map_svg(np.array([[0, 0], [1, 1], [2, 0]]), np.array([3, -1, 3]), title="t")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 3
    assert f'data-cluster="3" fill="{cluster_hex(3)}"' in svg and 'data-cluster="-1"' in svg
    # Unknown is drawn first, under the clusters.
    assert svg.index('data-cluster="-1"') < svg.index('data-cluster="3"')


# ----- the real report of the Hamilton clip -------------------------------------------------------------------

class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section" and "cluster" in (a.get("class") or "").split():
            self.sections.append(a["data-cluster"])
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(a[key])


def test_report_shows_every_cluster_with_its_facts(hamilton_report):
    video_dir, path = hamilton_report
    assert path == video_dir / REPORT_NAME
    page = path.read_text()
    parsed = _Page()
    parsed.feed(page)
    clusters = pq.read_table(video_dir / "clusters.parquet")
    ids = clusters.column("cluster_id").to_numpy()
    assert sorted(parsed.sections, key=int) == sorted({str(i) for i in ids.tolist()}, key=int)
    assert (ids < 0).any(), "the clip has Unknown tracks (small audience faces); the group must be shown"
    # Self-contained: no script, every image inline, links only within the page.
    assert "script" not in parsed.tags
    assert all(u.startswith("data:image/") or u.startswith("#") for u in parsed.urls), parsed.urls[:3]
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page) and "url(" not in page
    # Numbers shown are the tables' numbers.
    tables = load_video_tables(video_dir)
    shown, unknown = summarise_clusters(tables)
    for c in shown:
        assert f"screen time <b>{format_time(c.screen_s)}</b>" in page
    reasons = dict(zip(*np.unique(clusters.column("reason").to_numpy(zero_copy_only=False)[ids < 0],
                                  return_counts=True)))
    assert unknown.reasons == {k: int(v) for k, v in reasons.items()}
    for reason, n in unknown.reasons.items():
        assert f"{reason.replace('_', ' ')}: <b>{n}</b>" in page
    # Clusters come most screen time first.
    assert [c.screen_s for c in shown] == sorted((c.screen_s for c in shown), reverse=True)
    assert "t-SNE" in page and page.count("<circle") == pq.read_table(video_dir / "embeddings.parquet").filter(
        pa.compute.equal(pq.read_table(video_dir / "embeddings.parquet").column("model"), "sface")).num_rows
    summary = json.loads((video_dir / "summary.json").read_text())
    assert summary["versions"]["vcn"] in page and "retinaface" in page


def test_report_offers_the_nearest_clusters_never_sharing_a_frame_for_review(hamilton_report):
    video_dir, path = hamilton_report
    page = path.read_text()
    assert 'id="possible-splits"' in page
    shown = [(int(a), int(b)) for a, b in re.findall(
        rf"vcn persons merge --index {re.escape(str(video_dir.parent))} {video_dir.name}:(\d+) "
        rf"{video_dir.name}:(\d+)", page)]
    distances = [float(d) for d in re.findall(r"cosine distance ([0-9.]+)", page)]
    clusters = pq.read_table(video_dir / "clusters.parquet").to_pylist()
    members = {}
    for r in clusters:
        if r["cluster_id"] >= 0:
            members.setdefault(r["cluster_id"], set()).add(r["track_id"])
    assert 1 <= len(shown) <= 3 and len(distances) == len(shown) and distances == sorted(distances)
    dets = pq.read_table(video_dir / "detections.parquet", columns=["track_id", "frame"]).to_pylist()
    frames = {}
    for d in dets:
        frames.setdefault(d["track_id"], set()).add(d["frame"])
    for a, b in shown:
        assert a < b and a in members and b in members
        assert not any(frames.get(x, set()) & frames.get(y, set()) for x in members[a] for y in members[b])
    # Every other pair of clusters that never share a frame is at least as far apart as the last one shown.
    apart = [(a, b) for a in members for b in members if a < b and (a, b) not in shown
             and not any(frames.get(x, set()) & frames.get(y, set()) for x in members[a] for y in members[b])]
    emb = pq.read_table(video_dir / "embeddings.parquet")
    emb = emb.filter(pa.compute.equal(emb.column("model"), emb.column("model")[0]))
    vectors = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = emb.column("track_id").to_numpy()
    mean = {t: vectors[tracks == t].mean(0) / np.linalg.norm(vectors[tracks == t].mean(0)) for t in np.unique(tracks)}

    def distance(a, b):
        return np.mean([1 - mean[x] @ mean[y] for x in members[a] for y in members[b] if x in mean and y in mean])
    assert all(distance(a, b) >= distances[-1] - 0.01 for a, b in apart)
    assert abs(distance(*shown[0]) - distances[0]) < 0.01


def test_thumbnails_are_the_best_crops(hamilton_report):
    video_dir, _ = hamilton_report
    tables = load_video_tables(video_dir)
    shown, _ = summarise_clusters(tables, thumbs_per_cluster=3)
    crops = tables.crops
    for c in shown:
        first = c.thumb_crop_ids[0]
        row = crops.filter(pa.compute.equal(crops.column("crop_id"), first)).to_pylist()[0]
        same_track = crops.filter(pa.compute.equal(crops.column("track_id"), row["track_id"])).to_pylist()
        # No crop of that track beats the first thumbnail on (gate, rounded score, sharpness).
        key = lambda r: (r["quality_ok"], round(r["score"], 2), r["blur_var"])  # noqa: E731
        assert key(row) == max(key(r) for r in same_track)
        assert len(c.thumb_crop_ids) <= 3


def test_report_loads_in_headless_chromium(hamilton_report, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium: install it with `apt-get install -y chromium` (Debian) to run this test")
    video_dir, path = hamilton_report
    expected = sorted({int(i) for i in pq.read_table(video_dir / "clusters.parquet").column("cluster_id").to_pylist()})
    check = check_page(path, screenshot=True, expression="""
        [...document.querySelectorAll('section.cluster')].map(s => ({
            id: Number(s.dataset.cluster),
            visible: s.getBoundingClientRect().height > 0,
            images: s.querySelectorAll('img').length,
            loaded: [...s.querySelectorAll('img')].every(i => i.complete && i.naturalWidth === 112)}))
    """, executable=chromium)
    assert check.network_requests == [], check.network_requests
    assert check.console_errors == [], check.console_errors
    assert sorted(s["id"] for s in check.facts) == expected
    assert all(s["visible"] and s["images"] > 0 and s["loaded"] for s in check.facts), check.facts
    assert check.load_ms < 30_000
    png = cv2.imdecode(np.frombuffer(check.screenshot, np.uint8), cv2.IMREAD_COLOR)
    assert png.shape == (900, 1200, 3) and png.std() > 10   # a real rendering, not a blank page


def test_browser_check_catches_requests_and_console_errors(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium: install it with `apt-get install -y chromium` (Debian) to run this test")
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>')
    check = check_page(page, executable=chromium)
    assert check.network_requests == ["http://127.0.0.1:9/x.png"]
    assert "boom" in check.console_errors


def test_report_needs_the_cluster_stage(hamilton_dir, tmp_path):
    copy = tmp_path / hamilton_dir.name
    shutil.copytree(hamilton_dir, copy)
    (copy / "clusters.parquet").unlink()
    with pytest.raises(VcnError, match="cluster stage"):
        render_report(copy)
    with pytest.raises(VcnError, match="summary.json"):
        render_report(tmp_path)


def test_report_without_embeddings_still_renders(hamilton_dir, tmp_path):
    copy = tmp_path / hamilton_dir.name
    shutil.copytree(hamilton_dir, copy)
    (copy / "embeddings.parquet").unlink()
    page, facts = render_report(copy)
    assert facts["map_points"] == 0 and "nothing to map" in page


def test_cli_report(hamilton_dir, tmp_path, capsys):
    from vcn.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(hamilton_dir), "--out", str(out), "--thumbs", "2"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    stats = write_report_with_stats(hamilton_dir, tmp_path / "r2.html", thumbs_per_cluster=2,
                                    thumbs_unknown=4)
    assert stats.bytes == out.stat().st_size   # deterministic: same page twice
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "overlay", "search"])
def test_help_has_an_example(command, capsys):
    from vcn.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"vcn {command} " in text


@pytest.mark.slow
@needs_hamilton
def test_report_of_the_full_method(tmp_path):
    """The report at the end of the real pipeline, finetuning included (about 10 minutes on 2 CPU cores)."""
    from vcn.pipeline import run_video

    result = run_video(HAMILTON, tmp_path)
    stats = write_report_with_stats(result.path)
    page = stats.path.read_text()
    assert "sface+finetuned" in page and stats.clusters == result.summary["counts"]["clusters"]
