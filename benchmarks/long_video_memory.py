"""Peak memory of `vcn run --stages detect,track` on a 1-minute and a 10-minute video of the same material.

    python benchmarks/long_video_memory.py                  # 1 and 10 minutes -> benchmarks/results/long_video_memory.json
    python benchmarks/long_video_memory.py --work /tmp/m --out /tmp/m.json --minutes 0.5 2 --size 160x96

Renders the material once (real face photos from ../shared/data/faces/deepface13 panning, a cut every few
seconds), makes the long file by repeating the short one's frames, runs `vcn run` on each in a fresh
subprocess and reads its peak resident memory (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` in a wrapper
process that runs nothing else), sampling the resident size every 0.25 s on the way to show where it grows.
Videos and vcn outputs go to --work (a temporary folder by default; never commit them); the JSON to --out.
The claim is that the peaks stay within 20% of each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces" / "deepface13"
# Pairs of photos of different people; each shot shows one pair, so every shot has two faces to track.
PHOTO_PAIRS = [("img11.jpg", "img21.jpg"), ("img18.jpg", "img3.jpg"), ("img29.jpg", "img24.jpg"),
               ("img14.jpg", "img35.jpg"), ("img19.jpg", "img12.jpg")]
SHOT_SECONDS = 6.0
TOLERANCE = 0.20


def shot_canvases(width: int, height: int) -> list[np.ndarray]:
    """One canvas per photo pair: the two photos side by side on a grey gradient, wider than the frame."""
    import cv2

    canvases = []
    for pair in PHOTO_PAIRS:
        tiles = []
        for name in pair:
            image = cv2.imread(str(FACES / name))
            if image is None:
                raise SystemExit(f"{FACES / name} is missing: this benchmark needs ../shared/data beside the repo")
            h = int(height * 0.75)
            tiles.append(cv2.resize(image, (round(image.shape[1] * h / image.shape[0]), h),
                                    interpolation=cv2.INTER_AREA))
        gap = width // 20
        canvas_w = max(width, sum(t.shape[1] for t in tiles) + gap) + width // 2
        canvas = np.empty((height, canvas_w, 3), np.uint8)
        canvas[:] = np.linspace(40, 180, canvas_w, dtype=np.float32)[None, :, None].astype(np.uint8)
        x = (canvas_w - sum(t.shape[1] for t in tiles) - gap) // 2
        for t in tiles:
            top = (height - t.shape[0]) // 2
            canvas[top:top + t.shape[0], x:x + t.shape[1]] = t
            x += t.shape[1] + gap
        canvases.append(canvas)
    return canvases


def frame_at(canvases: list[np.ndarray], t: float, width: int, height: int) -> np.ndarray:
    """The picture at time t (seconds): the current shot's canvas seen through a slowly panning camera."""
    import cv2

    shot = int(t // SHOT_SECONDS)
    canvas = canvases[shot % len(canvases)]
    room = canvas.shape[1] - width
    u = (t % SHOT_SECONDS) / SHOT_SECONDS
    dx = room * (0.25 + 0.5 * u if shot % 2 == 0 else 0.75 - 0.5 * u)
    matrix = np.float32([[1, 0, -dx], [0, 1, 0]])
    return cv2.warpAffine(canvas, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def write_material(path: Path, minutes: float, material_s: float, width: int, height: int, fps: int) -> int:
    """`minutes` of video whose frames repeat the first `material_s` seconds; returns the frame count."""
    import av

    canvases = shot_canvases(width, height)
    period = int(round(material_s * fps))
    frames = [frame_at(canvases, i / fps, width, height) for i in range(period)]
    n = int(round(minutes * 60 * fps))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i % period], format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def loop_video(source: Path, target: Path, copies: int) -> None:
    """`copies` times `source` back to back, by remuxing its packets with shifted timestamps (no re-encoding)."""
    import av

    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        packets = [(bytes(p), p.pts, p.dts, p.is_keyframe, p.duration) for p in src.demux(stream) if p.size]
        template = stream
        period = max(p[1] for p in packets) + (packets[-1][4] or 1) - min(p[1] for p in packets)
        with av.open(str(target), "w") as dst:
            out = dst.add_stream_from_template(template)
            for c in range(copies):
                for data, pts, dts, key, duration in packets:
                    packet = av.Packet(data)
                    packet.pts, packet.dts = pts + c * period, dts + c * period
                    packet.duration = duration
                    packet.is_keyframe = key
                    packet.time_base = stream.time_base
                    packet.stream = out
                    dst.mux(packet)


def measure(video: Path, out: Path, extra: list[str], stages: str = "detect,track") -> dict:
    """Run `vcn run` on `video` as this process's only child; its peak RSS and a resident-size timeline."""
    command = [sys.executable, "-m", "vcn.cli", "run", str(video), "--out", str(out), "--stages", stages,
               "--quiet", "--force", *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timeline = []
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
            timeline.append((round(time.perf_counter() - started, 2), round(rss_kib / 1024, 1)))
        except (OSError, StopIteration, ValueError):
            pass
        time.sleep(0.25)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    timeline = timeline[::max(1, len(timeline) // 200)]  # at most ~200 points in the JSON
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    return {"returncode": proc.returncode, "peak_rss_mib": round(peak_kib / 1024, 1), "wall_s": round(wall, 1),
            "rss_timeline_mib": timeline, "stdout": stdout.strip()[-500:], "stderr": stderr.strip()[-2000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "long_video_memory.json"),
                        help="the JSON report (default benchmarks/results/long_video_memory.json)")
    parser.add_argument("--work", help="folder for the videos and vcn outputs (default: a temporary one, removed)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0], help="video lengths (default 1 10)")
    parser.add_argument("--size", default="320x180", help="frame size WxH (default 320x180)")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--material-s", type=float, default=60.0, help="seconds of distinct material (default 60)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to vcn run --set")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: run one measurement in this process
    parser.add_argument("--stages", default="detect,track", help=argparse.SUPPRESS)  # with --measure
    args = parser.parse_args(argv)
    extra = [x for o in args.overrides for x in ("--set", o)]
    if args.measure:
        print(json.dumps(measure(Path(args.measure), Path(args.work), extra, args.stages)))
        return 0

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vcn-long-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _benchmark(args, work, extra)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _benchmark(args: argparse.Namespace, work: Path, extra: list[str]) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    results = []
    for minutes in args.minutes:
        video = work / f"material_{minutes:g}min.mp4"
        t0 = time.perf_counter()
        n_frames = write_material(video, minutes, min(args.material_s, minutes * 60), width, height, args.fps)
        made_s = time.perf_counter() - t0
        # A fresh wrapper per video: RUSAGE_CHILDREN is the peak over every child a process has waited for.
        wrapper = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--work", str(work / "vcn"),
                                  "--measure", str(video), *[f"--set={o}" for o in args.overrides]],
                                 capture_output=True, text=True, check=True, cwd=REPO)
        run = json.loads(wrapper.stdout)
        summary_path = work / "vcn" / video.stem / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        result = {"minutes": minutes, "frames": n_frames, "video_bytes": video.stat().st_size,
                  "render_s": round(made_s, 1), **run, "counts": summary.get("counts"),
                  "seconds": summary.get("seconds")}
        results.append(result)
        print(f"{minutes:g} min ({n_frames} frames): peak RSS {run['peak_rss_mib']} MiB, {run['wall_s']} s, "
              f"rc {run['returncode']}, counts {result['counts']}", flush=True)
        if run["returncode"] != 0:
            print(run["stderr"], file=sys.stderr)
    peaks = [r["peak_rss_mib"] for r in results]
    report = {
        "benchmark": "long_video_memory",
        "command": "vcn run VIDEO --stages detect,track",
        "size": [width, height], "fps": args.fps, "material_s": args.material_s, "overrides": args.overrides,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "results": results,
        "peak_ratio_longest_to_shortest": round(peaks[-1] / peaks[0], 3) if len(peaks) > 1 else None,
        "within_20_percent": bool(max(peaks) <= (1 + TOLERANCE) * min(peaks)) if peaks else None,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"peaks {peaks} MiB, ratio {report['peak_ratio_longest_to_shortest']}, within 20%: "
          f"{report['within_20_percent']}; wrote {path}")
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
