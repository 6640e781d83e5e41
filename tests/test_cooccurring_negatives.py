"""ssl.cooccurring_negatives: tracks seen in one frame are trained apart (vcn.ssl.loss.shared_prototype_penalty)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vcn.ssl import finetune
from vcn.ssl.loss import shared_prototype_penalty, teacher_probs
from vcn.ssl.train import SelfDistillation, apart_tracks
from tests.test_ssl import ToyBackbone, _assert_same_weights, small_cfg, toy_crops


def test_penalty_grows_as_two_crops_share_a_prototype_and_counts_only_marked_pairs():
    teacher = torch.tensor([[1.0, 0.0, 0.0, 0.0]])              # one-hot on prototype 0, one set
    on_it = torch.tensor([[9.0, 0.0, 0.0, 0.0]])                 # student logits: prototype 0 ...
    off_it = torch.tensor([[0.0, 9.0, 0.0, 0.0]])                # ... or prototype 1
    marked, unmarked = torch.tensor([[True]]), torch.tensor([[False]])
    same = shared_prototype_penalty(teacher, on_it, 1.0, 1, marked)
    other = shared_prototype_penalty(teacher, off_it, 1.0, 1, marked)
    assert same > 5.0 and 0.0 <= other < 1e-3
    assert shared_prototype_penalty(teacher, on_it, 1.0, 1, unmarked) == 0.0
    # Two sets: the overlap is their mean, so sharing a prototype in one set of two costs -log(1/2).
    two_sets = torch.tensor([[0.5, 0.0, 0.5, 0.0]])              # p already divided by the number of sets
    half = shared_prototype_penalty(two_sets, torch.tensor([[50.0, 0.0, 0.0, 50.0]]), 1.0, 2, marked)
    assert abs(float(half) - np.log(2.0)) < 1e-4


def test_penalty_gradient_moves_the_student_off_the_teachers_prototype():
    teacher = torch.tensor([[1.0, 0.0, 0.0]])
    logits = torch.tensor([[1.0, 0.5, 0.0]], requires_grad=True)
    shared_prototype_penalty(teacher, logits, 1.0, 1, torch.tensor([[True]])).backward()
    assert logits.grad[0, 0] > 0 and logits.grad[0, 1] < 0     # descent lowers prototype 0, raises the others


def test_apart_tracks_marks_both_directions_and_ignores_unknown_tracks():
    rows, apart = apart_tracks(np.array([7, 7, 3, 9, 9]), {(3, 9), (7, 42)})
    assert rows.tolist() == [1, 1, 0, 2, 2]                     # tracks sorted: 3, 7, 9
    assert apart.tolist() == [[False, False, True], [False, False, False], [True, False, False]]


def _heads_trained(crops: torch.Tensor, apart: torch.Tensor | None, steps: int = 5) -> float:
    """Train the heads on a batch of two pairs, one of track A's crops (0, 1) and one of track B's (2, 3), then
    return the overlap of B's student output with A's teacher prototypes."""
    trainer = SelfDistillation.create(ToyBackbone(), len(crops), small_cfg(cooccurring_negatives=True))
    with torch.no_grad():
        features = trainer.student.backbone(crops.float())
    inputs = features[[0, 2, 1, 3]]                            # a sides (A, B), then b sides (A, B)
    optimizer = trainer._optimizer(False)
    for _ in range(steps):
        trainer._train_step(trainer.student.head, trainer.teacher.head, optimizer, inputs, "heads", False, apart)
    with torch.no_grad():
        cfg = trainer.cfg
        p = teacher_probs(trainer.teacher.head(features), trainer.loss.center, cfg.teacher_temp, cfg.prototype_sets)
        q = torch.softmax(trainer.student.head(features).reshape(4, cfg.prototype_sets, -1) / cfg.student_temp, -1)
        return float((q.reshape(4, -1)[2:] @ p[:2].T).mean() / cfg.prototype_sets)


def test_a_training_step_pushes_two_people_off_each_others_prototypes():
    crops, _ = toy_crops(n_tracks=2, per_track=2)
    # The two tracks look alike: B is A's crops a little brighter in one corner, so the untrained heads put
    # them on much the same prototypes.
    crops[2:] = crops[:2]
    crops[2:, :, :28, :28] = (crops[2:, :, :28, :28].int() + 5).clamp(0, 255).to(torch.uint8)
    tracks = torch.tensor([0, 1, 0, 1])                        # the batch's crops: A, B, A, B
    apart = tracks[:, None] != tracks[None, :]
    assert _heads_trained(crops, apart, steps=0) > 0.4
    # Training on pairs of one track alone moves them apart too (the centre spreads the prototypes); telling the
    # trainer they are two people moves them further in the same steps (0.36 against 0.46).
    assert _heads_trained(crops, apart) < 0.85 * _heads_trained(crops, None)


def test_finetune_with_the_option_trains_only_where_tracks_share_a_frame():
    crops, tracks = toy_crops()
    cfg = small_cfg(rounds=2, cooccurring_negatives=True)
    off = finetune(ToyBackbone(), crops, tracks, dataclasses.replace(cfg, cooccurring_negatives=False),
                   cannot_link={(0, 1)})
    on = finetune(ToyBackbone(), crops, tracks, cfg, cannot_link={(0, 1)})
    assert on.logs[0].mean_loss > off.logs[0].mean_loss        # the penalty is part of the loss
    assert any(not torch.equal(a, b) for a, b in zip(on.student.parameters(), off.student.parameters()))
    # Without pairs seen together, the option changes nothing.
    none = finetune(ToyBackbone(), crops, tracks, cfg, cannot_link=set())
    _assert_same_weights(none.student, off.student)
    # Micro-batches still sum to the whole batch's gradient (the penalty is a mean over the batch's marked pairs).
    micro = finetune(ToyBackbone(), crops, tracks, dataclasses.replace(cfg, micro_batch_pairs=3),
                     cannot_link={(0, 1)})
    _assert_same_weights(on.student, micro.student)
