"""The model registry: turn a name, folder or s3:// URI into a face detector or a trainable face-ID backbone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vcn.config import DetectConfig
from vcn.errors import VcnError
from vcn.models.types import Detector

if TYPE_CHECKING:  # torch stays unimported until a backbone is loaded: `import vcn.models.types` must be light
    import torch

DETECTORS = ("retinaface",)
BACKBONES = ("sface",)


def _looks_like_pack(name_or_uri: str) -> bool:
    return name_or_uri.startswith("s3://") or "/" in name_or_uri or "\\" in name_or_uri \
        or name_or_uri.startswith((".", "~")) or name_or_uri.endswith(".onnx") or Path(name_or_uri).exists()


def _unknown(kind: str, name: str, known: tuple[str, ...]) -> VcnError:
    from vcn.models.packs import PACK_HELP

    return VcnError(f"unknown {kind} {name!r}; known names: {', '.join(known)}; or give a model pack path: "
                    f"{PACK_HELP} (write a local folder as ./name or /abs/path)")


def load_detector(name_or_uri: str, cfg: DetectConfig | None = None) -> Detector:
    """A Detector for `retinaface` (built in) or the SCRFD model of an insightface pack (folder or s3:// prefix)."""
    cfg = cfg or DetectConfig()
    if name_or_uri == "retinaface":
        from vcn.models.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(score_threshold=cfg.score_threshold, nms_threshold=cfg.nms_threshold,
                                  max_side=cfg.max_side, device=cfg.device)
    if _looks_like_pack(name_or_uri):
        from vcn.models.packs import load_pack_detector

        return load_pack_detector(name_or_uri, cfg.score_threshold, cfg.nms_threshold, cfg.max_side)
    raise _unknown("detector", name_or_uri, DETECTORS)


def detects_on_gpu(cfg: DetectConfig, detector=None) -> bool:
    """Whether detection runs on a GPU: the `detector` given, or the one `cfg` would load."""
    if detector is not None:
        return "cuda" in str(getattr(detector, "backend", ""))
    from vcn.models.retinaface import resolve_device

    return cfg.model == "retinaface" and resolve_device(cfg.device).startswith("cuda")


def load_backbone(name_or_uri: str) -> torch.nn.Module:
    """A trainable face-ID backbone (BGR 0..255 [B,3,112,112] in, embedding out) in eval mode."""
    if name_or_uri == "sface":
        from vcn.models.sface import load_sface

        module = load_sface()
    elif _looks_like_pack(name_or_uri):
        from vcn.models.packs import load_pack_backbone

        module = load_pack_backbone(name_or_uri)
    else:
        raise _unknown("backbone", name_or_uri, BACKBONES)
    return module.eval()
