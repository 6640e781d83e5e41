"""Stages 2 and 3 on a crops table: finetune_and_cluster / cluster_without_finetuning, toy and real (deepface13)."""

from __future__ import annotations

import collections
import functools
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.test_ssl import ToyBackbone
from vcn.clustering import cluster_with_baseline
from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.stage23 import cluster_without_finetuning, decode_crops, finetune_and_cluster
from vcn.tables import CLUSTERS, EMBEDDINGS, make_table

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEEPFACE = SHARED / "data" / "faces" / "deepface13"


# ----- crops tables -------------------------------------------------------------------------------------------------

def crops_table(images: list[np.ndarray], tracks: list[int], frames: list[int] | None = None,
                quality_ok: list[bool] | None = None, video_id: str = "v") -> pa.Table:
    """A CROPS table from 112x112 BGR uint8 images (PNG-encoded as the track stage writes them)."""
    n = len(images)
    frames = frames if frames is not None else [12 * i for i in range(n)]
    quality_ok = quality_ok if quality_ok is not None else [True] * n
    return make_table("crops", {
        "video_id": [video_id] * n, "crop_id": list(range(n)), "track_id": tracks, "shot_id": [0] * n,
        "frame": frames, "t_s": [f / 24 for f in frames], "x1": [0.0] * n, "y1": [0.0] * n, "x2": [112.0] * n,
        "y2": [112.0] * n, "score": [0.9] * n, "landmarks": [[0.0] * 10] * n, "face_px": [112.0] * n,
        "blur_var": [100.0] * n, "quality_ok": quality_ok,
        "image": [cv2.imencode(".png", im)[1].tobytes() for im in images],
    })


def toy_identity_crops(identities: list[int], per_track: int = 4, seed: int = 0, noise: float = 12.0):
    """Images per track: the identity's smooth pattern plus noise (same identity -> same pattern)."""
    rng = np.random.default_rng(seed)
    patterns = {i: np.kron(rng.integers(30, 226, (4, 4, 3)), np.ones((28, 28, 1))) for i in set(identities)}
    images, tracks = [], []
    for t, ident in enumerate(identities):
        for _ in range(per_track):
            images.append(np.clip(patterns[ident] + rng.normal(0, noise, (112, 112, 3)), 0, 255).astype(np.uint8))
            tracks.append(t)
    return images, tracks


def tiny_cfg(**cluster) -> RunConfig:
    cfg = RunConfig()
    cfg.ssl.head_hidden, cfg.ssl.head_bottleneck, cfg.ssl.head_out = 32, 8, 64
    cfg.ssl.warmup_epochs, cfg.ssl.warmup_views, cfg.ssl.epochs_per_round, cfg.ssl.rounds = 3, 2, 1, 2
    cfg.ssl.batch_size, cfg.ssl.device = 8, "cpu"
    cfg.serfiq.passes = 20
    for k, v in cluster.items():
        setattr(cfg.cluster, k, v)
    return cfg


# ----- real crops from deepface13 -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _sface():
    from vcn.models import load_backbone

    return load_backbone("sface")


def sface_or_skip():
    try:
        return _sface()
    except (VcnError, ImportError) as e:
        pytest.skip(f"SFace backbone unavailable: {e}")


@functools.lru_cache(maxsize=None)
def _photo_landmarks(name: str) -> np.ndarray | None:
    image = cv2.imread(str(DEEPFACE / name))
    faces = _detector().detect(image[None])[0] if image is not None else None
    if not faces or len(faces) == 0:
        return None
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    return faces.landmarks[int(np.argmax(areas))]


@functools.lru_cache(maxsize=1)
def _detector():
    from vcn.models import load_detector

    return load_detector("retinaface")


def _track_crop(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, jitter: bool) -> np.ndarray:
    """One sampled crop of a simulated track: landmark wobble, a small head turn, side light, blur, noise."""
    from vcn.faces.align import align_face

    lm = landmarks.astype(np.float64)
    if jitter:
        # Detector landmarks wobble from frame to frame: a random similarity about the face centre.
        ang, scale, shift = math.radians(rng.uniform(-10, 10)), rng.uniform(0.9, 1.1), rng.uniform(-5, 5, 2)
        eye = np.linalg.norm(lm[1] - lm[0])
        c = lm.mean(0)
        rot = scale * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        lm = (lm - c) @ rot.T + c + shift * eye / 35.0
    crop = align_face(image, lm.astype(np.float32))
    if jitter:
        k = rng.uniform(-0.15, 0.15)     # squeeze one side: a head turn of roughly +-20 degrees
        src = np.float32([[0, 0], [112, 0], [112, 112], [0, 112]])
        dst = np.float32([[0, 56 * max(k, 0)], [112, 56 * max(-k, 0)], [112, 112 - 56 * max(-k, 0)],
                          [0, 112 - 56 * max(k, 0)]])
        crop = cv2.warpPerspective(crop, cv2.getPerspectiveTransform(src, dst), (112, 112),
                                   borderMode=cv2.BORDER_REPLICATE)
    x = crop.astype(np.float32)
    if jitter:
        x += np.linspace(-1, 1, 112)[None, :, None] * rng.uniform(-40, 40)      # side light
        if rng.random() < 0.3:
            n = int(rng.integers(3, 8))
            kernel = np.zeros((n, n), np.float32)
            kernel[n // 2] = 1.0 / n
            x = cv2.filter2D(x, -1, kernel)                                     # motion blur
    x = x * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    x += rng.normal(0, 3, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def deepface_crops_table(people: int | None = None, photos_per_person: int | None = None, tracks_per_photo: int = 2,
                         crops_per_track: int = 10, seed: int = 0) -> tuple[pa.Table, dict[int, str]]:
    """A crops table of simulated tracks from real photos: each photo gives `tracks_per_photo` tracks (the same
    person in the same setting in several shots), each of `crops_per_track` differently perturbed aligned crops.
    Returns the table and track id -> person. Seeded and deterministic."""
    if not (DEEPFACE / "identities.json").is_file():
        pytest.skip(f"shared test data not found at {DEEPFACE} (it sits beside the repository)")
    identities = json.loads((DEEPFACE / "identities.json").read_text())["identities"]
    rng = np.random.default_rng(seed)
    images, tracks, frames, truth = [], [], [], {}
    for person, files in sorted(identities.items())[:people]:
        for name in sorted(files)[:photos_per_person]:
            landmarks = _photo_landmarks(name)
            if landmarks is None:
                continue
            image = cv2.imread(str(DEEPFACE / name))
            for _ in range(tracks_per_photo):
                t = len(truth)
                truth[t] = person
                for k in range(crops_per_track):
                    images.append(_track_crop(image, landmarks, rng, jitter=k > 0))
                    tracks.append(t)
                    frames.append(1000 * t + 12 * k)
    return crops_table(images, tracks, frames, video_id="deepface13"), truth


def deepface_track_crops(**kw) -> tuple[torch.Tensor, np.ndarray]:
    table, _ = deepface_crops_table(**kw)
    return decode_crops(table.column("image").to_pylist()), table.column("track_id").to_numpy()


def purity_and_count(clusters: pa.Table, truth: dict[int, str]) -> dict[str, float]:
    """WCP over all tracks (Unknown tracks count as wrong), predicted clusters, PCR."""
    groups = collections.defaultdict(list)
    unknown = 0
    for t, c in zip(clusters.column("track_id").to_pylist(), clusters.column("cluster_id").to_pylist()):
        if c < 0:
            unknown += 1
        else:
            groups[c].append(truth[t])
    majority = sum(collections.Counter(g).most_common(1)[0][1] for g in groups.values())
    people = len(set(truth.values()))
    return {"wcp": majority / len(truth), "clusters": len(groups), "pcr": len(groups) / people,
            "unknown": unknown}


# ----- toy tests (fast) ---------------------------------------------------------------------------------------------

def test_every_track_gets_a_row_and_both_embeddings_are_written():
    images, tracks = toy_identity_crops([0, 0, 1, 1, 2])
    ok = [True] * len(images)
    # Track 5: every crop failed the quality gate -> Unknown, with the gate that failed it.
    images += images[:2]
    tracks += [5, 5]
    ok += [False, False]
    # Track 1 has one bad crop: it is kept, trained and clustered on its good crops.
    ok[4] = False
    table = crops_table(images, tracks, quality_ok=ok)
    clusters, embeddings, timings = finetune_and_cluster(table, ToyBackbone(), tiny_cfg(), "v")
    assert clusters.schema == CLUSTERS and embeddings.schema == EMBEDDINGS
    rows = {r["track_id"]: r for r in clusters.to_pylist()}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert rows[5]["cluster_id"] == -1 and rows[5]["reason"] in ("too_small", "too_blurred") and math.isnan(rows[5]["track_quality"])
    for t in range(5):
        assert rows[t]["reason"] in ("clustered", "serfiq_outlier")
        assert 0 < rows[t]["track_quality"] <= 1
    models = collections.Counter(embeddings.column("model").to_pylist())
    assert models == {"toy": 19, "toy+finetuned": 19}
    assert 4 not in embeddings.column("crop_id").to_pylist()
    base = np.stack(embeddings.filter(pa.compute.equal(embeddings.column("model"), "toy")).column("embedding")
                    .to_numpy(zero_copy_only=False))
    tuned = np.stack(embeddings.filter(pa.compute.equal(embeddings.column("model"), "toy+finetuned"))
                     .column("embedding").to_numpy(zero_copy_only=False))
    assert base.shape == (19, 16) and not np.allclose(base, tuned)
    for key in ("decode_crops_s", "embed_base_and_serfiq_s", "finetune_s", "match_s", "cluster_s", "total_s"):
        assert timings[key] >= 0
    assert timings["finetune_round1_heads_s"] > 0 and timings["finetune_round2_full_s"] > 0


def test_results_are_deterministic():
    images, tracks = toy_identity_crops([0, 1, 0, 1])
    table = crops_table(images, tracks)
    a = finetune_and_cluster(table, ToyBackbone(), tiny_cfg(), "v")
    b = finetune_and_cluster(table, ToyBackbone(), tiny_cfg(), "v")
    assert a[0].equals(b[0]) and a[1].equals(b[1])


def _record_training_matches(monkeypatch) -> list[dict]:
    """The matches each epoch draws its pairs across (vcn.ssl.train.pairs_across_matches), in order."""
    import vcn.ssl.train as train

    used: list[dict] = []
    original = train.pairs_across_matches
    monkeypatch.setattr(train, "pairs_across_matches", lambda toc, matches, rng, *pose: (
        used.append(dict(matches)), original(toc, matches, rng, *pose))[1])
    return used


@pytest.mark.parametrize("first", [False, True])
def test_match_base_first_pairs_matched_tracks_from_the_warm_up_on(first, monkeypatch):
    """ssl.match_base_first: coarse matching also runs on the base embeddings before the first round, and the
    warm-up and first round draw pairs across those matches; off (the paper), they pair within tracks."""
    images, tracks = toy_identity_crops([0, 0, 1, 1, 2])
    table = crops_table(images, tracks)
    used = _record_training_matches(monkeypatch)
    seen: list[np.ndarray] = []

    def matcher(emb, track_of_crop):
        seen.append(emb)
        return {0: [1], 1: [0]}

    cfg = tiny_cfg()
    cfg.ssl.match_base_first = first
    from vcn.stage23 import finetune_video

    ft = finetune_video(table, ToyBackbone(), cfg, matcher=matcher)
    warmup_epochs = cfg.ssl.warmup_epochs
    assert len(used) == warmup_epochs + cfg.ssl.rounds * cfg.ssl.epochs_per_round
    first_round = used[:warmup_epochs + cfg.ssl.epochs_per_round]
    assert all(m == ({0: [1], 1: [0]} if first else {}) for m in first_round)
    assert all(m == {0: [1], 1: [0]} for m in used[len(first_round):])            # later rounds: as before
    assert len(ft.matches) == cfg.ssl.rounds - 1 + first
    if first:
        torch.testing.assert_close(torch.as_tensor(seen[0]), ft.prep.base[ft.prep.clusterable])


def test_base_first_warmup_only_keeps_base_matches_to_the_warm_up(monkeypatch):
    """ssl.base_first_warmup_only: the base embeddings' matches pair tracks in the heads-only warm-up; round 1's
    full phase pairs within tracks again; later rounds use the matching after each round as before."""
    images, tracks = toy_identity_crops([0, 0, 1, 1, 2])
    used = _record_training_matches(monkeypatch)
    cfg = tiny_cfg()
    cfg.ssl.match_base_first = cfg.ssl.base_first_warmup_only = True
    from vcn.stage23 import finetune_video

    ft = finetune_video(crops_table(images, tracks), ToyBackbone(), cfg, matcher=lambda emb, toc: {0: [1], 1: [0]})
    warmup = cfg.ssl.warmup_epochs
    assert warmup > 0 and len(used) == warmup + cfg.ssl.rounds * cfg.ssl.epochs_per_round
    assert all(m == {0: [1], 1: [0]} for m in used[:warmup])
    assert all(m == {} for m in used[warmup:warmup + cfg.ssl.epochs_per_round])
    assert all(m == {0: [1], 1: [0]} for m in used[warmup + cfg.ssl.epochs_per_round:])
    assert len(ft.matches) == cfg.ssl.rounds   # the base matching, then one after each round but the last


class DarkIsIncoherent(ToyBackbone):
    """For near-black crops, the embedding layer's input lies in that layer's null space: the embedding itself
    is ~0 and any dropout mask turns it into a random direction, the signature of a low-quality face."""

    def __init__(self):
        super().__init__()
        weight = self.net[-1].weight.detach()                       # [16, 128]
        null = torch.linalg.svd(weight, full_matrices=True).Vh[16:]  # rows spanning the null space
        self.register_buffer("incoherent", null.sum(0) * 5.0)

    def forward(self, x):
        features = self.net[:-1]((x - 127.5) / 128.0)
        dark = x.mean(dim=(1, 2, 3)) < 20
        features = torch.where(dark[:, None], self.incoherent + 0.01 * features, features)
        return self.net[-1](features)


def test_serfiq_outlier_track_is_unknown():
    images, tracks = toy_identity_crops(list(range(8)), per_track=3)
    images += [np.full((112, 112, 3), v, np.uint8) for v in (3, 5, 8)]
    tracks += [8, 8, 8]
    cfg = tiny_cfg(method="hac")
    cfg.serfiq.exclude_outliers = True   # the paper's rule (preset paper); off by default
    clusters, _, _ = cluster_without_finetuning(crops_table(images, tracks), DarkIsIncoherent(), cfg, "v")
    rows = {r["track_id"]: r for r in clusters.to_pylist()}
    assert rows[8]["reason"] == "serfiq_outlier" and rows[8]["cluster_id"] == -1
    assert all(rows[t]["reason"] == "clustered" and rows[t]["cluster_id"] >= 0 for t in range(8))
    assert rows[8]["track_quality"] < min(rows[t]["track_quality"] for t in range(8))
    # By default the low-quality track is clustered like the others; its quality is still recorded.
    default, _, _ = cluster_without_finetuning(crops_table(images, tracks), DarkIsIncoherent(),
                                               tiny_cfg(method="hac"), "v")
    row = {r["track_id"]: r for r in default.to_pylist()}[8]
    assert row["reason"] == "clustered" and row["cluster_id"] >= 0
    assert row["track_quality"] == rows[8]["track_quality"]


def test_baselines_and_ablation_without_finetuning():
    images, tracks = toy_identity_crops([0, 0, 1, 1, 2, 2], noise=5)
    table = crops_table(images, tracks)
    clusters, embeddings, _ = cluster_without_finetuning(table, ToyBackbone(), tiny_cfg(method="hac",
                                                                                      hac_threshold=0.3), "v")
    labels = clusters.column("cluster_id").to_pylist()
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[4] == labels[5]
    assert len(set(labels)) == 3
    assert set(embeddings.column("model").to_pylist()) == {"toy"}
    for method in ("vcn", "dbscan", "finch"):
        for metric in ("loss", "cosine"):
            cfg = tiny_cfg(method=method, metric=metric)
            cfg.serfiq.mad_k = 1e6   # 3 identities x 2 tracks: too few for the outlier filter to mean anything
            c, _, _ = cluster_without_finetuning(table, ToyBackbone(), cfg, "v")
            ids = c.column("cluster_id").to_pylist()
            assert c.num_rows == 6 and min(ids) >= 0, (method, metric)


def test_cannot_link_keeps_tracks_sharing_a_frame_apart():
    images, tracks = toy_identity_crops([0], per_track=4, noise=5)
    # Two tracks made of the very same crops would merge, unless they appear in one frame together.
    table = crops_table(images + images, [0] * 4 + [1] * 4, frames=[0, 12, 24, 36] * 2)
    free, _, _ = cluster_without_finetuning(table, ToyBackbone(), tiny_cfg(metric="cosine", cannot_link=False), "v")
    assert len(set(free.column("cluster_id").to_pylist())) == 1
    linked, _, _ = cluster_without_finetuning(table, ToyBackbone(), tiny_cfg(metric="cosine", cannot_link=True), "v",
                                              cannot_link_frames={0: np.array([0, 5]), 1: np.array([5, 9])})
    assert len(set(linked.column("cluster_id").to_pylist())) == 2
    # Without the detections, the crops' own frames are the evidence (here they coincide).
    own, _, _ = cluster_without_finetuning(table, ToyBackbone(), tiny_cfg(metric="cosine", cannot_link=True), "v")
    assert len(set(own.column("cluster_id").to_pylist())) == 2


def test_empty_and_broken_inputs():
    empty = crops_table([], [])
    clusters, embeddings, _ = finetune_and_cluster(empty, ToyBackbone(), tiny_cfg(), "v")
    assert clusters.num_rows == 0 and embeddings.num_rows == 0
    images, tracks = toy_identity_crops([0])
    broken = crops_table(images, tracks)
    broken = broken.set_column(broken.schema.get_field_index("image"), "image",
                               pa.array([b"not a png"] * len(images), pa.binary()))
    with pytest.raises(VcnError, match="does not decode"):
        finetune_and_cluster(broken, ToyBackbone(), tiny_cfg(), "v")
    with pytest.raises(VcnError, match="cluster.method"):
        finetune_and_cluster(crops_table(images, tracks), ToyBackbone(), tiny_cfg(method="kmeans"), "v")


# ----- real crops, real SFace ---------------------------------------------------------------------------------------

def test_real_crops_hac_without_finetuning_is_pure():
    """Quick real check: 4 people x 2 photos x 2 tracks of 4 crops through SFace and the baselines."""
    backbone = sface_or_skip()
    table, truth = deepface_crops_table(people=4, photos_per_person=2, tracks_per_photo=2, crops_per_track=4)
    cfg = RunConfig()
    cfg.cluster.method = "hac"
    clusters, _, _ = cluster_without_finetuning(table, backbone, cfg, "deepface13")
    score = purity_and_count(clusters, truth)
    assert score["wcp"] == 1.0 and score["unknown"] == 0
    assert 4 <= score["clusters"] <= 8


@pytest.mark.slow
def test_real_crops_full_method_vs_ablations(capsys):
    """End to end on real crops with the default config: 5 people x 3 photos x 2 tracks x 10 crops (300 crops).

    Prints purity / cluster counts for the full method, Algorithm 1 without finetuning, and HAC, and the
    finetuning time. Asserts the full method is pure and has no more clusters than tracks' photos.
    """
    backbone = sface_or_skip()
    table, truth = deepface_crops_table(people=5, photos_per_person=3, tracks_per_photo=2, crops_per_track=10)
    cfg = RunConfig()
    t0 = time.perf_counter()
    clusters, embeddings, timings = finetune_and_cluster(table, backbone, cfg, "deepface13")
    full = purity_and_count(clusters, truth)
    full["seconds"] = round(time.perf_counter() - t0, 1)
    full["finetune_s"] = round(timings["finetune_s"], 1)
    no_ft = purity_and_count(cluster_without_finetuning(table, backbone, cfg, "deepface13")[0], truth)
    cfg_hac = RunConfig()
    cfg_hac.cluster.method = "hac"
    hac = purity_and_count(cluster_without_finetuning(table, backbone, cfg_hac, "deepface13")[0], truth)
    # HAC on the finetuned embeddings of the same run (no second finetuning).
    tuned = embeddings.filter(pa.compute.equal(embeddings.column("model"), "sface+finetuned"))
    ids, labels = cluster_with_baseline("hac", np.stack(tuned.column("embedding").to_numpy(zero_copy_only=False)),
                                        tuned.column("track_id").to_numpy(), cfg_hac.cluster)
    hac_ft = purity_and_count(pa.table({"track_id": ids, "cluster_id": labels}), truth)
    with capsys.disabled():
        print(f"\nfull method {full}\nalgorithm 1 without finetuning {no_ft}\nHAC base {hac}\nHAC finetuned {hac_ft}")
    assert full["wcp"] >= 0.95
    assert full["clusters"] <= no_ft["clusters"]


# ----- degenerate inputs give valid clusters (issue 11) ----------------------------------------------------------------

def _valid_clusters(clusters: pa.Table, track_ids: list[int]) -> dict[int, int]:
    """Every track has exactly one row; clustered tracks have ids >= 0, Unknown ones -1 with a gate reason."""
    rows = clusters.to_pylist()
    assert clusters.schema == CLUSTERS
    assert sorted(r["track_id"] for r in rows) == sorted(track_ids)
    for r in rows:
        assert (r["cluster_id"] >= 0) == (r["reason"] == "clustered"), r
    return {r["track_id"]: r["cluster_id"] for r in rows}


@pytest.mark.parametrize("preset", ["default", "paper", "consensus"])
def test_degenerate_videos_give_valid_clusters(preset):
    def cfg():
        # The preset's clustering and gates on the tiny network of these tests.
        c = tiny_cfg()
        chosen = RunConfig.load(None, preset=preset)
        c.cluster, c.serfiq.exclude_outliers = chosen.cluster, chosen.serfiq.exclude_outliers
        c.ssl.warmup_epochs = 2
        return c

    # One track.
    images, tracks = toy_identity_crops([0], per_track=3)
    labels = _valid_clusters(finetune_and_cluster(crops_table(images, tracks), ToyBackbone(), cfg(), "v")[0], [0])
    assert labels == {0: 0}

    # Every track the same person (same pattern, fresh noise): one cluster, never more than there are tracks.
    images, tracks = toy_identity_crops([7] * 6, per_track=3, noise=4)
    labels = _valid_clusters(finetune_and_cluster(crops_table(images, tracks), ToyBackbone(), cfg(), "v")[0],
                             list(range(6)))
    assert min(labels.values()) >= 0 and len(set(labels.values())) <= 6

    # 300 one-crop tracks of 30 people: Algorithm 1 with one-crop thresholds (the crop against itself).
    images, tracks = toy_identity_crops([t % 30 for t in range(300)], per_track=1, noise=6)
    labels = _valid_clusters(finetune_and_cluster(crops_table(images, tracks), ToyBackbone(), cfg(), "v")[0],
                             list(range(300)))
    assert 1 <= len(set(labels.values())) <= 300 and min(labels.values()) >= 0

    # Every face Unknown (no crop passed the gate): every track -1 with its reason, and no embeddings.
    images, tracks = toy_identity_crops([0, 1], per_track=2)
    table = crops_table(images, tracks, quality_ok=[False] * 4)
    clusters, embeddings, _ = finetune_and_cluster(table, ToyBackbone(), cfg(), "v")
    assert _valid_clusters(clusters, [0, 1]) == {0: -1, 1: -1}
    assert set(clusters.column("reason").to_pylist()) == {"too_blurred"} and embeddings.num_rows == 0


@pytest.mark.parametrize("setting", ["merge_rule=neither", "merge_order=random", "metric=euclid", "method=kmeans"])
def test_unknown_cluster_setting_is_refused_by_name_before_any_work(setting):
    name, value = setting.split("=")
    cfg = RunConfig.load(None, [f"cluster.{setting}"])
    images = [np.full((112, 112, 3), 100, np.uint8)] * 2
    with pytest.raises(VcnError, match=f"cluster.{name}={value!r} is unknown; choose one of"):
        finetune_and_cluster(crops_table(images, [0, 1]), ToyBackbone(), cfg, "v")


def _split_person(base_apart: float):
    """A FinetunedVideo of 12 people, 3 crops per track, where person 0 is tracks 0 and 1: their finetuned
    embeddings point two ways, their base ones `base_apart` (cosine distance) from each other. Neighbouring tracks
    of other people share a frame."""
    from vcn.stage23 import FinetunedVideo, _Prepared

    rng = np.random.default_rng(3)
    people = rng.normal(size=(12, 16))
    person_of_track = np.array([0, 0, *range(1, 12)])
    toc = np.repeat(np.arange(13), 3)
    tuned = people[person_of_track][toc] + rng.normal(scale=0.05, size=(len(toc), 16))
    tuned[toc == 1] = rng.normal(size=16) + rng.normal(scale=0.05, size=(3, 16))   # finetuning pushed it away
    base = people[person_of_track][toc] + rng.normal(scale=0.05, size=(len(toc), 16))
    unit = people[0] / np.linalg.norm(people[0])
    other = rng.normal(size=16)
    other -= (other @ unit) * unit
    other /= np.linalg.norm(other)
    angle = math.acos(1.0 - base_apart)
    base[toc == 1] = (math.cos(angle) * unit + math.sin(angle) * other) * np.linalg.norm(people[0]) \
        + rng.normal(scale=0.05, size=(3, 16))
    tracks = np.arange(13)
    prep = _Prepared(tracks, np.arange(len(toc)), toc, torch.zeros(len(toc), 3, 112, 112, dtype=torch.uint8),
                     torch.tensor(base, dtype=torch.float32), {int(t): 1.0 for t in tracks},
                     {int(t): "clustered" for t in tracks}, np.ones(len(toc), bool))
    apart = {(t, t + 1) for t in range(1, 12)}
    return FinetunedVideo(prep, torch.tensor(tuned, dtype=torch.float32), None, [], {}, "sface"), apart


@pytest.mark.parametrize("base_apart, joined", [(0.05, True), (1.0, False)])
def test_join_base_matches_joins_pieces_the_base_space_still_holds_together(base_apart, joined):
    from vcn.stage23 import cluster_finetuned

    ft, apart = _split_person(base_apart)
    cluster_of = lambda cfg: dict(zip(*(cluster_finetuned(ft, cfg, "v", apart).column(c).to_pylist()
                                        for c in ("track_id", "cluster_id"))))
    off = cluster_of(RunConfig.load(None, overrides=["cluster.metric=cosine", "cluster.join_base_matches=false"]))
    on = cluster_of(RunConfig.load(None, overrides=["cluster.metric=cosine", "cluster.join_base_matches=true"]))
    assert off[0] != off[1] and len(set(off.values())) == 13          # the finetuned space alone keeps it split
    assert (on[0] == on[1]) is joined
    assert len(set(on.values())) == 13 - joined                       # and joins nobody else


def test_cooccurring_negatives_train_on_the_tracks_that_share_a_frame():
    """ssl.cooccurring_negatives: the pairs finetune_video is given as cannot-link are the trainer's apart tracks;
    off, the trainer holds none."""
    from vcn.stage23 import finetune_video

    images, tracks = toy_identity_crops([0, 0, 1, 1])
    table = crops_table(images, tracks)
    cfg = tiny_cfg()
    cfg.ssl.cooccurring_negatives = True
    ft = finetune_video(table, ToyBackbone(), cfg, {(0, 1), (2, 3)})
    ids = np.unique(ft.prep.track_of_crop)
    pairs = {(int(ids[i]), int(ids[j])) for i, j in zip(*np.nonzero(np.triu(ft.trainer.apart.numpy())))}
    assert pairs == {(0, 1), (2, 3)}
    cfg.ssl.cooccurring_negatives = False
    assert finetune_video(table, ToyBackbone(), cfg, {(0, 1), (2, 3)}).trainer.apart is None



def test_pose_pairs_read_each_good_crops_capped_pose_from_its_landmarks():
    """ssl.pose_pairs: the trainer gets the pose of every crop that passed the gate, in the order it trains on
    them (vcn.faces.align.nose_offset, capped at POSE_CAP); off, none."""
    from vcn.stage23 import POSE_CAP, finetune_video

    images, tracks = toy_identity_crops([0, 1], per_track=3)
    table = crops_table(images, tracks, quality_ok=[True, False, True, True, True, True])
    eyes_nose = [[40, 50, 60, 50, 50, 65], [40, 50, 60, 50, 60, 65], [40, 50, 60, 50, 75, 65]]
    marks = [eyes_nose[i % 3] + [42, 80, 58, 80] for i in range(6)]
    table = table.set_column(table.schema.get_field_index("landmarks"), "landmarks",
                             pa.array(marks, table.schema.field("landmarks").type))
    cfg = tiny_cfg()
    cfg.ssl.pose_pairs = 0.5
    ft = finetune_video(table, ToyBackbone(), cfg)
    np.testing.assert_allclose(ft.trainer.pose_of_crop, [0.0, POSE_CAP, 0.0, 0.5, POSE_CAP], atol=1e-9)
    cfg.ssl.pose_pairs = 0.0
    assert finetune_video(table, ToyBackbone(), cfg).trainer.pose_of_crop is None

@pytest.mark.parametrize("on", [False, True])
def test_train_same_setup_trains_same_set_up_tracks_as_matched_in_every_round(on, monkeypatch):
    """ssl.train_same_setup: the same-set-up pairs (vcn.clustering.setups) are matches of every round, the warm-up
    included, beside the coarse matches; the recorded coarse matches stay the matcher's own."""
    from vcn.stage23 import _prepare, finetune_video

    images, tracks = toy_identity_crops([0, 0, 1, 1, 2])
    table = crops_table(images, tracks)
    used = _record_training_matches(monkeypatch)
    cfg = tiny_cfg()
    cfg.ssl.train_same_setup = on
    prep = _prepare(table, ToyBackbone(), cfg, {})
    prep.same_setup = [(1, 2)]
    ft = finetune_video(table, ToyBackbone(), cfg, matcher=lambda emb, toc: {0: [1], 1: [0]}, prep=prep)
    first_round = used[:cfg.ssl.warmup_epochs + cfg.ssl.epochs_per_round]
    assert all(m == ({1: [2], 2: [1]} if on else {}) for m in first_round)
    assert all(m == ({0: [1], 1: [0, 2], 2: [1]} if on else {0: [1], 1: [0]}) for m in used[len(first_round):])
    assert ft.matches == [{0: [1], 1: [0]}] * (cfg.ssl.rounds - 1)


def test_with_pairs_adds_both_ways_without_repeats():
    from vcn.ssl.pairs import with_pairs

    matches = {0: [1], 1: [0]}
    assert with_pairs(matches, [(1, 2), (0, 1), (2, 1)]) == {0: [1], 1: [0, 2], 2: [1]}
    assert matches == {0: [1], 1: [0]} and with_pairs({}, []) == {}
