"""Peak RSS of `vcn run --stages detect,track` by video length and by resolution, and on the 82-s 720p sitcom, as
JSON (issue 13: at most 2 GB on the sitcom, and flat in length: the longest within 1.25x of the shortest). The
sitcom is also run with every stage (peak RSS, wall time and seconds per step of the whole method: issue 11 asks
for at most 5 minutes on 2 cores).

    python benchmarks/memory.py --out benchmarks/results/memory.json --before ed2b3e9
    python benchmarks/memory.py --lengths 1 10 60 --length-size 320x180 --length-fps 5 --sizes 640x360 1920x1080
    python benchmarks/memory.py --sitcom-only --before REV   # only the sitcom rows; the file's other rows kept
    python benchmarks/memory.py --sitcom-only --against-set ssl.rounds=3   # the same code, other settings
    python benchmarks/memory.py --sitcom-only --repeat 3   # the whole method 3 times: issue 13's ratios as a range

--before REV also runs the sitcom with every stage on the code of git revision REV (checked out in a temporary
worktree, run with the same interpreter and packages), so a change's before and after figures come from one
run on one machine under the same load; the row is sitcom_82s_720p_all_stages_before, with the ratios beside it.
--against-set KEY=VALUE (repeatable) does the same for settings: the sitcom again, this code, `vcn run --set` with
them (row sitcom_82s_720p_all_stages_against_set), for a candidate default's cost beside the default's.
--repeat N runs the sitcom with every stage N times in a row (this code, these settings): on a shared 2-core
machine one run's stage-1 time moves by ~20% with its place in the sequence, so issue 13's two ratios are given as
the lowest, median and highest of the N runs (row sitcom_82s_720p_all_stages_ratios, each run's figures in
sitcom_82s_720p_all_stages_repeats).
Runs with every stage also give stage 2's seconds per 100 crops by phase (`stage2_per_100_crops`).

Material is rendered once per frame size (real face photos panning, a cut every 6 s: long_video_memory.py) and
made longer by remuxing it back to back (no re-encoding), so a 60-minute file costs seconds to make. Each run is
the only child of a fresh wrapper process, whose RUSAGE_CHILDREN peak is the run's (long_video_memory --measure).
Videos and outputs go to --work (temporary by default, removed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SITCOM = REPO.parent / "shared" / "data" / "videos" / "real" / "simplefr_Video_2.mp4"
FLAT = 1.25
# Stage 2's phases in summary.json's `seconds` (vcn.stage23), reported per 100 crops.
STAGE2_PHASES = ("embed_base_and_serfiq_s", "match_s", "finetune_round1_heads_s", "finetune_round1_full_s",
                 "finetune_round2_full_s", "finetune_round3_full_s", "embed_finetuned_s", "stage2_s")
# Stage 1's steps in the same `seconds`: decoding, shot detection, detection, tracking.
STAGE1_STEPS = ("decode_s", "shots_s", "detect_s", "track_s")


def stage_shares(seconds: dict) -> dict:
    """Issue 13's two ratios in one run: stage 2 over stage 1 (target: at most 1 on a CPU) and the heads-only
    warm-up over stage 1 (target: a small fraction); empty unless both stages ran."""
    stage1 = sum(seconds.get(k, 0.0) for k in STAGE1_STEPS)
    if stage1 <= 0 or "stage2_s" not in seconds:
        return {}
    return {"stage1_s": round(stage1, 1), "stage2_over_stage1": round(seconds["stage2_s"] / stage1, 3),
            "warmup_over_stage1": round(seconds.get("finetune_round1_heads_s", 0.0) / stage1, 3)}


def spread(runs: list[dict]) -> dict:
    """Issue 13's ratios over repeated runs of the same work: lowest, median and highest of each, and whether every
    run computed the first one's clusters and embeddings."""
    out: dict = {"runs": len(runs)}
    for key in ("stage2_over_stage1", "warmup_over_stage1"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}
    out["same_outputs"] = all(r.get("output_sha256") == runs[0].get("output_sha256") for r in runs)
    return out


def video_of(work: Path, minutes: float, size: str, fps: int, material_s: float) -> Path:
    from long_video_memory import loop_video, write_material

    width, height = (int(v) for v in size.lower().split("x"))
    material = work / f"material_{size}_{fps}fps.mp4"
    seconds = min(material_s, minutes * 60)
    if not material.is_file():
        write_material(material, seconds / 60, seconds, width, height, fps)
    video = work / f"video_{minutes:g}min_{size}_{fps}fps.mp4"
    if not video.is_file():
        loop_video(material, video, max(1, round(minutes * 60 / seconds)))
    return video


def measure(video: Path, work: Path, stages: str = "detect,track", code: Path = REPO,
            overrides: list[str] = ()) -> dict:
    """`vcn run` as the only child of a fresh wrapper; `code`: the checkout whose vcn runs (its folder goes first
    on the child's module path, ahead of the editable install); `overrides`: passed to `vcn run --set`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])))
    wrapper = subprocess.run([sys.executable, str(REPO / "benchmarks" / "long_video_memory.py"), "--work",
                              str(work / "vcn"), "--measure", str(video), "--stages", stages,
                              *[f"--set={o}" for o in overrides]], capture_output=True,
                             text=True, check=True, cwd=code, env=env)
    run = json.loads(wrapper.stdout)
    summary_path = work / "vcn" / video.stem / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    digests = output_digests(work / "vcn" / video.stem)
    shutil.rmtree(work / "vcn" / video.stem, ignore_errors=True)
    result = {"video": video.name, "stages": stages, **({"settings": list(overrides)} if overrides else {}),
              "peak_rss_mib": run["peak_rss_mib"], "wall_s": run["wall_s"],
              "returncode": run["returncode"], "seconds": summary.get("seconds"),
              "frames": (summary.get("seconds") or {}).get("frames_scanned"),
              "counts": summary.get("counts"), "rss_timeline_mib": run["rss_timeline_mib"]}
    if digests:
        result["output_sha256"] = digests
    crops = (summary.get("counts") or {}).get("crops")
    if crops and "stage2_s" in (summary.get("seconds") or {}):
        result["stage2_per_100_crops"] = {k: round(summary["seconds"][k] * 100 / crops, 2)
                                          for k in STAGE2_PHASES if k in summary["seconds"]}
    result.update(stage_shares(summary.get("seconds") or {}))
    if run["returncode"]:
        result["stderr"] = run["stderr"]
    print(f"{video.name}: peak RSS {run['peak_rss_mib']} MiB in {run['wall_s']} s, counts {result['counts']}",
          flush=True)
    return result


def output_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of the method's results in a run's output, to show two runs computed the same thing: clusters
    (track id, cluster id, reason, SER-FIQ track quality) and embeddings (crop, model, vector bytes)."""
    import hashlib

    import numpy as np
    import pyarrow.parquet as pq

    columns = {"clusters": ("track_id", "cluster_id", "reason", "track_quality"),
               "embeddings": ("crop_id", "model", "embedding")}
    digests = {}
    for name, names in columns.items():
        path = folder / f"{name}.parquet"
        if not path.is_file():
            continue
        table = pq.read_table(path, columns=list(names))
        digest = hashlib.sha256()
        for column in names:
            values = table.column(column).to_pylist()
            if column == "embedding":
                digest.update(np.asarray(values, np.float32).tobytes())
            else:
                digest.update(json.dumps(values).encode())
        digests[name] = digest.hexdigest()
    return digests


def ratios(run: dict, other: dict) -> dict:
    """Two measured runs side by side: `run` over `other` in peak RSS and wall time, and whether they computed the
    same clusters and embeddings."""
    return {"peak_rss": round(run["peak_rss_mib"] / other["peak_rss_mib"], 3),
            "wall": round(run["wall_s"] / other["wall_s"], 3),
            "same_outputs": run.get("output_sha256") == other.get("output_sha256")}


def measure_at(rev: str, video: Path, work: Path, stages: str) -> dict:
    """`measure` with the code of git revision `rev`, checked out in a temporary worktree (removed after)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    tree = work / f"code-{commit[:12]}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=REPO, capture_output=True,
                   check=True)
    try:
        return {"commit": commit, **measure(video, work, stages, code=tree)}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory.json"))
    parser.add_argument("--work", help="folder for videos and outputs (default: temporary, removed)")
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.0, 10.0, 30.0], help="minutes")
    parser.add_argument("--length-size", default="320x180", help="frame size of the length series")
    parser.add_argument("--length-fps", type=int, default=5, help="frame rate of the length series")
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720", "1920x1080"],
                        help="frame sizes of the resolution series (1 minute each)")
    parser.add_argument("--sizes-fps", type=int, default=5)
    parser.add_argument("--material-s", type=float, default=60.0)
    parser.add_argument("--no-sitcom", action="store_true", help=f"skip the real clip ({SITCOM.name})")
    parser.add_argument("--sitcom-only", action="store_true",
                        help="measure only the real clip; --out's other rows (lengths, sizes) are kept")
    parser.add_argument("--before", metavar="REV",
                        help="also run the sitcom with every stage on the code of git revision REV")
    parser.add_argument("--against-set", metavar="KEY=VALUE", action="append", default=[],
                        help="also run the sitcom with every stage on this code with these settings (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the sitcom with every stage N times and give issue 13's ratios as a range")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: give 1 or more runs (3 gives issue 13's ratios as a range)")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vcn-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"benchmark": "memory", "command": "vcn run VIDEO --stages detect,track (the sitcom also with every stage)",
                    "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.sitcom_only and out.is_file():
        report = {**json.loads(out.read_text()), **report}
    started = time.perf_counter()
    try:
        if not args.no_sitcom and SITCOM.is_file():
            report["sitcom_82s_720p"] = measure(SITCOM, work)
            # The whole method (issue 11: at most 5 minutes on 2 cores; issue 13: at most 2 GB).
            report["sitcom_82s_720p_all_stages"] = after = measure(SITCOM, work, "detect,track,cluster")
            out.write_text(json.dumps(report, indent=2))
            if args.repeat > 1:
                repeats = [after] + [measure(SITCOM, work, "detect,track,cluster") for _ in range(args.repeat - 1)]
                keep = ("peak_rss_mib", "wall_s", "stage1_s", "stage2_over_stage1", "warmup_over_stage1")
                report["sitcom_82s_720p_all_stages_repeats"] = [
                    {**{k: r[k] for k in keep if k in r}, "stage2_s": (r["seconds"] or {}).get("stage2_s"),
                     "warmup_s": (r["seconds"] or {}).get("finetune_round1_heads_s")} for r in repeats]
                report["sitcom_82s_720p_all_stages_ratios"] = spread(repeats)
                out.write_text(json.dumps(report, indent=2))
            if args.before:
                report["sitcom_82s_720p_all_stages_before"] = before = measure_at(args.before, SITCOM, work,
                                                                                   "detect,track,cluster")
                report["sitcom_82s_720p_all_stages_after_over_before"] = ratios(after, before)
                out.write_text(json.dumps(report, indent=2))
            if args.against_set:
                report["sitcom_82s_720p_all_stages_against_set"] = other = measure(
                    SITCOM, work, "detect,track,cluster", overrides=args.against_set)
                stage2 = round(after["seconds"]["stage2_s"] / other["seconds"]["stage2_s"], 3)
                report["sitcom_82s_720p_all_stages_default_over_against_set"] = {**ratios(after, other),
                                                                                  "stage2": stage2}
                out.write_text(json.dumps(report, indent=2))
        if args.sitcom_only:
            return 0
        report["by_length"] = [{"minutes": m, "size": args.length_size, "fps": args.length_fps,
                                **measure(video_of(work, m, args.length_size, args.length_fps, args.material_s),
                                          work)} for m in args.lengths]
        peaks = [r["peak_rss_mib"] for r in report["by_length"]]
        report["length_peak_ratio"] = round(max(peaks) / min(peaks), 3)
        report[f"flat_within_{FLAT}x"] = bool(max(peaks) <= FLAT * min(peaks))
        out.write_text(json.dumps(report, indent=2))
        report["by_size"] = [{"minutes": 1.0, "size": s, "fps": args.sizes_fps,
                              **measure(video_of(work, 1.0, s, args.sizes_fps, args.material_s), work)}
                             for s in args.sizes]
    finally:
        report["seconds"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(report, indent=2))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in report.items() if not k.startswith(("by_", "sitcom_82s_720p"))
                      or k.endswith(("_over_before", "_over_against_set", "_ratios"))}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
