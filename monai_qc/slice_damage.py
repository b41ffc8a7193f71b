"""Synthetic damage of QC training slices, scored exactly against the expert labels.

Segmentations collected from model variants rarely miss one structure on a slice while keeping
the others, and rarely match the expert closely. During training, a fraction of each batch can
be replaced by a damaged copy of its segmentation, or by the expert labels themselves, with the
DSC/MVSF targets recomputed against the expert labels of the same crop (:func:`slice_scores`).
Scores of the resized crop approximate those of the full slice; a slice whose crop scores stray
from its stored true scores (the expert's structure partly outside the crop, thin structures
lost in resizing) is not damaged (``eligible``).

Damage kinds (one random foreground class present on the slice):

- ``expert``: the expert labels (every target 1 / 0).
- ``drop``: the class removed from the slice (a structure missed entirely).
- ``erode`` / ``dilate``: the class shrunk or grown by 1-3 pixels.
- ``shift``: the class moved by up to 6 pixels.

With ``from_expert`` > 0, that share of the damaged maps is damaged starting from the expert
labels instead of the segmentation: expert-quality maps with one structure damaged, the others
exactly as the expert drew them, a quality that the collected segmentations rarely reach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_qc import metrics

__all__ = ["DAMAGE_KINDS", "damage_batch", "damage_slice", "slice_scores"]

DAMAGE_KINDS = ("expert", "drop", "erode", "dilate", "shift")


def slice_scores(
    seg: torch.Tensor, truth: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """DSC and MVSF (B, K) of class-index maps (B, H, W) against ``truth`` (both empty: 1, 0).

    :func:`monai_qc.metrics.slice_scores` with the QC training-target conventions, as tensors.
    """
    scores = metrics.slice_scores(
        truth.numpy(), seg.numpy(), range(n_classes), empty_value=1.0, empty_mvsf=0.0
    )
    return torch.from_numpy(scores.dsc).float(), torch.from_numpy(scores.mvsf).float()


def _morph(mask: torch.Tensor, radius: int, grow: bool) -> torch.Tensor:
    """Binary dilation (``grow``) or erosion of a (H, W) mask with a square of side 2r+1."""
    m = mask.float()[None, None]
    size = 2 * radius + 1
    out = F.max_pool2d(m if grow else -m, size, 1, radius)
    return (out if grow else -out)[0, 0] > 0.5


def damage_slice(
    seg: torch.Tensor,
    truth: torch.Tensor,
    kind: str,
    cls: int,
    radius: int = 2,
    shift: tuple[int, int] = (3, 0),
) -> torch.Tensor:
    """A damaged copy of one (H, W) class-index map (see the module docstring for ``kind``)."""
    if kind not in DAMAGE_KINDS:
        raise ValueError(f"unknown damage {kind!r}; known: {', '.join(DAMAGE_KINDS)}")
    if kind == "expert":
        return truth.clone()
    out = seg.clone()
    mask = seg == cls
    if kind == "drop":
        out[mask] = 0
    elif kind == "erode":
        out[mask & ~_morph(mask, radius, grow=False)] = 0
    elif kind == "dilate":
        out[_morph(mask, radius, grow=True)] = cls
    else:  # shift
        moved = torch.roll(mask, shifts=shift, dims=(0, 1))
        out[mask] = 0
        out[moved & (out == 0)] = cls
    return out


def damage_batch(
    seg: torch.Tensor,
    truth: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    eligible: torch.Tensor | None = None,
    from_expert: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Damage each (B, H, W) map with ``probability``; return the maps and the damaged mask.

    ``eligible`` (B,) bool limits damage to some maps (default: all). ``from_expert`` is the
    share of damaged maps whose damage starts from ``truth`` rather than ``seg``.
    """
    if not 0.0 <= from_expert <= 1.0:
        raise ValueError(f"from_expert must be in [0, 1], got {from_expert}")
    out = seg.clone()
    damaged = torch.rand(len(seg), generator=generator) < probability
    if eligible is not None:
        damaged &= eligible
    for i in torch.nonzero(damaged).flatten().tolist():
        # drawn only when asked for, so runs without it keep their random sequence
        base = seg[i]
        if from_expert > 0 and float(torch.rand(1, generator=generator)) < from_expert:
            base = truth[i]
        present = torch.unique(base)
        present = present[present > 0]
        kind = DAMAGE_KINDS[int(torch.randint(len(DAMAGE_KINDS), (1,), generator=generator))]
        if len(present) == 0:
            kind, cls = "expert", 0
        else:
            cls = int(present[torch.randint(len(present), (1,), generator=generator)])
        radius = int(torch.randint(1, 4, (1,), generator=generator))
        dy, dx = (int(v) for v in torch.randint(-6, 7, (2,), generator=generator))
        out[i] = damage_slice(base, truth[i], kind, cls, radius, (dy, dx))
    return out, damaged
