"""Cut a converted face-ID backbone into a frozen trunk and a trainable tail, where one tensor carries everything on.

Two cuts (ssl.backbone_layers):
- "tail": the narrowest single-tensor point whose tail still holds at least half of the backbone's parameters
  (DECISION: the late, spatially small layers are where most weights of a face-ID network are, and they are cheap
  to run). Stage 2 then runs the trunk once per augmented view of each crop and caches what comes out: every later
  training step runs only the tail and the head (on SFace, a seventeenth of the whole network's cost).
- "low_res": the first single-tensor point at 1/8 of the crop's resolution or less (SFace: 14x14, after conv_7's
  depthwise layer; 99% of the weights after it). The high-resolution front is few weights and most of the time of a
  training step (on SFace, 35% of the multiply-adds, and a step costs 0.51x the whole network's on a CPU core), so
  every step runs it without gradients, once for student and teacher, on freshly augmented crops.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from vcn.models.onnx_torch import prepare_crops

# "tail": the tail keeps at least this share of the backbone's parameters.
MIN_TAIL_PARAMETER_SHARE = 0.5
# "low_res": the trunk ends at the first tensor whose height and width are at most this fraction of the crop's.
LOW_RES_FRACTION = 1 / 8


class Trunk(nn.Module):
    """The frozen front of an OnnxBackbone: its input preparation (channel order, scaling) and graph up to the cut."""

    def __init__(self, backbone: nn.Module, graph: fx.GraphModule):
        super().__init__()
        self.swap_rb, self.mean, self.std = backbone.swap_rb, backbone.mean, backbone.std
        self.graph_module = graph

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.graph_module(prepare_crops(crops, self.swap_rb, self.mean, self.std))


@dataclass
class Split:
    trunk: Trunk
    tail: fx.GraphModule
    cut: str                     # the graph node whose output the trunk returns
    cut_shape: tuple[int, ...]   # that output's shape per crop
    tail_parameter_share: float


def _parameter_count(gm: fx.GraphModule, nodes: list[fx.Node]) -> int:
    """Weights (numbers, each tensor once) that `nodes` use."""
    found: dict[int, int] = {}
    for n in nodes:
        if n.op == "call_module":
            found.update({id(p): p.numel() for p in gm.get_submodule(n.target).parameters()})
        elif n.op == "get_attr":
            owner, _, attr = n.target.rpartition(".")
            value = getattr(gm.get_submodule(owner) if owner else gm, attr)
            if isinstance(value, nn.Parameter):
                found[id(value)] = value.numel()
    return sum(found.values())


def split_backbone(backbone: nn.Module, crop_size: int = 112, at: str = "tail") -> Split | None:
    """Trunk and tail of `backbone` (sharing its modules, so split a copy) cut as `at` ("tail" or "low_res") says,
    or None when it has no fx graph to cut (a backbone that is not a converted ONNX model) or no point qualifies."""
    if at not in ("tail", "low_res"):
        raise ValueError(f"split_backbone: at={at!r}; choose tail or low_res")
    gm = getattr(backbone, "net", None)
    if not isinstance(gm, fx.GraphModule) or not hasattr(backbone, "prepare"):
        return None
    nodes = list(gm.graph.nodes)
    was_training = gm.training
    gm.eval()   # shapes from one probe crop, which BatchNorm in training mode cannot normalise
    # The probe goes where the weights are: stage 2 hands over a backbone already on the GPU.
    device = next(itertools.chain(gm.parameters(), gm.buffers()), torch.empty(0)).device
    with torch.no_grad():
        ShapeProp(gm).propagate(backbone.prepare(torch.zeros(1, 3, crop_size, crop_size, device=device)))
    gm.train(was_training)
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position[u] for u in n.users), default=-1) for n in nodes}
    total = max(1, _parameter_count(gm, nodes))
    best: tuple[int, int, float] | None = None  # (activation size, node index, tail parameter share)
    low_res = crop_size * LOW_RES_FRACTION
    for i, n in enumerate(nodes):
        if n.op in ("placeholder", "get_attr", "output") or "tensor_meta" not in n.meta:
            continue
        # Constants (get_attr) can be read again by the tail; every other value still needed must be n itself.
        live = [m for m in nodes[:i + 1] if m.op != "get_attr" and last_use[m] > i]
        if live != [n]:
            continue
        shape = tuple(n.meta["tensor_meta"].shape[1:])
        if at == "low_res":
            if len(shape) == 3 and max(shape[1:]) <= low_res:
                best = (0, i, _parameter_count(gm, nodes[i + 1:]) / total)
                break
            continue
        share = _parameter_count(gm, nodes[i + 1:]) / total
        size = int(torch.Size(shape).numel())
        if share >= MIN_TAIL_PARAMETER_SHARE and (best is None or size < best[0]):
            best = (size, i, share)
    if best is None:
        return None
    cut = nodes[best[1]]
    front, back = fx.Graph(), fx.Graph()
    env_front: dict[fx.Node, fx.Node] = {}
    env_back: dict[fx.Node, fx.Node] = {cut: back.placeholder("features")}
    for i, n in enumerate(nodes):
        if i <= best[1]:
            env_front[n] = front.node_copy(n, lambda a: env_front[a])
        elif n.op != "placeholder":
            env_back[n] = back.node_copy(n, lambda a: env_back[a] if a in env_back else _constant(a, back, env_back))
    front.output(env_front[cut])
    return Split(Trunk(backbone, fx.GraphModule(gm, front)), fx.GraphModule(gm, back), cut.name,
                 tuple(cut.meta["tensor_meta"].shape[1:]), best[2])


def _constant(node: fx.Node, graph: fx.Graph, env: dict[fx.Node, fx.Node]) -> fx.Node:
    """A get_attr the trunk read first and the tail reads again: the tail reads it itself."""
    if node.op != "get_attr":
        raise ValueError(f"value {node.name} crosses the cut")
    env[node] = graph.get_attr(node.target)
    return env[node]
