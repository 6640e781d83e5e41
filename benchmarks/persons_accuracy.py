"""Cross-video accuracy of the person index: pairwise precision and recall of "same person" between clusters of
different videos, on three cuts of one real promo series, two lab clips and on rendered episodes whose casts overlap.

    python benchmarks/persons_accuracy.py --work work/persons_accuracy      # writes benchmarks/results/persons_accuracy.json
        [--clusters vcn,hac] [--sets real,lfw150,deepface13]

Per-video clusters, one set of outputs per choice in --clusters (each video is run once per choice):
  vcn  what a user gets: `vcn run` with every stage and the default configuration (finetuning, Algorithm 1);
  hac  stage 1 of `vcn run`, then HAC (cosine 0.6) on the base SFace embeddings without finetuning: minutes
       cheaper per video on a CPU, and the clusters the first measurement used.
The linker itself reads only clusters and base embeddings. The index is rebuilt from scratch each time
(OUT/persons/ removed first). Truth: each system track takes the identity of the truth boxes its detections
overlap (IoU >= 0.3, vcn/evaluate.py). Two levels: pairs of labelled TRACKS of two different videos (a true pair
when both are one identity, a found pair when their clusters are in one person: per-video clustering errors
count), and pairs of CLUSTERS, each cluster taking the majority identity of its labelled tracks (the linker's
own decisions; clusters with no labelled track are left out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clustering import prepare_video  # noqa: E402

from vcn.evaluate import label_tracks  # noqa: E402
from vcn.render import read_truth  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Three cuts of one promo series and two lab clips, one catalogue. The truth of billhyland2 and the lab clips is
# this repository's (benchmarks/data/): billhyland2's two interviewees are in neither other cut, and the lab clips
# share nobody with each other or the promo, so every link to them is wrong; multi_face holds one man in two tracks.
REAL = ["azvi_hyland2", "azvi_testhyland", "azvi_billhyland2", "openface_multi_face", "openface_changeLighting"]
# name: (faces folder, people in the pool, episodes, people per episode, shots per episode)
EPISODES = {"lfw150": ("lfw150", 16, 4, 10, 14), "deepface13": ("deepface13", 13, 3, 8, 12)}


CLUSTERED_BY = "persons_benchmark: hac on base embeddings"
CLUSTERINGS = ("vcn", "hac")


def run_vcn(video: Path, out: Path, video_id: str, log, clusters: str = "vcn") -> Path:
    """`video`'s outputs under out/video_id with per-video clusters made as `clusters` says (module docstring).
    Each step is done once: a finished video is not run again."""
    folder = out / video_id
    if clusters == "vcn":
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
        if "cluster" not in summary.get("stages_done", []):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vcn.cli", "run", str(video), "--out", str(out), "--video-id",
                            video_id, "--quiet", "--no-report", "--no-index"], check=True)
            log(f"vcn run {video.name}: {time.perf_counter() - t0:.0f} s")
        return folder
    if not (folder / "crops.parquet").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vcn.cli", "run", str(video), "--out", str(out), "--video-id",
                        video_id, "--stages", "detect,track", "--quiet", "--no-report", "--no-index"], check=True)
        log(f"vcn run --stages detect,track {video.name}: {time.perf_counter() - t0:.0f} s")
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("clustered_by") != CLUSTERED_BY:
        from vcn.config import RunConfig
        from vcn.models import load_backbone
        from vcn.outputs import VideoOutput
        from vcn.stage23 import cluster_without_finetuning

        t0 = time.perf_counter()
        cfg = RunConfig()
        cfg.cluster.method = "hac"
        clusters_table, embeddings, _ = cluster_without_finetuning(pq.read_table(folder / "crops.parquet"),
                                                                   load_backbone("sface"), cfg, video_id)
        ids = clusters_table.column("cluster_id").to_numpy()
        summary["stages_done"] = ["detect", "track", "cluster"]
        summary["counts"].update(clusters=int(len(np.unique(ids[ids >= 0]))), unknown_tracks=int((ids < 0).sum()))
        summary["clustered_by"] = CLUSTERED_BY
        VideoOutput(out, video_id).commit({"clusters": clusters_table, "embeddings": embeddings}, summary)
        log(f"clustered {video_id} (hac, base embeddings): {time.perf_counter() - t0:.0f} s, "
            f"{summary['counts']['clusters']} clusters")
    return folder


def cast_folder(faces: str, pool: int, seed: int, work: Path) -> Path:
    """A faces folder of `pool` people drawn from the shared set (identities.json with absolute paths)."""
    from episodes import read_identities

    src = SHARED / "faces" / faces
    identities = read_identities(src)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(sorted(identities), min(pool, len(identities)), replace=False).tolist())
    folder = work / f"cast_{faces}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "identities.json").write_text(json.dumps(
        {"identities": {p: [str((src / f).resolve()) for f in identities[p]] for p in chosen}}, indent=1))
    return folder


def render_episodes(name: str, work: Path, log) -> dict[str, Path]:
    """{video_id: truth path} of the rendered episodes of one faces set, rendered once."""
    from episodes import render_episode

    faces, pool, n_eps, per_ep, shots = EPISODES[name]
    cast = cast_folder(faces, pool, 0, work)
    truths = {}
    for e in range(n_eps):
        vid = f"{name}_ep{e}"
        folder = work / "videos" / vid
        video = folder / "episode.mp4"
        if not video.is_file():
            t0 = time.perf_counter()
            render_episode(cast, folder, seed=100 + e, n_shots=shots, n_people=per_ep)
            log(f"rendered {vid}: {time.perf_counter() - t0:.0f} s")
        truths[vid] = next(folder.glob("episode.truth.*"))
    return truths


def track_identities(video_dir: Path, truth_path: Path) -> dict[int, tuple[int, str]]:
    """track_id -> (cluster_id, identity) of the clustered tracks that overlap a truth box."""
    labels = label_tracks(pq.read_table(video_dir / "detections.parquet"), read_truth(truth_path))
    identity = {t: i for t, i in zip(labels.column("track_id").to_pylist(), labels.column("identity").to_pylist())
                if i is not None}
    clusters = pq.read_table(video_dir / "clusters.parquet").to_pylist()
    return {r["track_id"]: (r["cluster_id"], identity[r["track_id"]]) for r in clusters
            if r["cluster_id"] >= 0 and r["track_id"] in identity}


def cluster_identities(tracks: dict[int, tuple[int, str]]) -> dict[int, str]:
    """cluster_id -> majority identity of its labelled tracks (ties: the first name alphabetically)."""
    votes: dict[int, Counter] = {}
    for cluster, identity in tracks.values():
        votes.setdefault(cluster, Counter())[identity] += 1
    return {c: min(v, key=lambda i: (-v[i], i)) for c, v in votes.items()}


def pair_scores(nodes: list[tuple[str, int, str]], person: dict[tuple[str, int], int]) -> dict:
    """Pairwise precision/recall of 'same person' over nodes (video, cluster, identity) of different videos."""
    tp = fp = fn = 0
    wrong, missed = Counter(), Counter()
    for (va, ca, ia), (vb, cb, ib) in combinations(nodes, 2):
        if va == vb:
            continue
        same_truth, same_found = ia == ib, person[(va, ca)] == person[(vb, cb)]
        tp += same_truth and same_found
        fp += same_found and not same_truth
        fn += same_truth and not same_found
        if same_found and not same_truth:
            wrong[f"{va}:{ca} ({ia}) ~ {vb}:{cb} ({ib})"] += 1
        if same_truth and not same_found:
            missed[f"{va}:{ca} ~ {vb}:{cb} ({ia})"] += 1
    return {"true_pairs": tp + fn, "found_pairs": tp + fp, "tp": tp, "fp": fp, "fn": fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "wrong": dict(wrong.most_common(15)), "missed": dict(missed.most_common(25))}


def truth_clustered_copy(out: Path, truths: dict[str, Path], dest: Path) -> Path:
    """A copy of the outputs whose clusters ARE the truth identities (unlabelled tracks Unknown): what the linker
    does when every video was clustered perfectly."""
    import pyarrow as pa

    shutil.rmtree(dest, ignore_errors=True)
    for vid, truth in truths.items():
        folder = dest / vid
        folder.mkdir(parents=True)
        for name in ("summary.json", "tracks.parquet", "embeddings.parquet", "detections.parquet"):
            shutil.copy(out / vid / name, folder / name)
        labels = label_tracks(pq.read_table(out / vid / "detections.parquet"), read_truth(truth))
        names = sorted({i for i in labels.column("identity").to_pylist() if i is not None})
        cluster = [names.index(i) if i is not None else -1 for i in labels.column("identity").to_pylist()]
        clusters = pq.read_table(out / vid / "clusters.parquet")
        of = dict(zip(labels.column("track_id").to_pylist(), cluster))
        ids = [of.get(t, -1) for t in clusters.column("track_id").to_pylist()]
        pq.write_table(clusters.set_column(clusters.schema.get_field_index("cluster_id"), "cluster_id",
                                           pa.array(ids, pa.int64())), folder / "clusters.parquet")
    return dest


def rule_variants(out: Path, truths: dict[str, Path]) -> dict:
    """The shipped rule against variants, by brute force on the same clusters (small sets only): where the
    threshold comes from (the closest two clusters of one video, of one frame, the chance bound of the
    cross-video pairs, or the smaller of the last two: the shipped one) x which pairs may link (mutual
    nearest neighbours across the two videos; one the other's nearest and the other too or within the
    threshold of that nearest, the shipped one; either one's nearest; any pair below the threshold) x what the
    union refuses (two clusters of one video, two clusters that share a frame, nothing)."""
    from vcn.persons.link import catalogue_threshold, cross_video_chance, video_evidence
    from vcn.persons.represent import cluster_representatives

    vids = sorted(truths)
    reps = {v: cluster_representatives(out / v, v) for v in vids}
    ident = {v: cluster_identities(track_identities(out / v, t)) for v, t in truths.items()}
    rows = [(v, int(c)) for v in vids for c in reps[v].cluster_id]
    emb = np.concatenate([reps[v].embedding for v in vids])
    video = np.array([vids.index(v) for v, _ in rows])
    evidence = [video_evidence(reps[v].embedding, reps[v].cooccurring)[0] for v in vids]
    chance = cross_video_chance(emb, video)[0]
    taus = {"same_video": min((e.min_within for e in evidence if e.n_within), default=None),
            "shared_frame": min((e.min_cooccurring for e in evidence if e.n_cooccurring), default=None),
            "chance": None if np.isnan(chance) else chance,
            "shared_frame+chance": catalogue_threshold(dict(zip(vids, evidence)), emb, video).distance}
    offsets = np.cumsum([0] + [len(reps[v]) for v in vids])
    cooc = {(int(o + a), int(o + b)) for v, o in zip(vids, offsets) for a, b in reps[v].cooccurring}
    cooc |= {(b, a) for a, b in cooc}
    sim = emb @ emb.T
    nodes = [(v, c, i) for v, m in ident.items() for c, i in sorted(m.items())]
    results = {}
    for source, tau in taus.items():
        if tau is None:
            continue
        for rule in ("mutual", "nearest_or_close", "either", "threshold_only"):
            links = []
            for i, j in combinations(range(len(rows)), 2):
                if video[i] == video[j] or 1 - sim[i, j] >= tau:
                    continue
                in_j, in_i = np.flatnonzero(video == video[j]), np.flatnonzero(video == video[i])
                near_i, near_j = in_j[np.argmax(sim[i, in_j])], in_i[np.argmax(sim[j, in_i])]
                nn_i, nn_j = near_i == j, near_j == i
                # The shipped rule (vcn.persons.link): a non-nearest side must be close to the nearest one.
                close = (nn_i or nn_j) and (nn_i or 1 - sim[j, near_i] < tau) \
                    and (nn_j or 1 - sim[i, near_j] < tau)
                if {"mutual": nn_i and nn_j, "nearest_or_close": close, "either": nn_i or nn_j,
                        "threshold_only": True}[rule]:
                    links.append((1 - sim[i, j], i, j))
            for apart in ("same_video", "shared_frame", "nothing"):
                group = {i: frozenset([i]) for i in range(len(rows))}
                for _, i, j in sorted(links):
                    a, b = group[i], group[j]
                    if a == b or (apart == "same_video" and {video[x] for x in a} & {video[x] for x in b}) or \
                            (apart == "shared_frame" and any((x, y) in cooc for x in a for y in b)):
                        continue
                    for x in a | b:
                        group[x] = a | b
                person = {rows[i]: min(group[i]) for i in range(len(rows))}
                r = pair_scores(nodes, person)
                results[f"threshold: {source}, {rule}, apart: {apart}"] = {
                    k: r[k] for k in ("precision", "recall", "tp", "fp", "fn")}
    return {"thresholds": {k: None if v is None else round(float(v), 6) for k, v in taus.items()},
            "note": "cluster pairs by majority identity; the shipped rule is 'threshold: shared_frame+chance, "
                    "nearest_or_close, apart: shared_frame' (before: mutual; before that threshold: same_video)",
            "variants": results}


def score(out: Path, truths: dict[str, Path]) -> dict:
    """Rebuild the index over `out` and score cross-video links."""
    from vcn.persons import update_index
    from vcn.persons.query import load_persons, person_of_cluster

    shutil.rmtree(out / "persons", ignore_errors=True)
    t0 = time.perf_counter()
    report = update_index(out)
    seconds = time.perf_counter() - t0
    state = load_persons(str(out))
    person = person_of_cluster(state)
    tracks = {vid: track_identities(out / vid, truth) for vid, truth in truths.items()}
    ident = {vid: cluster_identities(t) for vid, t in tracks.items()}
    nodes = [(vid, c, i) for vid, m in ident.items() for c, i in sorted(m.items()) if (vid, c) in person]
    track_nodes = [(vid, c, i) for vid, m in tracks.items() for _, (c, i) in sorted(m.items()) if (vid, c) in person]
    clusters, by_track = pair_scores(nodes, person), pair_scores(track_nodes, person)
    # How pure the per-video clusters were (the linker can only be as right as they are).
    impure = {f"{vid}:{c}": dict(Counter(i for cc, i in t.values() if cc == c))
              for vid, t in tracks.items() for c in {cc for cc, _ in t.values()}
              if len({i for cc, i in t.values() if cc == c}) > 1}
    persons_per_identity = Counter()
    for i in {n[2] for n in nodes}:
        persons_per_identity[i] = len({person[(v, c)] for v, c, j in nodes if j == i})
    return {
        "videos": sorted(truths), "clusters": state.clusters.num_rows, "clusters_labelled": len(nodes),
        "identities": len({n[2] for n in nodes}), "persons": state.persons.num_rows,
        "threshold": report.threshold, "links": report.links,
        "clusters_by_majority_identity": clusters, "tracks": by_track, "impure_clusters": impure,
        "persons_per_identity": dict(sorted(persons_per_identity.items())), "index_seconds": round(seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="work/persons_accuracy", help="scratch folder (videos and vcn outputs)")
    p.add_argument("--sets", default="real,lfw150,deepface13", help="which sets to measure")
    p.add_argument("--json", default="benchmarks/results/persons_accuracy.json")
    p.add_argument("--clusters", default=",".join(CLUSTERINGS),
                   help="per-video clusters to link: vcn (full `vcn run`), hac (HAC 0.6 on base embeddings)")
    args = p.parse_args(argv)
    work = Path(args.work)
    results: dict = {"note": " ".join(__doc__.split("\n\n")[2].split())}
    out_json = Path(args.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)

    def log(s: str) -> None:
        print(s, flush=True)

    clusterings = [c.strip() for c in args.clusters.split(",") if c.strip()]
    unknown = sorted(set(clusterings) - set(CLUSTERINGS))
    if unknown:
        p.error(f"--clusters {','.join(unknown)}: choose from {','.join(CLUSTERINGS)}")
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        results[name] = {}
        for clusters in clusterings:
            # vcn keeps the original folder name 'out' for the HAC outputs so older work folders are reused.
            out = work / name / ("out" if clusters == "hac" else f"out_{clusters}")
            if name == "real":
                truths = {}
                for v in REAL:
                    video, truths[v] = prepare_video(v, work)
                    run_vcn(video, out, v, log, clusters)
            else:
                truths = render_episodes(name, work / name, log)
                for vid in truths:
                    run_vcn(work / name / "videos" / vid / "episode.mp4", out, vid, log, clusters)
            r = results[name][clusters] = score(out, truths)
            r["rule_variants"] = rule_variants(out, truths)
            r["linker_on_truth_clusters"] = score(
                truth_clustered_copy(out, truths, work / name / f"truth_clustered_{clusters}"), truths)
            for label, x in ((f"{name} [{clusters}]", r), (f"{name}, truth clusters", r["linker_on_truth_clusters"])):
                for level in ("clusters_by_majority_identity", "tracks"):
                    y = x[level]
                    log(f"{label} {level}: precision {y['precision']}, recall {y['recall']} "
                        f"(tp {y['tp']}, fp {y['fp']}, fn {y['fn']}); threshold {x['threshold']['distance']}")
            out_json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
