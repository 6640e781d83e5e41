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
  sampled every 0.5 s), the summary's
  per-stage seconds and the real-time factor, and the extrapolation to a 2-hour film (linear in length).
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


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


def end_to_end(work: Path, minutes: float, size: tuple[int, int], fps: int, material_s: float,
               budget: Budget, stages: str) -> dict:
    from long_video_memory import loop_video, write_material

    width, height = size
    material = work / "material.mp4"
    t0 = time.perf_counter()
    write_material(material, material_s / 60, material_s, width, height, fps)
    video = work / f"looped_{minutes:g}min_{width}x{height}.mp4"
    loop_video(material, video, max(1, round(minutes * 60 / material_s)))
    made = time.perf_counter() - t0
    out = work / "vcn"
    command = [sys.executable, "-m", "vcn.cli", "run", str(video), "--out", str(out), "--quiet", "--force",
               "--stages", stages]
    timeout = max(10.0, budget.left() - 5)
    t0 = time.perf_counter()
    log = work / "vcn_run.log"  # a file, not a pipe: a long run's warnings cannot fill a pipe and stall it
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
    wall = time.perf_counter() - t0
    summary_path = out / video.stem / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() and rc == 0 else {}
    length_s = minutes * 60
    result = {"video": f"{minutes:g} min {width}x{height} {fps} fps", "stages": stages,
              "render_and_loop_s": round(made, 1),
              "returncode": rc, "wall_s": round(wall, 1), "peak_rss_mib": round(peak_kib / 1024, 1),
              "realtime_factor": round(length_s / wall, 2), "counts": summary.get("counts"),
              "seconds": summary.get("seconds"), "frames_per_second": summary.get("frames_per_second"),
              "two_hour_film_minutes_if_linear": round(wall * 7200 / length_s / 60, 1)}
    if rc != 0:
        result["stderr"] = err
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu.json"))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and counts: a check that runs anywhere")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting work after this (default 450)")
    parser.add_argument("--device", default="auto", help="torch device for detection and finetuning (default: "
                        "cuda when there is a GPU, else cpu)")
    parser.add_argument("--stages", default="detect,track,cluster", help="stages of the end-to-end run")
    parser.add_argument("--work", help="folder for the rendered video and vcn output (default: temporary)")
    args = parser.parse_args(argv)
    import torch

    from vcn.config import SSLConfig

    budget = Budget(args.budget_s)
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

    report["environment"] = environment()
    print(json.dumps(report["environment"]), flush=True)
    save()
    # Reserve for the end-to-end run: about 4 minutes on a GPU for 10 minutes of 1080p (render, loop, vcn run).
    reserve = 30.0 if args.tiny else 240.0
    report["detector"] = {"torch": detector_fps(detect_device, sizes, batches, budget, min_s, reserve)}
    save()
    cpu_batches = batches[:2] if not args.tiny else batches[:1]
    report["detector"]["onnxruntime_cpu"] = detector_fps("cpu", sizes, cpu_batches, budget, min_s / 2, reserve)
    save()
    if budget.left() > reserve:
        report["finetune"] = finetune_steps(device, crops, epochs, pairs)
        print(f"finetune {report['finetune']['phases']}", flush=True)
    else:
        report["finetune"] = {"skipped": "out of time"}
    save()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vcn-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    if budget.left() > 20:
        report["end_to_end"] = end_to_end(work, budget=budget, stages=args.stages, **e2e)
        print(f"end to end {report['end_to_end']}", flush=True)
    else:
        report["end_to_end"] = {"skipped": "out of time"}
    report["seconds_total"] = round(args.budget_s - budget.left(), 1)
    save()
    print(f"wrote {out}")
    return 0 if report["end_to_end"].get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
