"""Are the splits left one person's profile and frontal looks, and could a rule attach a profile to its person?

    python benchmarks/poses.py --seeds-json benchmarks/results/seeds_same_setup_s26.json --config both_new_default \
        --out work/ --json benchmarks/results/poses_s28.json

For every clustering a seeds file keeps (benchmarks/seeds.py), every pair of clusters that never share a frame is
a candidate join: "right" where both clusters' majority identity is one person (a split), "wrong" where it is
two, "unlabelled" where a side has no identity. Each cluster gets a pose, the median over its tracks of each
track's median nose offset: where the nose projects onto the line through the eyes, 0 at the eyes' midpoint and
0.5 at either eye (RetinaFace's landmarks). A cluster is a profile when that offset is above 0.5, the nose outside
the span between the eyes: a geometric line, not a fitted one. Distances are average linkage of the base SFace
track means' cosine distances (quality-gated crops), the space the report's review pairs are read in.

Reported: how many split pairs and how many pairs of two people join a profile cluster to a frontal one, and, for
every profile cluster, whether its nearest frontal cluster is its own person: the rule "attach each profile to
the nearest frontal cluster" scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from clustering import stage1_tables  # noqa: E402

from vcn.clustering import cooccurring_pairs, frames_of_tracks  # noqa: E402
from vcn.clustering.groups import group_means  # noqa: E402
from vcn.evaluate import label_tracks  # noqa: E402
from vcn.faces.align import nose_offset  # noqa: E402
from vcn.models import load_backbone  # noqa: E402
from vcn.render import read_truth  # noqa: E402
from vcn.ssl.train import run_in_batches  # noqa: E402
from vcn.stage23 import decode_crops  # noqa: E402

PROFILE = 0.5   # nose offset beyond which the nose lies outside the eyes' span


def gated_embeddings(crops, backbone):
    """(the quality-gated rows of a crops table, `backbone`'s embeddings of their images [N, d])."""
    ok = crops.filter(crops["quality_ok"])
    return ok, run_in_batches(backbone, decode_crops(ok["image"].to_pylist()), 64, torch.device("cpu")).numpy()


def track_features(crops, backbone) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Per track: the unit mean of its quality-gated crops' base embeddings, and its median nose offset."""
    ok, emb = gated_embeddings(crops, backbone)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    track = ok["track_id"].to_numpy()
    offset = nose_offset(np.stack(ok["landmarks"].to_numpy(zero_copy_only=False)))
    ids, sums = group_means(emb, track)
    unit = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    means = dict(zip(ids.tolist(), unit))
    poses = {t: float(np.median(offset[track == t])) for t in means}
    return means, poses


def candidate_pairs(clusters: dict[int, int], identity: dict[int, str | None], means: dict[int, np.ndarray],
                    poses: dict[int, float], linked: set[tuple[int, int]]) -> list[dict]:
    """Every pair of clusters with no two tracks in one frame: distance, verdict and both poses."""
    members: dict[int, list[int]] = defaultdict(list)
    for t, c in clusters.items():
        if c >= 0 and t in means:
            members[c].append(t)
    label = {c: Counter(identity.get(t) for t in ts).most_common(1)[0][0] for c, ts in members.items()}
    pose = {c: float(np.median([poses[t] for t in ts])) for c, ts in members.items()}
    ids = sorted(members)
    out = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if any((min(x, y), max(x, y)) in linked for x in members[a] for y in members[b]):
                continue
            dist = float(np.mean([1.0 - means[x] @ means[y] for x in members[a] for y in members[b]]))
            verdict = ("unlabelled" if label[a] is None or label[b] is None
                       else "right" if label[a] == label[b] else "wrong")
            out.append({"a": a, "b": b, "distance": dist, "verdict": verdict, "pose_a": pose[a], "pose_b": pose[b]})
    return out


def profile_to_nearest_frontal(pairs: list[dict]) -> Counter:
    """For each profile cluster, the verdict of its nearest frontal cluster (if it has one)."""
    best: dict[int, dict] = {}
    for p in pairs:
        for me, other, my_pose, other_pose in ((p["a"], p["b"], p["pose_a"], p["pose_b"]),
                                               (p["b"], p["a"], p["pose_b"], p["pose_a"])):
            if my_pose > PROFILE >= other_pose and (me not in best or p["distance"] < best[me]["distance"]):
                best[me] = p
    return Counter(p["verdict"] for p in best.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds-json", required=True)
    parser.add_argument("--config", required=True, help="the seeds file's config whose clusterings are read")
    parser.add_argument("--out", required=True, help="the stage-1 working folder the seeds file was made with")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "poses.json"))
    args = parser.parse_args(argv)
    seeds_file = json.loads(Path(args.seeds_json).read_text())
    backbone = load_backbone("sface").eval()
    totals = {"pairs": Counter(), "profile_with_frontal": Counter(), "profile_to_nearest_frontal": Counter()}
    per_video = {}
    for name, row in seeds_file["videos"].items():
        runs = {s: r for s, r in row["runs"].get(args.config, {}).items() if "clusters" in r}
        if not runs:
            continue
        _, truth_path, tables, _ = stage1_tables(name, Path(args.out))
        labels = label_tracks(tables["detections"], read_truth(truth_path))
        identity = dict(zip(labels["track_id"].to_pylist(), labels["identity"].to_pylist()))
        linked = cooccurring_pairs(frames_of_tracks(tables["detections"]))
        means, poses = track_features(tables["crops"], backbone)
        video = {"pairs": Counter(), "profile_with_frontal": Counter(), "profile_to_nearest_frontal": Counter(),
                 "split_pairs": []}
        for seed, run in sorted(runs.items()):
            pairs = candidate_pairs({int(t): c for t, c in run["clusters"].items()}, identity, means, poses, linked)
            for p in pairs:
                video["pairs"][p["verdict"]] += 1
                if (p["pose_a"] > PROFILE) != (p["pose_b"] > PROFILE):
                    video["profile_with_frontal"][p["verdict"]] += 1
                if p["verdict"] == "right":
                    video["split_pairs"].append({"seed": seed, **{k: round(v, 3) if isinstance(v, float) else v
                                                                 for k, v in p.items()}})
            video["profile_to_nearest_frontal"] += profile_to_nearest_frontal(pairs)
        for key in totals:
            totals[key] += video[key]
        per_video[name] = {k: dict(v) if isinstance(v, Counter) else v for k, v in video.items()}
        print(name, {k: dict(v) for k, v in video.items() if isinstance(v, Counter)}, flush=True)
    write_result(Path(args.json), "poses.py", argv, {"profile_offset": PROFILE}, totals, per_video)
    return 0


def write_result(path: Path, script: str, argv: list[str] | None, extra: dict, totals: dict, videos: dict) -> None:
    """A counting benchmark's JSON (its command, `extra`, the totals, per video), and its totals printed."""
    result = {"command": f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
              **extra, "totals": {k: dict(v) for k, v in totals.items()}, "videos": videos}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["totals"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
