"""insightface-style model packs (a folder or s3:// prefix of .onnx files): find each file's role by its graph."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from vcn.errors import VcnError
from vcn.models.cache import cache_path, text_sha256
from vcn.models.onnx_torch import OnnxBackbone, load_onnx, load_onnx_backbone
from vcn.models.scrfd import NO_LANDMARK_OUTPUT_COUNTS, STRIDES_BY_OUTPUT_COUNT, SCRFDDetector
from vcn.storage import download_prefix, is_s3

RECOGNITION_SIZE = 112
# A detector runs on whole frames: its input H/W are dynamic or at least this large.
MIN_DETECTOR_SIDE = 320

PACK_HELP = ("a model pack is a local folder or an s3://bucket/prefix holding insightface .onnx files, "
             "e.g. buffalo_l (det_10g.onnx + w600k_r50.onnx) or antelopev2")


@dataclass
class OnnxRole:
    path: Path
    role: str  # "detection", "recognition" or "other"
    detail: str
    # mxnet-era ArcFace files start with Sub then Mul on the input: they normalise the pixels themselves.
    normalises_input: bool = False


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """A value's shape; None marks a dynamic dimension."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def inspect_onnx(path: str | os.PathLike) -> OnnxRole:
    """Decide what a pack file is from its graph's inputs and outputs, the way insightface's model zoo routes files."""
    path = Path(path)
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4 or _dims(inputs[0])[1] not in (3, None):
        return OnnxRole(path, "other", f"{len(inputs)} inputs; not one NCHW image")
    _, _, height, width = _dims(inputs[0])
    if len(outputs) in STRIDES_BY_OUTPUT_COUNT or len(outputs) in NO_LANDMARK_OUTPUT_COUNTS:
        if (height is None or height >= MIN_DETECTOR_SIDE) and (width is None or width >= MIN_DETECTOR_SIDE):
            return OnnxRole(path, "detection", f"image input {height}x{width}, {len(outputs)} outputs (SCRFD)")
    if height == width == RECOGNITION_SIZE and len(outputs) == 1:
        out = _dims(outputs[0])
        if len(out) == 2 and out[1] is not None:
            return OnnxRole(path, "recognition", f"112x112 input, [N,{out[1]}] output",
                            normalises_input=normalises_input(model, inputs[0].name))
    return OnnxRole(path, "other", f"input {height}x{width}, {len(outputs)} outputs")


def resolve_pack(uri: str | os.PathLike) -> Path:
    """The local folder (or single .onnx file) of a pack; an s3:// prefix is downloaded once into the cache."""
    text = str(uri)
    if is_s3(text):
        dest = cache_path("packs", text_sha256(text.rstrip("/"))[:16])
        if not dest.is_dir():
            download_prefix(text, dest)
        return dest
    path = Path(text).expanduser()
    if not path.exists():
        raise VcnError(f"model pack {text} does not exist; {PACK_HELP}")
    return path


def pack_roles(uri: str | os.PathLike) -> list[OnnxRole]:
    root = resolve_pack(uri)
    files = [root] if root.is_file() else sorted(root.rglob("*.onnx"))
    if not files:
        raise VcnError(f"model pack {uri} holds no .onnx files; {PACK_HELP}")
    return [inspect_onnx(f) for f in files]


def _one(uri: str | os.PathLike, role: str) -> OnnxRole:
    roles = pack_roles(uri)
    found = [r for r in roles if r.role == role]
    seen = "; ".join(f"{r.path.name}: {r.role} ({r.detail})" for r in roles)
    if not found:
        raise VcnError(f"model pack {uri} has no {role} model (found {seen}); {PACK_HELP}")
    if len(found) > 1:
        names = ", ".join(r.path.name for r in found)
        raise VcnError(f"model pack {uri} has several {role} models ({names}); point at one .onnx file instead")
    return found[0]


def normalises_input(model: onnx.ModelProto, name: str) -> bool:
    """True when the graph input goes straight into a Sub whose output goes into a Mul."""
    subs = [n for n in model.graph.node if n.op_type == "Sub" and name in n.input]
    return any(n.op_type == "Mul" and s.output[0] in n.input for s in subs for n in model.graph.node)


def load_pack_backbone(uri: str | os.PathLike) -> OnnxBackbone:
    """The pack's recognition model as a trainable torch backbone (insightface ArcFace preprocessing)."""
    found = _one(uri, "recognition")
    # insightface ArcFace: RGB, (x - 127.5) / 127.5, unless the graph already does it itself.
    mean, std = (0.0, 1.0) if found.normalises_input else (127.5, 127.5)
    return load_onnx_backbone(found.path, name=found.path.stem, swap_rb=True, mean=mean, std=std)


def load_pack_detector(uri: str | os.PathLike, score_threshold: float, nms_threshold: float,
                       max_side: int) -> SCRFDDetector:
    return SCRFDDetector(_one(uri, "detection").path, score_threshold=score_threshold,
                         nms_threshold=nms_threshold, max_side=max_side)
