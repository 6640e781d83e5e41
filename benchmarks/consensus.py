"""What a consensus of K finetunes scores, from finetunes already run: `cluster.consensus_finetunes` measured offline.

    python benchmarks/consensus.py --seeds-json benchmarks/results/seeds_fold_batchnorm_s21.json --config fold \
        --out work/ --k 3 [--all-combinations] --json benchmarks/results/consensus_s21.json

`cluster.consensus_finetunes=K` finetunes with seeds ssl.seed .. ssl.seed + K - 1 and combines their clusterings
(vcn.clustering.consensus). A seeds file (benchmarks/seeds.py) already holds each seed's clustering of every
video, so the consensus of seeds s .. s + K - 1 is the same function applied to those clusterings: here, every
run of K consecutive seeds the file covers (the setting's own seeds), or with --all-combinations every K of them
(a steadier estimate). Each is scored as seeds.py scores one finetune, beside the single finetunes it combines.
Stage 1 is read from --out (the tracks the seeds file was made on; cached by benchmarks/seeds.py). Running the
setting itself (`benchmarks/seeds.py --config consensus:cluster.consensus_finetunes=3`) gives the same clusters at
K times the finetuning.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from clustering import against_targets, scorer, stage1_tables  # noqa: E402

from vcn.clustering import cooccurring_pairs, frames_of_tracks  # noqa: E402
from vcn.clustering.consensus import consensus_clusters  # noqa: E402
from vcn.render import read_truth  # noqa: E402


def combined(runs: list[dict[str, int]], cannot_link: set[tuple[int, int]], video_id: str) -> pa.Table:
    """The clusters table `cluster.consensus_finetunes` would write from these clusterings (track -> cluster)."""
    agreed = consensus_clusters([{int(t): c for t, c in run.items()} for run in runs], cannot_link)
    return pa.table({"video_id": [video_id] * len(agreed), "track_id": pa.array(list(agreed), pa.int64()),
                     "cluster_id": pa.array(list(agreed.values()), pa.int64())})


def evaluate(seeds_file: dict, config: str, work: Path, k: int, all_combinations: bool) -> dict:
    out: dict = {"videos": {}}
    singles, consensus, hac_for_single, hac_for_consensus = [], [], [], []
    chosen = seeds_file["summary"]["hac_threshold_chosen_once"]
    for name, row in seeds_file["videos"].items():
        runs = row["runs"].get(config, {})
        seeds = sorted(int(s) for s, r in runs.items() if "clusters" in r)
        if len(seeds) < k:
            continue
        _, truth_path, tables, _ = stage1_tables(name, work)
        linked = cooccurring_pairs(frames_of_tracks(tables["detections"]))
        score = scorer(name, tables, read_truth(truth_path))
        groups = (list(itertools.combinations(seeds, k)) if all_combinations
                  else [tuple(range(s, s + k)) for s in seeds if all(s + i in seeds for i in range(k))])
        scored = {}
        for group in groups:
            result = score(combined([runs[str(s)]["clusters"] for s in group], linked, name))
            scored[",".join(map(str, group))] = result
        out["videos"][name] = {"consensus": scored, "single": {str(s): runs[str(s)] for s in seeds}}
        mine = [runs[str(s)] for s in seeds]
        singles += mine
        consensus += list(scored.values())
        hac_for_single += [row["hac"][chosen]] * len(seeds)
        hac_for_consensus += [row["hac"][chosen]] * len(scored)
        print(f"{name}: single {[r['n_clusters'] for r in mine]} clusters, consensus "
              f"{[r['n_clusters'] for r in scored.values()]}; mean F {np.mean([r['bcubed_f'] for r in mine]):.3f}"
              f" -> {np.mean([r['bcubed_f'] for r in scored.values()]):.3f}", flush=True)
    out["summary"] = {"single": against_targets(singles, hac_for_single),
                      "consensus": against_targets(consensus, hac_for_consensus),
                      "finetunes": len(singles), "consensus_runs": len(consensus),
                      "hac_threshold_chosen_once": chosen}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds-json", required=True, help="a benchmarks/seeds.py results file with clusterings")
    parser.add_argument("--config", required=True, help="the config of that file whose finetunes to combine")
    parser.add_argument("--out", required=True, help="the working folder that holds those videos' stage 1")
    parser.add_argument("--k", type=int, default=3, help="finetunes per consensus (cluster.consensus_finetunes)")
    parser.add_argument("--all-combinations", action="store_true",
                        help="every K of the file's seeds, not only runs of K consecutive seeds")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    seeds_file = json.loads(Path(args.seeds_json).read_text())
    if args.config not in seeds_file["configs"]:
        parser.error(f"--config {args.config!r} is not in {args.seeds_json}; it has {', '.join(seeds_file['configs'])}")
    result = evaluate(seeds_file, args.config, Path(args.out), args.k, args.all_combinations)
    result.update({"command": "python benchmarks/consensus.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "k": args.k, "seeds_json": args.seeds_json, "config": args.config,
                   "all_combinations": args.all_combinations})
    Path(args.json).write_text(json.dumps(result, indent=1))
    s = result["summary"]
    for kind in ("single", "consensus"):
        t = s[kind]
        print(f"{kind}: mean F {t['mean_bcubed_f']:.3f}, " + ", ".join(f"{key} {value}" for key, value in t.items()
                                                                  if key.startswith("videos_")))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
