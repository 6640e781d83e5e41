"""Align a face to the 112x112 ArcFace template from its 5 landmarks (similarity transform, least squares), and
read its pose from them."""

from __future__ import annotations

import cv2
import numpy as np

# insightface's arcface_dst for 112x112: left eye, right eye, nose tip, left and right mouth corners
# (left/right as seen in the image).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)


def template(size: int = 112) -> np.ndarray:
    """The template's 5 points for a square crop of `size` pixels (scaled from 112)."""
    return ARCFACE_TEMPLATE * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation mapping src points to dst, least squares (Umeyama 1991).

    Least squares over all 5 points (as insightface's norm_crop does via skimage) rather than a robust fit:
    with 5 points a RANSAC/LMedS fit can drop a landmark and tilt the crop.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0  # forbid reflections
    rotation = u @ np.diag(sign) @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = (sigma * sign).sum() / var_s if var_s > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def align_face(frame: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned size x size BGR crop of the face whose 5 landmarks (frame pixels, [5, 2] or [10]) are given."""
    matrix = similarity_transform(landmarks5, template(size))
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def nose_offset(landmarks: np.ndarray) -> np.ndarray:
    """[N, 10] five-point landmarks -> [N] |t - 0.5|, t the nose's position along the left-to-right eye vector:
    0 with the nose between the eyes (frontal), 0.5 at either eye, above 0.5 outside their span (a profile).
    Full profiles and backs of heads, whose eye points nearly coincide, give large values."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    eyes = lm[:, 1] - lm[:, 0]
    t = np.einsum("nd,nd->n", lm[:, 2] - lm[:, 0], eyes) / np.maximum(np.einsum("nd,nd->n", eyes, eyes), 1e-6)
    return np.abs(t - 0.5)
