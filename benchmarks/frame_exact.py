"""Does every decoded frame show the picture of its index? vcn's decoder and decord's random access against PyAV's
plain sequential decode (no seeking), frame by frame, on every real clip, as JSON.

    python benchmarks/frame_exact.py [VIDEO ...] --out benchmarks/results/frame_exact.json

The reference is the k-th picture PyAV's decoder puts out when it decodes the file from the start, put through
the same display corrections vcn applies (rotation, pixel aspect, deinterlacing). For each clip and each
decoder ("vcn": `vcn.video.decode.iter_frames` as it is now, from the first frame; "vcn_spans": the same started
afresh every 50 frames, i.e. reached by a seek as a shot's crops are; "decord_get_batch" and "decord_spans":
decord's batched access the same two ways, as vcn decoded before issue 11) it counts frames whose picture
differs from the reference (mean absolute difference above --tolerance grey levels) and, for those, which
reference frame they show instead (offset -4..+4 or "none"). Clips: ../shared/data/videos/real/ by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "videos" / "real"
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".wmv", ".mkv")
OFFSETS = range(-4, 5)
DECODERS = ("vcn", "vcn_spans", "decord_get_batch", "decord_spans")


def reference_frames(path: Path, info, end: int | None = None):
    """PyAV's sequential decode from the start, no seek: (index k = k-th frame out, BGR display frame)."""
    import av

    from vcn.video.decode import _to_display

    with av.open(str(path)) as container:
        stream = container.streams[info.stream_index]
        stream.thread_type = "AUTO"
        k = 0
        try:
            for frame in container.decode(stream):
                if end is not None and k >= end:
                    return
                rgb = frame.to_ndarray(format="rgb24")[None]
                yield k, _to_display(rgb, info, turned=False, rgb=True)[0]
                k += 1
        except av.error.FFmpegError:
            return  # a damaged file: the reference ends where sequential decoding ends


def _decord_turned(frames: np.ndarray, info) -> bool:
    """decord 0.6 applies the display-matrix rotation itself; a quarter turn shows in the shape."""
    if info.rotation in (90, 270) and info.coded_height != info.coded_width:
        return frames.shape[1:3] != (info.coded_height, info.coded_width)
    return True


def _preroll(reader, info) -> int:
    """Frames decord indexes before the presentation's start (MP4 edit-list discards, which FFmpeg never shows):
    decord's index i + this is frame i of vcn's index."""
    return max(0, len(reader) - info.n_frames)


def decord_batches(path: Path, info, batch_frames: int, end: int, start: int = 0):
    """vcn's decoder before issue 11: one decord reader, get_batch per batch of indices from `start` (display
    corrections applied). Stops at the first batch decord cannot decode."""
    import decord

    from vcn.video.decode import _to_display

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
    skip = _preroll(reader, info)
    for s in range(start, end, batch_frames):
        idx = list(range(s, min(end, s + batch_frames)))
        try:
            frames = reader.get_batch([i + skip for i in idx]).asnumpy()
        except (decord.DECORDError, RuntimeError):
            return
        frames = _to_display(frames, info, _decord_turned(frames, info), rgb=True)
        yield from zip(idx, frames)


def decord_spans(path: Path, info, batch_frames: int, end: int, span: int = 50):
    """vcn's crops path before issue 11: a fresh decord reader per span (a shot) that starts mid-file, then
    get_batch from the span's first frame, as `_crops_for` did per shot and a Ray work unit per unit."""
    for s in range(0, end, span):
        delivered = 0
        for item in decord_batches(path, info, batch_frames, min(end, s + span), start=s):
            delivered += 1
            yield item
        if delivered < min(end, s + span) - s:
            return


def vcn_batches(path: Path, info, batch_frames: int, end: int, start: int = 0):
    from vcn.video.decode import DecodeError, iter_frames

    try:
        for batch in iter_frames(path, batch_frames, start_frame=start, end_frame=end, info=info):
            yield from zip(batch.indices.tolist(), batch.frames)
    except DecodeError:
        return


def vcn_spans(path: Path, info, batch_frames: int, end: int, span: int = 50):
    """vcn's decoder reaching each span by a seek, as `_crops_for` does per shot and a Ray unit per unit."""
    for s in range(0, end, span):
        yield from vcn_batches(path, info, batch_frames, min(end, s + span), start=s)


def _small(frame: np.ndarray) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (96, 54), interpolation=cv2.INTER_AREA).astype(np.float32)


def compare(path: Path, which: str, batch_frames: int, tolerance: float, seconds: float | None) -> dict:
    from vcn.video.decode import probe_video

    info = probe_video(path)
    end = info.n_frames
    if seconds is not None:
        end = min(end, int(np.searchsorted(info.times, info.times[0] + seconds)))
    t0 = time.perf_counter()
    # Small grey copies of every reference frame, to name the frame a differing picture really shows.
    ref_full: dict[int, np.ndarray] = {}
    decoders = {"vcn": vcn_batches, "vcn_spans": vcn_spans, "decord_get_batch": decord_batches,
                "decord_spans": decord_spans}
    results = {}
    for name in which:
        counts = Counter()
        diffs = []
        differing: list[int] = []
        delivered = 0
        ref = reference_frames(path, info, end)
        batches = decoders[name](path, info, batch_frames, end)
        ref_small = []
        for (k, frame), (r, reference) in zip(batches, ref):
            delivered += 1
            if k != r:
                raise SystemExit(f"{path}: {name} delivered frame {k} where {r} was expected")
            ref_small.append(_small(reference))
            mad = float(np.abs(frame.astype(np.int16) - reference).mean())
            diffs.append(mad)
            if mad > tolerance:
                differing.append(k)
                ref_full[k] = _small(frame)
        # Which reference frame does each differing picture show?
        for k in differing:
            best = min(((float(np.abs(ref_small[k + o] - ref_full[k]).mean()), o) for o in OFFSETS
                        if 0 <= k + o < len(ref_small)), default=(np.inf, None))
            counts["none" if best[1] is None or best[0] > 2 * tolerance else f"{best[1]:+d}"] += 1
        ref_full.clear()
        diffs = np.asarray(diffs)
        results[name] = {
            "frames_compared": delivered,
            "frames_differing": len(differing),
            "share_differing": round(len(differing) / max(1, delivered), 4),
            "mean_abs_diff_of_differing": round(float(diffs[diffs > tolerance].mean()), 2) if len(differing) else 0.0,
            "max_abs_diff": round(float(diffs.max()), 2) if len(diffs) else 0.0,
            "shows_reference_frame_at_offset": dict(sorted(counts.items())),
            "first_differing": differing[:10],
        }
    import decord

    preroll = _preroll(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1), info)
    return {"video": path.name, "n_frames": info.n_frames, "decord_preroll_frames": preroll, "frames_checked": end,
            "codec": info.codec,
            "size": [info.width, info.height], "fps": round(info.fps, 3), "seconds": round(time.perf_counter() - t0, 1),
            **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", help=f"clips (default: every video in {REAL})")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "frame_exact.json"))
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    parser.add_argument("--batch-frames", type=int, default=64, help="frames per batch (vcn's decode.batch_frames)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="mean absolute difference (grey levels) above which two pictures differ (default 1)")
    parser.add_argument("--seconds", type=float, help="only the first N seconds of each clip")
    args = parser.parse_args(argv)
    paths = [Path(v) for v in args.videos] or sorted(p for p in REAL.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not paths:
        print(f"no videos given and none found in {REAL}", file=sys.stderr)
        return 2
    rows = []
    for path in paths:
        row = compare(path, args.decoders, args.batch_frames, args.tolerance, args.seconds)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items()}), flush=True)
    report = {"benchmark": "frame_exact", "tolerance_grey_levels": args.tolerance, "batch_frames": args.batch_frames,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "clips": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
