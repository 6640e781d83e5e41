"""Coarse matching's extra links on the base embeddings: each other's nearest (the default) against each track's
nearest (match.method=gaussian_nearest_chance), both below the video's two bounds, scored against the truth.

    python benchmarks/nearest_links.py --out work/ --json benchmarks/results/nearest_links_s29.json

For every benchmark video (stage 1 in --out, as benchmarks/clustering.py leaves it), SFace embeds the quality-gated
crops and vcn.matching.mutual_nearest_within_known_different links tracks both ways (below_chance on, as in the
default). A link is "right" when both tracks carry one identity of the truth, "wrong" when two, "unlabelled" when a
side has none. No finetuning: this reads what the base embedding offers the first matching, not what vcn ends with.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from clustering import EPISODES, HELD_OUT, REAL, stage1_tables  # noqa: E402
from poses import gated_embeddings, write_result  # noqa: E402

from vcn.clustering import cooccurring_pairs, frames_of_tracks  # noqa: E402
from vcn.evaluate import label_tracks  # noqa: E402
from vcn.matching import TrackMatches, mutual_nearest_within_known_different  # noqa: E402
from vcn.models import load_backbone  # noqa: E402
from vcn.render import read_truth  # noqa: E402

RULES = {"mutual": True, "one_sided": False}   # rule name -> the `mutual` argument


def link_verdicts(matches: TrackMatches, identity: dict[int, str | None]) -> Counter:
    """Right / wrong / unlabelled over the matched pairs of tracks (each pair once)."""
    out: Counter = Counter()
    for a, b in zip(*np.nonzero(np.triu(matches.matched, 1))):
        x, y = identity.get(int(matches.track_ids[a])), identity.get(int(matches.track_ids[b]))
        out["unlabelled" if x is None or y is None else "right" if x == y else "wrong"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the stage-1 working folder")
    parser.add_argument("--videos", default=",".join((*REAL, "hamilton", *HELD_OUT, *EPISODES)))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "nearest_links.json"))
    args = parser.parse_args(argv)
    backbone = load_backbone("sface").eval()
    totals = {rule: Counter() for rule in RULES}
    videos = {}
    for name in args.videos.split(","):
        _, truth_path, tables, _ = stage1_tables(name, Path(args.out))
        labels = label_tracks(tables["detections"], read_truth(truth_path))
        identity = dict(zip(labels["track_id"].to_pylist(), labels["identity"].to_pylist()))
        linked = cooccurring_pairs(frames_of_tracks(tables["detections"]))
        ok, emb = gated_embeddings(tables["crops"], backbone)
        track = ok["track_id"].to_numpy()
        row = {}
        for rule, mutual in RULES.items():
            m = mutual_nearest_within_known_different(emb, track, linked, below_chance=True, mutual=mutual)
            counts = link_verdicts(m, identity)
            row[rule] = dict(counts)
            totals[rule] += counts
        # The bound is the video's, the same for both rules.
        row["bound"] = round(float(m.thresholds[0]), 3) if len(m.thresholds) else None
        videos[name] = row
        print(name, row, flush=True)
    write_result(Path(args.json), "nearest_links.py", argv, {}, totals, videos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
