"""The DINO-style projection head and the student/teacher networks (backbone + head) of stage 2."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vcn.ssl.fold import fold_batchnorm
from vcn.ssl.split import split_backbone


class ProjectionHead(nn.Module):
    """3-layer MLP -> L2-normalised bottleneck -> weight-normalised linear layer to K outputs (METHOD.md stage 2).

    The last layer's weight rows are normalised to unit length on every forward (weight norm with the gain fixed
    at 1, as DINO does), so the K logits are cosines of the bottleneck with K learnt prototypes.
    """

    def __init__(self, in_dim: int, hidden: int = 2048, bottleneck: int = 256, out_dim: int = 4096):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        # The unit-length prototypes to use instead of normalising them in this forward: set by a training step
        # that runs the head on several micro-batches (vcn.ssl.train), so the 4096 x 256 (x sets) normalisation
        # and its backward run once per step, not once per micro-batch.
        self.unit_prototypes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        unit = self.unit_prototypes if self.unit_prototypes is not None else F.normalize(self.prototypes, dim=-1)
        return F.linear(x, unit)


class BackboneWithHead(nn.Module):
    """A face-ID backbone (BGR 0..255 crops -> embedding) followed by a projection head.

    With `tail` set, the backbone is trunk then tail (vcn.ssl.split): the trunk is frozen and only the tail
    finetunes; `from_trunk` runs tail and head on the trunk's output.
    """

    def __init__(self, backbone: nn.Module, head: ProjectionHead, tail: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.from_trunk = nn.Sequential(tail, head) if tail is not None else None

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(crops))

    @property
    def split(self) -> bool:
        return self.from_trunk is not None

    def trainable_backbone(self) -> list[nn.Parameter]:
        """The backbone weights finetuning may change: the tail's when split, else all of them."""
        return list((self.from_trunk[0] if self.split else self.backbone).parameters())

    def train(self, mode: bool = True) -> "BackboneWithHead":
        # The backbone always runs with its inference statistics: a video gives a few hundred crops, too few
        # to re-estimate pretrained BatchNorm statistics, and batch-dependent statistics would make one crop's
        # embedding depend on its batch-mates.
        super().train(mode)
        self.backbone.eval()
        return self


def make_head(in_dim: int, hidden: int, bottleneck: int, out_dim: int, seed: int = 0) -> ProjectionHead:
    """A freshly initialised head; the seed fixes it without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProjectionHead(in_dim, hidden, bottleneck, out_dim)


def make_student_and_teacher(backbone: nn.Module, hidden: int, bottleneck: int, out_dim: int,
                             seed: int = 0, layers: str = "all", fold_trunk: bool = False
                             ) -> tuple[BackboneWithHead, BackboneWithHead]:
    """Student = a copy of the backbone + a fresh head (seeded); teacher = a frozen copy of the student.

    layers: "tail" or "low_res" splits the copy into a frozen trunk and a trainable tail at that cut (vcn.ssl.split)
    where the backbone allows it (a converted ONNX graph); otherwise, or with "all", the whole backbone trains.
    fold_trunk: fold the frozen trunk's BatchNorms into its convolutions (vcn.ssl.fold; ssl.fold_frozen_batchnorm).
    The caller's backbone is never modified, so one loaded model can serve many videos.
    """
    head = make_head(int(getattr(backbone, "embedding_dim")), hidden, bottleneck, out_dim, seed)
    own = copy.deepcopy(backbone)
    split = split_backbone(own, at=layers) if layers != "all" else None
    if split is not None and fold_trunk:
        split.trunk.graph_module = fold_batchnorm(split.trunk.graph_module)[0]
    if split is None:
        student = BackboneWithHead(own, head)
    else:
        student = BackboneWithHead(nn.Sequential(split.trunk, split.tail), head, split.tail)
    for p in student.parameters():
        p.requires_grad_(True)
    if split is not None:
        for p in split.trunk.parameters():
            p.requires_grad_(False)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.train()
    teacher.eval()
    return student, teacher
