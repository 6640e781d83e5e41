"""Random augmentations of a pair's crops (flip, small rotation, colour-temperature shift, optionally a lower
resolution and other light), batched in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_crops(crops: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0,
                  max_colour_shift: float = 0.1, flip_prob: float = 0.5, low_res_prob: float = 0.0,
                  min_res_px: int = 24, light_jitter: float = 0.0, grey_prob: float = 0.0) -> torch.Tensor:
    """Augment BGR float crops [B, 3, H, W] (values 0..255); every crop draws its own parameters.

    - horizontal flip with probability `flip_prob`;
    - rotation by an angle uniform in [-max_rotation_deg, max_rotation_deg] about the centre (bilinear,
      border pixels replicated so no black corners tell the network which crops were rotated);
    - colour temperature: red scaled by (1 + s) and blue by (1 - s), s uniform in [-max_colour_shift,
      max_colour_shift] (warmer or cooler light), clipped to 0..255;
    - with probability `low_res_prob`, a lower resolution: the crop is shrunk to a side drawn uniformly in
      [min_res_px, H) (area averaging) and enlarged back (bilinear), as a face seen small in a wide shot looks
      once it is cut out and resized to the crop size;
    - other light, with `light_jitter` j > 0: brightness scaled by a factor uniform in [1 - j, 1 + j] and contrast
      about the crop's mean grey by another, and with probability `grey_prob` the colour removed (a face lit by
      a lamp, a window or a screen, or in a black-and-white insert).
    Draws come from `generator` (on the CPU), so a seed fixes the result. With low_res_prob, light_jitter and
    grey_prob 0 (the defaults) no draw is made for them, so the other augmentations draw exactly what they drew
    before those existed.
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
    if light_jitter > 0 or grey_prob > 0:
        out = _other_light(out, generator, light_jitter, grey_prob)
    return _lower_resolution(out, generator, low_res_prob, min_res_px) if low_res_prob > 0 else out


def _other_light(crops: torch.Tensor, generator: torch.Generator, jitter: float, grey_prob: float) -> torch.Tensor:
    """Each crop's brightness and contrast scaled by factors in [1 - jitter, 1 + jitter]; with probability
    `grey_prob` its colour replaced by its grey (BGR luma weights, as OpenCV's BGR2GRAY)."""
    b = crops.shape[0]
    if not 0.0 <= jitter < 1.0 or not 0.0 <= grey_prob <= 1.0:
        raise ValueError(f"light_jitter={jitter} must be in [0, 1) and grey_prob={grey_prob} in [0, 1]")
    shape = (b, 1, 1, 1)
    brightness = 1 + (torch.rand(b, generator=generator) * 2 - 1) * jitter
    contrast = 1 + (torch.rand(b, generator=generator) * 2 - 1) * jitter
    grey_pick = torch.rand(b, generator=generator) < grey_prob
    weights = torch.tensor([0.114, 0.587, 0.299], dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    out = crops * brightness.to(crops).view(shape)
    mean_grey = (out * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    out = (out - mean_grey) * contrast.to(crops).view(shape) + mean_grey
    grey = (out * weights).sum(1, keepdim=True).expand_as(out)
    out = torch.where(grey_pick.to(crops.device).view(shape), grey, out)
    return out.clamp_(0.0, 255.0)


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
