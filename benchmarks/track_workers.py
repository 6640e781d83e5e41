"""The track stage (linking + the crops' second decode, per shot) by track.workers, side by side in one run, and
whether every setting gives the same tables. Reads a `vcn run --stages detect` output folder (shots, detections).

    python benchmarks/track_workers.py OUT/<video_id> VIDEO --workers 1,2,4 --json benchmarks/results/track_workers.json

Settings alternate within each repeat (1, 2, 4, 1, 2, 4, ...) so drift of a shared machine falls on all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

# The checkout's own vcn, not whichever is installed: a worktree of another commit measures that commit.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcn.config import RunConfig  # noqa: E402
from vcn.pipeline import package_versions  # noqa: E402
from vcn.tracking.shots import track_shots  # noqa: E402
from vcn.video.decode import probe_video  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a video's output folder holding shots.parquet and detections.parquet")
    parser.add_argument("video", help="the video it was made from")
    parser.add_argument("--workers", default="1,2,4", help="track.workers settings, comma-separated")
    parser.add_argument("--shots", type=int, default=0, help="only the first N shots (0 = all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    shots = pq.read_table(run_dir / "shots.parquet")
    detections = pq.read_table(run_dir / "detections.parquet")
    if args.shots:
        shots = shots.slice(0, args.shots)
    info = probe_video(args.video)
    settings = [int(w) for w in args.workers.split(",")]
    seconds: dict[int, list[float]] = {w: [] for w in settings}
    reference, same = None, {}
    track_shots(args.video, shots.slice(0, 1), detections, RunConfig(), info=info)  # warm-up: imports boxmot
    for _ in range(args.repeats):
        for w in settings:
            cfg = RunConfig()
            cfg.track.workers = w
            t0 = time.perf_counter()
            tables = track_shots(args.video, shots, detections, cfg, info=info)
            seconds[w].append(round(time.perf_counter() - t0, 3))
            reference = reference or tables
            same[w] = same.get(w, True) and all(a.equals(b) for a, b in zip(reference, tables))
    first = settings[0]
    result = {"benchmark": "track_workers", "video": str(args.video), "shots": shots.num_rows,
              "frames": int(shots.column("end_frame").to_numpy()[-1] - shots.column("start_frame").to_numpy()[0] + 1)
              if shots.num_rows else 0,
              "cpus": os.cpu_count(), "packages": package_versions(), "seconds": seconds,
              "median_ratio_to_first": {w: round(sorted(v)[len(v) // 2] / sorted(seconds[first])[len(v) // 2], 3)
                                        for w, v in seconds.items()},
              "same_tables_as_first": same}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
