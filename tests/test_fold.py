"""Folding a frozen backbone's BatchNorms into its convolutions (vcn.ssl.fold, ssl.fold_frozen_batchnorm)."""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from tests.test_models import aligned_crops, to_tensor  # noqa: F401  (a fixture and its helper)
from tests.test_split import graph_backbone
from tests.test_ssl import small_cfg, toy_crops
from vcn.config import SSLConfig
from vcn.ssl import finetune
from vcn.ssl.fold import fold_batchnorm, folded_copy
from vcn.ssl.train import SelfDistillation


def batchnorms_called(graph: fx.GraphModule) -> int:
    return sum(1 for n in graph.graph.nodes
               if n.op == "call_module" and isinstance(graph.get_submodule(n.target), nn.BatchNorm2d))


def test_sface_folded_gives_its_embeddings_of_real_faces_without_a_batchnorm_pass(aligned_crops):  # noqa: F811
    from vcn.models import load_backbone

    crops, _ = aligned_crops
    sface = load_backbone("sface").eval()
    before = batchnorms_called(sface.net)
    folded_net, count = fold_batchnorm(sface.net)
    assert count >= 20 and batchnorms_called(folded_net) == before - count
    folded = folded_copy(sface)
    assert batchnorms_called(folded.net) == before - count
    assert batchnorms_called(sface.net) == before                  # the original keeps its BatchNorms
    x = to_tensor(crops[:24])
    with torch.no_grad():
        plain, fast = sface(x), folded(x)
    assert torch.nn.functional.cosine_similarity(plain, fast).min() > 0.99999
    assert (plain - fast).abs().max() < 1e-4
    assert not any(p.requires_grad for p in folded.parameters())
    # A copy: changing the original's weights leaves the folded network as it was.
    with torch.no_grad():
        for p in sface.parameters():
            p.mul_(0.5)
        assert torch.equal(folded(x), fast)


def test_a_convolution_read_by_more_than_its_batchnorm_is_left_alone():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.conv2, self.bn2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), \
                nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn2(self.conv2(self.bn(y))) + y

    torch.manual_seed(0)
    net = TwoReaders().eval()
    for bn in (net.bn, net.bn2):     # statistics that are not the identity, so a wrong fold shows
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    graph = fx.symbolic_trace(net)
    folded, count = fold_batchnorm(graph)
    assert count == 1 and batchnorms_called(folded) == 1            # conv2 -> bn2 folded, conv -> bn kept
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


def test_the_setting_folds_the_frozen_trunk_for_the_whole_finetune():
    crops, tracks = toy_crops()
    for setting in (True, False):
        trainer = finetune(graph_backbone(), crops, tracks,
                           small_cfg(rounds=2, backbone_layers="low_res", fold_frozen_batchnorm=setting))
        for net in (trainer.student, trainer.teacher):
            trunk = net.backbone[0]
            assert batchnorms_called(trunk.graph_module) == (0 if setting else 1)
        assert np.isfinite([log.mean_loss for log in trainer.logs]).all()


def test_warmup_views_from_the_folded_sface_are_the_plain_ones_up_to_rounding(aligned_crops):  # noqa: F811
    from vcn.models import load_backbone

    crops = torch.from_numpy(np.ascontiguousarray(aligned_crops[0][:20].transpose(0, 3, 1, 2)))
    views = {}
    for setting in (False, True):
        cfg = SSLConfig(device="cpu", backbone_layers="low_res", warmup_views=2, eval_batch_size=16,
                        fold_frozen_batchnorm=setting)
        trainer = SelfDistillation.create(load_backbone("sface"), len(crops), cfg)
        views[setting] = trainer._augmented_views(trainer.student.backbone, crops, torch.Generator().manual_seed(3),
                                                  torch.float32, bfloat16=False)
        # The student's own tail still has its BatchNorms: only the views' copy was folded.
        assert batchnorms_called(trainer.student.backbone[1]) > 0
    assert views[True].shape == views[False].shape == (2, 20, 128)
    assert (views[True] - views[False]).abs().max() < 1e-4
