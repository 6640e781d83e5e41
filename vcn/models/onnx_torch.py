"""ONNX face-ID models -> trainable torch modules: fold int8 weights to float, clean the graph, convert, cache."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from vcn.errors import VcnError
from vcn.models.cache import cache_path, file_sha256
from vcn.models.plain_modules import SlopePReLU, from_onnx2torch, replace_onnx2torch_modules
from vcn.storage import atomic_write_bytes

# onnx2torch 1.5 has converters up to about opset 16; SFace ships at opset 21. After folding DequantizeLinear the
# remaining ops mean the same at 13, so the graph is relabelled; only when every op is one of these (ops such as
# ReduceMean or Split changed their inputs after 13, and a graph using them keeps its own opset).
TARGET_OPSET = 13
RELABEL_SAFE_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Concat", "Constant", "Conv", "Div", "Dropout", "Flatten", "Gemm",
    "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Mul", "PRelu", "Relu", "Reshape", "Sigmoid", "Sub",
    "Transpose",
})
# Bump when the conversion below changes, so stale cached files are not reused.
CONVERSION_VERSION = "1"

log = logging.getLogger(__name__)


def model_file(path: str | os.PathLike) -> Path:
    """`path` as a Path, or a clear error when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise VcnError(f"model file {path} does not exist; check the path or the model pack folder")
    return path


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    path = model_file(path)
    try:
        return onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for a file that is not ONNX
        raise VcnError(f"model file {path} is not a readable ONNX model ({e}); replace it with a valid .onnx") from None


def _dequantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block_size: int) -> np.ndarray:
    """ONNX DequantizeLinear: (x - zero) * scale, per tensor, per axis or block-wise along `axis`."""
    x = x.astype(np.float32)
    zero = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    if scale.size == 1 and scale.ndim <= 1:
        return ((x - zero.reshape(())) * scale.reshape(())).astype(scale.dtype)
    axis = axis % x.ndim
    if block_size > 0:
        # Each scale covers block_size consecutive elements along axis; the last block may be short.
        scale = np.repeat(scale, block_size, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
    else:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((x - zero) * scale).astype(scale.dtype)


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    shape = [int(s) for s in shape]
    if not allowzero:
        # ONNX Reshape: a 0 copies the input's dimension at that position.
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


def fold_constant_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every DequantizeLinear (and any Reshape after it) whose inputs are constants with a float initializer."""
    graph = model.graph
    consts = {init.name: init for init in graph.initializer}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if name not in values:
            values[name] = numpy_helper.to_array(consts[name])
        return values[name]

    kept = []
    folded = False
    for node in graph.node:
        inputs = [i for i in node.input if i]
        foldable = node.op_type in ("DequantizeLinear", "Reshape") and all(i in consts for i in inputs)
        if not foldable:
            kept.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            zero = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            out = _dequantize(value(node.input[0]), value(node.input[1]), zero,
                              int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
        else:
            out = _reshape(value(node.input[0]), value(node.input[1]), int(attrs.get("allowzero", 0)))
        values[node.output[0]] = out
        consts[node.output[0]] = numpy_helper.from_array(out, node.output[0])
        folded = True

    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        new_inits = [consts[name] for name in consts if name in used]
        del graph.initializer[:]
        graph.initializer.extend(new_inits)
    return model


def drop_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep only true graph inputs: onnxruntime rejects files that also list weights (or unused names) as inputs."""
    inits = {init.name for init in model.graph.initializer}
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    real = [i for i in model.graph.input if i.name not in inits and i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(real)
    return model


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Let the first dimension of every graph input and output vary (files are often exported with batch 1)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    # Stale intermediate shapes would contradict the new batch dimension.
    del model.graph.value_info[:]
    return model


def to_float_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold quantized weights, keep only real inputs, free the batch dimension and cap the opset for onnx2torch."""
    model = fold_constant_weights(model)
    model = drop_initializer_inputs(model)
    model = make_batch_dynamic(model)
    leftover = sorted({n.op_type for n in model.graph.node if n.op_type in ("DequantizeLinear", "QuantizeLinear")})
    if leftover:
        raise VcnError(f"model has {', '.join(leftover)} on activations, which vcn cannot train; use a float model")
    if {n.op_type for n in model.graph.node} <= RELABEL_SAFE_OPS:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version > TARGET_OPSET:
                opset.version = TARGET_OPSET
    return model


def float_onnx_path(source: Path, digest: str) -> Path:
    """The converted float ONNX of `source` (an existing file whose SHA-256 is `digest`), made once and cached
    under the user cache folder by that content hash."""
    target = cache_path("onnx", f"{digest}-float-v{CONVERSION_VERSION}.onnx")
    if not target.is_file():
        model = to_float_onnx(load_onnx(source))
        atomic_write_bytes(target, model.SerializeToString())
    return target


def onnx_to_torch(model: onnx.ModelProto, source: str | os.PathLike = "model") -> torch.fx.GraphModule:
    """onnx2torch's conversion, with its modules swapped for vcn's stand-ins where there are some
    (vcn.models.plain_modules) and the PRelu slopes made trainable."""
    from onnx2torch import convert

    try:
        net = convert(model)
    except NotImplementedError as e:
        raise VcnError(f"cannot convert {source} to torch: {e}; vcn needs a model built from common ONNX ops") from None
    replace_onnx2torch_modules(net)
    make_prelu_slopes_trainable(net)
    return net


def make_prelu_slopes_trainable(net: torch.fx.GraphModule) -> int:
    """onnx2torch keeps PRelu slopes as frozen buffers; finetuning should adapt them like any other weight."""
    count = 0
    for node in net.graph.nodes:
        if node.op != "call_module" or not isinstance(net.get_submodule(node.target), SlopePReLU):
            continue
        slope = node.args[1] if len(node.args) > 1 else None
        if getattr(slope, "op", None) != "get_attr":
            continue
        owner_name, _, attr = slope.target.rpartition(".")
        owner = net.get_submodule(owner_name)
        if attr in owner._buffers:
            owner.register_parameter(attr, torch.nn.Parameter(owner._buffers.pop(attr)))
            count += 1
    return count


def prepare_crops(crops: torch.Tensor, swap_rb: bool, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """BGR float 0..255 crops -> the converted network's input: channel order swapped if asked, then scaled."""
    x = crops.flip(1) if swap_rb else crops
    if mean != 0.0 or std != 1.0:
        x = (x - mean) / std
    return x


class OnnxBackbone(torch.nn.Module):
    """A converted face-ID network behind the backbone contract: BGR float 0..255 [B,3,112,112] in, embedding out."""

    def __init__(self, net: torch.nn.Module, name: str, version: str, embedding_dim: int,
                 swap_rb: bool, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.net = net
        self.name = name
        self.version = version
        self.embedding_dim = embedding_dim
        self.swap_rb = swap_rb
        self.mean = mean
        self.std = std

    def prepare(self, crops: torch.Tensor) -> torch.Tensor:
        return prepare_crops(crops, self.swap_rb, self.mean, self.std)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(crops))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, version={self.version!r}, embedding_dim={self.embedding_dim}, swap_rb={self.swap_rb}"


def output_dim(model: onnx.ModelProto) -> int:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].dim_value:
        raise VcnError(f"model output {model.graph.output[0].name!r} has no fixed embedding size; cannot use it")
    return int(dims[-1].dim_value)


def load_onnx_backbone(source: str | os.PathLike, name: str, swap_rb: bool,
                       mean: float = 0.0, std: float = 1.0) -> OnnxBackbone:
    """Convert (or reuse the cached conversion of) an ONNX recognition model and wrap it as a vcn backbone."""
    net, embedding_dim, version = converted_network(source)
    return OnnxBackbone(net, name=name, version=version, embedding_dim=embedding_dim,
                        swap_rb=swap_rb, mean=mean, std=std)


def converted_network(source: str | os.PathLike) -> tuple[torch.fx.GraphModule, int, str]:
    """`source` as a trainable torch graph, its embedding size and its version (a prefix of its content hash).

    Two caches under the user cache folder, keyed by the file's content: the float ONNX (float_onnx_path), and the
    torch graph itself where it holds only torch's modules and vcn's stand-ins, saved for this torch version.
    Loading that skips onnx2torch and the torchvision it imports (~170 MiB resident and ~1 s in every process
    that finetunes; issue 13). A cached graph that does not load (another torch, a damaged file) is converted
    and saved again."""
    source = model_file(source)
    digest = file_sha256(source)
    target = cache_path("torch", f"{digest}-v{CONVERSION_VERSION}-torch{torch.__version__}.pt")
    if target.is_file():
        try:
            # A pickle, so only ever one this code wrote: the cache folder is the user's own, like pip's.
            saved = torch.load(target, weights_only=False)
            return saved["net"], int(saved["embedding_dim"]), digest[:12]
        except Exception as e:  # noqa: BLE001 - any unreadable cache entry is rebuilt
            log.warning("cached torch conversion %s does not load (%s); converting %s again", target, e, source)
    model = onnx.load(str(float_onnx_path(source, digest)))
    embedding_dim = output_dim(model)
    net = onnx_to_torch(model, source)
    del model
    if not any(from_onnx2torch(m) for m in net.modules()):
        buffer = io.BytesIO()
        torch.save({"net": net, "embedding_dim": embedding_dim}, buffer)
        atomic_write_bytes(target, buffer.getvalue())
    return net, embedding_dim, digest[:12]
