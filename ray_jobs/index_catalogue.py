"""Entry point of the catalogue job: `ray job submit --working-dir . -- python ray_jobs/index_catalogue.py ...`.

Processes every video of a catalogue (a local folder, an s3:// prefix, or a text file of URIs) on the Ray
cluster this driver runs on, writes per video the tables of `vcn run`, a catalogue-level Parquet dataset (one
row per track, partitioned by video_id) and a run manifest, then brings the catalogue's person index
(OUT/persons/, vcn/persons/) up to date (`--set persons.update_after_catalogue=false` skips it). A second run
processes only new or changed videos; a killed run loses nothing complete. Prints one line per video and a final table.

Exit status: 0 when the catalogue was processed, even if some videos failed (they are recorded in the manifest
and retried by the next run; a non-zero status would make KubeRay retry the whole job for one corrupt file);
2 on a usage error (bad input URI, bad config); 1 when the job itself crashed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# `python ray_jobs/index_catalogue.py` puts ray_jobs/ on sys.path, not the repository root: add it, so the job
# runs from a `--working-dir .` upload or a checkout without `pip install`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcn.errors import VcnError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="index_catalogue.py",
        description="Find, track and cluster the faces of every video in a catalogue, on Ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  ray job submit --working-dir . -- python ray_jobs/index_catalogue.py \\\n"
               "      --input s3://archive/videos/ --output s3://archive/catalogue/ --detect-gpus 2 --train-workers 2",
    )
    p.add_argument("--input", required=True,
                   help="a local folder (searched recursively), an s3:// prefix, or a text file of video URIs")
    p.add_argument("--output", required=True, help="a local folder or an s3:// prefix")
    p.add_argument("--preset", default=None, help="named configuration: default or paper (see vcn run --help)")
    p.add_argument("--config", metavar="FILE.json", help="JSON config with sections as in summary.json's 'config'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set distributed.frames_per_unit=1500 (repeatable)")
    p.add_argument("--detect-gpus", type=float, default=None,
                   help="GPUs for face detection: N actors with one GPU each (default 0: CPU actors)")
    p.add_argument("--train-workers", type=int, default=None,
                   help="Ray Train workers per video finetune (default 1; 0 = no Ray Train)")
    p.add_argument("--max-videos", type=int, default=None, help="process at most this many videos (first by id)")
    p.add_argument("--stages", default="detect,track,cluster",
                   help="stages to have done per video: detect, track, cluster (default: all)")
    p.add_argument("--mode", choices=("units", "videos", "serial"), default=None,
                   help="units: work units on Ray Data (default); videos: one Ray task per video; "
                        "serial: no Ray, one video after another")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, or start a local Ray)")
    p.add_argument("--report-json", metavar="FILE", help="also write the final report as JSON to FILE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except VcnError as e:
        print(f"index_catalogue: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from vcn.catalogue import run_catalogue, serial_executor, stages_through
    from vcn.config import RunConfig

    cfg = RunConfig.load(args.config, args.overrides, args.preset)
    if args.detect_gpus is not None:
        cfg.distributed.detect_gpus = args.detect_gpus
    if args.train_workers is not None:
        cfg.distributed.train_workers = args.train_workers
    if args.mode is not None:
        cfg.distributed.mode = args.mode
    if cfg.distributed.mode not in ("units", "videos", "serial"):
        raise VcnError(f"distributed.mode={cfg.distributed.mode!r}: choose units, videos or serial")
    stages = stages_through(s.strip() for s in args.stages.split(",") if s.strip())

    if cfg.distributed.mode == "serial":
        executor = serial_executor
    else:
        from vcn.distributed.executors import init_ray, ray_units_executor, ray_videos_executor

        init_ray(args.address)
        executor = ray_units_executor if cfg.distributed.mode == "units" else ray_videos_executor

    t0 = time.perf_counter()
    report = run_catalogue(args.input, args.output, cfg, stages=stages, max_videos=args.max_videos,
                           executor=executor, log=lambda line: print(line, flush=True))
    print(f"\ncatalogue finished in {time.perf_counter() - t0:.1f} s ({cfg.distributed.mode} mode)")
    print(report.table(), flush=True)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
