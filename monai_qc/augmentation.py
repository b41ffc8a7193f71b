"""Training-time augmentation of QC network inputs (image channels, then one-hot maps).

Every transform keeps a slice's true DSC and MVSF (flips, quarter turns) or changes them by
little (small rotations and zooms of thin structures, intensity gamma and noise), so the
targets of a sample stay as they are.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["augment_inputs", "augment_with_expert_labels", "small_affine"]


def small_affine(
    x: torch.Tensor, generator: torch.Generator, present: torch.Tensor
) -> torch.Tensor:
    """Rotate each sample by up to 15 degrees and scale it by 0.9-1.1 (labels: nearest).

    ``present`` (B, slices): which slices of each sample exist. The first ``slices`` channels
    are images, the rest one-hot maps of those slices; background is filled in outside the
    turned slice, except on absent (all-zero) slices.
    """
    n_images = present.shape[1]
    n = x.shape[0]
    angle = torch.empty(n).uniform_(-np.pi / 12, np.pi / 12, generator=generator)
    scale = torch.empty(n).uniform_(0.9, 1.1, generator=generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    image = F.grid_sample(x[:, :n_images], grid, mode="bilinear", align_corners=False)
    labels = F.grid_sample(x[:, n_images:], grid, mode="nearest", align_corners=False)
    labels = labels.unflatten(1, (n_images, -1))
    labels[:, :, 0] += present[..., None, None] * (1 - labels.sum(2))  # outside: background
    return torch.cat([image, labels.flatten(1, 2)], dim=1)


def augment_inputs(x: torch.Tensor, generator: torch.Generator, n_images: int = 1) -> torch.Tensor:
    """Flips, turns, small zooms, intensity gamma and noise; the DSC/MVSF barely change.

    Quarter turns and flips keep every score; the small rotation and zoom move the labels by
    nearest neighbour, so a slice's scores change by a little (thin structures most).
    ``n_images``: image channels (2c+1 for inputs with c context slices on each side); every
    slice of a sample gets the same transform, and a slice beyond the stack stays all zeros.
    """
    if torch.rand(1, generator=generator) < 0.5:
        x = x.flip(-1)
    x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=generator)), dims=(-2, -1))
    # (B, slices): False for a slice beyond the stack (all its one-hot channels zero)
    present = x[:, n_images:].unflatten(1, (n_images, -1)).flatten(2).sum(2) > 0
    x = small_affine(x, generator, present)
    gamma = torch.exp(torch.empty(x.shape[0], 1, 1, 1).uniform_(-0.3, 0.3, generator=generator))
    image = x[:, :n_images].clamp(min=0) ** gamma
    sigma = torch.empty(x.shape[0], 1, 1, 1).uniform_(0.0, 0.05, generator=generator)
    image = image + sigma * torch.randn(image.shape, generator=generator)
    image = image * present[..., None, None]
    return torch.cat([image, x[:, n_images:]], dim=1)


def augment_with_expert_labels(
    x: torch.Tensor, truth: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment_inputs` of single-slice inputs and their expert labels, moved alike.

    Args:
        x: (B, 1+K, H, W) image and one-hot segmentation.
        truth: (B, H, W) expert class indices.

    The expert labels travel as a second slice of each sample (its image a copy of the first),
    so the same flips, turns and zooms move both label maps. Returns the inputs and the expert
    labels (B, H, W, int64).
    """
    k = x.shape[1] - 1
    onehot = F.one_hot(truth.long(), k).permute(0, 3, 1, 2).float()
    both = augment_inputs(torch.cat([x[:, :1], x[:, :1], x[:, 1:], onehot], dim=1), generator, 2)
    return torch.cat([both[:, :1], both[:, 2 : 2 + k]], dim=1), both[:, 2 + k :].argmax(1)
