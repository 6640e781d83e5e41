"""benchmarks/truth_from_labels.py and the by-eye labels this repository holds (benchmarks/data/)."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pytest

from tests.benchmark_scripts import load_benchmark
from vcn.render import read_truth

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("truth_from_labels")


def detections(rows: list[tuple[int, int]]) -> pa.Table:
    """(frame, track_id) rows with a box that encodes both, so the output can be traced back."""
    return pa.table({"frame": [f for f, _ in rows], "track_id": [t for _, t in rows],
                     "x1": [float(t) for _, t in rows], "y1": [float(f) for f, _ in rows],
                     "x2": [t + 10.0 for _, t in rows], "y2": [f + 10.0 for f, _ in rows]})


def test_truth_keeps_every_detection_of_named_tracks_and_nothing_else(bench):
    det = detections([(3, 0), (0, 0), (0, 1), (3, 1), (6, 2), (6, -1)])
    rows = bench.truth_rows(det, {0: "anna", 1: "", 2: "ben"})
    assert rows == [(0, 0.0, 0.0, 10.0, 10.0, "anna"), (3, 0.0, 3.0, 10.0, 13.0, "anna"),
                    (6, 2.0, 6.0, 12.0, 16.0, "ben")]


def test_a_track_without_a_label_row_is_an_error_naming_it(bench):
    with pytest.raises(ValueError, match=r"\[7\]"):
        bench.truth_rows(detections([(0, 0), (0, 7)]), {0: "anna"})


@pytest.mark.parametrize("labels", sorted(DATA.glob("*.labels.csv")), ids=lambda p: p.name)
def test_each_committed_truth_names_exactly_the_labelled_identities(labels):
    with labels.open(newline="") as f:
        named = {r["identity"].strip() for r in csv.DictReader(f) if r["identity"].strip()}
    truth = read_truth(DATA / labels.name.replace(".labels.csv", ".truth.csv"))
    assert set(truth.column("identity").to_pylist()) == named
