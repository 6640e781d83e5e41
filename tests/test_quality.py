"""SER-FIQ face quality and the MAD low-outlier filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vcn.errors import VcnError
from vcn.quality import (embed_with_serfiq, embedding_layer, mad_low_outliers, serfiq_batch, serfiq_score,
                         track_quality)


class TwoLayer(nn.Module):
    """trunk -> Linear (the embedding layer) -> BatchNorm1d, like SFace's tail."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 24), nn.ReLU())
        self.embed = nn.Linear(24, 8)
        self.norm = nn.BatchNorm1d(8)
        with torch.no_grad():
            self.norm.running_mean.normal_()
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.norm(self.embed(self.trunk(x / 255.0)))


def test_serfiq_runs_dropout_at_the_embedding_layer_as_the_definition_says():
    model = TwoLayer().eval()
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 4, 4)).astype(np.uint8))
    passes, p = 10, 0.5
    emb, q = embed_with_serfiq(model, crops, passes, p, torch.Generator().manual_seed(7), batch_size=3)
    with torch.no_grad():
        assert torch.allclose(emb, model(crops.float()), atol=1e-6)
        # Reference: the same masks (same generator draws), one pass at a time, pairs enumerated.
        feats = model.trunk(crops.float() / 255.0)
        keep = torch.rand((3, passes, 24), generator=torch.Generator().manual_seed(7)) >= p
        for i in range(3):
            outs = [F.normalize(model.norm(model.embed(feats[i:i + 1] * keep[i, m] / (1 - p)))[0], dim=0)
                    for m in range(passes)]
            dists = [torch.dist(outs[a], outs[b]) for a in range(passes) for b in range(passes) if a < b]
            expected = 2 * torch.sigmoid(-torch.stack(dists).mean())
            assert q[i] == pytest.approx(float(expected), abs=1e-5)
    assert embedding_layer(model) is model.embed
    assert not any(m._forward_pre_hooks for m in model.modules())   # the hook is removed afterwards


def test_serfiq_score_is_bounded_and_seeded():
    same = torch.ones(1, 5, 4)                       # dropout changed nothing: quality 1
    rng = torch.Generator().manual_seed(0)
    scattered = torch.randn(1, 5, 4, generator=rng)  # dropout scrambled the identity: low quality
    q = serfiq_score(torch.cat([same, scattered]))
    assert q[0] == pytest.approx(1.0) and 0 < q[1] < 0.7
    crops = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 3, 4, 4)).astype(np.uint8))
    a = embed_with_serfiq(TwoLayer().eval(), crops, 20, 0.5, torch.Generator().manual_seed(3), batch_size=2)[1]
    b = embed_with_serfiq(TwoLayer().eval(), crops, 20, 0.5, torch.Generator().manual_seed(3), batch_size=2)[1]
    assert np.array_equal(a, b)


def test_serfiq_on_sface_ranks_faces_above_noise_and_blank_crops():
    """The real backbone: an aligned face keeps its identity under dropout better than noise or a blank crop."""
    from tests.test_stage23 import deepface_track_crops, sface_or_skip

    backbone = sface_or_skip()
    crops, _ = deepface_track_crops(people=3, photos_per_person=1, tracks_per_photo=1, crops_per_track=2)
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, (2, 3, 112, 112)).astype(np.uint8))
    flat = torch.full((2, 3, 112, 112), 128, dtype=torch.uint8)
    _, q = embed_with_serfiq(backbone, torch.cat([crops, noise, flat]), 100, 0.5, torch.Generator().manual_seed(0))
    faces, junk = q[:len(crops)], q[len(crops):]
    assert faces.min() > junk.max(), (faces, junk)


def test_track_quality_is_the_mean_of_its_crops():
    q = track_quality(np.array([0.2, 0.4, 0.9, 0.5]), np.array([3, 3, 8, 8]))
    assert q == pytest.approx({3: 0.3, 8: 0.7})


def test_mad_flags_low_outliers_only():
    values = np.array([0.80, 0.82, 0.81, 0.79, 0.83, 0.80, 0.40, 0.99])
    flags = mad_low_outliers(values, 3.0)
    assert flags.tolist() == [False] * 6 + [True, False]   # the high outlier is kept
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    assert (values < med - 3 * 1.4826 * mad).tolist() == flags.tolist()


def test_mad_flags_nothing_without_spread_or_data():
    assert not mad_low_outliers(np.array([0.5, 0.5, 0.5, 0.1])).any()   # MAD = 0: spread unknown
    assert not mad_low_outliers(np.array([0.9, 0.1])).any()             # two values never flag each other
    assert mad_low_outliers(np.array([])).shape == (0,)


def test_serfiq_batch_is_small_on_a_cpu_and_large_on_a_gpu():
    # 0 = auto: 4 crops a call on a CPU (as always), 64 on a GPU; a number given is kept on either.
    assert serfiq_batch(0, "cpu") == 4 and serfiq_batch(0, torch.device("cuda")) == 64
    assert serfiq_batch(7, "cpu") == 7 and serfiq_batch(7, "cuda:1") == 7
    with pytest.raises(VcnError, match=r"serfiq.batch_size=-1 must be at least 0 \(the default is 0: auto"):
        serfiq_batch(-1, "cpu")
