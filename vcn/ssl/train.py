"""Stage 2 training loop: student/teacher self-distillation on one video's crops, alternating with track matching.

Plain torch. Under torch.distributed (gloo or nccl) the same code runs unchanged: the student is wrapped in
DistributedDataParallel, every rank draws the same pairs (same seed) and trains on its shard of them, and the
loss's centre is all-reduced, so every rank holds identical student, teacher and centre after each step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vcn.clustering.algorithm1 import pair_positions
from vcn.config import SSLConfig
from vcn.errors import VcnError
from vcn.ssl.augment import augment_crops
from vcn.ssl.fold import folded_copy
from vcn.ssl.head import BackboneWithHead, make_student_and_teacher
from vcn.ssl.loss import DinoLoss, algorithm1_terms, shared_prototype_penalty, teacher_probs
from vcn.ssl.pairs import pairs_across_matches, subsample_pairs

# ssl.backbone_layers: what the full finetune trains (vcn.config.SSLConfig).
BACKBONE_LAYERS = ("all", "low_res", "tail")
# track_id -> the track ids it matched (METHOD.md coarse matching); computed from the teacher between rounds.
Matches = dict[int, list[int]]


@dataclass
class Phase:
    """A run of epochs with one setting: 'heads' trains the heads only (backbone frozen), 'full' trains all."""

    round: int
    kind: str
    epochs: int


def training_plan(cfg: SSLConfig) -> list[Phase]:
    """Round 1 starts with the frozen-backbone warm-up; every round then finetunes everything."""
    phases = []
    for r in range(cfg.rounds):
        if r == 0 and cfg.warmup_epochs > 0:
            phases.append(Phase(0, "heads", cfg.warmup_epochs))
        if cfg.epochs_per_round > 0:
            phases.append(Phase(r, "full", cfg.epochs_per_round))
    return phases


def pairs_per_epoch(n_crops: int, cfg: SSLConfig) -> int:
    """cfg.pairs_per_crop pairs per crop (at least one pair), capped at cfg.max_pairs_per_epoch."""
    pairs = max(1, math.ceil(n_crops * cfg.pairs_per_crop))
    return min(pairs, cfg.max_pairs_per_epoch) if cfg.max_pairs_per_epoch > 0 else pairs


def steps_per_epoch(n_crops: int, cfg: SSLConfig, world_size: int = 1) -> int:
    """pairs_per_epoch pairs, split evenly over ranks, in batches of cfg.batch_size per rank."""
    per_rank = math.ceil(pairs_per_epoch(n_crops, cfg) / world_size)
    return max(1, math.ceil(per_rank / cfg.batch_size))


def ema_momentum_schedule(total_steps: int, start: float, end: float) -> np.ndarray:
    """Teacher EMA momentum per step, cosine from `start` to `end` (DINO's schedule, computed up front)."""
    if total_steps <= 1:
        return np.full(max(total_steps, 0), start, dtype=np.float64)
    t = np.arange(total_steps) / (total_steps - 1)
    return end - (end - start) * (np.cos(np.pi * t) + 1) / 2


def resolve_device(name: str) -> torch.device:
    """ssl.device -> a torch device: auto is the GPU where torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VcnError(f"ssl.device={name!r} is not a torch device; choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VcnError(f"ssl.device={name!r} but torch sees no CUDA GPU here; use ssl.device=auto or cpu")
    return device


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively: CUDA with bfloat16 support, or a CPU with AMX or
    AVX512-BF16 (elsewhere oneDNN emulates it, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")   # private in torch.cpu: may go
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def weight_layout(device: torch.device, cfg: SSLConfig) -> torch.memory_format:
    """oneDNN's own layout on a CPU (vcn.config: ssl.cpu_channels_last); the numbers differ in rounding only."""
    return torch.channels_last if device.type == "cpu" and cfg.cpu_channels_last else torch.preserve_format


def augment(crops: torch.Tensor, generator: torch.Generator, cfg: SSLConfig) -> torch.Tensor:
    """`augment_crops` with the finetune's settings."""
    return augment_crops(crops, generator, cfg.max_rotation_deg, cfg.max_colour_shift,
                         low_res_prob=cfg.low_res_prob, min_res_px=cfg.low_res_min_px,
                         light_jitter=cfg.light_jitter, grey_prob=cfg.grey_prob)


def _check_augment(cfg: SSLConfig, crop_side: int) -> None:
    """The optional augmentations' settings, checked before any training step."""
    if not 0.0 <= cfg.light_jitter < 1.0:
        raise VcnError(f"ssl.light_jitter={cfg.light_jitter} must be at least 0 and below 1 (0 = off, the "
                       f"default); try 0.4")
    if not 0.0 <= cfg.grey_prob <= 1.0:
        raise VcnError(f"ssl.grey_prob={cfg.grey_prob} must be between 0 and 1 (0 = off, the default); try 0.2")
    if not 0.0 <= cfg.low_res_prob <= 1.0:
        raise VcnError(f"ssl.low_res_prob={cfg.low_res_prob} must be between 0 and 1 (0 = off, the default)")
    if cfg.low_res_prob > 0 and not 1 <= cfg.low_res_min_px < crop_side:
        raise VcnError(f"ssl.low_res_min_px={cfg.low_res_min_px} must be at least 1 and below the crop side "
                       f"{crop_side} px; try 24")


def _check_pose_pairs(cfg: SSLConfig, pose_of_crop: np.ndarray | None, n_crops: int) -> None:
    """ssl.pose_pairs in [0, 1], and a pose for every crop where it is on."""
    if not 0.0 <= cfg.pose_pairs <= 1.0:
        raise VcnError(f"ssl.pose_pairs={cfg.pose_pairs} must be between 0 and 1 (0 = off, the default); try 0.5")
    if cfg.pose_pairs > 0 and (pose_of_crop is None or len(pose_of_crop) != n_crops):
        raise VcnError(f"ssl.pose_pairs={cfg.pose_pairs} needs each crop's pose (its landmarks); this finetune was "
                       f"given {'none' if pose_of_crop is None else len(pose_of_crop)} for {n_crops} crops: set "
                       f"ssl.pose_pairs=0 or pass pose_of_crop")


def as_float_batch(crops_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 BGR [B, 3, H, W] -> float32 0..255 on `device` (the backbone normalises itself)."""
    return crops_uint8.to(device=device, dtype=torch.float32, non_blocking=True)


@torch.no_grad()
def run_in_batches(module: nn.Module, crops_uint8: torch.Tensor, batch_size: int, device: torch.device,
                   fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Apply `fn` (default: `module`) to uint8 crops in batches, without gradients, results on the CPU."""
    fn = fn or module
    was_training = module.training
    module.eval()
    outs = [fn(as_float_batch(crops_uint8[i:i + batch_size], device)).float().cpu()
            for i in range(0, len(crops_uint8), batch_size)]
    module.train(was_training)
    if not outs:
        return torch.zeros(0)
    return torch.cat(outs)


@dataclass
class RoundLog:
    round: int
    kind: str
    epochs: int
    steps: int
    mean_loss: float
    seconds: float


@dataclass
class SelfDistillation:
    """Student, teacher, loss centre and the per-step schedules of one video's finetuning."""

    student: BackboneWithHead
    teacher: BackboneWithHead
    loss: DinoLoss
    cfg: SSLConfig
    device: torch.device
    momentum: dict[str, np.ndarray]          # teacher EMA momentum per step, one schedule per phase kind
    steps_per_epoch: int
    steps_done: dict[str, int] = field(default_factory=lambda: {"heads": 0, "full": 0})
    backbones_equal: bool = True             # teacher and student backbones hold the same weights
    logs: list[RoundLog] = field(default_factory=list)
    trunk_views: torch.Tensor | None = None  # split backbone: trunk outputs of the augmented views [V, N, ...]
    frozen_bfloat16: bool = False            # frozen no-gradient passes feeding training run in bfloat16
    warmup_bfloat16: bool = False            # the warm-up's views alone run in bfloat16 (ssl.warmup_bfloat16)
    # Split backbone (low_res, tail): the crops being finetuned on (set by `finetune`) and, once a no-gradient pass
    # over that very tensor has needed it, the frozen trunk's output on them (ssl.front_cache_mib;
    # `_backbone_outputs`).
    video_crops: torch.Tensor | None = None
    front: torch.Tensor | None = None
    # The backbone's un-augmented embeddings of `video_crops`, when the caller has them (ssl.warmup_on_base).
    base_embeddings: torch.Tensor | None = None
    # ssl.cooccurring_negatives: per crop, its track's row in `apart`, which marks the pairs of tracks seen in one
    # frame (two people). None when the option is off or no two tracks share a frame.
    track_row: np.ndarray | None = None
    apart: torch.Tensor | None = None
    # ssl.pose_pairs: each crop's pose (vcn.faces.align.nose_offset, capped), which within-track pairs read.
    pose_of_crop: np.ndarray | None = None

    @classmethod
    def create(cls, backbone: nn.Module, n_crops: int, cfg: SSLConfig) -> "SelfDistillation":
        _, world = _distributed()
        if cfg.backbone_layers not in BACKBONE_LAYERS:
            raise VcnError(f"ssl.backbone_layers={cfg.backbone_layers!r} is unknown; choose one of "
                           f"{', '.join(BACKBONE_LAYERS)}")
        device = resolve_device(cfg.device)
        if cfg.prototype_sets < 1:
            raise VcnError(f"ssl.prototype_sets={cfg.prototype_sets} must be 1 or more")
        if not cfg.pairs_per_crop > 0:
            raise VcnError(f"ssl.pairs_per_crop={cfg.pairs_per_crop} must be above 0 (1.0 is the default: a pair "
                           f"per crop and epoch)")
        student, teacher = make_student_and_teacher(backbone, cfg.head_hidden, cfg.head_bottleneck,
                                                    cfg.head_out * cfg.prototype_sets, seed=cfg.seed,
                                                    layers=cfg.backbone_layers, fold_trunk=cfg.fold_frozen_batchnorm)
        loss = DinoLoss(cfg.head_out * cfg.prototype_sets, cfg.teacher_temp, cfg.student_temp, cfg.center_momentum,
                        cfg.prototype_sets)
        spe = steps_per_epoch(n_crops, cfg, world)
        momentum = {kind: ema_momentum_schedule(spe * sum(p.epochs for p in training_plan(cfg) if p.kind == kind),
                                                cfg.ema_start, cfg.ema_end) for kind in ("heads", "full")}
        layout = weight_layout(device, cfg)
        return cls(student.to(device, memory_format=layout), teacher.to(device, memory_format=layout),
                   loss.to(device), cfg, device, momentum, spe,
                   frozen_bfloat16=cfg.frozen_bfloat16 and bfloat16_is_fast(device),
                   warmup_bfloat16=(cfg.frozen_bfloat16 or cfg.warmup_bfloat16) and bfloat16_is_fast(device))

    # ----- training -------------------------------------------------------------------------------------------
    def train_phase(self, phase: Phase, crops_uint8: torch.Tensor, track_of_crop: np.ndarray,
                    matches: Matches, rng: np.random.Generator, aug_gen: torch.Generator) -> RoundLog:
        """Train `phase.epochs` epochs; each epoch draws fresh pairs (within tracks or across `matches`).

        Whole backbone: the warm-up ('heads', teacher and student backbones still equal) runs the frozen backbone
        once per crop for each of cfg.warmup_views augmented views and trains the heads on those cached features
        (each pair side picks a random view); the 'full' phase augments afresh and runs both networks at every
        step. ssl.backbone_layers = tail: the frozen trunk runs once per crop and view for the whole finetune; the
        warm-up trains the heads on the tail's output of those views, and the 'full' phase trains tail and head on
        them, so no step runs the trunk. ssl.backbone_layers = low_res: the warm-up is the whole backbone's; each
        'full' step augments afresh and runs the frozen trunk without gradients, once for student and teacher
        (their trunks are the same), then trains tail and head.
        """
        cfg = self.cfg
        rank, world = _distributed()
        t0 = time.perf_counter()
        train_backbone = phase.kind == "full"
        split = self.student.split
        cached_trunk = split and cfg.backbone_layers == "tail"
        for p in self.student.trainable_backbone():
            p.requires_grad_(train_backbone)
        features = not train_backbone and self.backbones_equal   # heads only, on cached backbone features
        if cached_trunk and self.trunk_views is None:
            self.trunk_views = self._augmented_views(self.student.backbone[0], crops_uint8, aug_gen, torch.float16,
                                                     self.frozen_bfloat16)
        if features:
            views = self._tail_of_views() if cached_trunk else self._warmup_views(crops_uint8, aug_gen)
            model, teacher = self.student.head, self.teacher.head
        elif split:
            views = self.trunk_views if cached_trunk else None
            model, teacher = self.student.from_trunk, self.teacher.from_trunk
        else:
            views, model, teacher = None, self.student, self.teacher
        if world > 1:
            # DDP records which parameters need gradients when it wraps the module: wrap per phase.
            model = DistributedDataParallel(model)
        optimizer = self._optimizer(train_backbone)
        self.student.train()
        losses = []
        for _ in range(phase.epochs):
            a, b = pairs_across_matches(track_of_crop, matches, rng, self.pose_of_crop, cfg.pose_pairs)
            a, b = subsample_pairs(a, b, pairs_per_epoch(len(track_of_crop), cfg), rng)
            # Pad by wrapping so every rank runs the same number of equally sized steps (DDP needs lockstep).
            need = self.steps_per_epoch * cfg.batch_size * world
            idx = np.resize(np.arange(len(a)), need) if len(a) < need else np.arange(need)
            a, b = a[idx][rank::world], b[idx][rank::world]
            for s in range(self.steps_per_epoch):
                sl = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
                ia, ib = torch.from_numpy(a[sl]), torch.from_numpy(b[sl])
                if views is not None:
                    va = torch.randint(len(views), (len(ia),), generator=aug_gen)
                    vb = torch.randint(len(views), (len(ib),), generator=aug_gen)
                    inputs = torch.cat([views[va, ia], views[vb, ib]]).to(self.device, torch.float32)
                else:
                    both = as_float_batch(torch.cat([crops_uint8[ia], crops_uint8[ib]]), self.device)
                    inputs = augment(both, aug_gen, cfg)
                    if split:   # low_res: the frozen trunk, once for student and teacher
                        inputs = self._frozen_no_grad(self.student.backbone[0], inputs, self.frozen_bfloat16)
                # Micro-batches only where backbone activations (whole, or from the trunk on) are held for backward.
                micro = views is None
                apart = self._apart_in_batch(np.concatenate([a[sl], b[sl]]))
                losses.append(self._train_step(model, teacher, optimizer, inputs, phase.kind, micro, apart))
        if train_backbone:
            self.backbones_equal = False
        for p in self.student.trainable_backbone():
            p.requires_grad_(True)
        log = RoundLog(phase.round, phase.kind, phase.epochs, len(losses),
                       float(np.mean(losses)) if losses else float("nan"), time.perf_counter() - t0)
        self.logs.append(log)
        return log

    def _warmup_views(self, crops_uint8: torch.Tensor, aug_gen: torch.Generator) -> torch.Tensor:
        """The warm-up's inputs [V, N, d]: the whole frozen backbone's outputs on augmented views, or on
        ssl.warmup_on_base the crops' base embeddings as the one view (the caller's, else one plain pass)."""
        if not self.cfg.warmup_on_base:
            return self._augmented_views(self.student.backbone, crops_uint8, aug_gen, torch.float32,
                                         self.warmup_bfloat16)
        if self.base_embeddings is not None and crops_uint8 is self.video_crops:
            return self.base_embeddings.float()[None]
        return self._backbone_outputs(self.student, crops_uint8)[None]

    @torch.no_grad()
    def _augmented_views(self, network: nn.Module, crops_uint8: torch.Tensor, aug_gen: torch.Generator,
                         dtype: torch.dtype, bfloat16: bool) -> torch.Tensor:
        """`network`'s outputs on cfg.warmup_views augmented views of every crop: [V, N, ...] on the CPU
        (`bfloat16`: as `_frozen_no_grad`).

        The trunk's outputs are kept in float16 (half the memory of float32; they are inputs to training steps)."""
        cfg = self.cfg
        if cfg.fold_frozen_batchnorm:   # frozen while the views are made: fold a copy (vcn.ssl.fold)
            network = folded_copy(network).to(self.device, memory_format=weight_layout(self.device, cfg))
        views = []
        for _ in range(max(1, cfg.warmup_views)):
            out = []
            for i in range(0, len(crops_uint8), cfg.eval_batch_size):
                x = augment(as_float_batch(crops_uint8[i:i + cfg.eval_batch_size], self.device), aug_gen, cfg)
                out.append(self._frozen_no_grad(network, x, bfloat16).to("cpu", dtype))
            views.append(torch.cat(out))
        return torch.stack(views)

    @torch.no_grad()
    def _backbone_no_grad(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`backbone(x)` in a no-gradient pass: in pieces of cfg.cpu_forward_chunk crops on a CPU (faster,
        the same up to float rounding: vcn.config), whole on a GPU."""
        chunk = self.cfg.cpu_forward_chunk
        if self.device.type != "cpu" or chunk <= 0 or len(x) <= chunk:
            return backbone(x)
        return torch.cat([backbone(part) for part in x.split(chunk)])

    def _frozen_no_grad(self, frozen: nn.Module, x: torch.Tensor, bfloat16: bool) -> torch.Tensor:
        """`_backbone_no_grad` of frozen layers whose output only feeds training (the warm-up's views, the
        "low_res" front), in bfloat16 autocast where `bfloat16` (the caller's `warmup_bfloat16` or
        `frozen_bfloat16`; vcn.config: ssl.warmup_bfloat16, ssl.frozen_bfloat16); float32 out either way."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            return self._backbone_no_grad(frozen, x).float()

    def _no_grad_forward(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`network(x)` (backbone then head, or tail then head) with the backbone or tail run as
        `_backbone_no_grad` does."""
        if isinstance(network, BackboneWithHead):
            return network.head(self._backbone_no_grad(network.backbone, x))
        tail, head = network
        return head(self._backbone_no_grad(tail, x))

    @torch.no_grad()
    def _tail_of_views(self) -> torch.Tensor:
        """The (still frozen) tail's embeddings of the cached trunk views: the warm-up's inputs [V, N, d]."""
        tail = self.student.from_trunk[0]
        batch = self.cfg.eval_batch_size
        return torch.stack([torch.cat([tail(v[i:i + batch].to(self.device, torch.float32)).float().cpu()
                                       for i in range(0, len(v), batch)]) for v in self.trunk_views])

    def _optimizer(self, train_backbone: bool) -> torch.optim.Optimizer:
        groups = [{"params": list(self.student.head.parameters()), "lr": self.cfg.lr_head}]
        if train_backbone:
            groups.append({"params": self.student.trainable_backbone(), "lr": self.cfg.lr_backbone})
        return torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay, fused=self.cfg.fused_optimizer)

    def _apart_in_batch(self, crops: np.ndarray) -> torch.Tensor | None:
        """[2n, 2n] bool: which of a batch's crops (a sides, then b sides) are of two tracks seen in one frame;
        None when there are none (or ssl.cooccurring_negatives is off)."""
        if self.apart is None:
            return None
        rows = torch.from_numpy(self.track_row[crops])
        apart = self.apart[rows[:, None], rows[None, :]]
        return apart.to(self.device) if bool(apart.any()) else None

    def _train_step(self, model: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
                    inputs: torch.Tensor, kind: str, micro: bool, apart: torch.Tensor | None = None) -> float:
        """One step on a batch whose first half are the pairs' a sides and second half their b sides.

        `model` is the student's trained part (possibly DDP-wrapped) and `teacher` its counterpart, both fed
        `inputs`: augmented crops (whole networks), trunk outputs (tail and head) or backbone features (heads).
        `apart` (ssl.cooccurring_negatives): which crops of the batch are two people; each such student crop is
        pushed off the prototypes of the other's teacher output (vcn.ssl.loss.shared_prototype_penalty), the mean
        over those pairs added to Eq. 2's mean with weight 1.
        """
        with torch.no_grad():
            # Backbone or trunk-fed networks (micro): the teacher's pass is the costly one; heads and cached tails
            # run whole.
            t_out = self._no_grad_forward(teacher, inputs) if micro else teacher(inputs)
            if apart is not None:
                cfg = self.cfg
                p_all = teacher_probs(t_out, self.loss.center, cfg.teacher_temp, cfg.prototype_sets) / cfg.prototype_sets
                apart_pairs = float(apart.sum())
        t_a, t_b = t_out.chunk(2)
        x_a, x_b = inputs.chunk(2)
        n = len(x_a)
        # Micro-batches of pairs, gradients accumulated: the loss is a mean of per-pair terms, the centre is
        # fixed within a step and the backbone keeps its inference statistics, so the gradient equals the whole
        # batch's while only one micro-batch's activations are held (SFace on 64 crops holds ~3 GB for backward).
        size = self.cfg.micro_batch_pairs if self.cfg.micro_batch_pairs > 0 and micro else n
        starts = list(range(0, n, size))
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        # The head's prototypes are normalised once per step: the micro-batches before the last use a detached
        # copy and collect its gradient; the last uses the normalisation itself and passes that gradient back
        # through it with its own, in the one backward DDP synchronises. The same gradient as normalising in
        # every micro-batch (the chain rule is linear), up to float rounding; the normalisation and its backward
        # over the 16,384 x 256 prototypes were most of the head's cost in 2-pair micro-batches (issue 13).
        head = self.student.head
        unit = F.normalize(head.prototypes, dim=-1)
        detached = unit.detach().requires_grad_()
        try:
            for i in starts:
                j = min(i + size, n)
                last = i == starts[-1]
                head.unit_prototypes = unit if last else detached
                sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last \
                    else contextlib.nullcontext()
                with sync:
                    s_out = model(torch.cat([x_a[i:j], x_b[i:j]]))
                    s_a, s_b = s_out.chunk(2)
                    part = self.loss(t_a[i:j], t_b[i:j], s_a, s_b) * ((j - i) / n)
                    if apart is not None:   # this micro-batch's student rows: a sides i..j, then b sides
                        rows = torch.cat([torch.arange(i, j), torch.arange(n + i, n + j)]).to(apart.device)
                        part = part + shared_prototype_penalty(p_all, s_out, self.cfg.student_temp,
                                                               self.cfg.prototype_sets, apart[rows]) / apart_pairs
                    earlier = (unit * detached.grad).sum() if last and detached.grad is not None else 0.0
                    (part + earlier).backward()
                total += float(part.detach())
        finally:
            head.unit_prototypes = None
        if self.cfg.clip_grad > 0:
            nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.grad is not None], self.cfg.clip_grad)
        optimizer.step()
        schedule = self.momentum[kind]
        step = self.steps_done[kind]
        self._update_teacher(float(schedule[min(step, len(schedule) - 1)]), teacher,
                             model.module if isinstance(model, DistributedDataParallel) else model)
        self.loss.update_center(t_out)
        self.steps_done[kind] = step + 1
        return total

    @torch.no_grad()
    def _update_teacher(self, m: float, teacher: nn.Module, student: nn.Module) -> None:
        """teacher <- m teacher + (1 - m) student, over the trained part's parameters."""
        t_params = list(teacher.parameters())
        s_params = [p.detach() for p in student.parameters()]
        torch._foreach_mul_(t_params, m)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - m)

    # ----- outputs used by matching and clustering ------------------------------------------------------------
    def teacher_embeddings(self, crops_uint8: torch.Tensor) -> torch.Tensor:
        """The finetuned backbone's embeddings (teacher's backbone, as DINO evaluates the teacher)."""
        return self._backbone_outputs(self.teacher, crops_uint8)

    def _backbone_outputs(self, network: BackboneWithHead, crops_uint8: torch.Tensor) -> torch.Tensor:
        """`network`'s backbone on un-augmented uint8 crops, without gradients, in eval batches.

        On the very tensor `finetune` trains on (`video_crops`), with a frozen front (the trunk of low_res or tail),
        the front's output is computed once and kept (`_kept_front`), and this and every later such pass runs only
        the layers after it. Student and teacher share the frozen front's weights (never trained or averaged), and the
        kept output is cut into the same batches and pieces as the whole backbone's pass, so the numbers are the
        same bit for bit (tests/test_split.py)."""
        batch = self.cfg.eval_batch_size
        front = self._kept_front(crops_uint8)
        if front is None:
            return run_in_batches(network, crops_uint8, batch, self.device,
                                  lambda x: self._backbone_no_grad(network.backbone, x))
        tail = network.from_trunk[0]
        return run_in_batches(network, front, batch, self.device, lambda x: self._backbone_no_grad(tail, x))

    def _kept_front(self, crops_uint8: torch.Tensor) -> torch.Tensor | None:
        """The frozen front's output on `crops_uint8` where they are `video_crops` and it fits in
        ssl.front_cache_mib (computed on first use); else None."""
        if crops_uint8 is not self.video_crops or not self.student.split:
            return None
        if self.front is None:
            trunk = self.student.backbone[0]
            with torch.no_grad():
                per_crop = trunk(as_float_batch(crops_uint8[:1], self.device)).numel() * 4
            if len(crops_uint8) * per_crop > self.cfg.front_cache_mib * 2**20:
                return None
            self.front = run_in_batches(trunk, crops_uint8, self.cfg.eval_batch_size, self.device,
                                        lambda x: self._backbone_no_grad(trunk, x))
        return self.front

    def forget_front(self) -> None:
        """Free the kept front (after the last pass that reads it: Algorithm 1's terms)."""
        self.front = None

    def probs_and_log_probs(self, crops_uint8: torch.Tensor, teacher_embeddings: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per crop, without augmentation: teacher probabilities p and student log-probabilities l (Eq. 2 terms).

        `teacher_embeddings`: the crops' `teacher_embeddings` when already computed; the teacher's head then runs
        on them instead of running its backbone again (the same numbers up to float rounding).
        With several prototype sets, p is divided by their number, so -p . l is Eq. 2 averaged over the sets and
        Algorithm 1's bilinear form holds unchanged."""
        batch = self.cfg.eval_batch_size
        if teacher_embeddings is None:
            teacher_embeddings = self.teacher_embeddings(crops_uint8)
        z_t = run_in_batches(self.teacher, teacher_embeddings, batch, self.device, self.teacher.head)
        z_s = run_in_batches(self.student, self._backbone_outputs(self.student, crops_uint8), batch, self.device,
                             self.student.head)
        return algorithm1_terms(z_t, z_s, self.loss.center.detach().cpu(), self.cfg.teacher_temp,
                                self.cfg.student_temp, self.cfg.prototype_sets)


def finetune(backbone: nn.Module, crops_uint8: torch.Tensor, track_of_crop: np.ndarray, cfg: SSLConfig,
             match_fn: Callable[[SelfDistillation], Matches] | None = None,
             on_round: Callable[[RoundLog], None] | None = None,
             first_matches: Matches | None = None,
             after_warmup_matches: Matches | None = None,
             base_embeddings: torch.Tensor | None = None,
             cannot_link: set[tuple[int, int]] | None = None,
             pose_of_crop: np.ndarray | None = None) -> SelfDistillation:
    """Finetune a copy of `backbone` on one video's crops (uint8 BGR [N, 3, 112, 112]; track id per crop).

    Round 1 draws pairs within tracks (across `first_matches` too, when given: ssl.match_base_first; where
    `after_warmup_matches` is given, round 1's full phase draws across those instead: ssl.base_first_warmup_only);
    after every round but the last, `match_fn` (given the trainer, so it can embed with the teacher) returns track
    matches and the next round draws pairs across them.
    `base_embeddings`: `backbone`'s un-augmented embeddings of the crops where the caller has them (the warm-up
    reads them on ssl.warmup_on_base instead of running the backbone). `cannot_link`: pairs of track ids seen in one
    frame, the known-different pairs that ssl.cooccurring_negatives trains on. `pose_of_crop`: each crop's pose,
    which ssl.pose_pairs needs. Deterministic for a given cfg.seed (and rank).
    """
    rank, _ = _distributed()
    track_of_crop = np.asarray(track_of_crop)
    _check_augment(cfg, crops_uint8.shape[-2])
    _check_pose_pairs(cfg, pose_of_crop, len(crops_uint8))
    trainer = SelfDistillation.create(backbone, len(crops_uint8), cfg)
    trainer.pose_of_crop = None if pose_of_crop is None else np.asarray(pose_of_crop, np.float64)
    trainer.video_crops = crops_uint8
    trainer.base_embeddings = base_embeddings
    if cfg.cooccurring_negatives and cannot_link:
        trainer.track_row, trainer.apart = apart_tracks(track_of_crop, cannot_link)
    rng = np.random.default_rng(cfg.seed)          # the same on every rank: every rank draws the same pairs
    aug_gen = torch.Generator().manual_seed(cfg.seed * 1009 + rank)
    matches: Matches = dict(first_matches or {})
    phases = training_plan(cfg)
    for i, phase in enumerate(phases):
        log = trainer.train_phase(phase, crops_uint8, track_of_crop, matches, rng, aug_gen)
        if on_round:
            on_round(log)
        if phase.kind == "heads" and after_warmup_matches is not None:
            matches = dict(after_warmup_matches)
        round_ends = i + 1 == len(phases) or phases[i + 1].round != phase.round
        if round_ends and phase.round + 1 < cfg.rounds and match_fn is not None:
            matches = match_fn(trainer)
    return trainer


def apart_tracks(track_of_crop: np.ndarray, cannot_link: set[tuple[int, int]]) -> tuple[np.ndarray, torch.Tensor]:
    """(each crop's track row, [T, T] bool marking the `cannot_link` pairs among the crops' T tracks)."""
    tracks, row = np.unique(track_of_crop, return_inverse=True)
    apart = torch.zeros(len(tracks), len(tracks), dtype=torch.bool)
    i, j = (torch.from_numpy(k) for k in pair_positions(tracks, cannot_link))
    apart[i, j] = apart[j, i] = True
    return row, apart
