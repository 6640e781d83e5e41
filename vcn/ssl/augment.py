"""Random augmentations of a pair's crops (flip, small rotation, colour-temperature shift, optionally a lower
resolution), batched in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_crops(crops: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0,
                  max_colour_shift: float = 0.1, flip_prob: float = 0.5, low_res_prob: float = 0.0,
                  min_res_px: int = 24) -> torch.Tensor:
    """Augment BGR float crops [B, 3, H, W] (values 0..255); every crop draws its own parameters.

    - horizontal flip with probability `flip_prob`;
    - rotation by an angle uniform in [-max_rotation_deg, max_rotation_deg] about the centre (bilinear,
      border pixels replicated so no black corners tell the network which crops were rotated);
    - colour temperature: red scaled by (1 + s) and blue by (1 - s), s uniform in [-max_colour_shift,
      max_colour_shift] (warmer or cooler light), clipped to 0..255;
    - with probability `low_res_prob`, a lower resolution: the crop is shrunk to a side drawn uniformly in
      [min_res_px, H) (area averaging) and enlarged back (bilinear), as a face seen small in a wide shot looks
      once it is cut out and resized to the crop size.
    Draws come from `generator` (on the CPU), so a seed fixes the result. With low_res_prob 0 (the default) no
    draw is made for it, so the other augmentations draw exactly what they drew before it existed.
    """
    b = crops.shape[0]
    if b == 0:
        return crops
    device, dtype = crops.device, crops.dtype
    flip = torch.rand(b, generator=generator) < flip_prob
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation_deg)
    shift = (torch.rand(b, generator=generator) * 2 - 1) * max_colour_shift

    # One affine grid does flip and rotation together: x_src = R(angle) . diag(+-1, 1) . x_out.
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * sign
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sign
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(device=device, dtype=dtype), list(crops.shape), align_corners=False)
    out = F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # BGR channel order: index 0 is blue, 2 is red.
    gains = torch.ones(b, 3, 1, 1)
    gains[:, 0, 0, 0] = 1 - shift
    gains[:, 2, 0, 0] = 1 + shift
    out = (out * gains.to(device=device, dtype=dtype)).clamp_(0.0, 255.0)
    return _lower_resolution(out, generator, low_res_prob, min_res_px) if low_res_prob > 0 else out


def _lower_resolution(crops: torch.Tensor, generator: torch.Generator, prob: float, min_px: int) -> torch.Tensor:
    """Each crop, with probability `prob`, shrunk to a random side in [min_px, H) and enlarged back to H x W."""
    b, _, h, w = crops.shape
    if not 1 <= min_px < h:
        raise ValueError(f"min_res_px={min_px} must be at least 1 and below the crop's side {h}")
    pick = torch.rand(b, generator=generator) < prob
    sides = torch.randint(min_px, h, (b,), generator=generator)
    out = crops.clone()
    for i in torch.nonzero(pick).flatten().tolist():
        side = int(sides[i])
        small = F.interpolate(crops[i:i + 1], size=(side, max(1, round(side * w / h))), mode="area")
        out[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out.clamp_(0.0, 255.0)
