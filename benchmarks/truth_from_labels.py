"""Turn by-eye track labels into a truth table: every detection of a labelled track, named.

    python benchmarks/truth_from_labels.py RUN_DIR LABELS.csv OUT.truth.csv

RUN_DIR is a `vcn run --stages detect,track` output of the video (its detections.parquet); LABELS.csv has the
columns track,identity,note with one row per track of that run (an empty identity leaves the track out, and the
note says why). The truth has the header frame,x1,y1,x2,y2,identity that vcn.render.read_truth reads; a scorer
matches its boxes to any system's boxes by IoU per frame, so it does not depend on this run's track ids.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import pyarrow.parquet as pq


def read_labels(path: Path) -> dict[int, str]:
    """track id -> identity ('' = left out)."""
    with path.open(newline="") as f:
        return {int(r["track"]): (r["identity"] or "").strip() for r in csv.DictReader(f)}


def truth_rows(detections, labels: dict[int, str]) -> list[tuple]:
    tracks = sorted({t for t in detections.column("track_id").to_pylist() if t >= 0})
    missing = [t for t in tracks if t not in labels]
    if missing:
        raise ValueError(f"tracks without a label row: {missing}; add a row for each (empty identity to leave "
                         f"one out)")
    rows = [(d["frame"], round(d["x1"], 1), round(d["y1"], 1), round(d["x2"], 1), round(d["y2"], 1),
             labels[d["track_id"]])
            for d in detections.select(["frame", "x1", "y1", "x2", "y2", "track_id"]).to_pylist()
            if d["track_id"] >= 0 and labels[d["track_id"]]]
    return sorted(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    labels = read_labels(args.labels)
    rows = truth_rows(pq.read_table(args.run_dir / "detections.parquet"), labels)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "x1", "y1", "x2", "y2", "identity"])
        w.writerows(rows)
    named = {t for t, who in labels.items() if who}
    print(f"{args.out}: {len(named)}/{len(labels)} tracks labelled, {len(rows)} boxes, "
          f"{len({r[5] for r in rows})} identities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
