"""Fold each BatchNorm of a frozen converted backbone into the convolution before it, for its no-gradient passes.

The backbone always runs BatchNorm with its stored statistics (vcn.ssl.head), so a frozen convolution followed by
its BatchNorm is one affine map of the convolution's output: one convolution with rescaled weights and a bias
gives the same numbers up to float rounding (~5e-6 in an SFace embedding) without the separate normalisation
pass over every activation, about a fifth of a no-gradient SFace pass on a CPU (docs/measurements.md "Cost").
Only for weights that do not train while the folded copy is used: the "low_res" and "tail" trunk (never trained)
and the whole backbone during the heads-only warm-up.
"""

from __future__ import annotations

import copy

import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(graph: fx.GraphModule) -> tuple[fx.GraphModule, int]:
    """A copy of `graph` with every Conv2d -> BatchNorm2d pair (the convolution's output read by the BatchNorm
    only) replaced by one convolution; and how many pairs were folded. The copy shares no tensors with `graph`."""
    folded = copy.deepcopy(graph).eval()
    modules = dict(folded.named_modules())
    count = 0
    for node in list(folded.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"
                and isinstance(modules.get(conv_node.target), nn.Conv2d) and len(conv_node.users) == 1):
            continue
        conv = fuse_conv_bn_eval(modules[conv_node.target], modules[node.target])
        owner, _, name = conv_node.target.rpartition(".")
        setattr(folded.get_submodule(owner) if owner else folded, name, conv)
        node.replace_all_uses_with(conv_node)
        folded.graph.erase_node(node)
        count += 1
    folded.graph.eliminate_dead_code()
    folded.delete_all_unused_submodules()
    folded.recompile()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, count


def folded_copy(network: nn.Module) -> nn.Module:
    """A frozen copy of `network` whose fx graphs (a converted backbone's `net`, a trunk's `graph_module`, a tail)
    have their BatchNorms folded; `network` itself is left as it is. A network without fx graphs is copied as is."""
    copied = copy.deepcopy(network).eval()
    for name, module in list(copied.named_modules()):
        if name and isinstance(module, fx.GraphModule):
            owner, _, attr = name.rpartition(".")
            setattr(copied.get_submodule(owner) if owner else copied, attr, fold_batchnorm(module)[0])
    if isinstance(copied, fx.GraphModule):
        copied = fold_batchnorm(copied)[0]
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied
