"""The self-distillation loss of paper Eq. 2 (DINO form) with teacher centering, symmetrised over a pair."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _per_set(fn, x: torch.Tensor, sets: int) -> torch.Tensor:
    """Apply a softmax-like `fn` to each of the `sets` equal blocks of the last dimension separately."""
    return fn(x.reshape(*x.shape[:-1], sets, -1), dim=-1).reshape(x.shape)


def teacher_probs(z_teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float, sets: int = 1) -> torch.Tensor:
    """softmax((z_t - c) / T_t): the teacher's sharpened, centred distribution over the K outputs of each of the
    `sets` prototype sets (one distribution per set, side by side)."""
    return _per_set(F.softmax, (z_teacher - center) / teacher_temp, sets)


def student_log_probs(z_student: torch.Tensor, student_temp: float, sets: int = 1) -> torch.Tensor:
    """log softmax(z_s / T_s), per prototype set."""
    return _per_set(F.log_softmax, z_student / student_temp, sets)


def cross_entropy(p_teacher: torch.Tensor, log_p_student: torch.Tensor, sets: int = 1) -> torch.Tensor:
    """Eq. 2 per row: - sum_k p_t[k] * log p_s[k], averaged over the prototype sets."""
    return -(p_teacher * log_p_student).sum(dim=-1) / sets


def algorithm1_terms(z_teacher: torch.Tensor, z_student: torch.Tensor, center: torch.Tensor, teacher_temp: float,
                     student_temp: float, sets: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop, Algorithm 1's terms: teacher probabilities p divided by the number of prototype sets, and
    student log-probabilities l, so that -p . l is Eq. 2 averaged over the sets and stays bilinear."""
    return (teacher_probs(z_teacher, center, teacher_temp, sets) / sets,
            student_log_probs(z_student, student_temp, sets))


def shared_prototype_penalty(p_teacher: torch.Tensor, z_student: torch.Tensor, student_temp: float, sets: int,
                             apart: torch.Tensor) -> torch.Tensor:
    """Sum over the pairs marked in `apart` [m, M] of -log(1 - overlap), where overlap is the chance that the
    student's crop (row of `z_student`, m x D logits) and the teacher's (row of `p_teacher`, M x D probabilities
    already divided by the number of sets) fall on one prototype, averaged over the sets: 0 for crops on
    different prototypes, growing without bound as they share one. For pairs known to be two people."""
    q = _per_set(F.softmax, z_student / student_temp, sets)
    overlap = q @ p_teacher.T
    return -torch.log1p(-overlap.clamp(max=1.0 - 1e-6))[apart].sum()


class DinoLoss(nn.Module):
    """Eq. 2 averaged over a batch of pairs and over both directions, with a running centre of teacher outputs.

    The centre is a buffer (it travels with state_dict); under torch.distributed its update averages the
    teacher outputs of every rank, so all ranks keep the same centre.
    """

    def __init__(self, out_dim: int, teacher_temp: float = 0.04, student_temp: float = 0.1,
                 center_momentum: float = 0.9, sets: int = 1):
        super().__init__()
        if sets < 1 or out_dim % sets:
            raise ValueError(f"{out_dim} outputs do not split into {sets} prototype sets")
        self.sets = sets
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, teacher_a: torch.Tensor, teacher_b: torch.Tensor,
                student_a: torch.Tensor, student_b: torch.Tensor) -> torch.Tensor:
        """Mean over pairs of (L(t(a), s(b)) + L(t(b), s(a))) / 2; teacher inputs carry no gradient."""
        p_a = teacher_probs(teacher_a.detach(), self.center, self.teacher_temp, self.sets)
        p_b = teacher_probs(teacher_b.detach(), self.center, self.teacher_temp, self.sets)
        l_a = student_log_probs(student_a, self.student_temp, self.sets)
        l_b = student_log_probs(student_b, self.student_temp, self.sets)
        return 0.5 * (cross_entropy(p_a, l_b, self.sets).mean() + cross_entropy(p_b, l_a, self.sets).mean())

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """c <- m c + (1 - m) mean(teacher outputs), the mean taken over all ranks' batches."""
        total = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor([float(teacher_out.shape[0])], device=teacher_out.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        batch_center = total / count.clamp_min(1.0)
        self.center.mul_(self.center_momentum).add_(batch_center * (1.0 - self.center_momentum))
