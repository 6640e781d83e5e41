"""The two model interfaces every detector and face-ID backbone in vcn implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Faces:
    """Detections of one frame, in that frame's pixel coordinates."""

    boxes: np.ndarray      # float32 [n, 4]: x1, y1, x2, y2
    scores: np.ndarray     # float32 [n]
    landmarks: np.ndarray  # float32 [n, 5, 2]: left eye, right eye, nose, left mouth, right mouth

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> "Faces":
        return Faces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


class Detector(Protocol):
    """Finds faces in a batch of frames. Frames are BGR uint8 [N, H, W, 3] (OpenCV's convention, used throughout vcn)."""

    name: str
    version: str

    def detect(self, frames: np.ndarray) -> list[Faces]: ...


# A face-ID backbone is a torch.nn.Module with attributes `name`, `version`, `embedding_dim`, whose forward takes
# aligned crops as float32 [B, 3, 112, 112], BGR, values 0..255 (the module does its own normalisation) and returns
# unnormalised embeddings [B, embedding_dim]. It is trainable (stage 2 finetunes it).
