"""Stage-1 throughput on one video: frames/s of each stage next to decord's decode-only rate, as JSON.

    python benchmarks/stage1.py [VIDEO] --out benchmarks/results/stage1.json

Every figure comes from one process, side by side, so ratios hold on a noisy machine; absolute rates are this
machine's (2 CPU cores unless said otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vcn.config import RunConfig
from vcn.pipeline import run_video

HAMILTON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"


def decode_only_fps(video: Path, batch: int) -> float:
    import decord

    reader = decord.VideoReader(str(video), ctx=decord.cpu(0))
    n = len(reader)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        reader.get_batch(list(range(s, min(n, s + batch)))).asnumpy()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(HAMILTON))
    parser.add_argument("--out", default="benchmarks/results/stage1.json")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each figure")
    args = parser.parse_args()
    video = Path(args.video)
    cfg = RunConfig()
    decode = max(decode_only_fps(video, cfg.decode.batch_frames) for _ in range(args.repeats))
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = run_video(video, tmp, cfg, stages=["detect", "track"])
            runs.append((time.perf_counter() - t0, result.summary))
    wall, summary = min(runs, key=lambda r: r[0])
    frames = summary["seconds"]["frames_scanned"]
    fps = summary["frames_per_second"]
    report = {
        "video": str(video),
        "frames": frames,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.machine()},
        "decode_only_fps_decord": round(decode, 1),
        "stage_fps": fps,
        "stage_fps_over_decode_only": {k: round(v / decode, 3) for k, v in fps.items()},
        "end_to_end_fps": round(frames / wall, 2),
        "end_to_end_over_decode_only": round(frames / wall / decode, 3),
        "counts": summary["counts"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        result = run_video(video, tmp, cfg, stages=["detect", "track"])
        import pyarrow.parquet as pq

        shots = pq.read_table(result.path / "shots.parquet").to_pylist()
        tracks = pq.read_table(result.path / "tracks.parquet").to_pandas()
        crops = pq.read_table(result.path / "crops.parquet", columns=["shot_id", "quality_ok"]).to_pandas()
    report["shots"] = [{
        "shot_id": s["shot_id"], "frames": [s["start_frame"], s["end_frame"]],
        "tracks": int((tracks.shot_id == s["shot_id"]).sum()),
        "crops": int((crops.shot_id == s["shot_id"]).sum()),
        "crops_passing_quality_gate": int(((crops.shot_id == s["shot_id"]) & crops.quality_ok).sum()),
    } for s in shots]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
