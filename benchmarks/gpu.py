"""GPU figures in one prepared command, as JSON: detector frames/s at 720p and 1080p by batch size, finetune
steps/s, and one end-to-end `vcn run` of a 10-minute 1080p video; within a time budget (8 minutes by default).

    python benchmarks/gpu.py --out benchmarks/results/gpu.json            # on a GPU machine
    python benchmarks/gpu.py --tiny --out /tmp/gpu.json                   # anywhere: tiny sizes, CPU is fine

Sections run in order and each checks the time left; one that would not fit is recorded as skipped with the
reason, so the JSON is always written (after every section, so a killed run keeps what it measured).
- environment: torch and its CUDA device, onnxruntime's providers (whether the installed build has CUDA), and
  which backend `detect.device=auto` picks (vcn.models.retinaface.resolve_device).
- detector: RetinaFace frames/s on frames of real face photos at 1280x720 and 1920x1080 (160x96, 320x180 with
  --tiny) for batch sizes 1..32: the torch module on the GPU and onnxruntime on the CPU for comparison. Each
  figure includes upload, resizing and post-processing (what `detect()` costs the pipeline).
- finetune: `vcn.ssl.train.finetune` on random 112x112 crops (tracks of 10 crops) on the device: steps/s of the
  heads-only warm-up and of full finetuning, from its per-phase logs.
- end_to_end: a 10-minute 1920x1080 25 fps video (20 s of rendered material, looped by remuxing: no re-encode)
  through `vcn run` in a subprocess with the default (auto) devices: wall seconds, peak RSS (the child's VmHWM,
  sampled every 0.5 s), the summary's per-stage seconds and the real-time factor, and the extrapolation to a 2-hour
  film (linear in length). With --against-set, the same video again with those settings, if time is left.
- labelled: `vcn run` with the same devices on labelled real clips (../shared/data/videos/real/ with their truth in
  ../shared/data/truth/; --labelled, default the 15-s Friends clip), scored by `vcn.evaluate` (WCP, PCR, BCubed F):
  the GPU's clusters beside the CPU's in docs/measurements.md.

A section that fails records its error (the traceback's end) and the next one still runs: a first run on a new
machine should bring back every figure that works and the reason for each that does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SHARED = REPO.parent / "shared" / "data"


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def environment() -> dict:
    import onnxruntime as ort
    import torch

    from vcn.models.retinaface import resolve_device

    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
           "torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers(),
           "onnxruntime_has_cuda": "CUDAExecutionProvider" in ort.get_available_providers(),
           "detector_backend_auto": resolve_device("auto")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return env


def face_frames(width: int, height: int, n: int) -> np.ndarray:
    """n frames of real face photos panning (the long-video benchmark's material), BGR uint8."""
    from long_video_memory import frame_at, shot_canvases

    canvases = shot_canvases(width, height)
    return np.stack([frame_at(canvases, i / 5.0, width, height) for i in range(n)])


def detector_fps(device: str, sizes: list[tuple[int, int]], batches: list[int], budget: Budget,
                 min_seconds: float, reserve: float) -> list[dict]:
    from vcn.config import DetectConfig
    from vcn.models.retinaface import RetinaFaceDetector

    cfg = DetectConfig()
    detector = RetinaFaceDetector(cfg.score_threshold, cfg.nms_threshold, cfg.max_side, device=device)
    rows = []
    for width, height in sizes:
        frames = face_frames(width, height, max(batches))
        for batch in batches:
            if budget.left() < reserve:
                rows.append({"size": f"{width}x{height}", "batch": batch, "skipped": "out of time"})
                continue
            for _ in range(3):  # warm-up: oneDNN / cuDNN pick kernels for each new shape on the first calls
                detector.detect(frames[:batch])
            calls, faces, t0 = 0, 0, time.perf_counter()
            while calls < 2 or (time.perf_counter() - t0 < min_seconds and calls < 200):
                faces += sum(len(f) for f in detector.detect(frames[:batch]))
                calls += 1
            seconds = time.perf_counter() - t0
            rows.append({"size": f"{width}x{height}", "batch": batch, "fps": round(calls * batch / seconds, 1),
                         "faces_per_frame": round(faces / (calls * batch), 2), "backend": detector.backend})
            print(f"detector {detector.backend} {width}x{height} batch {batch}: {rows[-1]['fps']} frames/s",
                  flush=True)
    return rows


def finetune_steps(device: str, n_crops: int, epochs: int, batch_pairs: int) -> dict:
    import torch

    from vcn.config import SSLConfig
    from vcn.models import load_backbone
    from vcn.ssl.train import finetune

    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.integers(0, 256, (n_crops, 3, 112, 112), dtype=np.uint8))
    tracks = np.arange(n_crops) // 10
    cfg = SSLConfig(device=device, rounds=1, warmup_epochs=epochs, epochs_per_round=epochs, batch_size=batch_pairs)
    logs = []
    t0 = time.perf_counter()
    finetune(load_backbone("sface"), crops, tracks, cfg, on_round=logs.append)
    phases = [{"kind": log.kind, "steps": log.steps, "seconds": round(log.seconds, 2),
               "steps_per_s": round(log.steps / log.seconds, 2) if log.seconds else None} for log in logs]
    return {"device": device, "crops": n_crops, "batch_pairs": cfg.batch_size, "epochs_per_phase": epochs,
            "phases": phases, "wall_s": round(time.perf_counter() - t0, 1)}


def _vm_hwm_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 0


def vcn_run(video: Path, out: Path, stages: str, timeout: float, overrides: list[str] = ()) -> dict:
    """`vcn run` in a subprocess with the default devices and `overrides` (SECTION.KEY=VALUE): return code, wall
    seconds, the child's peak RSS and its summary.json (the log's end where it failed)."""
    command = [sys.executable, "-m", "vcn.cli", "run", str(video), "--out", str(out), "--quiet", "--force",
               "--stages", stages]
    for setting in overrides:
        command += ["--set", setting]
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}_run.log"  # a file, not a pipe: a long run's warnings cannot fill a pipe
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    peak_kib = 0
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))  # the child's own peak so far (VmHWM)
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        rc, err = None, f"stopped at the time budget ({timeout:.0f} s)"
    else:
        rc, err = proc.returncode, log.read_text().strip()[-2000:]
    summary_path = out / video.stem / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() and rc == 0 else {}
    result = {"returncode": rc, "wall_s": round(time.perf_counter() - t0, 1),
              "peak_rss_mib": round(peak_kib / 1024, 1), "summary": summary}
    if rc != 0:
        result["stderr"] = err
    return result


def end_to_end(work: Path, minutes: float, size: tuple[int, int], fps: int, material_s: float,
               budget: Budget, stages: str, overrides: list[str] = (), against: list[str] = ()) -> dict:
    """The long video through `vcn run` with `overrides`; then, given `against` and time for a second run as long
    as the first, the same video with those settings instead, under "against" (side by side on one machine)."""
    from long_video_memory import loop_video, write_material

    width, height = size
    material = work / "material.mp4"
    t0 = time.perf_counter()
    write_material(material, material_s / 60, material_s, width, height, fps)
    video = work / f"looped_{minutes:g}min_{width}x{height}.mp4"
    loop_video(material, video, max(1, round(minutes * 60 / material_s)))
    made = time.perf_counter() - t0
    length_s = minutes * 60

    def timed(folder: str, settings: list[str]) -> dict:
        run = vcn_run(video, work / folder, stages, timeout=max(10.0, budget.left() - 5), overrides=settings)
        summary, wall = run.pop("summary"), run["wall_s"]
        return {"settings": list(settings), **run, "realtime_factor": round(length_s / wall, 2),
                "scan_ran_with": summary.get("scan_ran_with"), "counts": summary.get("counts"),
                "seconds": summary.get("seconds"),
                "frames_per_second": summary.get("frames_per_second"),
                "two_hour_film_minutes_if_linear": round(wall * 7200 / length_s / 60, 1)}

    result = {"video": f"{minutes:g} min {width}x{height} {fps} fps", "stages": stages,
              "render_and_loop_s": round(made, 1), **timed("vcn", list(overrides))}
    if against:
        if budget.left() > 1.2 * result["wall_s"] + 10:
            result["against"] = timed("vcn_against", list(against))
        else:
            result["against"] = {"settings": list(against), "skipped": f"{budget.left():.0f} s left, the first "
                                 f"run took {result['wall_s']:.0f} s"}
    return result


def labelled_clips(names: list[str], work: Path, budget: Budget) -> list[dict]:
    """Each labelled real clip through `vcn run` (all stages), scored against its truth."""
    from vcn.evaluate import evaluate

    rows = []
    for name in names:
        video, truth = SHARED / "videos" / "real" / f"{name}.mp4", SHARED / "truth" / f"{name}.truth.csv"
        if not (video.is_file() and truth.is_file()):
            rows.append({"video": name, "skipped": f"{video} or {truth} is missing"})
            continue
        if budget.left() < 20:
            rows.append({"video": name, "skipped": "out of time"})
            continue
        run = vcn_run(video, work / f"labelled_{name}", "detect,track,cluster", timeout=budget.left() - 5)
        summary = run.pop("summary")
        row = {"video": name, **run, "counts": summary.get("counts"), "seconds": summary.get("seconds")}
        if run["returncode"] == 0:
            scores = evaluate(work / f"labelled_{name}" / name, truth)
            row.update({k: scores.get(k) for k in ("wcp", "pcr", "bcubed_f", "nmi", "unknown_share",
                                                   "tracks_labelled", "truth_identities")})
        rows.append(row)
        print(f"labelled {row}", flush=True)
    return rows


def run_section(report: dict, key: str, fn, save) -> None:
    """report[key] = fn(), or the error's traceback where it failed; written either way."""
    try:
        report[key] = fn()
    except Exception:  # noqa: BLE001 - a broken section must not cost the figures of the others
        report[key] = {"error": traceback.format_exc()[-3000:]}
        print(f"{key} failed:\n{report[key]['error']}", flush=True)
    save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu.json"))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and counts: a check that runs anywhere")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting work after this (default 450)")
    parser.add_argument("--device", default="auto", help="torch device for detection and finetuning (default: "
                        "cuda when there is a GPU, else cpu)")
    parser.add_argument("--stages", default="detect,track,cluster", help="stages of the end-to-end run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting for the end-to-end run (repeatable), e.g. --set track.during_scan=never")
    parser.add_argument("--against-set", dest="against", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="after the end-to-end run, run the same video again with this setting (repeatable), "
                             "side by side, if the time left holds a second run: e.g. --against-set "
                             "detect.batch_size=8 --against-set serfiq.batch_size=4 (the CPU's batch sizes)")
    parser.add_argument("--work", help="folder for the rendered video and vcn output (default: temporary)")
    parser.add_argument("--sections", default="detector,finetune,end_to_end,labelled",
                        help="sections to run after the environment (default: all four; a rerun can take fewer)")
    parser.add_argument("--labelled", default="azvi_friends", help="labelled real clips to run and score after "
                        "the end-to-end run, comma-separated ('' = none; default: azvi_friends)")
    parser.add_argument("--labelled-reserve-s", type=float, default=None,
                        help="seconds kept for them (default: 60 each, 0 with --tiny)")
    args = parser.parse_args(argv)
    import torch

    from vcn.config import SSLConfig

    budget = Budget(args.budget_s)
    sections = set(args.sections.split(","))
    if sections - {"detector", "finetune", "end_to_end", "labelled"}:
        parser.error(f"--sections {args.sections}: choose among detector, finetune, end_to_end, labelled")
    names = [n for n in args.labelled.split(",") if n] if "labelled" in sections else []
    if args.labelled_reserve_s is None:
        args.labelled_reserve_s = 0.0 if args.tiny else 60.0 * len(names)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    detect_device = device if device.startswith("cuda") else "torch-cpu"
    if args.tiny:
        sizes, batches, min_s = [(160, 96), (320, 180)], [1, 2], 0.2
        crops, epochs, pairs = 8, 1, 4
        e2e = dict(minutes=0.2, size=(160, 96), fps=10, material_s=6.0)
    else:
        sizes, batches, min_s = [(1280, 720), (1920, 1080)], [1, 4, 8, 16, 32], 2.0
        crops, epochs, pairs = 2000, 1, SSLConfig().batch_size
        e2e = dict(minutes=10.0, size=(1920, 1080), fps=25, material_s=20.0)
    report: dict = {"benchmark": "gpu", "tiny": args.tiny, "budget_s": args.budget_s, "device": device}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(report, indent=2, default=str))

    run_section(report, "environment", environment, save)
    print(json.dumps(report["environment"]), flush=True)
    # Reserve for the end-to-end run: about 4 minutes on a GPU for 10 minutes of 1080p (render, loop, vcn run).
    reserve = (30.0 if args.tiny else 240.0) + args.labelled_reserve_s
    report["detector"] = {}
    if "detector" in sections:
        run_section(report["detector"], "torch",
                    lambda: detector_fps(detect_device, sizes, batches, budget, min_s, reserve), save)
        cpu_batches = batches[:2] if not args.tiny else batches[:1]
        run_section(report["detector"], "onnxruntime_cpu",
                    lambda: detector_fps("cpu", sizes, cpu_batches, budget, min_s / 2, reserve), save)
    if "finetune" in sections and budget.left() > reserve:
        run_section(report, "finetune", lambda: finetune_steps(device, crops, epochs, pairs), save)
        print(f"finetune {report['finetune'].get('phases')}", flush=True)
    elif "finetune" in sections:
        report["finetune"] = {"skipped": "out of time"}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vcn-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    if "end_to_end" in sections and budget.left() > 20 + args.labelled_reserve_s:
        e2e_budget = Budget(budget.left() - args.labelled_reserve_s)
        run_section(report, "end_to_end", lambda: end_to_end(work, budget=e2e_budget, stages=args.stages,
                                                              overrides=args.overrides, against=args.against,
                                                              **e2e),
                    save)
        print(f"end to end {report['end_to_end']}", flush=True)
    elif "end_to_end" in sections:
        report["end_to_end"] = {"skipped": "out of time"}
    if names:
        run_section(report, "labelled", lambda: labelled_clips(names, work, budget), save)
    report["seconds_total"] = round(args.budget_s - budget.left(), 1)
    save()
    print(f"wrote {out}")
    failed = [k for k in ("environment", "finetune", "end_to_end", "labelled") if "error" in report.get(k, {})]
    failed += [f"detector.{k}" for k, v in report["detector"].items() if "error" in v]
    if failed:
        print(f"failed sections: {', '.join(failed)}")
    return 1 if failed or report.get("end_to_end", {}).get("returncode", 0) != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
