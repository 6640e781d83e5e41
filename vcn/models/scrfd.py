"""SCRFD face detector from an insightface pack, run with onnxruntime: letterbox, anchor-free decoding, NMS."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from vcn.errors import VcnError
from vcn.models.cache import file_sha256
from vcn.models.onnx_session import onnx_session
from vcn.models.types import Faces

# SCRFD exports put all score maps first, then all box maps, then all landmark maps, one per stride.
STRIDES_BY_OUTPUT_COUNT = {9: (8, 16, 32), 15: (8, 16, 32, 64, 128)}
NO_LANDMARK_OUTPUT_COUNTS = (6, 10)
# insightface's SCRFD preprocessing: RGB, (x - 127.5) / 128.
INPUT_MEAN = 127.5
INPUT_STD = 128.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: the same suppression RetinaFace uses, shared rather than written twice."""
    from vcn.models.retinaface import nms as greedy_nms

    return greedy_nms(boxes, scores, iou_threshold)


def _anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    centers = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    # Anchors of one location are adjacent rows in SCRFD's outputs.
    return np.repeat(centers, num_anchors, axis=0)


class SCRFDDetector:
    """The Detector protocol over an SCRFD ONNX file (insightface's det_10g, det_2.5g, ...)."""

    name = "scrfd"

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 max_side: int = 640):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise VcnError(f"SCRFD model {model_path} does not exist; check the model pack folder")
        self.model_path = model_path
        self.version = file_sha256(model_path)[:12]
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.session = onnx_session(str(model_path))
        image_input = self.session.get_inputs()[0]
        self.input_name = image_input.name
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        if len(outputs) in NO_LANDMARK_OUTPUT_COUNTS:
            raise VcnError(f"{model_path} is an SCRFD detector without landmark outputs; vcn aligns faces by 5 "
                           "landmarks, so use a *_kps model (e.g. insightface's det_10g.onnx)")
        if len(outputs) not in STRIDES_BY_OUTPUT_COUNT:
            raise VcnError(f"{model_path} has {len(outputs)} outputs; an SCRFD detector has 9 or 15")
        self.strides = STRIDES_BY_OUTPUT_COUNT[len(outputs)]
        batch, _, height, width = image_input.shape
        # Fixed H/W (some exports) means every frame is letterboxed into exactly that size.
        self.fixed_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        # Rank-2 outputs ([anchors, C]) or a fixed batch of 1 mean one frame per run.
        self.batched = len(outputs[0].shape) == 3 and not (isinstance(batch, int) and batch == 1)

    def _input_size(self, height: int, width: int) -> tuple[float, int, int]:
        """Scale factor and padded input size (H, W) for frames of this size."""
        if self.fixed_size is not None:
            in_h, in_w = self.fixed_size
            return min(in_h / height, in_w / width), in_h, in_w
        scale = 1.0
        if self.max_side > 0 and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
        step = max(self.strides)
        new_h, new_w = round(height * scale), round(width * scale)
        return scale, -(-new_h // step) * step, -(-new_w // step) * step

    def _blob(self, frames: np.ndarray, scale: float, in_h: int, in_w: int) -> np.ndarray:
        n, height, width = frames.shape[:3]
        new_h, new_w = min(round(height * scale), in_h), min(round(width * scale), in_w)
        blob = np.zeros((n, in_h, in_w, 3), np.float32)  # black padding right and bottom, as insightface pads
        for i, frame in enumerate(frames):
            resized = frame if (new_h, new_w) == (height, width) else cv2.resize(frame, (new_w, new_h))
            blob[i, :new_h, :new_w] = resized[:, :, ::-1]
        blob = (blob - INPUT_MEAN) / INPUT_STD
        return np.ascontiguousarray(blob.transpose(0, 3, 1, 2))

    def _run(self, blob: np.ndarray) -> list[list[np.ndarray]]:
        """Raw outputs per frame: a list (one per frame) of the 3 x len(strides) output maps, each [anchors, C]."""
        if self.batched:
            outs = self.session.run(self.output_names, {self.input_name: blob})
            return [[o[i] for o in outs] for i in range(len(blob))]
        per_frame = []
        for i in range(len(blob)):
            outs = self.session.run(self.output_names, {self.input_name: blob[i:i + 1]})
            per_frame.append([o[0] if o.ndim == 3 else o for o in outs])
        return per_frame

    def _decode(self, outs: list[np.ndarray], in_h: int, in_w: int, scale: float,
                height: int, width: int) -> Faces:
        k = len(self.strides)
        boxes, scores, landmarks = [], [], []
        for level, stride in enumerate(self.strides):
            score = outs[level].reshape(-1)
            h, w = -(-in_h // stride), -(-in_w // stride)
            num_anchors = score.size // (h * w)
            if num_anchors * h * w != score.size:
                raise VcnError(f"{self.model_path}: output {self.output_names[level]} has {score.size} rows, not a "
                               f"multiple of the {h}x{w} grid at stride {stride}; is this an SCRFD model?")
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            centers = _anchor_centers(h, w, stride, num_anchors)[keep]
            dist = outs[level + k].reshape(-1, 4)[keep] * stride
            boxes.append(np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1))
            kps = outs[level + 2 * k].reshape(-1, 10)[keep] * stride
            landmarks.append(centers[:, None, :] + kps.reshape(-1, 5, 2))
            scores.append(score[keep])
        if not scores:
            return Faces.empty()
        boxes = np.concatenate(boxes) / scale
        scores = np.concatenate(scores)
        landmarks = np.concatenate(landmarks) / scale
        keep = nms(boxes, scores, self.nms_threshold)
        boxes = boxes[keep]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return Faces(boxes.astype(np.float32), scores[keep].astype(np.float32), landmarks[keep].astype(np.float32))

    def detect(self, frames: np.ndarray) -> list[Faces]:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VcnError(f"detect expects BGR frames [N, H, W, 3], got an array of shape {frames.shape}")
        if len(frames) == 0:
            return []
        height, width = frames.shape[1:3]
        scale, in_h, in_w = self._input_size(height, width)
        blob = self._blob(frames, scale, in_h, in_w)
        return [self._decode(outs, in_h, in_w, scale, height, width) for outs in self._run(blob)]
