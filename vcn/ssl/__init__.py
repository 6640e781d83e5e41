"""Stage 2: self-supervised per-video finetuning of a face-ID backbone by student/teacher self-distillation."""

from vcn.ssl.augment import augment_crops
from vcn.ssl.head import BackboneWithHead, ProjectionHead, make_head, make_student_and_teacher
from vcn.ssl.loss import DinoLoss, algorithm1_terms, cross_entropy, student_log_probs, teacher_probs
from vcn.ssl.pairs import pairs_across_matches, pairs_within_tracks, subsample_pairs
from vcn.ssl.train import (SelfDistillation, ema_momentum_schedule, finetune, run_in_batches, steps_per_epoch,
                           training_plan)

__all__ = [
    "augment_crops", "BackboneWithHead", "ProjectionHead", "make_head", "make_student_and_teacher", "DinoLoss",
    "algorithm1_terms", "cross_entropy", "student_log_probs", "teacher_probs", "pairs_across_matches",
    "pairs_within_tracks", "subsample_pairs", "SelfDistillation", "ema_momentum_schedule", "finetune", "run_in_batches",
    "steps_per_epoch", "training_plan",
]
