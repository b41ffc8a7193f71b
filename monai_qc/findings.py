"""Problems found in a segmentation without the network and without thresholds.

Two checks, both deterministic:

- :func:`outside_rated_region`: foreground the network never sees. All slices share one
  square crop box around the largest connected part of the projected foreground
  (:func:`monai_qc.transforms.foreground_square_box`), so a stray blob far from it is not
  rated at all. Every 3D connected component of every class holding a voxel outside the box
  is reported, with its volume.
- :func:`class_gaps`: a class that must be contiguous along the slicing axis (a bundle's
  ``contiguous_classes``) is empty on a slice between two slices that hold it.

Any finding makes the case fail, whatever thresholds apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from monai_qc.transforms import CropBox

__all__ = [
    "CLASS_GAP",
    "OUTSIDE_RATED_REGION",
    "Finding",
    "class_gaps",
    "outside_rated_region",
    "validate_contiguous_classes",
]

OUTSIDE_RATED_REGION = "outside_rated_region"
CLASS_GAP = "class_gap"

#: 3D connectivity of components: voxels touching by a face, an edge or a corner.
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Finding:
    """One problem: the check that found it, the class, the slices it concerns, a message."""

    check: str
    class_name: str | None
    slices: tuple[int, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The report form: ``{"check", "class", "slices", "message"}``."""
        return {
            "check": self.check,
            "class": self.class_name,
            "slices": list(self.slices),
            "message": self.message,
        }


def _slice_list(slices: Sequence[int]) -> str:
    word = "slice" if len(slices) == 1 else "slices"
    return f"{word} {', '.join(str(i) for i in slices)}"


def outside_rated_region(
    indices: np.ndarray,
    box: CropBox,
    class_names: Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> list[Finding]:
    """Components of each class that reach outside the in-plane crop box ``box``.

    Components are 3D (26-connected): a stray blob spanning several slices is one error,
    counted once with its whole volume, and the slices it touches are listed.

    Args:
        indices: class indices (S, H, W), 0 background, j the j-th name of ``class_names``.
        box: the crop box the network's input was cut from (shared by all slices).
        class_names: foreground class names in column order.
        spacing: voxel spacing (sz, sy, sx) in mm, for volumes in mL.
    """
    _, h, w = indices.shape
    inside = np.zeros((h, w), dtype=bool)
    inside[max(box.y0, 0) : max(box.y1, 0), max(box.x0, 0) : max(box.x1, 0)] = True
    voxel_ml = float(np.prod(spacing)) / 1000.0
    findings = []
    for j, name in enumerate(class_names, start=1):
        mask = indices == j
        if not (mask & ~inside).any():
            continue
        components, _ = ndimage.label(mask, structure=_STRUCTURE)
        outside_ids = np.unique(components[mask & ~inside[None]])
        selected = np.isin(components, outside_ids)
        slices = [int(i) for i in np.flatnonzero(selected.any(axis=(1, 2)))]
        n, ml = len(outside_ids), float(selected.sum()) * voxel_ml
        word = "component" if n == 1 else "components"
        findings.append(
            Finding(
                OUTSIDE_RATED_REGION,
                name,
                tuple(slices),
                f"{n} {name} {word} outside the rated region, {ml:.1f} mL, on "
                f"{_slice_list(slices)}: the QC network never saw them",
            )
        )
    return findings


def class_gaps(
    seg_area: np.ndarray, class_names: Sequence[str], contiguous: Sequence[str]
) -> list[Finding]:
    """Classes of ``contiguous`` empty on a slice between their first and last slice.

    Args:
        seg_area: voxel count per slice and class (S, K), background first.
        class_names: foreground class names in column order.
        contiguous: the classes that must be present on every slice of their extent.
    """
    findings = []
    for j, name in enumerate(class_names, start=1):
        if name not in contiguous:
            continue
        present = np.flatnonzero(seg_area[:, j] > 0)
        if present.size < 2:
            continue
        gap = [int(i) for i in range(present[0] + 1, present[-1]) if seg_area[i, j] == 0]
        if gap:
            findings.append(
                Finding(
                    CLASS_GAP,
                    name,
                    tuple(gap),
                    f"{name} is missing on {_slice_list(gap)}, between slices "
                    f"{int(present[0])} and {int(present[-1])} that hold it",
                )
            )
    return findings


def validate_contiguous_classes(
    contiguous: Sequence[str] | None, labels: Mapping[str, int], source: object = None
) -> tuple[str, ...]:
    """The ``contiguous_classes`` setting as a tuple; every name must be a class.

    Raises:
        ValueError: the setting is not a list of class names, or names an unknown class.
    """
    if contiguous is None:
        return ()
    if isinstance(contiguous, str) or not all(isinstance(c, str) for c in contiguous):
        raise ValueError(f"{source or 'contiguous_classes'}: expected a list of class names")
    unknown = [c for c in contiguous if c not in labels]
    if unknown:
        raise ValueError(
            f"{source or 'contiguous_classes'}: unknown class(es) {', '.join(unknown)}; "
            f"classes: {', '.join(labels)}"
        )
    return tuple(contiguous)
