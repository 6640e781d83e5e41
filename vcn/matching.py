"""Coarse track matching between finetuning rounds: a Gaussian per track, compared in log-density (METHOD.md).

DECISION (METHOD.md leaves it open): embeddings are L2-normalised, projected by one PCA fitted on the whole
video to a low dimension (about the typical number of crops per track), and each track's covariance is the Ledoit-Wolf shrinkage estimate plus a small
variance floor (a fraction of the video's mean per-dimension variance). Shrinkage keeps 2-crop tracks
well-conditioned, the floor keeps a track of identical crops (zero scatter) finite, and log-densities
never underflow the way pdf values do in 30+ dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from vcn.chance import chance_closest
from vcn.clustering import mean_track_embeddings, pair_positions
from vcn.config import MatchConfig
from vcn.errors import VcnError


@dataclass
class TrackGaussians:
    """One multivariate normal per track, in the video's PCA space."""

    track_ids: np.ndarray      # int64 [T]
    means: np.ndarray          # float64 [T, p]
    chol: np.ndarray           # float64 [T, p, p]: lower Cholesky factors of the covariances
    log_det: np.ndarray        # float64 [T]
    thresholds: np.ndarray     # float64 [T]: mean of the lowest `low_fraction` own-crop log-pdfs


@dataclass
class TrackMatches:
    track_ids: np.ndarray
    log_pdf: np.ndarray        # [T, T]: log N_j(mean_k) at [k, j]
    thresholds: np.ndarray     # [T]
    matched: np.ndarray        # bool [T, T]: k matches j at [k, j] (diagonal False)

    def as_dict(self) -> dict[int, list[int]]:
        """track_id k -> the track ids j that k matches (the pairing sampler's input)."""
        return {int(self.track_ids[k]): [int(self.track_ids[j]) for j in np.flatnonzero(self.matched[k])]
                for k in range(len(self.track_ids))}


def fit_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-`dim` principal axes [d, dim] of the rows of x (at most rank(x) axes)."""
    mean = x.mean(axis=0)
    centred = x - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = int(min(dim, (s > s[0] * 1e-6).sum() if len(s) and s[0] > 0 else 0))
    return mean, vt[:max(keep, 1)].T


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf (2004) shrinkage covariance of the rows of x towards mu*I (mu = mean variance)."""
    n, p = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    delta = ((s - mu * np.eye(p)) ** 2).sum() / p
    if n < 2 or delta <= 0:
        return mu * np.eye(p)
    # beta_bar = (1/n^2) sum_k ||x_k x_k^T - S||_F^2 / p, written without forming the n outer products.
    sq = (xc ** 2).sum(axis=1)
    beta_bar = ((sq ** 2).sum() / n - (s ** 2).sum()) / (n * p)
    shrink = min(max(beta_bar, 0.0), delta) / delta
    return shrink * mu * np.eye(p) + (1 - shrink) * s


def _log_pdf(points: np.ndarray, mean: np.ndarray, chol: np.ndarray, log_det: float) -> np.ndarray:
    p = mean.shape[0]
    sol = np.linalg.solve(chol, (points - mean).T)          # L^-1 (x - mu), [p, n]
    maha = (sol ** 2).sum(axis=0)
    return -0.5 * (p * math.log(2 * math.pi) + log_det + maha)


def pca_dimension(track_of_crop: np.ndarray, cfg: MatchConfig) -> int:
    """Median crops per track - 1, clipped to [cfg.min_pca_dim, cfg.pca_dim] (see MatchConfig for why)."""
    _, counts = np.unique(np.asarray(track_of_crop), return_counts=True)
    typical = int(np.median(counts)) - 1 if len(counts) else cfg.min_pca_dim
    return int(np.clip(typical, cfg.min_pca_dim, max(cfg.pca_dim, cfg.min_pca_dim)))


def fit_track_gaussians(embeddings: np.ndarray, track_of_crop: np.ndarray, cfg: MatchConfig) -> TrackGaussians:
    """Project the video's embeddings (PCA) and fit one shrunk Gaussian and its own threshold per track."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    track_of_crop = np.asarray(track_of_crop)
    pca_mean, axes = fit_pca(x, pca_dimension(track_of_crop, cfg))
    y = (x - pca_mean) @ axes
    p = y.shape[1]
    floor = cfg.var_floor * max(float(y.var(axis=0).mean()), 1e-12)
    ids = np.unique(track_of_crop)
    means = np.zeros((len(ids), p))
    chol = np.zeros((len(ids), p, p))
    log_det = np.zeros(len(ids))
    thresholds = np.zeros(len(ids))
    for t, tid in enumerate(ids):
        pts = y[track_of_crop == tid]
        cov = ledoit_wolf(pts) + floor * np.eye(p)
        means[t] = pts.mean(axis=0)
        chol[t] = np.linalg.cholesky(cov)
        log_det[t] = 2 * np.log(np.diag(chol[t])).sum()
        own = np.sort(_log_pdf(pts, means[t], chol[t], log_det[t]))
        thresholds[t] = own[:max(1, math.ceil(cfg.low_fraction * len(own)))].mean()
    return TrackGaussians(ids.astype(np.int64), means, chol, log_det, thresholds)


def match_tracks(embeddings: np.ndarray, track_of_crop: np.ndarray, cfg: MatchConfig,
                 cannot_link: set[tuple[int, int]] | None = None) -> TrackMatches:
    """k matches j when log N_j(mean of k) >= j's own threshold (METHOD.md coarse matching).

    `cannot_link` holds (track_id, track_id) pairs that share a frame; such pairs never match.
    """
    g = fit_track_gaussians(embeddings, track_of_crop, cfg)
    n = len(g.track_ids)
    log_pdf = np.zeros((n, n))
    for j in range(n):
        log_pdf[:, j] = _log_pdf(g.means, g.means[j], g.chol[j], g.log_det[j])
    matched = log_pdf >= g.thresholds[None, :]
    np.fill_diagonal(matched, False)
    i, j = pair_positions(g.track_ids, cannot_link)
    matched[i, j] = matched[j, i] = False
    return TrackMatches(g.track_ids, log_pdf, g.thresholds, matched)


def _track_cosines(embeddings: np.ndarray, track_of_crop: np.ndarray, cannot_link: set[tuple[int, int]] | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, cosine similarity of the unit track means with a track against itself and pairs sharing a
    frame set to -inf, the cosine of each pair sharing a frame) for the rules that compare whole tracks."""
    ids, means = mean_track_embeddings(embeddings, np.asarray(track_of_crop))
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    sim = means @ means.T
    i, j = pair_positions(ids, cannot_link)
    shared_frame = sim[i, j]
    np.fill_diagonal(sim, -np.inf)
    sim[i, j] = sim[j, i] = -np.inf
    return ids, sim, shared_frame


class DifferentPeople(NamedTuple):
    """The track-mean distances of a video and the two at which it shows two different people, the bounds the
    matching rules stay below (`different_person_distances`)."""

    ids: np.ndarray                # sorted track ids
    sim: np.ndarray                # `_track_cosines`' similarities [T, T]
    dist: np.ndarray               # 1 - sim
    known_different: float         # distance of the closest pair of tracks sharing a frame (NaN without one)
    chance: float                  # how close two tracks come by chance (vcn.chance; NaN under two pairs)


def different_person_distances(embeddings: np.ndarray, track_of_crop: np.ndarray,
                               cannot_link: set[tuple[int, int]] | None) -> DifferentPeople:
    """The video's `DifferentPeople`, computed once for every rule of a matching that reads them."""
    ids, sim, shared_frame = _track_cosines(embeddings, track_of_crop, cannot_link)
    dist = 1.0 - sim
    known = 1.0 - float(shared_frame.max()) if len(shared_frame) else math.nan
    return DifferentPeople(ids, sim, dist, known, chance_closest(dist[np.triu_indices(len(ids), 1)]))


def first_neighbour_matches(embeddings: np.ndarray, track_of_crop: np.ndarray,
                            cannot_link: set[tuple[int, int]] | None = None) -> TrackMatches:
    """Alternative coarse matching (cfg.match.method = first_neighbour; not the paper's): each track matches
    its nearest other track by cosine of the mean embeddings, and that track matches it back.

    Parameter-free like the Gaussian rule but scale-free too: it links tracks whose looks differ by more
    than a track's own spread (a new photo, another scene), which the Gaussian rule cannot. It links every
    track to someone, so a person seen once is paired with a stranger: measured in benchmarks/clustering.py.
    """
    ids, sim, _ = _track_cosines(embeddings, track_of_crop, cannot_link)
    matched = np.zeros((len(ids), len(ids)), dtype=bool)
    for k in range(len(ids)):
        if np.isfinite(sim[k]).any():
            j = int(np.argmax(sim[k]))
            matched[k, j] = matched[j, k] = True
    return TrackMatches(ids.astype(np.int64), sim, np.full(len(ids), np.nan), matched)


def mutual_nearest_within_known_different(embeddings: np.ndarray, track_of_crop: np.ndarray,
                                          cannot_link: set[tuple[int, int]] | None,
                                          below_chance: bool = False, mutual: bool = True,
                                          people: DifferentPeople | None = None) -> TrackMatches:
    """Tracks that are each other's nearest track (cosine of mean embeddings, pairs sharing a frame excluded)
    and closer than the video's closest pair of tracks that share a frame: two faces seen together are two
    people, so that distance is one the video itself shows between different people. No match without such a
    pair (a video of one face per frame says nothing about how far apart its people are).

    below_chance: also closer than two of the video's tracks come by chance (vcn.chance over every pair of
    tracks not sharing a frame). A video with few faces seen together shows few different-person distances,
    and their closest may still be farther than two strangers who are each other's nearest (a montage of
    people seen once: docs/measurements.md "Accuracy").

    mutual=False: each track matches its nearest track under the same bound, whether or not it is that track's
    nearest too (a person seen in many shots is a chain of nearest tracks, of which "each other's nearest" keeps
    only the ends' pairs). `people`: `different_person_distances` of these arguments where the caller has it."""
    people = people or different_person_distances(embeddings, track_of_crop, cannot_link)
    ids, sim, dist, known_different, chance = people
    matched = np.zeros((len(ids), len(ids)), dtype=bool)
    if math.isnan(known_different):
        return TrackMatches(ids.astype(np.int64), sim, np.full(len(ids), np.nan), matched)
    if below_chance and not math.isnan(chance):
        known_different = min(known_different, chance)
    nearest = dist.argmin(axis=1)
    for k, n in enumerate(nearest.tolist()):
        if (nearest[n] == k or not mutual) and dist[k, n] < known_different:
            matched[k, n] = matched[n, k] = True
    return TrackMatches(ids.astype(np.int64), sim, np.full(len(ids), known_different), matched)


def closer_than_different_people(embeddings: np.ndarray, track_of_crop: np.ndarray,
                                  cannot_link: set[tuple[int, int]] | None,
                                  people: DifferentPeople | None = None) -> np.ndarray:
    """bool [T, T] over the sorted track ids: the pair's track means (cosine) are closer than at least one of the
    two distances at which the video shows different people, its closest pair of tracks seen in one frame and
    how close two of its tracks come by chance (vcn.chance). All True where the video gives neither.

    match.gaussian_within_bounds applies it to the Gaussian rule, which compares tracks in a PCA space of a few
    dimensions (about a track's crop count): there two people can overlap who are far apart in the full embedding
    (on the campaign video, two strangers at cosine 0.76 against bounds of 0.51 and 0.62). `people`: as in
    `mutual_nearest_within_known_different`."""
    _, _, dist, known_different, chance = people or different_person_distances(embeddings, track_of_crop, cannot_link)
    bounds = [b for b in (known_different, chance) if not math.isnan(b)]
    return dist < max(bounds) if bounds else np.ones_like(dist, dtype=bool)


MATCH_METHODS = ("gaussian", "first_neighbour", "gaussian_mutual", "gaussian_mutual_chance", "gaussian_nearest_chance")


def find_matches(embeddings: np.ndarray, track_of_crop: np.ndarray, cfg: MatchConfig,
                 cannot_link: set[tuple[int, int]] | None = None) -> TrackMatches:
    """Coarse matching by cfg.method: 'gaussian' (METHOD.md, the paper preset's), 'first_neighbour', or
    'gaussian_mutual' (the Gaussian matches plus mutual_nearest_within_known_different) or
    'gaussian_mutual_chance' (the same, the mutual matches also below the video's chance bound) or
    'gaussian_nearest_chance' (as 'gaussian_mutual_chance', each track's nearest matched whether mutual or not).
    cfg.gaussian_within_bounds keeps only the Gaussian matches closer than `closer_than_different_people`."""
    if cfg.method == "first_neighbour":
        return first_neighbour_matches(embeddings, track_of_crop, cannot_link)
    if cfg.method not in MATCH_METHODS:
        raise VcnError(f"match.method={cfg.method!r} is unknown; choose one of {', '.join(MATCH_METHODS)}")
    gaussian = match_tracks(embeddings, track_of_crop, cfg, cannot_link)
    with_nearest = cfg.method in ("gaussian_mutual", "gaussian_mutual_chance", "gaussian_nearest_chance")
    # Both rules read the same track-mean distances (a T x T product and the chance bound): computed once.
    people = (different_person_distances(embeddings, track_of_crop, cannot_link)
              if cfg.gaussian_within_bounds or with_nearest else None)
    if cfg.gaussian_within_bounds:
        gaussian.matched &= closer_than_different_people(embeddings, track_of_crop, cannot_link, people)
    if with_nearest:
        nearest = mutual_nearest_within_known_different(embeddings, track_of_crop, cannot_link,
                                                        below_chance=cfg.method.endswith("_chance"),
                                                        mutual=cfg.method != "gaussian_nearest_chance",
                                                        people=people)
        gaussian.matched |= nearest.matched
    return gaussian
