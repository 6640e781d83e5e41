"""Face quality by SER-FIQ (stochastic embedding robustness) and the MAD low-outlier filter on track quality."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def serfiq_from_embeddings(embeddings: torch.Tensor, passes: int = 100, dropout: float = 0.5,
                           generator: torch.Generator | None = None, chunk: int = 64) -> np.ndarray:
    """SER-FIQ quality per crop from its (deterministic) embedding [N, d].

    The m stochastic passes differ only in the dropout mask at the embedding layer, so the backbone runs
    once and dropout is applied to its output m times (METHOD.md: m = 100, p = 0.5). Quality =
    2 * sigmoid(-mean pairwise Euclidean distance of the m L2-normalised embeddings), in (0, 1]; higher
    means the identity survives dropout, i.e. a better face.
    """
    e = embeddings.detach().float().cpu()
    n = e.shape[0]
    out = np.zeros(n, dtype=np.float32)
    if n == 0:
        return out
    if passes < 2:
        raise ValueError("SER-FIQ needs at least 2 passes")
    for i in range(0, n, chunk):
        x = e[i:i + chunk]
        keep = torch.rand((x.shape[0], passes, x.shape[1]), generator=generator) >= dropout
        # Inverted dropout scaling; it cancels under L2 normalisation but is kept to match nn.Dropout.
        stoch = F.normalize(x[:, None, :] * keep / (1.0 - dropout), dim=-1)
        dist = torch.cdist(stoch, stoch)                     # [B, m, m]
        mean_dist = dist.sum(dim=(1, 2)) / (passes * (passes - 1))
        out[i:i + chunk] = (2 * torch.sigmoid(-mean_dist)).numpy()
    return out


def track_quality(crop_quality: np.ndarray, track_of_crop: np.ndarray) -> dict[int, float]:
    """Track quality = mean of its crops' qualities."""
    crop_quality = np.asarray(crop_quality, dtype=np.float64)
    track_of_crop = np.asarray(track_of_crop)
    return {int(t): float(crop_quality[track_of_crop == t].mean()) for t in np.unique(track_of_crop)}


def mad_low_outliers(values: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Boolean mask of low outliers: value < median - k * 1.4826 * MAD (Leys et al. 2013).

    With MAD = 0 (half the values or more equal) the spread is unknown and nothing is flagged.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=bool)
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    if mad <= 0:
        return np.zeros(v.shape, dtype=bool)
    return v < med - k * 1.4826 * mad
