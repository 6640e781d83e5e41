"""benchmarks/stage1.py runs on a short stretch of the sitcom and finds the same shots, tracks and crops under
every variant it times (tracking during the scan, after it, and with no background thread)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SITCOM = REPO.parent / "shared" / "data" / "videos" / "real" / "simplefr_Video_2.mp4"


@pytest.mark.skipif(not SITCOM.is_file(), reason=f"shared real footage not found at {SITCOM}")
def test_stage1_benchmark_times_every_variant_on_the_same_tables(tmp_path):
    out = tmp_path / "stage1.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stage1.py"), str(SITCOM), "--frames", "240",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = report["stage1"]
    assert set(runs) == {"default", "track.during_scan=always", "track.during_scan=never",
                         "prefetch_batches=0,track.during_scan=never"}
    counts = [r["counts"] for r in runs.values()]
    assert counts[0]["shots"] >= 2 and counts[0]["crops"] > 0 and all(c == counts[0] for c in counts)
    assert report["detector_only_fps"] > 0 and set(report["stage1_over_detector_only_by_variant"]) == set(runs)
