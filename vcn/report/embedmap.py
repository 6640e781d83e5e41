"""A 2-D map of face embeddings (t-SNE, else UMAP, else PCA) drawn as inline SVG, one colour per cluster."""

from __future__ import annotations

import html
import importlib.util

import numpy as np

from vcn.report.colours import cluster_hex

# t-SNE on more points than this takes minutes on a laptop and an SVG of them weighs megabytes; a seeded
# sample of this size shows the same structure.
MAX_POINTS = 2000
# Below this many points t-SNE's neighbourhoods are meaningless; PCA shows the spread honestly.
MIN_TSNE_POINTS = 12


def available_method() -> str:
    """The best projection installed here: tsne (scikit-learn), umap (umap-learn) or pca (numpy only)."""
    if importlib.util.find_spec("sklearn") is not None:
        return "tsne"
    if importlib.util.find_spec("umap") is not None:
        return "umap"
    return "pca"


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pca_2d(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def project_2d(embeddings: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D positions of L2-normalised embeddings [n, d] and the method used (cosine geometry throughout)."""
    x = _normalise(embeddings)
    method = available_method() if method == "auto" else method
    if method != "pca" and len(x) < MIN_TSNE_POINTS:
        method = "pca"
    if method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        if x.shape[1] > 50:
            # The usual t-SNE preprocessing: 50 principal components keep the neighbourhoods and cut the cost.
            x = PCA(n_components=min(50, len(x)), random_state=seed).fit_transform(x)
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, (len(x) - 1) / 3.0))
        # One OpenMP thread: measured here, Barnes-Hut t-SNE of 2,000 points took 7 s on one thread and 57 s
        # with the default pool on a busy 2-core machine (threads spin waiting for each other).
        with threadpool_limits(limits=1):
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
        return np.asarray(xy, np.float64), "t-SNE"
    if method == "umap":
        import umap

        xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
        return np.asarray(xy, np.float64), "UMAP"
    if method != "pca":
        raise ValueError(f"unknown projection {method!r}; use auto, tsne, umap or pca")
    return pca_2d(x), "PCA"


def sample_points(n: int, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `limit` of n points, the same on every run."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def map_svg(xy: np.ndarray, labels: np.ndarray, tips: list[str] | None = None, width: int = 640,
            height: int = 420, title: str = "") -> str:
    """Inline SVG: one circle per point, grouped per label (one colour and tooltip per group).

    Integer coordinates keep the file small; a point's group carries data-cluster so tests can find it.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    labels = np.asarray(labels, np.int64)
    pad = 12
    if len(xy):
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        scale = min((width - 2 * pad) / span[0], (height - 2 * pad) / span[1])
        centre = (lo + hi) / 2
        px = (xy - centre) * scale + np.array([width / 2, height / 2])
    else:
        px = xy
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{html.escape(title)}" class="embmap">',
             f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>']
    # Unknown first so the clusters are drawn on top of it.
    for label in sorted(np.unique(labels).tolist(), key=lambda c: (c >= 0, c)):
        sel = np.flatnonzero(labels == label)
        name = "Unknown" if label < 0 else f"cluster {label}"
        tip = tips[sel[0]] if tips else name
        circles = "".join(f'<circle cx="{round(px[i, 0])}" cy="{round(px[i, 1])}" r="3"/>' for i in sel)
        opacity = "0.45" if label < 0 else "0.85"
        parts.append(f'<g data-cluster="{label}" fill="{cluster_hex(label)}" fill-opacity="{opacity}">'
                     f'<title>{html.escape(tip)} ({len(sel)} crops)</title>{circles}</g>')
    parts.append("</svg>")
    return "".join(parts)
