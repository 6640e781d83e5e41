"""Measure the report (size, build and browser load time) and search (precision@1/@5) on real clips and episodes.

    python benchmarks/report_search.py --out out/bench --json out/bench/report_search.json \
        [--hamilton-dir OUT/short_hamilton_clip] [--finetune] [--screenshot docs/report.png]

Episodes are rendered from the shared face photos (benchmarks/episodes.py) with one photo per person held back;
the held-back photos that no episode shows are the search queries. A cluster's identity is the majority
identity of its tracks (detections matched to the rendered ground truth, vcn.evaluate.label_tracks). Without
--finetune, clusters come from the base backbone (HAC at cosine 0.6 via stage23.cluster_without_finetuning):
stage 2 takes ~10 minutes per short video on 2 CPU cores. Search uses base embeddings either way.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from episodes import render_episode  # noqa: E402

from vcn.config import RunConfig  # noqa: E402
from vcn.evaluate import label_tracks  # noqa: E402
from vcn.render import read_truth  # noqa: E402
from vcn.report import write_report_with_stats  # noqa: E402
from vcn.report.browser import check_page, find_chromium  # noqa: E402
from vcn.search import REDUCTIONS, embed_photo, load_index, rank_clusters, read_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
# (faces folder, seed, people (None = all), shots): two deepface13 casts of 13 and two lfw150 casts of 12.
EPISODES = [("deepface13", 0, None, 16), ("deepface13", 1, None, 16), ("lfw150", 0, 12, 16), ("lfw150", 1, 12, 16)]
SCREENSHOT_LIMIT = 300 * 1024


def process(video: Path, out: Path, finetune: bool, backbone=None) -> tuple[Path, float]:
    """Run vcn on one video; returns its output folder and the seconds it took."""
    from vcn.outputs import VideoOutput
    from vcn.pipeline import run_video
    from vcn.stage23 import cluster_without_finetuning

    t0 = time.perf_counter()
    if finetune:
        return run_video(video, out).path, time.perf_counter() - t0
    result = run_video(video, out, stages=["detect", "track"])
    cfg = RunConfig()
    cfg.cluster.method = "hac"
    crops = pq.read_table(result.path / "crops.parquet")
    clusters, embeddings, _ = cluster_without_finetuning(crops, backbone, cfg, result.path.name)
    store = VideoOutput(out, result.path.name)
    summary = store.summary()
    ids = clusters.column("cluster_id").to_numpy()
    summary["stages_done"] = ["detect", "track", "cluster"]
    summary["counts"].update(clusters=int(len(np.unique(ids[ids >= 0]))), unknown_tracks=int((ids < 0).sum()))
    summary["note"] = "clusters from the base backbone (HAC, cosine 0.6), no finetuning: benchmark stand-in"
    store.commit({"clusters": clusters, "embeddings": embeddings}, summary)
    return result.path, time.perf_counter() - t0


def measure_report(video_dir: Path, screenshot: Path | None = None) -> dict:
    stats = write_report_with_stats(video_dir)
    row = {"video_dir": str(video_dir), "bytes": stats.bytes, "build_s": round(stats.seconds, 3),
           "clusters": stats.clusters, "thumbnails": stats.thumbnails, "map_points": stats.map_points,
           "map_method": stats.map_method}
    if find_chromium():
        check = check_page(stats.path, screenshot=screenshot is not None, width=1100, height=800)
        row.update(browser_load_ms=round(check.load_ms, 1), network_requests=len(check.network_requests),
                   console_errors=len(check.console_errors))
        if screenshot is not None and check.screenshot:
            row["screenshot_bytes"] = len(check.screenshot)
            if len(check.screenshot) < SCREENSHOT_LIMIT:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(check.screenshot)
                row["screenshot"] = str(screenshot)
    return row


def cluster_identities(video_dir: Path, truth: Path) -> dict[int, str]:
    """cluster id -> majority identity of its labelled tracks."""
    labels = label_tracks(pq.read_table(video_dir / "detections.parquet"), read_truth(truth))
    who = {r["track_id"]: r["identity"] for r in labels.to_pylist() if r["identity"]}
    votes: dict[int, Counter] = {}
    for r in pq.read_table(video_dir / "clusters.parquet").to_pylist():
        if r["cluster_id"] >= 0 and r["track_id"] in who:
            votes.setdefault(r["cluster_id"], Counter())[who[r["track_id"]]] += 1
    return {c: v.most_common(1)[0][0] for c, v in votes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="working folder (episodes and outputs)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--hamilton-dir", help="an existing `vcn run` output of the Hamilton clip (else run now)")
    parser.add_argument("--finetune", action="store_true", help="run the full method (stage 2) on every video")
    parser.add_argument("--episodes", type=int, default=len(EPISODES), help="how many of the episodes to use")
    parser.add_argument("--screenshot", help="save the Hamilton report's screenshot here if under 300 KB")
    args = parser.parse_args(argv)

    from vcn.models import load_backbone, load_detector

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone, detector = load_backbone("sface"), load_detector("retinaface")
    results: dict = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
                     "clusters_from": "full method (finetuned)" if args.finetune else "base backbone, HAC 0.6"}

    # Hamilton clip: the report.
    if args.hamilton_dir:
        ham = out / "hamilton" / Path(args.hamilton_dir).name
        shutil.rmtree(ham, ignore_errors=True)
        shutil.copytree(args.hamilton_dir, ham)
        ham_s = None
    else:
        ham, ham_s = process(SHARED / "videos" / "short_hamilton_clip.mp4", out / "hamilton", args.finetune, backbone)
    summary = json.loads((ham / "summary.json").read_text())
    results["hamilton"] = {"stages": summary.get("stages_done"), "finetuned": "finetune_s" in summary.get("seconds", {}),
                           "process_s": ham_s, "counts": summary.get("counts"),
                           "report": measure_report(ham, Path(args.screenshot) if args.screenshot else None)}
    print(json.dumps(results["hamilton"]), flush=True)

    # Episodes: render, process, report.
    index_root = out / "index"
    episodes = []
    for faces, seed, people, shots in EPISODES[:args.episodes]:
        name = f"{faces}_s{seed}"
        t0 = time.perf_counter()
        ep = render_episode(SHARED / "faces" / faces, out / "episodes" / name, seed=seed, n_shots=shots,
                            n_people=people, held_out_per_person=1, name=name)
        render_s = time.perf_counter() - t0
        video_dir, seconds = process(ep.render.video, index_root, args.finetune, backbone)
        row = {"episode": name, "identities": len(ep.people), "frames": ep.render.n_frames, "render_s": round(render_s, 1),
               "process_s": round(seconds, 1),
               "counts": json.loads((video_dir / "summary.json").read_text()).get("counts"),
               "report": measure_report(video_dir)}
        print(json.dumps(row), flush=True)
        episodes.append((ep, video_dir, row))
    results["episodes"] = [r for _, _, r in episodes]

    # Search: held-back photos that no episode shows.
    shown = set()
    for ep, _, _ in episodes:
        held = json.loads(ep.held_out.read_text())
        shown |= {(held["faces_dir"], f) for files in held["in_video"].values() for f in files}
    relevant: dict[str, set[tuple[str, int]]] = {}
    for ep, video_dir, _ in episodes:
        for cluster, who in cluster_identities(video_dir, ep.render.truth).items():
            relevant.setdefault(who, set()).add((video_dir.name, cluster))
    queries = []
    for ep, _, _ in episodes:
        held = json.loads(ep.held_out.read_text())
        for person, files in held["held_out"].items():
            for f in files:
                if (held["faces_dir"], f) not in shown and person in relevant:
                    queries.append((person, Path(held["faces_dir"]) / f))
    queries = sorted(set(queries))
    index = load_index(index_root)
    scores = {r: {"p1": [], "p5": [], "hit5": [], "cap5": []} for r in REDUCTIONS}
    skipped = []
    t_search = []
    for person, photo in queries:
        try:
            t0 = time.perf_counter()
            query, _ = embed_photo(read_image(photo), detector, backbone, name=str(photo))
        except Exception as e:  # a held-back photo without a detectable face is reported, not fatal
            skipped.append(f"{photo.name}: {e}")
            continue
        for reduce in REDUCTIONS:
            hits = rank_clusters(query, index, reduce=reduce, top=5)
            ok = [(h.video_id, h.cluster_id) in relevant[person] for h in hits]
            scores[reduce]["p1"].append(float(ok[0]) if ok else 0.0)
            scores[reduce]["p5"].append(sum(ok) / 5)
            scores[reduce]["hit5"].append(float(any(ok)))
            scores[reduce]["cap5"].append(min(5, len(relevant[person])) / 5)
        t_search.append(time.perf_counter() - t0)
    results["search"] = {
        "queries": len(t_search), "skipped": skipped, "videos": len(index.videos), "clusters": int(
            len({(v, c) for v, c in zip(index.video_id.tolist(), index.cluster_id.tolist()) if c >= 0})),
        "people_with_clusters": len(relevant),
        "mean_relevant_clusters_per_query": round(float(np.mean([len(relevant[p]) for p, _ in queries])), 2)
        if queries else 0,
        "seconds_per_query_embed_and_rank": round(float(np.mean(t_search)), 3) if t_search else None,
        **{reduce: {"precision_at_1": round(float(np.mean(s["p1"])), 3), "precision_at_5": round(float(np.mean(s["p5"])), 3),
                    "hit_at_5": round(float(np.mean(s["hit5"])), 3),
                    "precision_at_5_ceiling": round(float(np.mean(s["cap5"])), 3)}
           for reduce, s in scores.items() if s["p1"]},
    }
    print(json.dumps(results["search"]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
