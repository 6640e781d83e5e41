"""A frame's look: a thumbnail in the colours the shot detector compares, to tell one camera set-up from another.

PySceneDetect's ContentDetector calls two consecutive frames one shot while the mean absolute difference of their
hue, saturation and value stays under `ShotConfig.threshold` (27). The same test between a frame of one shot and a
frame of another asks whether the detector would see a cut there: if not, the two shots are one camera set-up
(a dialogue cutting back to the same angle). The thumbnail is 32x18, area-averaged: 1,728 bytes a crop, and enough
to tell set-ups apart (on the labelled clips, the frames of one person at one spot of the picture in two shots
differed by 4-26 where the shots were one set-up, those of two people at one spot by 30 or more;
docs/measurements.md "One camera set-up, one spot").
"""

from __future__ import annotations

import cv2
import numpy as np

LOOK_SIZE = (32, 18)   # width, height
LOOK_BYTES = LOOK_SIZE[0] * LOOK_SIZE[1] * 3


def frame_look(picture_bgr: np.ndarray) -> np.ndarray:
    """uint8 [18, 32, 3]: the picture area-averaged to 32x18, in OpenCV's HSV (as ContentDetector scores)."""
    small = cv2.resize(picture_bgr, LOOK_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2HSV)


def look_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two looks over hue, saturation and value: ContentDetector's frame score."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())
