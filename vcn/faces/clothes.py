"""What a person wears under the face: a colour histogram of the torso below each crop's face box.

Within one video a person mostly keeps their clothes, and two people seen side by side rarely dress alike; the
face-ID backbone cannot use that, so stage 1 stores this descriptor per crop (the crops table's `torso_hist`) and
stage 3 may join clusters by it (vcn.clustering.clothes, cluster.join_same_clothes).
"""

from __future__ import annotations

import cv2
import numpy as np

# DECISION: hue x saturation x value bins (OpenCV's HSV: hue 0-180). Hue carries most of a garment's identity;
# coarse saturation and value keep black, white and grey clothes apart without splitting one garment by its shading.
HSV_BINS = (12, 4, 4)
TORSO_BINS = int(np.prod(HSV_BINS))
# DECISION: the torso region in face-box units: 1.8 box widths wide, centred under the face, from 0.2 box heights
# below the chin (past the neck) to 1.4 below it. Used only where at least 0.8 box widths x 0.4 box heights of it
# lie inside the frame (a close-up's chest is out of frame: no descriptor rather than a sliver of collar).
TORSO_WIDTH, TORSO_TOP, TORSO_BOTTOM = 1.8, 0.2, 1.4
MIN_VISIBLE_WIDTH, MIN_VISIBLE_HEIGHT = 0.8, 0.4


def torso_box(x1: float, y1: float, x2: float, y2: float, frame_width: int, frame_height: int
              ) -> tuple[int, int, int, int] | None:
    """The torso region (x1, y1, x2, y2 in whole pixels, inside the frame) under a face box, or None when too
    little of it is in the frame."""
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return None
    cx = (x1 + x2) / 2
    left, right = int(max(0.0, cx - TORSO_WIDTH / 2 * w)), int(min(float(frame_width), cx + TORSO_WIDTH / 2 * w))
    top, bottom = int(max(0.0, y2 + TORSO_TOP * h)), int(min(float(frame_height), y2 + TORSO_BOTTOM * h))
    if right - left < MIN_VISIBLE_WIDTH * w or bottom - top < MIN_VISIBLE_HEIGHT * h:
        return None
    return left, top, right, bottom


def torso_histogram(picture_bgr: np.ndarray, face_box: tuple[float, float, float, float]) -> np.ndarray | None:
    """The HSV colour histogram (float32, TORSO_BINS values summing to 1) of the torso under `face_box` in a BGR
    frame, or None when the torso is not in the frame."""
    box = torso_box(*face_box, picture_bgr.shape[1], picture_bgr.shape[0])
    if box is None:
        return None
    left, top, right, bottom = box
    hsv = cv2.cvtColor(np.ascontiguousarray(picture_bgr[top:bottom, left:right]), cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HSV_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bhattacharyya coefficients between histograms (rows of `a` and of `b`): 1 for equal colour distributions,
    0 for disjoint ones."""
    return np.sqrt(np.atleast_2d(a)) @ np.sqrt(np.atleast_2d(b)).T
