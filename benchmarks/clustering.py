"""Clustering accuracy of vcn against the usual alternatives on real faces, and the cost of Algorithm 1's pair means.

    python benchmarks/clustering.py --out out/bench_clustering [--json benchmarks/results/clustering.json]
        [--videos NAME,...] [--no-oracle] [--timing-only] [--brute-max 1000]

Videos: episodes rendered from the shared face photos (benchmarks/episodes.py; 'photo' episodes show every
appearance in a new photo, 'scene' episodes keep one photo per person within a scene of several shots, as TV
does) and the Hamilton clip with this repository's ground truth (benchmarks/data/hamilton_truth.csv: boxes of
the 8 tracks a person can name, identities checked by eye; background faces too dark to name are left out).

Per video, stage 1 runs once and stage 2 once; every method clusters the same gated tracks:
  vcn                 the full method: finetuning rounds with coarse matching, Algorithm 1 with the loss
  vcn_cannot_link     the same finetuned model, Algorithm 1 never merging two tracks that share a frame
  vcn_cosine          the same finetuned model, Algorithm 1 with cosine instead of the loss (paper ablation)
  vcn_no_finetune     Algorithm 1 with the loss of the untrained head on the pretrained backbone
  hac_base / hac_finetuned, dbscan_base / dbscan_finetuned, finch_base / finetuned: on mean track embeddings
  vcn_first_neighbour the full method with match.method=first_neighbour (each track paired with its nearest
                      track between rounds instead of the Gaussian rule; a second finetune)
  vcn_oracle_matching a third finetune whose rounds pair tracks of the same TRUE identity instead of the
                      coarse matches (a diagnostic ceiling, not a method: it reads the ground truth)
Scores come from vcn.evaluate.evaluate_tables (Unknown tracks count as singletons; unknown_share beside WCP).
The coarse matches found between rounds are scored against the truth too (pairs of tracks, same person or not).

Timing: the mean loss between every pair of clusters (Algorithm 1's Sim) from per-cluster mean vectors (one
matrix product) against enumerating all crop pairs, at 100, 1,000 and 10,000 tracks of random data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from episodes import render_episode  # noqa: E402

from vcn.clustering import cluster_pair_losses, cooccurring_pairs  # noqa: E402
from vcn.config import RunConfig  # noqa: E402
from vcn.evaluate import evaluate_tables, label_tracks, to_json  # noqa: E402
from vcn.render import read_truth  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
HAMILTON_TRUTH = ROOT / "benchmarks" / "data" / "hamilton_truth.csv"
# name -> (faces folder, seed, people (None = all), shots, shots per scene)
# Scene episodes have more scenes than people, so people come back in other scenes in other photos.
EPISODES = {
    "deepface13_photo": ("deepface13", 0, None, 12, 1),
    "deepface13_scene": ("deepface13", 1, 6, 30, 3),
    "lfw150_photo": ("lfw150", 0, 30, 30, 1),
    "lfw150_scene": ("lfw150", 1, 16, 48, 3),
}
SCORES = ("n_tracks", "n_identities", "n_clusters", "unknown_share", "wcp", "pcr", "nmi", "bcubed_precision",
          "bcubed_recall", "bcubed_f")


def prepare_video(name: str, work: Path) -> tuple[Path, Path]:
    """(video file, truth table) for a benchmark video, rendering an episode if it is not there yet."""
    if name == "hamilton":
        return SHARED / "videos" / "short_hamilton_clip.mp4", HAMILTON_TRUTH
    faces, seed, people, shots, per_scene = EPISODES[name]
    folder = work / "episodes" / name
    if not (folder / "episode.mp4").is_file():
        render_episode(SHARED / "faces" / faces, folder, seed=seed, n_shots=shots, n_people=people,
                       shots_per_scene=per_scene)
    return folder / "episode.mp4", folder / "episode.truth.parquet"


def match_quality(matches: dict[int, list[int]], identity_of: dict[int, str]) -> dict:
    """How many of the video's same-person track pairs the coarse matching linked, and how many wrong links."""
    tracks = sorted(t for t in matches if identity_of.get(t))
    linked = {(min(a, b), max(a, b)) for a in tracks for b in matches[a] if identity_of.get(b)}
    same = {(a, b) for i, a in enumerate(tracks) for b in tracks[i + 1:] if identity_of[a] == identity_of[b]}
    return {"same_person_pairs": len(same), "same_person_linked": len(linked & same),
            "recall": len(linked & same) / len(same) if same else None,
            "wrong_links": len(linked - same)}


def oracle_matcher(identity_of: dict[int, str]):
    """Matches every track with the other tracks of its true identity (diagnostic only)."""
    def match(_emb: np.ndarray, track_of_crop: np.ndarray) -> dict[int, list[int]]:
        ids = [int(t) for t in np.unique(track_of_crop)]
        return {a: [b for b in ids if b != a and identity_of.get(a) and identity_of.get(a) == identity_of.get(b)]
                for a in ids}
    return match


def evaluate_video(name: str, work: Path, backbone, oracle: bool) -> dict:
    from vcn.pipeline import _co_occurring_frames, run_video
    from vcn.stage23 import cluster_finetuned, cluster_without_finetuning, finetune_video

    video, truth_path = prepare_video(name, work)
    t0 = time.perf_counter()
    run = run_video(video, work / "runs" / name, stages=["detect", "track"], progress=False)
    stage1_s = time.perf_counter() - t0
    tables = {k: pq.read_table(run.path / f"{k}.parquet") for k in ("tracks", "detections", "crops")}
    truth = read_truth(truth_path)
    labels = label_tracks(tables["detections"], truth)
    identity_of = {r["track_id"]: r["identity"] for r in labels.to_pylist() if r["identity"]}

    def score(clusters) -> dict:
        r = evaluate_tables(tables["tracks"], tables["detections"], clusters, truth)
        return {k: r[k] for k in SCORES}

    cfg = RunConfig()
    row: dict = {"video": str(video), "truth": str(truth_path), "stage1_s": round(stage1_s, 1),
                 "crops_clustered": 0, "methods": {}, "seconds": {}}
    t0 = time.perf_counter()
    ft = finetune_video(tables["crops"], backbone, cfg)
    row["seconds"]["finetune_full_method"] = round(time.perf_counter() - t0, 1)
    row["stage2_timings"] = {k: round(v, 2) for k, v in ft.timings.items()}
    row["crops_clustered"] = int(ft.prep.clusterable.sum())
    row["coarse_matches_per_round"] = [match_quality(m, identity_of) for m in ft.matches]
    linked_frames = cooccurring_pairs(_co_occurring_frames(tables["detections"]))
    base = dataclasses.replace(ft, tuned=ft.prep.base)

    def method_cfg(method: str, metric: str = "loss") -> RunConfig:
        return dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, method=method, metric=metric))

    m = row["methods"]
    m["vcn"] = score(cluster_finetuned(ft, cfg, name))
    m["vcn_cannot_link"] = score(cluster_finetuned(ft, cfg, name, linked_frames))
    m["vcn_cosine"] = score(cluster_finetuned(ft, method_cfg("vcn", "cosine"), name))
    m["vcn_no_finetune"] = score(cluster_without_finetuning(tables["crops"], backbone, cfg, name)[0])
    for method in ("hac", "dbscan", "finch"):
        m[f"{method}_base"] = score(cluster_finetuned(base, method_cfg(method), name))
        m[f"{method}_finetuned"] = score(cluster_finetuned(ft, method_cfg(method), name))
    fn_cfg = dataclasses.replace(cfg, match=dataclasses.replace(cfg.match, method="first_neighbour"))
    t0 = time.perf_counter()
    ft_fn = finetune_video(tables["crops"], backbone, fn_cfg)
    row["seconds"]["finetune_first_neighbour"] = round(time.perf_counter() - t0, 1)
    row["first_neighbour_matches_per_round"] = [match_quality(m, identity_of) for m in ft_fn.matches]
    m["vcn_first_neighbour"] = score(cluster_finetuned(ft_fn, fn_cfg, name))
    if oracle:
        t0 = time.perf_counter()
        ft_oracle = finetune_video(tables["crops"], backbone, cfg, matcher=oracle_matcher(identity_of))
        row["seconds"]["finetune_oracle"] = round(time.perf_counter() - t0, 1)
        m["vcn_oracle_matching"] = score(cluster_finetuned(ft_oracle, cfg, name))
    return row


def hac_threshold_sweep(name: str, work: Path, backbone, thresholds=(0.4, 0.5, 0.6, 0.7, 0.8)) -> dict:
    """HAC on the base embeddings at several cosine thresholds: how much the baselines' one number matters.
    Uses the stage-1 output of an earlier run in `work` (or runs stage 1)."""
    from vcn.pipeline import run_video
    from vcn.stage23 import cluster_without_finetuning

    video, truth_path = prepare_video(name, work)
    run = run_video(video, work / "runs" / name, stages=["detect", "track"], progress=False)
    tables = {k: pq.read_table(run.path / f"{k}.parquet") for k in ("tracks", "detections", "crops")}
    truth = read_truth(truth_path)
    out = {}
    for threshold in thresholds:
        cfg = RunConfig()
        cfg.cluster.method, cfg.cluster.hac_threshold = "hac", threshold
        clusters = cluster_without_finetuning(tables["crops"], backbone, cfg, name)[0]
        r = evaluate_tables(tables["tracks"], tables["detections"], clusters, truth)
        out[str(threshold)] = {k: r[k] for k in SCORES}
    return out


# ---------------------------------------------------------------------------------------------- cannot-link


def cannot_link_on_tv_tracks(folder: Path = SHARED / "tv_tracks") -> list[dict]:
    """On the real track structure of the paper's TV episodes: how many track pairs share a frame, how many
    tracks that touches, and how often the labels call such a pair one person (the constraint being wrong)."""
    from vcn.clustering import cooccurring_pairs
    from vcn.metrics import load_tv_tracks

    rows = []
    for mat in sorted(folder.glob("*.facetracks.mat")):
        ep = load_tv_tracks(mat)
        pairs = cooccurring_pairs({int(t): f for t, f in zip(ep.track_ids, ep.frames)})
        who = {int(t): i for t, i, ok in zip(ep.track_ids, ep.identities, ep.labelled) if ok}
        labelled = [(a, b) for a, b in pairs if a in who and b in who]
        same = sum(who[a] == who[b] for a, b in labelled)
        rows.append({"episode": ep.episode, "tracks": len(ep), "co_occurring_pairs": len(pairs),
                     "tracks_in_a_pair": len({t for pair in pairs for t in pair}),
                     "labelled_pairs": len(labelled), "labelled_pairs_same_identity": int(same)})
    return rows


# ---------------------------------------------------------------------------------------------- timing


def brute_force_pair_means(p: np.ndarray, l: np.ndarray, cluster_of_crop: np.ndarray, n_clusters: int,
                           chunk: int = 2048) -> np.ndarray:
    """Sim by enumerating every crop pair: S(a, b) for all (a, b), summed per cluster pair, then the mean."""
    order = np.argsort(cluster_of_crop, kind="stable")
    p, l, cl = p[order], l[order], cluster_of_crop[order]
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
    counts = np.bincount(cl, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, n_clusters))
    for i in range(0, len(p), chunk):
        s = -(p[i:i + chunk] @ l.T)                          # S one way: a chunk of crops against every crop
        per_col = np.add.reduceat(s, starts, axis=1)         # summed over the crops of each column cluster
        rows = cl[i:i + chunk]
        local = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        sums[rows[local]] += np.add.reduceat(per_col, local, axis=0)
    sums = 0.5 * (sums + sums.T)                              # the symmetrised S
    return sums / np.outer(counts, counts)


def timing(n_tracks: int, crops_per_track: int, k: int, brute_max: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = n_tracks * crops_per_track
    z = rng.normal(size=(n, k)).astype(np.float32)
    p = torch.softmax(torch.from_numpy(z) / 0.04, dim=1).numpy()
    l = torch.log_softmax(torch.from_numpy(rng.normal(size=(n, k)).astype(np.float32)) / 0.1, dim=1).numpy()
    track = np.repeat(np.arange(n_tracks), crops_per_track)
    t0 = time.perf_counter()
    # Per-cluster means (one-track clusters: the crops are contiguous here), then one matrix product.
    pm = p.reshape(n_tracks, crops_per_track, k).mean(axis=1)
    lm = l.reshape(n_tracks, crops_per_track, k).mean(axis=1)
    fast = cluster_pair_losses(pm, lm)
    fast_s = time.perf_counter() - t0
    row = {"tracks": n_tracks, "crops": n, "k": k, "bilinear_s": round(fast_s, 4)}
    if n_tracks <= brute_max:
        t0 = time.perf_counter()
        slow = brute_force_pair_means(p, l, track, n_tracks)
        row["brute_force_s"] = round(time.perf_counter() - t0, 4)
        row["max_abs_difference"] = float(np.abs(slow - fast).max())
        row["speedup"] = round(row["brute_force_s"] / fast_s, 1)
    return row


def print_table(name: str, row: dict) -> None:
    print(f"\n{name}: {row['crops_clustered']} crops clustered, coarse matches per round "
          f"{row['coarse_matches_per_round']}, first-neighbour matches {row['first_neighbour_matches_per_round']}, "
          f"seconds {row['seconds']}")
    print(f"{'method':22s} {'clusters':>8s} {'ids':>4s} {'unknown':>7s} {'WCP':>6s} {'PCR':>5s} {'NMI':>6s} {'BCubF':>6s}")
    for method, r in row["methods"].items():
        print(f"{method:22s} {r['n_clusters']:8d} {r['n_identities']:4d} {r['unknown_share']:7.2f} {r['wcp']:6.3f} "
              f"{r['pcr']:5.2f} {r['nmi']:6.3f} {r['bcubed_f']:6.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="working folder (episodes, stage-1 outputs)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "clustering.json"))
    parser.add_argument("--videos", default=",".join(["hamilton", *EPISODES]))
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle-matching diagnostic finetune")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--hac-sweep", action="store_true",
                        help="only add HAC at cosine 0.4-0.8 on the base model to the --json file's videos")
    parser.add_argument("--brute-max", type=int, default=1000,
                        help="largest track count also timed by brute force (larger ones are extrapolated)")
    parser.add_argument("--crops-per-track", type=int, default=4)
    parser.add_argument("--k", type=int, default=RunConfig().ssl.head_out)
    args = parser.parse_args(argv)

    from vcn.models import load_backbone

    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()}), "
                                f"{torch.get_num_threads()} torch threads",
                     "command": "python benchmarks/clustering.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.hac_sweep:
        results = json.loads(Path(args.json).read_text())
        backbone = load_backbone("sface")
        for name in args.videos.split(","):
            sweep = hac_threshold_sweep(name, out, backbone)
            results.setdefault("videos", {}).setdefault(name, {})["hac_base_threshold_sweep"] = sweep
            print(name, {t: (r["n_clusters"], round(r["wcp"], 3), round(r["pcr"], 2)) for t, r in sweep.items()})
        Path(args.json).write_text(to_json(results))
        return 0
    if not args.timing_only:
        backbone = load_backbone("sface")
        results["videos"] = {}
        for name in args.videos.split(","):
            results["videos"][name] = evaluate_video(name, out, backbone, not args.no_oracle)
            print_table(name, results["videos"][name])
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(to_json(results))          # after every video: a long run keeps its parts
    if (SHARED / "tv_tracks").is_dir():
        results["cannot_link_on_tv_tracks"] = cannot_link_on_tv_tracks()
    rows = [timing(n, args.crops_per_track, args.k, args.brute_max) for n in (100, 1000, 10000)]
    measured = [r for r in rows if "brute_force_s" in r]
    for r in rows:
        if "brute_force_s" not in r and measured:
            # Enumeration costs crops^2 * K: scale the largest measured run by the square of the crop ratio.
            ref = measured[-1]
            r["brute_force_s_extrapolated"] = round(ref["brute_force_s"] * (r["crops"] / ref["crops"]) ** 2, 1)
            r["speedup_extrapolated"] = round(r["brute_force_s_extrapolated"] / r["bilinear_s"], 1)
    results["pair_mean_timing"] = rows
    print(to_json(results["pair_mean_timing"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(to_json(results))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
