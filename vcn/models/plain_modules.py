"""Torch stand-ins for the onnx2torch modules a face-ID graph uses, computing exactly what those compute.

A converted graph holding only torch's modules and these can be saved and loaded by later processes without
importing onnx2torch, whose package imports torchvision (and with it sympy and triton): ~170 MiB resident and
about a second in every stage-2 process (issue 13). vcn.models.onnx_torch swaps them in after each conversion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SlopePReLU(nn.Module):
    """ONNX PRelu with its slope as a second input (onnx2torch's OnnxPReLU)."""

    def forward(self, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        if slope.nelement() == 1 or (slope.shape[0] == x.shape[1] and all(s == 1 for s in slope.shape[1:])):
            return F.prelu(x, weight=slope.view(-1))
        return torch.where(x >= 0, x, x * slope)


class BinaryMath(nn.Module):
    """ONNX Add, Sub, Mul or Div with numpy broadcasting (onnx2torch's OnnxBinaryMathOperation); Div of two
    integer tensors truncates, as ONNX says."""

    OPS = {"add": torch.add, "sub": torch.sub, "mul": torch.mul}

    def __init__(self, op: str):
        super().__init__()
        if op not in (*self.OPS, "div"):
            raise ValueError(f"BinaryMath: op={op!r}; choose add, sub, mul or div")
        self.op = op

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.op != "div":
            return self.OPS[self.op](a, b)
        if a.is_floating_point() or b.is_floating_point():
            return torch.div(a, b)
        return torch.div(a, b, rounding_mode="trunc")

    def extra_repr(self) -> str:
        return self.op


class Constant(nn.Module):
    """An ONNX Constant (onnx2torch's OnnxConstant); a tensor is a buffer, so it follows the module's device."""

    def __init__(self, value):
        super().__init__()
        if isinstance(value, torch.Tensor):
            self.register_buffer("value", value)
        else:
            self.value = value

    def forward(self):
        return self.value


class RatioDropout(nn.Module):
    """ONNX Dropout with the ratio as an input (onnx2torch's OnnxDropoutDynamic); on in training mode only."""

    def forward(self, x: torch.Tensor, ratio: float = 0.5, training_mode=None) -> torch.Tensor:
        return F.dropout(x, p=ratio, training=self.training)


def from_onnx2torch(module: nn.Module) -> bool:
    """True for a module of onnx2torch's own classes (saving it would tie loading to onnx2torch)."""
    return type(module).__module__.startswith("onnx2torch")


def _stand_in(module: nn.Module) -> nn.Module | None:
    """The stand-in for one onnx2torch module, or None where there is none (or it would compute otherwise)."""
    kind = type(module).__name__
    if kind == "OnnxPReLU":
        return SlopePReLU()
    if kind == "OnnxConstant":
        return Constant(module.value)
    if kind == "OnnxDropoutDynamic":
        return RatioDropout()
    if kind == "OnnxBinaryMathOperation":
        if module.broadcast == 1 and module.axis is not None:   # ONNX's pre-opset-7 broadcasting: not mirrored
            return None
        fn = module.math_op_function
        op = {torch.add: "add", torch.sub: "sub", torch.mul: "mul"}.get(fn)
        if op is None and getattr(fn, "__name__", "") == "_onnx_div":
            op = "div"
        return BinaryMath(op) if op else None
    return None


def replace_onnx2torch_modules(net: nn.Module) -> list[str]:
    """Swap every onnx2torch module of `net` that has a stand-in here for it (in place; the graph calls modules by
    name, so it is unchanged). Returns the class names of onnx2torch modules left in `net`, sorted."""
    left = set()
    for name, module in list(net.named_modules()):
        if not from_onnx2torch(module):
            continue
        new = _stand_in(module)
        if new is None:
            left.add(type(module).__name__)
            continue
        new.train(module.training)
        owner, _, attr = name.rpartition(".")
        setattr(net.get_submodule(owner) if owner else net, attr, new)
    return sorted(left)
