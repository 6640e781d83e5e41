"""Stages 2 and 3 for one video: finetune the backbone on the video's crops, then cluster its tracks.

Input is the `crops` table; outputs are the `clusters` table (one row per track of the crops table, -1 =
Unknown with the reason) and the `embeddings` table (base and finetuned embeddings of every crop that passed
the quality gate). No Ray here: the distributed layer calls these functions per video.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from vcn.clustering import MERGE_ORDERS, MERGE_RULES, METHODS, algorithm1, cluster_with_baseline, cooccurring_pairs, cosine_vectors
from vcn.clustering.clothes import join_same_clothes
from vcn.clustering.consensus import consensus_clusters
from vcn.clustering.groups import group_means
from vcn.clustering.join import (JOIN_NEAREST_SPACES, join_below_chance, join_matched_clusters,
                                 join_nearest_clusters, matched_pairs_nearest_first)
from vcn.clustering.setups import same_setup_pairs
from vcn.config import RunConfig
from vcn.errors import VcnError
from vcn.faces.align import nose_offset
from vcn.heap import release_memory, trim_before_no_grad_passes
from vcn.matching import MATCH_METHODS, find_matches
from vcn.quality import embed_with_serfiq, mad_low_outliers, serfiq_batch, track_quality
from vcn.ssl.head import make_head
from vcn.ssl.loss import algorithm1_terms
from vcn.ssl.pairs import with_pairs
from vcn.ssl.train import BACKBONE_LAYERS, SelfDistillation, finetune, resolve_device
from vcn.tables import concat_parts, empty_table, make_table


def decode_crops(images: list[bytes], size: int = 112) -> torch.Tensor:
    """PNG/JPEG-encoded BGR crops -> uint8 tensor [N, 3, size, size]."""
    out = np.zeros((len(images), 3, size, size), dtype=np.uint8)
    for i, data in enumerate(images):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if img is None:
            raise VcnError(f"crops table: row {i} has an image that does not decode; re-run the track stage")
        if img.shape[:2] != (size, size):
            raise VcnError(f"crops table: row {i} is {img.shape[1]}x{img.shape[0]}, expected {size}x{size} "
                           "aligned crops; re-run the track stage with sample.crop_size=112")
        out[i] = img.transpose(2, 0, 1)
    return torch.from_numpy(out)


@dataclass
class _Prepared:
    """What both entry points share: the gated crops, base embeddings and track qualities."""

    track_ids: np.ndarray          # every track of the crops table, sorted
    crop_ids: np.ndarray           # crops that passed the quality gate
    track_of_crop: np.ndarray      # their tracks
    images: torch.Tensor           # their pixels, uint8 [N, 3, 112, 112]
    base: torch.Tensor             # their base embeddings [N, d]
    quality: dict[int, float]      # SER-FIQ quality per track with a good crop
    reason: dict[int, str]         # per track: clustered | too_small | too_blurred | serfiq_outlier
    clusterable: np.ndarray        # bool per good crop: its track is clustered
    torso: dict[int, np.ndarray] = field(default_factory=dict)  # track -> mean torso histogram (vcn.faces.clothes)
    # tracks at one spot of one camera set-up in two shots, most alike first (vcn.clustering.setups)
    same_setup: list[tuple[int, int]] = field(default_factory=list)
    # per good crop, its pose: the nose's offset from between the eyes, capped at POSE_CAP (ssl.pose_pairs)
    pose: np.ndarray | None = None


def _prepare(crops: pa.Table, backbone: nn.Module, cfg: RunConfig, timings: dict[str, float]) -> _Prepared:
    t0 = time.perf_counter()
    track_all = crops.column("track_id").to_numpy()
    ok = crops.column("quality_ok").to_numpy(zero_copy_only=False).astype(bool)
    track_ids = np.unique(track_all)
    good = np.flatnonzero(ok)
    images = decode_crops(crops.column("image").take(pa.array(good)).to_pylist(), cfg.sample.crop_size)
    track_of_crop = track_all[good]
    crop_ids = crops.column("crop_id").to_numpy()[good]
    t1 = time.perf_counter()
    timings["decode_crops_s"] = t1 - t0

    device = resolve_device(cfg.ssl.device)
    backbone = backbone.to(device)
    # One pass gives the base embeddings and SER-FIQ quality (dropout at the embedding layer).
    gen = torch.Generator().manual_seed(cfg.serfiq.seed)
    base, crop_q = embed_with_serfiq(backbone, images, cfg.serfiq.passes, cfg.serfiq.dropout, gen,
                                     serfiq_batch(cfg.serfiq.batch_size, device), device)
    t2 = time.perf_counter()
    timings["embed_base_and_serfiq_s"] = t2 - t1
    quality = track_quality(crop_q, track_of_crop)
    reason = _gate_reasons(crops, cfg)
    scored = np.array(sorted(quality), dtype=np.int64)
    outlier = mad_low_outliers(np.array([quality[t] for t in scored.tolist()]), cfg.serfiq.mad_k)
    for t, out in zip(scored.tolist(), outlier.tolist()):
        reason[t] = "serfiq_outlier" if out and cfg.serfiq.exclude_outliers else "clustered"
    clusterable = np.array([reason[int(t)] == "clustered" for t in track_of_crop], dtype=bool)
    release_memory()  # SER-FIQ's dropout masks and copies are freed; finetuning comes next (issue 13, vcn.heap)
    return _Prepared(track_ids, crop_ids, track_of_crop, images, base, quality, reason, clusterable,
                     _track_torsos(crops), _same_setup_pairs(crops, cfg), _crop_poses(crops, good))


# A nose one half eye-span outside the eyes' span is a clear profile; beyond it the eye points of a full profile or a
# back of the head nearly coincide and the offset grows without meaning, so ssl.pose_pairs reads it capped here.
POSE_CAP = 1.0


def _crop_poses(crops: pa.Table, rows: np.ndarray) -> np.ndarray:
    """The pose of the crops at `rows`: vcn.faces.align.nose_offset of their landmarks, capped at POSE_CAP."""
    if len(rows) == 0:
        return np.zeros(0)
    landmarks = np.stack(crops.column("landmarks").take(pa.array(rows)).to_numpy(zero_copy_only=False))
    return np.minimum(nose_offset(landmarks), POSE_CAP)


def _same_setup_pairs(crops: pa.Table, cfg: RunConfig) -> list[tuple[int, int]]:
    """vcn.clustering.setups' pairs; a crops table without frame looks (stage 1 before vcn stored them) has none,
    and where the options would read them the user is told how to get them."""
    # Only the looks' lengths are read here (no copy of the looks): same_setup_pairs reads them once.
    if (cfg.cluster.join_same_setup or cfg.ssl.train_same_setup) and crops.num_rows and (
            "frame_look" not in crops.column_names
            or not pc.max(pc.binary_length(crops.column("frame_look"))).as_py()):
        video = crops.column("video_id")[0].as_py()
        warnings.warn(f"{video}: its crops carry no frame look (a crops table made before vcn stored frame_look), "
                      "so cluster.join_same_setup and ssl.train_same_setup find no same-set-up tracks; re-run the "
                      "track stage with --force to get them")
    return same_setup_pairs(crops, cfg.shots.threshold)


def _track_torsos(crops: pa.Table) -> dict[int, np.ndarray]:
    """Track id -> the mean torso histogram of its crops that show the torso (every crop, gated or not: the
    clothes do not need a sharp face). Empty for a crops table made before stage 1 stored `torso_hist`."""
    if "torso_hist" not in crops.column_names:
        return {}
    column = crops.column("torso_hist").combine_chunks()
    shown = column.is_valid().to_numpy(zero_copy_only=False)
    if not shown.any():
        return {}
    hists = column.flatten().to_numpy().reshape(int(shown.sum()), -1)  # nulls hold no values
    ids, means = group_means(hists, crops.column("track_id").to_numpy()[shown])
    return {int(t): m for t, m in zip(ids.tolist(), means.astype(np.float32))}


def _gate_reasons(crops: pa.Table, cfg: RunConfig) -> dict[int, str]:
    """Why each track would be Unknown if no crop of it passed the stage-1 gate: too_small when none of its
    crops reaches quality.min_face_px, else too_blurred (tracks with a good crop are overwritten later)."""
    tracks = crops.column("track_id").to_numpy()
    big = crops.column("face_px").to_numpy() >= cfg.quality.min_face_px
    ids = np.unique(tracks)
    any_big = np.zeros(len(ids), bool)
    np.logical_or.at(any_big, np.searchsorted(ids, tracks), big)
    return {int(t): "too_blurred" if b else "too_small" for t, b in zip(ids.tolist(), any_big.tolist())}


def _cannot_link(crops: pa.Table, cfg: RunConfig, frames: dict[int, np.ndarray] | None) -> set[tuple[int, int]]:
    if not cfg.cluster.cannot_link:
        return set()
    if frames is None:
        # Without the detections, the sampled crops' frames are the co-occurrence evidence we have.
        t = crops.column("track_id").to_numpy()
        f = crops.column("frame").to_numpy()
        frames = {int(k): f[t == k] for k in np.unique(t)}
    return cooccurring_pairs(frames)


def check_stage2_settings(cfg: RunConfig) -> None:
    """VcnError for a named choice of stages 2-3 that is unknown (vcn.pipeline.check_settings runs it up front)."""
    if cfg.cluster.method not in METHODS:
        raise VcnError(f"cluster.method={cfg.cluster.method!r} is unknown; choose one of {', '.join(METHODS)}")
    if cfg.cluster.metric not in ("loss", "cosine"):
        raise VcnError(f"cluster.metric={cfg.cluster.metric!r} is unknown; choose one of loss, cosine")
    if cfg.cluster.merge_rule not in MERGE_RULES:
        raise VcnError(f"cluster.merge_rule={cfg.cluster.merge_rule!r} is unknown; choose one of "
                       f"{', '.join(MERGE_RULES)}")
    if cfg.cluster.merge_order not in MERGE_ORDERS:
        raise VcnError(f"cluster.merge_order={cfg.cluster.merge_order!r} is unknown; choose one of "
                       f"{', '.join(MERGE_ORDERS)}")
    if cfg.match.method not in MATCH_METHODS:
        raise VcnError(f"match.method={cfg.match.method!r} is unknown; choose one of {', '.join(MATCH_METHODS)}")
    if cfg.cluster.join_nearest_clusters not in JOIN_NEAREST_SPACES:
        raise VcnError(f"cluster.join_nearest_clusters={cfg.cluster.join_nearest_clusters!r} is unknown; choose one "
                       f"of {', '.join(JOIN_NEAREST_SPACES)}")
    if cfg.ssl.backbone_layers not in BACKBONE_LAYERS:
        raise VcnError(f"ssl.backbone_layers={cfg.ssl.backbone_layers!r} is unknown; choose one of "
                       f"{', '.join(BACKBONE_LAYERS)}")
    if cfg.cluster.consensus_finetunes < 1:
        raise VcnError(f"cluster.consensus_finetunes={cfg.cluster.consensus_finetunes} must be 1 or more (1: one "
                       f"finetune, no consensus)")


def _labels_for_tracks(method: str, cfg: RunConfig, track_of_crop: np.ndarray, embeddings: np.ndarray,
                       p: torch.Tensor | None, l: torch.Tensor | None,
                       cannot_link: set[tuple[int, int]]) -> dict[int, int]:
    """Cluster the clusterable crops' tracks; returns track id -> cluster label (-1 for DBSCAN noise)."""
    if len(track_of_crop) == 0:
        return {}
    if method == "vcn":
        if cfg.cluster.metric == "cosine":
            p, l = (torch.as_tensor(v) for v in cosine_vectors(embeddings))
        result = algorithm1(p, l, track_of_crop, cfg.cluster.max_iterations, cannot_link, cfg.cluster.merge_rule,
                            cfg.cluster.merge_order)
        return dict(zip(result.track_ids.tolist(), result.labels.tolist()))
    ids, labels = cluster_with_baseline(method, embeddings, track_of_crop, cfg.cluster)
    return dict(zip(ids.tolist(), labels.tolist()))


def _clusters_table(video_id: str, prep: _Prepared, labels: dict[int, int]) -> pa.Table:
    rows = []
    next_singleton = max(labels.values(), default=-1) + 1
    for t in prep.track_ids.tolist():
        reason = prep.reason[t]
        cid = labels.get(t, -1) if reason == "clustered" else -1
        if reason == "clustered" and cid < 0:
            # DBSCAN noise: a track of its own rather than Unknown, since the face itself passed every gate.
            cid, next_singleton = next_singleton, next_singleton + 1
        rows.append({"video_id": video_id, "track_id": t, "cluster_id": cid,
                     "track_quality": prep.quality.get(t, float("nan")), "reason": reason})
    return make_table("clusters", rows) if rows else empty_table("clusters")


def _embeddings_table(video_id: str, prep: _Prepared, named: list[tuple[str, torch.Tensor]]) -> pa.Table:
    parts = []
    n = len(prep.crop_ids)
    for model, emb in named:
        if n == 0:
            continue
        parts.append(make_table("embeddings", {
            "video_id": [video_id] * n, "crop_id": prep.crop_ids, "track_id": prep.track_of_crop,
            "model": [model] * n, "embedding": list(emb.numpy().astype(np.float32)),
        }))
    return concat_parts("embeddings", parts)


@dataclass
class FinetunedVideo:
    """One video after stage 2: what every clustering of it needs, so several can share one finetune."""

    prep: _Prepared
    tuned: torch.Tensor                  # finetuned (teacher backbone) embedding of every good crop
    trainer: SelfDistillation | None     # None when no crop passed the quality gate
    matches: list[dict[int, list[int]]]  # coarse matches in the order used: on the base embeddings first where
                                         # ssl.match_base_first, then after each round but the last
    timings: dict[str, float]
    name: str                            # the backbone's name, for the embeddings table
    _loss_terms: tuple[torch.Tensor, torch.Tensor] | None = None

    def loss_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher probabilities p and student log-probabilities l (Eq. 2 terms) of the clusterable crops,
        computed on first use: only Algorithm 1 with the loss needs them. The teacher's part starts from the
        finetuned embeddings, which are its backbone's outputs: one backbone pass over the crops fewer."""
        if self._loss_terms is None:
            keep = self.prep.clusterable
            self._loss_terms = self.trainer.probs_and_log_probs(_clusterable_images(self.prep), self.tuned[keep])
            self.trainer.forget_front()
        return self._loss_terms


def _clusterable_images(prep: _Prepared) -> torch.Tensor:
    """The clusterable crops' images: `prep.images` itself when every good crop is clusterable (the default), so
    the trainer recognises the crops it finetunes on and reuses its kept front (vcn.ssl.train)."""
    return prep.images if prep.clusterable.all() else prep.images[prep.clusterable]


# Coarse matching between rounds: (teacher embeddings of the clusterable crops, their tracks) -> matches.
Matcher = Callable[[np.ndarray, np.ndarray], dict[int, list[int]]]


def finetune_video(crops: pa.Table, backbone: nn.Module, cfg: RunConfig,
                   cannot_link: set[tuple[int, int]] | None = None, matcher: Matcher | None = None,
                   prep: _Prepared | None = None) -> FinetunedVideo:
    """Stage 2 on one video: SER-FIQ gate, then finetuning rounds alternating with coarse track matching.

    `matcher` replaces the coarse matching (METHOD.md) between rounds; benchmarks use it to measure what
    perfect matches would give. `prep`: the gated crops and base embeddings of an earlier finetune of the same
    crops (they do not depend on ssl.seed), so another finetune skips them. `backbone` is not modified.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    prep = prep if prep is not None else _prepare(crops, backbone, cfg, timings)
    name = str(getattr(backbone, "name", "backbone"))
    found: list[dict[int, list[int]]] = []
    if len(prep.crop_ids) == 0:
        timings["stage2_s"] = time.perf_counter() - t_start
        return FinetunedVideo(prep, prep.base, None, found, timings, name)

    clusterable = prep.clusterable
    if matcher is None:
        def matcher(emb: np.ndarray, track_of_crop: np.ndarray) -> dict[int, list[int]]:
            return find_matches(emb, track_of_crop, cfg.match, cannot_link).as_dict()
    timings["match_s"] = 0.0

    # ssl.train_same_setup: tracks at one spot of one camera set-up in two shots train as matched in every round.
    same_setup = prep.same_setup if cfg.ssl.train_same_setup else []

    def match(embed: Callable[[], torch.Tensor]) -> dict[int, list[int]]:
        """Coarse matches of the clusterable crops' tracks on `embed()`'s embeddings, recorded and timed (the
        same-set-up pairs added to what the rounds train on, not to the record)."""
        tm = time.perf_counter()
        emb = embed().numpy()
        matches = matcher(emb, prep.track_of_crop[clusterable]) if clusterable.any() else {}
        found.append(matches)
        timings["match_s"] += time.perf_counter() - tm
        return with_pairs(matches, same_setup)

    def match_fn(trainer: SelfDistillation) -> dict[int, list[int]]:
        return match(lambda: trainer.teacher_embeddings(_clusterable_images(prep)))

    # ssl.match_base_first: the same matching on the base embeddings, before the first round.
    within_tracks = with_pairs({}, same_setup)     # no coarse matches: pairs within tracks (and same-set-up ones)
    first = match(lambda: prep.base[clusterable]) if cfg.ssl.match_base_first and clusterable.any() else within_tracks
    # ssl.base_first_warmup_only: those matches for the heads-only warm-up only; round 1 as without them.
    after_warmup = within_tracks if cfg.ssl.match_base_first and cfg.ssl.base_first_warmup_only else None

    t0 = time.perf_counter()
    # Training every layer (ssl.backbone_layers=all), the micro-batches' freed activations go back to the OS before
    # each no-gradient pass of the backbone (the teacher's at every step, the embeddings): otherwise they stay
    # resident under that pass's own 64-crop activations, then the peak of the whole run (issue 13, vcn.heap).
    # Same numbers, only where memory lives. With the default low_res cut no such pass runs (vcn.heap says why
    # that is left so).
    with trim_before_no_grad_passes(type(backbone)):
        trainer = finetune(backbone, prep.images, prep.track_of_crop, cfg.ssl, match_fn=match_fn, first_matches=first,
                           after_warmup_matches=after_warmup, base_embeddings=prep.base, cannot_link=cannot_link,
                           pose_of_crop=prep.pose if cfg.ssl.pose_pairs > 0 else None)
        for log in trainer.logs:
            key = f"finetune_round{log.round + 1}_{log.kind}_s"
            timings[key] = timings.get(key, 0.0) + log.seconds
        timings["finetune_s"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        tuned = trainer.teacher_embeddings(prep.images)
    timings["embed_finetuned_s"] = time.perf_counter() - t1
    timings["stage2_s"] = time.perf_counter() - t_start
    return FinetunedVideo(prep, tuned, trainer, found, timings, name)


def finetune_and_cluster(crops: pa.Table, backbone: nn.Module, cfg: RunConfig, video_id: str,
                         cannot_link_frames: dict[int, np.ndarray] | None = None
                         ) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """The full method on one video: `finetune_video`, then clustering (Algorithm 1 by default, or a
    baseline on the finetuned embeddings).

    `cannot_link_frames` (track id -> frames with a detection of it) is used when cluster.cannot_link is on;
    two tracks sharing a frame are then never matched or merged. `backbone` is not modified.
    Returns (clusters table, embeddings table, seconds per step).
    """
    check_stage2_settings(cfg)
    cannot_link = _cannot_link(crops, cfg, cannot_link_frames)
    ft = finetune_video(crops, backbone, cfg, cannot_link)
    clusters = cluster_finetuned(ft, cfg, video_id, cannot_link)
    embeddings = _embeddings_table(video_id, ft.prep, [(ft.name, ft.prep.base), (f"{ft.name}+finetuned", ft.tuned)])
    timings, prep = ft.timings, ft.prep
    runs = [clusters]
    for k in range(1, cfg.cluster.consensus_finetunes):
        # The previous trainer and its loss terms go back to the OS first: the peak stays one finetune's.
        del ft
        release_memory()
        seeded = dataclasses.replace(cfg, ssl=dataclasses.replace(cfg.ssl, seed=cfg.ssl.seed + k))
        ft = finetune_video(crops, backbone, seeded, cannot_link, prep=prep)
        runs.append(cluster_finetuned(ft, seeded, video_id, cannot_link))
        for key, seconds in ft.timings.items():
            timings[key] = timings.get(key, 0.0) + seconds
    if len(runs) > 1:
        t0 = time.perf_counter()
        clusters = _consensus_table(runs, cannot_link)
        timings["cluster_s"] += time.perf_counter() - t0
    timings["total_s"] = timings.get("stage2_s", 0.0) + timings.get("cluster_s", 0.0)
    return clusters, embeddings, timings


def _consensus_table(runs: list[pa.Table], cannot_link: set[tuple[int, int]]) -> pa.Table:
    """The first run's clusters table with the consensus of every run's clusters (cluster.consensus_finetunes)."""
    labelings = [dict(zip(t.column("track_id").to_pylist(), t.column("cluster_id").to_pylist())) for t in runs]
    ids = list(consensus_clusters(labelings, cannot_link).values())
    return runs[0].set_column(runs[0].schema.get_field_index("cluster_id"), "cluster_id",
                              pa.array(ids, runs[0].schema.field("cluster_id").type))


def cluster_finetuned(ft: FinetunedVideo, cfg: RunConfig, video_id: str,
                      cannot_link: set[tuple[int, int]] = frozenset()) -> pa.Table:
    """Stage 3 on a finetuned video: cfg.cluster.method (and metric) on its clusterable tracks -> clusters table.

    Adds `cluster_s` to ft.timings (including the Eq. 2 terms the first time Algorithm 1 needs them)."""
    check_stage2_settings(cfg)
    t0 = time.perf_counter()
    mask = ft.prep.clusterable
    if not mask.any():
        labels = {}
    else:
        p = l = None
        if cfg.cluster.method == "vcn" and cfg.cluster.metric == "loss":
            # No-gradient passes of teacher and student over every crop: trimmed before each, as in finetuning.
            with trim_before_no_grad_passes(type(ft.trainer.teacher.backbone)):
                p, l = ft.loss_terms()
        emb, track_of_crop = ft.tuned[mask].numpy(), ft.prep.track_of_crop[mask]
        base = ft.prep.base[mask].numpy()
        labels = _labels_for_tracks(cfg.cluster.method, cfg, track_of_crop, emb, p, l, cannot_link)
        if cfg.cluster.method == "vcn":
            # The final join on the finetuned embeddings, then (cluster.join_base_matches) on the base ones, where
            # finetuning has not yet pushed one person's never-matched pieces apart.
            spaces = ([emb] if cfg.cluster.join_final_matches else []) + (
                [base] if cfg.cluster.join_base_matches else [])
            for space in spaces:
                m = find_matches(space, track_of_crop, cfg.match, cannot_link)
                labels = join_matched_clusters(
                    labels, matched_pairs_nearest_first(m.matched, m.track_ids, space, track_of_crop), cannot_link)
        if cfg.cluster.method == "vcn" and cfg.cluster.join_below_chance:
            if p is None:       # metric cosine: Algorithm 1's distance is the cosine (cosine_vectors)
                p, l = (torch.as_tensor(v) for v in cosine_vectors(emb))
            labels = join_below_chance(labels, p.numpy(), l.numpy(), track_of_crop, cannot_link)
        if cfg.cluster.method == "vcn" and cfg.cluster.join_same_clothes:
            if not ft.prep.torso:
                warnings.warn(f"{video_id}: no crop has its torso colours (a crops table made before vcn stored "
                              "torso_hist, or only close-ups), so cluster.join_same_clothes joins nothing; for an "
                              "older table re-run the track stage with --force")
            labels = join_same_clothes(labels, ft.prep.torso, emb, track_of_crop, cannot_link)
        if cfg.cluster.method == "vcn" and cfg.cluster.join_same_setup:
            labels = join_matched_clusters(labels, ft.prep.same_setup, cannot_link)
        if cfg.cluster.method == "vcn" and cfg.cluster.join_nearest_clusters != "off":
            spaces = {"base": [base], "finetuned": [emb], "both": [base, emb]}[cfg.cluster.join_nearest_clusters]
            labels = join_nearest_clusters(labels, [(e, track_of_crop) for e in spaces], cannot_link)
    ft.timings["cluster_s"] = time.perf_counter() - t0
    return _clusters_table(video_id, ft.prep, labels)


def cluster_without_finetuning(crops: pa.Table, backbone: nn.Module, cfg: RunConfig, video_id: str,
                               cannot_link_frames: dict[int, np.ndarray] | None = None
                               ) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """The ablation: the same gates and clustering on the pretrained backbone, no finetuning.

    With cluster.method=vcn and metric=loss, Algorithm 1 runs on an untrained head (seeded, teacher =
    student, zero centre), the state finetuning would start from.
    """
    check_stage2_settings(cfg)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    prep = _prepare(crops, backbone, cfg, timings)
    name = str(getattr(backbone, "name", "backbone"))
    cannot_link = _cannot_link(crops, cfg, cannot_link_frames)
    t0 = time.perf_counter()
    mask = prep.clusterable
    p = l = None
    if cfg.cluster.method == "vcn" and cfg.cluster.metric == "loss" and mask.any():
        sets = cfg.ssl.prototype_sets
        head = make_head(prep.base.shape[1], cfg.ssl.head_hidden, cfg.ssl.head_bottleneck,
                         cfg.ssl.head_out * sets, cfg.ssl.seed).eval()
        with torch.no_grad():
            z = head(prep.base[mask])
        p, l = algorithm1_terms(z, z, torch.zeros(1, z.shape[1]), cfg.ssl.teacher_temp, cfg.ssl.student_temp, sets)
    labels = _labels_for_tracks(cfg.cluster.method, cfg, prep.track_of_crop[mask], prep.base[mask].numpy(),
                                p, l, cannot_link)
    timings["cluster_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    return _clusters_table(video_id, prep, labels), _embeddings_table(video_id, prep, [(name, prep.base)]), timings
