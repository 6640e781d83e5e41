"""benchmarks/poses.py: the nose offset, the candidate pairs and the profile-to-nearest-frontal rule it scores."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmark_scripts import load_benchmark
from tests.test_faces import face_points as landmarks


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("poses")


def test_profile_line_lies_between_an_eye_and_beyond(bench):
    offsets = bench.nose_offset(np.array([landmarks(60), landmarks(75)]))
    assert offsets[1] > bench.PROFILE >= offsets[0]


def test_candidate_pairs_skip_clusters_seen_together_and_name_the_verdict(bench):
    e = np.eye(4)
    means = {1: e[0], 2: e[0] * 0.8 + e[1] * 0.6, 3: e[2], 4: e[3]}
    poses = {1: 0.1, 2: 1.4, 3: 0.2, 4: 0.1}
    identity = {1: "ann", 2: "ann", 3: "bob", 4: None}
    clusters = {1: 0, 2: 1, 3: 2, 4: 3}
    pairs = bench.candidate_pairs(clusters, identity, means, poses, linked={(1, 3)})
    by = {(p["a"], p["b"]): p for p in pairs}
    assert (0, 2) not in by                                   # tracks 1 and 3 share a frame
    assert by[(0, 1)]["verdict"] == "right" and by[(0, 1)]["distance"] == pytest.approx(0.2)
    assert by[(1, 2)]["verdict"] == "wrong" and by[(0, 3)]["verdict"] == "unlabelled"
    assert by[(0, 1)]["pose_b"] == pytest.approx(1.4)


def test_each_profile_cluster_is_scored_by_its_nearest_frontal_cluster(bench):
    pairs = [
        {"a": 0, "b": 1, "distance": 0.7, "verdict": "right", "pose_a": 0.1, "pose_b": 1.5},
        {"a": 1, "b": 2, "distance": 0.6, "verdict": "wrong", "pose_a": 1.5, "pose_b": 0.2},   # nearer: wrong
        {"a": 3, "b": 0, "distance": 0.9, "verdict": "right", "pose_a": 2.0, "pose_b": 0.1},
        {"a": 3, "b": 1, "distance": 0.1, "verdict": "right", "pose_a": 2.0, "pose_b": 1.5},   # both profiles
    ]
    assert bench.profile_to_nearest_frontal(pairs) == {"wrong": 1, "right": 1}
