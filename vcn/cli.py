"""The `vcn` command: run one video, render and run the demo, evaluate against ground truth, index persons."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from vcn import __version__
from vcn.errors import VcnError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    from vcn.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named configuration: default (vcn's, chosen on the development set) or paper "
                        "(VideoClusterNet as the paper describes it); --config and --set apply on top")
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
              vcn run clip.mp4 --out paper/ --preset paper   # the paper's configuration, for comparison
              vcn run clip.mp4 --out results/ --preset consensus   # 3 finetunes' consensus: purer, 3x stage 2
              vcn run ep1.mp4 --out archive/ && vcn run ep2.mp4 --out archive/   # archive/persons/ links both

            Every run also brings the person index OUT/persons/ up to date (the same incremental update as
            the catalogue job and `vcn persons update`): several videos run into one --out folder become one
            index of persons across them. A run with nothing new leaves the index as it is; --no-index skips it.
        """))
    run.add_argument("video", help="path of a video file")
    run.add_argument("--out", required=True, help="output folder; the video's tables go to OUT/<video_id>/")
    run.add_argument("--video-id", help="name of the output subfolder (default: the file name without extension)")
    run.add_argument("--stages", default="detect,track,cluster",
                     help="comma-separated stages to have done: detect, track, cluster (default: all)")
    run.add_argument("--force", action="store_true", help="recompute even if the output is already complete")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--no-report", action="store_true", help="do not write OUT/<video_id>/report.html")
    run.add_argument("--no-index", action="store_true",
                     help="do not update the person index OUT/persons/ after the video (`vcn persons update "
                          "--index OUT` does it later)")
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

    rep = sub.add_parser(
        "report", help="write DIR/report.html: one self-contained page of the video's clusters to review",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write one self-contained HTML page (no network, no scripts) for a video's output folder:\n"
                    "each cluster as a row of face thumbnails (best quality first) with its track count, screen\n"
                    "time and shots; the Unknown group apart with the reasons; a 2-D map of the embeddings\n"
                    "(t-SNE, else UMAP, else PCA); and the run's summary (counts, timings, models, versions).",
        epilog=textwrap.dedent("""\
            example:
              vcn run clip.mp4 --out results/
              vcn report results/clip                  # writes results/clip/report.html; open it in a browser
              vcn report results/clip --out ~/clip.html --thumbs 20
        """))
    rep.add_argument("dir", help="a video's output folder (OUT/<video_id>) after all stages of `vcn run`")
    rep.add_argument("--out", metavar="FILE.html", help="where to write the page (default: DIR/report.html)")
    rep.add_argument("--thumbs", type=int, default=12, metavar="N",
                     help="face thumbnails per cluster (default: 12; the Unknown group shows twice as many)")

    ov = sub.add_parser(
        "overlay", help="write a copy of the video with every tracked face boxed and labelled by its cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw every tracked face box of a `vcn run` output onto its video: one colour per cluster,\n"
                    "the cluster id as the label, '?' for Unknown. H.264 MP4 with the input's frame count and\n"
                    "frame times.",
        epilog=textwrap.dedent("""\
            example:
              vcn run clip.mp4 --out results/
              vcn overlay clip.mp4 results/clip --out clip_faces.mp4
        """))
    ov.add_argument("video", help="the video file that `vcn run` processed")
    ov.add_argument("dir", help="its output folder (OUT/<video_id>)")
    ov.add_argument("--out", required=True, metavar="FILE.mp4", help="the video to write")
    ov.add_argument("--crf", type=int, default=20, help="H.264 quality, lower is better and larger (default: 20)")
    ov.add_argument("--quiet", action="store_true", help="no progress bar")

    se = sub.add_parser(
        "search", help="find a person across indexed videos from one photo: videos, shots and times, ranked",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Embed the largest face in IMAGE with the index's base backbone (not a finetuned one, so\n"
                    "scores compare across videos) and rank every cluster of every indexed video by cosine\n"
                    "similarity. The index is a `vcn run` --out folder (OUT/*/), one video's folder, a catalogue\n"
                    "output (its tracks/ dataset), or an s3:// prefix of any of these.",
        epilog=textwrap.dedent("""\
            example:
              vcn search photo.jpg --index results/                     # folders written by `vcn run --out results/`
              vcn search photo.jpg --index s3://archive/catalogue/ --top 5 --json
        """))
    se.add_argument("image", help="a photo of the person to find (the largest face in it is used)")
    se.add_argument("--index", required=True, metavar="DIR_OR_URI",
                    help="vcn run output folder, catalogue output folder, or s3:// prefix of either")
    se.add_argument("--top", type=int, default=10, help="how many clusters to list (default: 10)")
    se.add_argument("--reduce", choices=("mean", "max"), default="mean",
                    help="score a cluster by its mean embedding (default) or by its best-matching track")
    se.add_argument("--backbone", help="embed the photo with this backbone (default: the one the index used)")
    se.add_argument("--json", action="store_true", help="print the hits as JSON")
    se.add_argument("--clusters", action="store_true",
                    help="list clusters, not persons, even where the index has a person index")
    _add_persons_parser(sub)
    return parser


def _add_persons_parser(sub) -> None:
    pe = sub.add_parser(
        "persons", help="one person across the archive: list, update, name, merge and split persons",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The person index links the clusters of different videos that show the same person (in the\n"
                    "base backbone's space, with a threshold it sets from the catalogue: see the README). It lives\n"
                    "in INDEX/persons/ beside the video outputs. An archivist's name, merge and split decisions are\n"
                    "kept in an append-only log and win over automatic linking in every later update.",
        epilog=textwrap.dedent("""\
            example:
              vcn persons update --index results/          # link new videos' clusters into persons
              vcn persons --index results/                 # list persons, named first
              vcn persons show --index results/ 4          # person 4's clusters, per video
              vcn persons name --index results/ 4 "Ada Lovelace"
              vcn persons merge --index results/ 4 9 12    # 9 and 12 are person 4
              vcn persons merge --index results/ ep1:3 ep1:8   # a split the report shows, made one
              vcn persons split --index results/ 4 ep2:3   # cluster 3 of video ep2 is someone else
              vcn persons page --index results/            # results/persons.html
        """))
    pe.add_argument("--index", metavar="DIR_OR_URI", help="vcn run --out folder, catalogue output, or s3:// prefix")
    pe.add_argument("--json", action="store_true", help="print JSON")
    ps = pe.add_subparsers(dest="persons_command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = ps.add_parser(name, help=help_text)
        p.add_argument("--index", dest="sub_index", metavar="DIR_OR_URI",
                       help="vcn run --out folder, catalogue output, or s3:// prefix")
        p.add_argument("--json", dest="sub_json", action="store_true", help="print JSON")
        return p

    ls = command("list", "list persons, named first, then by screen time (the default)")
    ls.add_argument("--top", type=int, default=None, help="list at most this many")
    up = command("update", "link clusters of new or changed videos, drop removed ones, apply new decisions")
    up.add_argument("--relink", action="store_true", help="drop every automatic link and link all clusters again "
                    "(person ids kept where possible, decisions replayed)")
    up.add_argument("--wait", type=float, default=60.0, help="seconds to wait for another update (default 60)")
    sh = command("show", "a person's clusters, per video")
    sh.add_argument("person", type=int)
    nm = command("name", "name a person (the name survives every later update)")
    nm.add_argument("person", type=int)
    nm.add_argument("name")
    mg = command("merge", "make several persons one: OTHER persons become INTO (a person id, or VIDEO_ID:CLUSTER_ID "
                          "for the person holding that cluster)")
    mg.add_argument("into")
    mg.add_argument("others", nargs="+")
    sp = command("split", "move some of a person's clusters (VIDEO_ID:CLUSTER_ID) to a new person, for good")
    sp.add_argument("person", type=int)
    sp.add_argument("clusters", nargs="+", metavar="VIDEO_ID:CLUSTER_ID")
    pg = command("page", "write the catalogue's persons page (HTML, thumbnails, named first)")
    pg.add_argument("--out", metavar="FILE.html", help="default: INDEX/persons.html (local indexes)")
    for p in (nm, mg, sp):
        p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a running update (default 60)")


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
        from vcn.leftovers import sweep_output
        from vcn.pipeline import run_video

        cfg = RunConfig.load(args.config, args.overrides, args.preset)
        for line in sweep_output(args.out):     # what runs killed mid-write left in OUT (never a live run's)
            print(f"leftover of a killed run: {line}")
        result = run_video(args.video, args.out, cfg, stages=_parse_stages(args.stages), video_id=args.video_id,
                           force=args.force, progress=not args.quiet, report=not args.no_report)
        print(result.describe())
        if not args.no_index:
            from vcn.catalogue import update_persons_after_run

            update_persons_after_run(args.out, cfg, log=print,
                                     warn=lambda line: print(f"vcn: warning: {line}", file=sys.stderr))
        return 0
    if args.command == "demo":
        from vcn.config import RunConfig
        from vcn.demo import render_demo_video
        from vcn.pipeline import run_video

        cfg = RunConfig.load(args.config, args.overrides, args.preset)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        video = render_demo_video(out / "demo.mp4")
        print(f"rendered {video}")
        result = run_video(video, out, cfg, progress=not args.quiet)
        print(result.describe())
        return 0
    if args.command == "eval":
        from vcn.evaluate import evaluate, to_json

        print(to_json(evaluate(args.pred_dir, args.truth)))
        return 0
    if args.command == "report":
        from vcn.report import write_report_with_stats

        if args.thumbs < 1:
            raise VcnError(f"--thumbs {args.thumbs}: show at least one thumbnail per cluster")
        stats = write_report_with_stats(args.dir, args.out, thumbs_per_cluster=args.thumbs,
                                        thumbs_unknown=2 * args.thumbs)
        print(f"wrote {stats.path} ({stats.bytes / 1024:.0f} KiB: {stats.clusters} clusters, "
              f"{stats.thumbnails} thumbnails, {stats.map_method or 'no'} map of {stats.map_points} crops)")
        return 0
    if args.command == "overlay":
        from vcn.overlay import overlay_video

        stats = overlay_video(args.video, args.dir, args.out, crf=args.crf, progress=not args.quiet)
        print(f"wrote {stats.path} ({stats.frames} frames, {stats.boxes} boxes drawn)")
        return 0
    if args.command == "search":
        from vcn.search import format_hits, search

        if not args.clusters:
            from vcn.persons.query import format_person_hits
            from vcn.search import search_persons

            found = search_persons(args.image, args.index, top=args.top, reduce=args.reduce, backbone=args.backbone)
            if found is not None:
                persons, index = found
                if args.json:
                    print(json.dumps({"image": args.image, "index": args.index, "model": index.model,
                                      "videos": len(index.videos), "persons": [p.to_dict() for p in persons]},
                                     indent=2))
                else:
                    print(f"{len(index.videos)} videos searched ({index.model} embeddings), answers by person")
                    print(format_person_hits(persons))
                return 0
        hits, index = search(args.image, args.index, top=args.top, reduce=args.reduce, backbone=args.backbone)
        if args.json:
            print(json.dumps({"image": args.image, "index": args.index, "model": index.model,
                              "videos": len(index.videos), "hits": [h.to_dict() for h in hits]}, indent=2))
        else:
            print(f"{len(index.videos)} videos searched ({index.model} embeddings)")
            print(format_hits(hits))
        return 0
    if args.command == "persons":
        return _persons(args)
    raise AssertionError(args.command)


def _persons(args: argparse.Namespace) -> int:
    from vcn.persons import archivist
    from vcn.persons.index import update_index
    from vcn.persons.query import clusters_of, format_persons, load_persons, person_row

    index = getattr(args, "sub_index", None) or args.index
    as_json = args.json or getattr(args, "sub_json", False)
    if not index:
        raise VcnError("vcn persons: pass --index DIR_OR_URI (a vcn run --out folder, a catalogue output, "
                       "or an s3:// prefix)")
    cmd = args.persons_command or "list"
    log = (lambda s: None) if as_json else print
    if cmd == "list":
        state = load_persons(index)
        if as_json:
            rows = [{k: v for k, v in r.items() if k != "embedding"} for r in state.persons.to_pylist()]
            print(json.dumps({"generation": state.generation, "threshold": state.meta.get("threshold"),
                              "persons": rows}, indent=1))
        else:
            print(format_persons(state, getattr(args, "top", None)))
        return 0
    if cmd == "show":
        state = load_persons(index)
        row = {k: v for k, v in person_row(state, args.person).items() if k != "embedding"}
        clusters = clusters_of(state, args.person)
        if as_json:
            print(json.dumps({**row, "clusters": clusters}, indent=1, default=str))
        else:
            print(f"person {row['person_id']} {row['name'] or '(unnamed)'}: {row['n_videos']} videos, "
                  f"{row['n_clusters']} clusters, {row['screen_s']:.1f} s on screen")
            for c in clusters:
                how = c["linked_by"] + (f" at {c['link_distance']:.3f}" if c["link_distance"] == c["link_distance"]
                                        and c["link_distance"] is not None else "")
                print(f"  {c['video_id']}:{c['cluster_id']}  {c['n_tracks']} tracks, {c['screen_s']:.1f} s  ({how})")
        return 0
    if cmd == "page":
        from vcn.persons.page import write_persons_page

        out = write_persons_page(index, args.out)
        print(f"wrote {out}")
        return 0
    if cmd == "update":
        report = update_index(index, relink=args.relink, wait_s=args.wait, log=log)
    elif cmd == "name":
        report = archivist.name_person(index, args.person, args.name, wait_s=args.wait, log=log)
    elif cmd == "merge":
        report = archivist.merge_persons(index, args.into, args.others, wait_s=args.wait, log=log)
    elif cmd == "split":
        report = archivist.split_person(index, args.person, args.clusters, wait_s=args.wait, log=log)
    else:
        raise AssertionError(cmd)
    if as_json:
        print(json.dumps(report.to_dict() if report else {"pending": True}, indent=1))
    elif report is not None and not report.written:
        print(report.describe())
    return 0


def _parse_stages(text: str) -> list[str]:
    from vcn.pipeline import STAGES

    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise VcnError(f"--stages {text!r}: choose from {', '.join(STAGES)} (comma-separated)")
    return stages


if __name__ == "__main__":
    sys.exit(main())
