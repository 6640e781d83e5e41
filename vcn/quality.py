"""Face quality by SER-FIQ (stochastic embedding robustness) and the MAD low-outlier filter on track quality."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcn.config import check_range


def serfiq_score(stochastic: torch.Tensor) -> torch.Tensor:
    """[B, m, d] stochastic embeddings -> [B] quality = 2 * sigmoid(-mean pairwise distance of the L2-normalised
    embeddings) (Terhorst et al. 2020): near 1 when dropout leaves the identity unchanged."""
    m = stochastic.shape[1]
    if m < 2:
        raise ValueError("SER-FIQ needs at least 2 passes")
    unit = F.normalize(stochastic.float(), dim=-1)
    mean_dist = torch.cdist(unit, unit).sum(dim=(1, 2)) / (m * (m - 1))
    return 2 * torch.sigmoid(-mean_dist)


def embedding_layer(backbone: nn.Module) -> nn.Linear | None:
    """The backbone's last Linear layer (SFace: pre_fc1, 50176 -> 128, right after its own dropout), or None."""
    last = None
    for module in backbone.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last


def _mask_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """Where the dropout masks are drawn: `generator` itself on a CPU; on a GPU a generator there, seeded from
    `generator`, so the masks (passes x 50,176 numbers per SFace crop) are neither drawn on the host nor copied
    over: on the H200, SER-FIQ ran at 2-3% GPU use with host-drawn masks."""
    if device.type == "cpu" or generator is None:
        return generator
    on_device = torch.Generator(device=device)
    on_device.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
    return on_device


# serfiq.batch_size = 0 (auto): crops per backbone call on a CPU and on a GPU.
AUTO_SERFIQ_BATCH = {False: 4, True: 64}


def serfiq_batch(setting: int, device: torch.device | str) -> int:
    """serfiq.batch_size made concrete for `device` (0 = AUTO_SERFIQ_BATCH)."""
    check_range("serfiq.batch_size", setting)
    return setting or AUTO_SERFIQ_BATCH[torch.device(device).type == "cuda"]


@torch.no_grad()
def embed_with_serfiq(backbone: nn.Module, crops_uint8: torch.Tensor, passes: int = 100, dropout: float = 0.5,
                      generator: torch.Generator | None = None, batch_size: int = 4,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings [N, d] and SER-FIQ quality [N] of uint8 BGR crops in one pass of the backbone.

    Dropout sits at the embedding layer, as SER-FIQ prescribes: a forward pre-hook on the backbone's last
    Linear layer appends `passes` dropout-masked copies of that layer's input to the batch, so everything
    before it runs once per crop and only the embedding layer (and any per-row layers after it, such as
    SFace's BatchNorm1d) runs m + 1 times. A backbone with no Linear layer gets dropout on its output.
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    layer = embedding_layer(backbone)
    extra: dict[str, int] = {}
    masks = _mask_generator(generator, device)

    def expand(_module, args):
        x = args[0]
        b, f = x.shape
        keep = torch.rand((b, passes, f), generator=masks, device=device) >= dropout
        stoch = (x[:, None, :] * keep / (1.0 - dropout)).reshape(b * passes, f)
        extra["rows"] = b
        return (torch.cat([x, stoch]),) + tuple(args[1:])

    handle = layer.register_forward_pre_hook(expand) if layer is not None else None
    embeddings, quality = [], []
    try:
        for i in range(0, len(crops_uint8), batch_size):
            x = crops_uint8[i:i + batch_size].to(device=device, dtype=torch.float32)
            out = backbone(x).float()
            b = len(x)
            if handle is None:
                out = out.cpu()
                embeddings.append(out)
                keep = torch.rand((b, passes, out.shape[1]), generator=generator) >= dropout
                quality.append(serfiq_score(out[:, None, :] * keep / (1.0 - dropout)))
                continue
            if extra.get("rows") != b or out.shape[0] != b * (passes + 1):
                raise RuntimeError("SER-FIQ: the layers after the backbone's last Linear are not row-wise")
            embeddings.append(out[:b].cpu())
            quality.append(serfiq_score(out[b:].reshape(b, passes, -1)).cpu())
    finally:
        if handle is not None:
            handle.remove()
        backbone.train(was_training)
    if not embeddings:
        return torch.zeros(0), np.zeros(0, np.float32)
    return torch.cat(embeddings), torch.cat(quality).numpy().astype(np.float32)


def track_quality(crop_quality: np.ndarray, track_of_crop: np.ndarray) -> dict[int, float]:
    """Track quality = mean of its crops' qualities."""
    crop_quality = np.asarray(crop_quality, dtype=np.float64)
    track_of_crop = np.asarray(track_of_crop)
    return {int(t): float(crop_quality[track_of_crop == t].mean()) for t in np.unique(track_of_crop)}


def mad_low_outliers(values: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Boolean mask of low outliers: value < median - k * 1.4826 * MAD (Leys et al. 2013).

    With MAD = 0 (half the values or more equal) the spread is unknown and nothing is flagged.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=bool)
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    if mad <= 0:
        return np.zeros(v.shape, dtype=bool)
    return v < med - k * 1.4826 * mad
