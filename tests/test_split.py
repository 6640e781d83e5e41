"""Finetuning a frozen trunk and a trainable tail (vcn.ssl.split, ssl.backbone_layers=tail or low_res)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.fx as fx
from torch import nn

from tests.test_ssl import ToyBackbone, small_cfg, toy_crops
from vcn.errors import VcnError
from vcn.models.onnx_torch import OnnxBackbone
from vcn.ssl import finetune, make_student_and_teacher
from vcn.ssl.fold import fold_batchnorm
from vcn.ssl.split import LOW_RES_FRACTION, MIN_TAIL_PARAMETER_SHARE, split_backbone


def graph_backbone(seed: int = 0) -> OnnxBackbone:
    """A small backbone shaped like a converted ONNX model: an fx graph behind the OnnxBackbone contract."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 16))
    return OnnxBackbone(fx.symbolic_trace(net.eval()), name="graph-toy", version="1", embedding_dim=16,
                        swap_rb=True, mean=127.5, std=128.0)


def test_sface_is_cut_at_its_narrowest_point_and_trunk_then_tail_is_the_whole_network():
    from vcn.models import load_backbone

    sface = load_backbone("sface").eval()
    split = split_backbone(copy.deepcopy(sface))
    # After conv_13's depthwise layer: 512x7x7 (25,088 numbers), with 83% of the weights after it.
    assert split.cut_shape == (512, 7, 7)
    assert split.tail_parameter_share >= MIN_TAIL_PARAMETER_SHARE
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        torch.testing.assert_close(split.tail(split.trunk(x)), sface(x), rtol=1e-4, atol=1e-5)


def test_sface_low_res_cut_is_the_first_point_at_an_eighth_of_the_crop():
    from vcn.models import load_backbone

    sface = load_backbone("sface").eval()
    split = split_backbone(copy.deepcopy(sface), at="low_res")
    # After conv_7's depthwise (stride-2) layer: 256x14x14, 112 / 8 = 14; 98.6% of the weights are after it.
    assert split.cut_shape == (256, 14, 14) and max(split.cut_shape[1:]) <= 112 * LOW_RES_FRACTION
    assert split.tail_parameter_share > 0.98
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        torch.testing.assert_close(split.tail(split.trunk(x)), sface(x), rtol=1e-4, atol=1e-5)
    # A backbone left in training mode splits the same (the shapes are probed in eval mode, the mode kept).
    trained = copy.deepcopy(sface).train()
    assert split_backbone(trained, at="low_res").cut_shape == split.cut_shape and trained.net.training
    with pytest.raises(ValueError, match="at='middle'; choose tail or low_res"):
        split_backbone(copy.deepcopy(sface), at="middle")


def test_split_needs_a_graph_and_a_tail_with_half_the_weights():
    assert split_backbone(ToyBackbone()) is None                     # a plain module: nothing to cut
    split = split_backbone(graph_backbone())
    # The narrowest single-tensor point before at least half of the weights: the 4x4x4 pooled map (64 numbers).
    assert split.cut_shape == (4, 4, 4)
    assert split.tail_parameter_share >= MIN_TAIL_PARAMETER_SHARE


def test_student_trains_only_the_tail_and_the_caller_backbone_is_untouched():
    backbone = graph_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    student, teacher = make_student_and_teacher(backbone, 32, 8, 64, layers="tail")
    assert student.split and teacher.split
    trunk, tail = student.backbone[0], student.backbone[1]
    assert not any(p.requires_grad for p in trunk.parameters())
    assert {id(p) for p in student.trainable_backbone()} == {id(p) for p in tail.parameters()}
    crops, tracks = toy_crops()
    # Unfolded, so the trunk's weights can be compared with a fresh split's (tests/test_fold.py covers folding).
    trainer = finetune(backbone, crops, tracks, small_cfg(rounds=2, backbone_layers="tail", fold_frozen_batchnorm=False))
    s_trunk, s_tail = trainer.student.backbone[0], trainer.student.backbone[1]
    t_trunk, t_tail = trainer.teacher.backbone[0], trainer.teacher.backbone[1]
    fresh = split_backbone(graph_backbone())
    for a, b, c in zip(s_trunk.parameters(), t_trunk.parameters(), fresh.trunk.parameters()):
        assert torch.equal(a, c) and torch.equal(b, c)                # trunk frozen in both networks
    assert any(not torch.equal(a, c) for a, c in zip(s_tail.parameters(), fresh.tail.parameters()))
    assert any(not torch.equal(a, c) for a, c in zip(t_tail.parameters(), fresh.tail.parameters()))  # EMA moved
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())


def finetune_counting_trunk_crops(crops, tracks, cfg, **finetune_args):
    """finetune() on graph_backbone(), and the crops each call of the student's trunk received."""
    seen = []
    original = make_student_and_teacher

    def counting(*args, **kwargs):
        student, teacher = original(*args, **kwargs)
        student.backbone[0].register_forward_hook(lambda module, inputs, out: seen.append(len(out)))
        return student, teacher

    import vcn.ssl.train as train

    train.make_student_and_teacher, saved = counting, train.make_student_and_teacher
    try:
        return finetune(graph_backbone(), crops, tracks, cfg, **finetune_args), seen
    finally:
        train.make_student_and_teacher = saved


def test_the_trunk_runs_once_per_crop_and_view_for_the_whole_finetune():
    crops, tracks = toy_crops()
    cfg = small_cfg(rounds=3, warmup_views=2, backbone_layers="tail")
    trainer, seen = finetune_counting_trunk_crops(crops, tracks, cfg)
    assert sum(seen) == cfg.warmup_views * len(crops)
    assert trainer.trunk_views.shape[:2] == (cfg.warmup_views, len(crops))
    assert trainer.trunk_views.dtype == torch.float16
    assert [log.kind for log in trainer.logs] == ["heads", "full", "full", "full"]


def test_low_res_runs_the_frozen_trunk_on_fresh_crops_at_every_full_step():
    crops, tracks = toy_crops()
    cfg = small_cfg(rounds=2, warmup_views=2, backbone_layers="low_res")
    trainer, seen = finetune_counting_trunk_crops(crops, tracks, cfg)
    assert trainer.student.split and trainer.trunk_views is None          # nothing cached beyond a step
    # Warm-up: the whole backbone once per crop and view; then every full step: both sides of its pairs, once.
    full_steps = sum(log.steps for log in trainer.logs if log.kind == "full")
    assert sum(seen) == cfg.warmup_views * len(crops) + full_steps * 2 * cfg.batch_size
    fresh = split_backbone(graph_backbone(), at="low_res")
    folded_fresh_trunk, _ = fold_batchnorm(fresh.trunk.graph_module)      # ssl.fold_frozen_batchnorm, the default
    for net in (trainer.student, trainer.teacher):
        trunk, tail = net.backbone[0], net.backbone[1]
        assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), folded_fresh_trunk.parameters()))
        assert any(not torch.equal(a, b) for a, b in zip(tail.parameters(), fresh.tail.parameters()))
    assert np.isfinite([log.mean_loss for log in trainer.logs]).all()


def test_warmup_on_base_trains_the_heads_on_the_given_embeddings_without_a_backbone_pass():
    crops, tracks = toy_crops()
    cfg = small_cfg(rounds=2, warmup_views=2, backbone_layers="low_res", warmup_on_base=True)
    with torch.no_grad():
        base = graph_backbone()(crops.float())
    trainer, seen = finetune_counting_trunk_crops(crops, tracks, cfg, base_embeddings=base)
    full_steps = sum(log.steps for log in trainer.logs if log.kind == "full")
    assert sum(seen) == full_steps * 2 * cfg.batch_size                    # the warm-up ran no trunk
    assert [log.kind for log in trainer.logs] == ["heads", "full", "full"]
    # The heads learnt from those embeddings: other embeddings give other heads after the warm-up.
    other, _ = finetune_counting_trunk_crops(crops, tracks, small_cfg(rounds=1, epochs_per_round=0, warmup_on_base=True,
                                                                      backbone_layers="low_res"),
                                             base_embeddings=base.flip(0))
    same, _ = finetune_counting_trunk_crops(crops, tracks, small_cfg(rounds=1, epochs_per_round=0, warmup_on_base=True,
                                                                     backbone_layers="low_res"),
                                            base_embeddings=base)
    assert not torch.equal(other.student.head.prototypes, same.student.head.prototypes)
    # Without them the trainer embeds the crops itself, un-augmented, once: the same heads as given the same numbers.
    alone, seen_alone = finetune_counting_trunk_crops(crops, tracks, small_cfg(rounds=1, epochs_per_round=0,
                                                                               warmup_on_base=True,
                                                                               backbone_layers="low_res"))
    # The kept front's one-crop size probe, then every crop once (in pieces of 8: ssl.cpu_forward_chunk).
    assert seen_alone == [1, 8, 8, 4]
    torch.testing.assert_close(alone.student.head.prototypes, same.student.head.prototypes, rtol=1e-4, atol=1e-5)


def test_whole_backbone_and_unknown_setting():
    crops, tracks = toy_crops()
    whole = finetune(graph_backbone(), crops, tracks, small_cfg(backbone_layers="all"))
    assert not whole.student.split and whole.trunk_views is None
    fresh = graph_backbone()
    # Every layer may move, the first convolution included.
    assert not torch.equal(whole.student.backbone.net.get_submodule("0").weight, fresh.net.get_submodule("0").weight)
    with pytest.raises(VcnError, match="ssl.backbone_layers='some' is unknown; choose one of all, low_res, tail"):
        finetune(graph_backbone(), crops, tracks, small_cfg(backbone_layers="some"))
    assert np.isfinite([log.mean_loss for log in whole.logs]).all()


@pytest.mark.parametrize("setting", [True, False])
def test_frozen_passes_feeding_training_run_in_bfloat16_only_when_set(setting, monkeypatch):
    """ssl.frozen_bfloat16: the frozen trunk's passes during training (warm-up views, the low_res front at every
    full step) run under bfloat16 autocast where the device has it (forced here, so any CPU tests it); the
    trained layers and every pass after training (embeddings for matching and clustering) stay float32."""
    import vcn.ssl.train as train

    monkeypatch.setattr(train, "bfloat16_is_fast", lambda device: True)
    crops, tracks = toy_crops()
    calls: list[tuple[str, bool, bool]] = []
    original = make_student_and_teacher

    def recording(*args, **kwargs):
        student, teacher = original(*args, **kwargs)
        for role, net in (("student", student), ("teacher", teacher)):
            for part, module in (("trunk", net.backbone[0]), ("tail", net.backbone[1])):
                module.register_forward_hook(lambda m, i, o, name=f"{role} {part}": calls.append(
                    (name, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"))))
        return student, teacher

    monkeypatch.setattr(train, "make_student_and_teacher", recording)
    trainer = finetune(graph_backbone(), crops, tracks,
                       small_cfg(rounds=2, warmup_views=2, backbone_layers="low_res", frozen_bfloat16=setting,
                                 warmup_bfloat16=False))   # the views alone: the test below
    assert trainer.frozen_bfloat16 is setting
    trunk_in_training = [autocast for name, _, autocast in calls if name == "student trunk"]
    assert trunk_in_training and all(a is setting for a in trunk_in_training)
    assert not any(autocast for _, grad, autocast in calls if grad)                     # the trained layers
    assert not any(autocast for name, _, autocast in calls if name.startswith("teacher"))  # the teacher's targets
    calls.clear()
    embeddings = trainer.teacher_embeddings(crops)
    p, l = trainer.probs_and_log_probs(crops)
    assert calls and not any(autocast for _, _, autocast in calls)
    assert embeddings.dtype == p.dtype == l.dtype == torch.float32
    assert np.isfinite([log.mean_loss for log in trainer.logs]).all()


@pytest.mark.parametrize("setting", [True, False])
def test_warmup_bfloat16_runs_only_the_warmups_views_in_bfloat16(setting, monkeypatch):
    """ssl.warmup_bfloat16: the warm-up's augmented views through the frozen backbone run under bfloat16 autocast
    where the device has it (forced here); the low_res front at every full step and every other pass stay
    float32."""
    import vcn.ssl.train as train

    monkeypatch.setattr(train, "bfloat16_is_fast", lambda device: True)
    calls: list[tuple[str, bool]] = []
    making_views: list[bool] = []
    backbone_no_grad, warmup_views = train.SelfDistillation._backbone_no_grad, train.SelfDistillation._warmup_views

    def recording(self, backbone, x):
        kind = "views" if making_views else "front" if backbone is self.student.backbone[0] else "other"
        calls.append((kind, torch.is_autocast_enabled("cpu")))
        return backbone_no_grad(self, backbone, x)

    def views(self, *args):
        making_views.append(True)
        try:
            return warmup_views(self, *args)
        finally:
            making_views.pop()

    monkeypatch.setattr(train.SelfDistillation, "_backbone_no_grad", recording)
    monkeypatch.setattr(train.SelfDistillation, "_warmup_views", views)
    crops, tracks = toy_crops()
    trainer = finetune(graph_backbone(), crops, tracks,
                       small_cfg(rounds=2, warmup_views=2, backbone_layers="low_res", warmup_bfloat16=setting))
    assert trainer.warmup_bfloat16 is setting and trainer.frozen_bfloat16 is False
    by_kind = {kind: [autocast for k, autocast in calls if k == kind] for kind in ("views", "front", "other")}
    assert all(by_kind.values())                                          # each kind of pass ran
    assert all(a is setting for a in by_kind["views"])
    assert not any(by_kind["front"] + by_kind["other"])
    assert np.isfinite([log.mean_loss for log in trainer.logs]).all()


@pytest.mark.parametrize("layers", ["low_res", "tail"])
def test_a_split_backbone_keeps_the_front_of_the_video_crops_and_later_passes_give_the_same_numbers(layers):
    """ssl.front_cache_mib: once a no-gradient pass over the crops being finetuned on needs the frozen front, its
    output is kept, and every later pass over that very tensor (teacher embeddings for matching and at the end,
    the student's for Algorithm 1) starts from it: the same numbers bit for bit as running the whole backbone."""
    crops, tracks = toy_crops(n_tracks=5, per_track=7)           # 35 crops: batches of 16 and a remainder
    cfg = small_cfg(rounds=3, warmup_views=2, backbone_layers=layers, cpu_forward_chunk=3)
    seen_between_rounds = []

    def match_fn(trainer):
        seen_between_rounds.append(trainer.teacher_embeddings(crops))
        return {}

    trainer = finetune(graph_backbone(), crops, tracks, cfg, match_fn=match_fn)
    assert len(seen_between_rounds) == 2 and trainer.front is not None and len(trainer.front) == len(crops)
    copy_of_crops = crops.clone()                                # another tensor: the whole backbone runs
    assert torch.equal(trainer.teacher_embeddings(crops), trainer.teacher_embeddings(copy_of_crops))
    p, l = trainer.probs_and_log_probs(crops)
    p2, l2 = trainer.probs_and_log_probs(copy_of_crops)
    assert torch.equal(p, p2) and torch.equal(l, l2)
    trainer.forget_front()
    assert trainer.front is None

    # A budget too small for the crops: nothing is kept, the same numbers.
    small = finetune(graph_backbone(), crops, tracks, small_cfg(rounds=3, warmup_views=2, backbone_layers=layers,
                                                              cpu_forward_chunk=3, front_cache_mib=0))
    assert small.front is None
    torch.testing.assert_close(small.teacher_embeddings(crops), trainer.teacher_embeddings(crops), rtol=0, atol=0)
    assert small.front is None


def test_sface_kept_front_gives_the_whole_backbones_numbers_bit_for_bit():
    """The same on SFace with the CPU defaults (channels-last weights, pieces of 8 crops, a last short piece)."""
    from vcn.config import SSLConfig
    from vcn.models import load_backbone
    from vcn.ssl.train import SelfDistillation

    crops = (torch.rand(21, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    trainer = SelfDistillation.create(load_backbone("sface"), len(crops),
                                      SSLConfig(device="cpu", backbone_layers="low_res", eval_batch_size=16))
    trainer.video_crops = crops
    kept = trainer.teacher_embeddings(crops)
    assert trainer.front is not None and trainer.front.shape == (21, 256, 14, 14)
    assert torch.equal(kept, trainer.teacher_embeddings(crops.clone()))
    p, l = trainer.probs_and_log_probs(crops, kept)
    p2, l2 = trainer.probs_and_log_probs(crops.clone(), kept)
    assert torch.equal(p, p2) and torch.equal(l, l2)


def test_split_probes_the_shapes_where_the_weights_are():
    # Stage 2 hands the finetune a backbone already on the GPU (it embedded the crops there); the shape probe once
    # ran on a CPU tensor and failed on the first run on a GPU. The "meta" device stands in for the GPU here: a
    # probe on another device than the weights fails the same way.
    backbone = graph_backbone()
    for at in ("tail", "low_res"):
        on_cpu = split_backbone(copy.deepcopy(backbone), at=at)
        elsewhere = split_backbone(copy.deepcopy(backbone).to("meta"), at=at)
        assert on_cpu is not None and elsewhere.cut_shape == on_cpu.cut_shape
