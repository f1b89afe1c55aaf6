"""Training-time augmentation of a batch of normalised model inputs (B, 1, S, S).

Mammographic lesions have no canonical orientation, so flips and 90-degree rotations are
label-preserving; small rotations, scaling and intensity (contrast, brightness) jitter cover
positioning and digitiser differences. Each image draws its own transform; all geometric
parts are composed into one affine map and resampled once (reflecting at the border).
Randomness comes from torch's global generator, which the trainer checkpoints, so a resumed
run draws the same augmentations.
"""

from __future__ import annotations

import math

import torch

MAX_ANGLE = 15.0  # degrees, on top of a random multiple of 90
SCALE = (0.9, 1.1)
CONTRAST = (0.8, 1.2)
BRIGHTNESS = 0.2  # in units of the normalised intensity


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high)


def augment_batch(images: torch.Tensor) -> torch.Tensor:
    """A randomly flipped, rotated, scaled and intensity-jittered copy of ``images`` (B, 1, S, S)."""
    n = images.shape[0]
    angle = torch.randint(4, (n,)).float() * (math.pi / 2) + _uniform(n, -MAX_ANGLE, MAX_ANGLE) * (math.pi / 180)
    scale = _uniform(n, *SCALE)
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta = theta.to(images.device, images.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    warped = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = _uniform(n, *CONTRAST).to(images)[:, None, None, None]
    brightness = _uniform(n, -BRIGHTNESS, BRIGHTNESS).to(images)[:, None, None, None]
    return warped * contrast + brightness
