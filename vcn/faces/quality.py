"""Quality gates of stage 1 (METHOD.md 1.3): crops that are too small or too blurred are labelled Unknown."""

from __future__ import annotations

import cv2
import numpy as np

from vcn.config import QualityGateConfig


def blur_variance(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (BGR or grey uint8); low means blurred (Pech-Pacheco 2000)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def passes_gate(face_px, blur_var, cfg: QualityGateConfig | None = None):
    """True where the face is big enough (shorter box side, pixels) and sharp enough; works on scalars and arrays."""
    cfg = cfg or QualityGateConfig()
    ok = (np.asarray(face_px) >= cfg.min_face_px) & (np.asarray(blur_var) >= cfg.min_blur_var)
    return bool(ok) if np.ndim(ok) == 0 else ok
