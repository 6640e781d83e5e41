"""How far a face is turned: the nose's offset from the eyes' midpoint, from RetinaFace's five landmarks.

The splits vcn leaves on real footage are mostly a person's profile pieces kept apart from their frontal ones
(docs/measurements.md "The splits left are profiles"); this is the measure that finding and
cluster.clothes_profiles_only read.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# DECISION: a face is a profile when the nose lies outside the span between the eyes (offset above 0.5): a
# geometric line, not one fitted to any video.
PROFILE = 0.5


def nose_offset(landmarks: np.ndarray) -> np.ndarray:
    """[N, 10] five-point landmarks (left eye, right eye, nose, mouth corners; x, y each) -> [N] |t - 0.5|, t the
    nose's position along the left-to-right eye vector: 0 between the eyes, 0.5 at either eye, whatever the roll."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    eyes = lm[:, 1] - lm[:, 0]
    t = np.einsum("nd,nd->n", lm[:, 2] - lm[:, 0], eyes) / np.maximum(np.einsum("nd,nd->n", eyes, eyes), 1e-6)
    return np.abs(t - 0.5)


def track_poses(crops: pa.Table) -> dict[int, float]:
    """Track id -> the median nose offset of its quality-gated crops (the crops that are clustered)."""
    ok = crops.filter(crops["quality_ok"])
    if not ok.num_rows:
        return {}
    offset = nose_offset(np.stack(ok["landmarks"].to_numpy(zero_copy_only=False)))
    track = ok["track_id"].to_numpy()
    return {int(t): float(np.median(offset[track == t])) for t in np.unique(track)}


def cluster_is_profile(tracks: list[int], poses: dict[int, float]) -> bool:
    """A cluster is a profile when the median of its tracks' poses is above PROFILE (tracks without a pose skipped)."""
    known = [poses[t] for t in tracks if t in poses]
    return bool(known) and float(np.median(known)) > PROFILE
