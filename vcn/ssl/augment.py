"""Random augmentations of a pair's crops (flip, small rotation, colour-temperature shift), batched in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_crops(crops: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0,
                  max_colour_shift: float = 0.1, flip_prob: float = 0.5) -> torch.Tensor:
    """Augment BGR float crops [B, 3, H, W] (values 0..255); every crop draws its own parameters.

    - horizontal flip with probability `flip_prob`;
    - rotation by an angle uniform in [-max_rotation_deg, max_rotation_deg] about the centre (bilinear,
      border pixels replicated so no black corners tell the network which crops were rotated);
    - colour temperature: red scaled by (1 + s) and blue by (1 - s), s uniform in [-max_colour_shift,
      max_colour_shift] (warmer or cooler light), clipped to 0..255.
    Draws come from `generator` (on the CPU), so a seed fixes the result.
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
    return (out * gains.to(device=device, dtype=dtype)).clamp_(0.0, 255.0)
