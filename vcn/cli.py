"""The `vcn` command: run one video, render and run the demo, evaluate against ground truth."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from vcn import __version__
from vcn.errors import VcnError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.json", help="JSON config with sections as in summary.json's 'config'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set detect.batch_size=16 (repeatable)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcn",
        description="Find, track and cluster every face in a video by identity (VideoClusterNet).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vcn COMMAND --help` for each command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"vcn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="process one video into shots, detections, tracks, crops, embeddings and clusters",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            example:
              vcn run clip.mp4 --out results/          # writes results/clip/*.parquet and summary.json
              vcn run clip.mp4 --out results/ --stages detect,track   # stop after crops; rerun later to resume
        """))
    run.add_argument("video", help="path of a video file")
    run.add_argument("--out", required=True, help="output folder; the video's tables go to OUT/<video_id>/")
    run.add_argument("--video-id", help="name of the output subfolder (default: the file name without extension)")
    run.add_argument("--stages", default="detect,track,cluster",
                     help="comma-separated stages to have done: detect, track, cluster (default: all)")
    run.add_argument("--force", action="store_true", help="recompute even if the output is already complete")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_args(run)

    demo = sub.add_parser(
        "demo", help="render a short multi-shot demo video from photos shipped in a wheel and run vcn on it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  vcn demo --out demo_out/     # writes demo_out/demo.mp4, its ground truth and demo_out/demo/\n")
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_args(demo)

    ev = sub.add_parser(
        "eval", help="score a vcn output folder against ground-truth face boxes (WCP, PCR, NMI, BCubed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  vcn eval results/clip truth.parquet   # truth columns: frame, x1, y1, x2, y2, identity\n")
    ev.add_argument("pred_dir", help="a video's output folder (OUT/<video_id>)")
    ev.add_argument("truth", help="ground-truth table (.parquet or .csv): frame, x1, y1, x2, y2, identity")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except VcnError as e:
        print(f"vcn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vcn: interrupted; finished outputs are kept, rerun to continue", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from vcn.config import RunConfig
        from vcn.pipeline import run_video

        cfg = RunConfig.load(args.config, args.overrides)
        result = run_video(args.video, args.out, cfg, stages=_parse_stages(args.stages), video_id=args.video_id,
                           force=args.force, progress=not args.quiet)
        print(result.describe())
        return 0
    if args.command == "demo":
        from vcn.config import RunConfig
        from vcn.demo import render_demo_video
        from vcn.pipeline import run_video

        cfg = RunConfig.load(args.config, args.overrides)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        video = render_demo_video(out / "demo.mp4")
        print(f"rendered {video}")
        result = run_video(video, out, cfg, progress=not args.quiet)
        print(result.describe())
        return 0
    if args.command == "eval":
        from vcn.evaluate import evaluate

        print(json.dumps(evaluate(args.pred_dir, args.truth), indent=2))
        return 0
    raise AssertionError(args.command)


def _parse_stages(text: str) -> list[str]:
    from vcn.pipeline import STAGES

    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise VcnError(f"--stages {text!r}: choose from {', '.join(STAGES)} (comma-separated)")
    return stages


if __name__ == "__main__":
    sys.exit(main())
