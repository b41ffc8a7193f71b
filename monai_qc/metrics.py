"""Per-class, per-slice and per-volume DSC and MVSF computed from label maps.

With ``Y`` the ground truth and ``Z`` the segmentation of one class::

    DSC(Y, Z)  = 2 |Y ∩ Z| / (|Y| + |Z|)                 in [0, 1]
    MVSF(Y, Z) = 2 (|Y| - |Z|) / (|Y| + |Z|)              in [-2, 2]

Label maps hold class VALUES (e.g. 0 background, 1 RV, 2 MYO, 3 LV). ``class_values`` lists
the values that become the K score columns, in that order (usually background first). Voxels
whose value is not in ``class_values`` belong to no column.

Empty policy (per class, per slice or per volume):

- ``Y`` and ``Z`` both empty: the metric is undefined and ``empty_value`` is returned (NaN by
  default). QC training targets use DSC = 1 and MVSF = 0 (the two agree that nothing is there).
- ``Y`` empty, ``Z`` not empty: DSC = 0, MVSF = -2 (over-segmentation).
- ``Z`` empty, ``Y`` not empty: DSC = 0, MVSF = +2 (the structure was missed).

Sign convention: MVSF equals SimpleITK's ``LabelOverlapMeasuresImageFilter.GetVolumeSimilarity``
when the filter is executed as ``Execute(truth, seg)`` (source = truth, target = segmentation):
ITK computes ``2 (|source| - |target|) / (|source| + |target|)``. Swapping the two images flips
the sign. MVSF > 0 therefore means the segmentation is too small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "OverlapCounts",
    "Scores",
    "dice",
    "mvsf",
    "overlap_counts",
    "slice_scores",
    "volume_scores",
]


@dataclass(frozen=True)
class OverlapCounts:
    """Voxel counts per class: shape (K,) for a volume, (S, K) per slice.

    Attributes:
        truth_area: ``|Y|``, number of truth voxels of each class.
        seg_area: ``|Z|``, number of segmentation voxels of each class.
        intersection: ``|Y ∩ Z|``.
    """

    truth_area: NDArray[np.int64]
    seg_area: NDArray[np.int64]
    intersection: NDArray[np.int64]


@dataclass(frozen=True)
class Scores:
    """DSC, MVSF and areas per class: shape (K,) for a volume, (S, K) per slice."""

    dsc: NDArray[np.float64]
    mvsf: NDArray[np.float64]
    truth_area: NDArray[np.int64]
    seg_area: NDArray[np.int64]


def _class_values_array(class_values: Sequence[int]) -> NDArray[np.int64]:
    values = np.asarray(class_values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"class_values must be a non-empty 1D sequence, got {class_values!r}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"class_values must be integers, got {class_values!r}")
    if np.unique(values).size != values.size:
        raise ValueError(f"class_values must be distinct, got {class_values!r}")
    return values.astype(np.int64)


def _label_array(name: str, array: ArrayLike) -> NDArray[np.generic]:
    arr = np.asarray(array)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric label map, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real-valued label map, got dtype {arr.dtype}")
    return arr


def _class_index(arr: NDArray[np.generic], values: NDArray[np.int64]) -> NDArray[np.int64]:
    """Map label values to column indices 0..K-1 (flattened); anything else to K."""
    k = values.size
    flat = arr.reshape(-1)
    if flat.size and (flat.dtype == bool or np.issubdtype(flat.dtype, np.integer)):
        lo, hi = int(flat.min()), int(flat.max())
        if hi - lo < 1 << 16:  # small integer range: one table lookup
            lut = np.full(hi - lo + 1, k, dtype=np.int64)
            inside = (values >= lo) & (values <= hi)
            lut[values[inside] - lo] = np.flatnonzero(inside)
            idx = flat.astype(np.intp)  # also avoids bool masks and small-int overflow
            return lut[idx - lo] if lo else lut[idx]
    order = np.argsort(values)
    sorted_values = values[order]
    pos = np.minimum(np.searchsorted(sorted_values, flat), k - 1)
    found = sorted_values[pos] == flat
    return np.where(found, order[pos], k).astype(np.int64)


def overlap_counts(
    truth: ArrayLike, seg: ArrayLike, class_values: Sequence[int], per_slice: bool
) -> OverlapCounts:
    """Count truth, segmentation and intersection voxels of each class.

    Args:
        truth: ground-truth label map (class values).
        seg: segmentation label map, same shape as ``truth``.
        class_values: label values giving the K columns, in order.
        per_slice: count each slice ``truth[i]`` separately (arrays of shape (S, K)); needs a
            3D (S, H, W) volume. Otherwise count the whole array (shape (K,)).

    Returns:
        The counts, as int64 arrays.

    Raises:
        ValueError: shapes differ, a per-slice input is not 3D, or ``class_values`` is bad.
    """
    values = _class_values_array(class_values)
    t = _label_array("truth", truth)
    s = _label_array("seg", seg)
    if t.shape != s.shape:
        raise ValueError(f"truth and seg must have the same shape, got {t.shape} and {s.shape}")
    if per_slice and t.ndim != 3:
        raise ValueError(f"per-slice scores need 3D (S, H, W) label maps, got shape {t.shape}")
    k1 = values.size + 1  # the extra code K collects values outside class_values
    n_groups = t.shape[0] if per_slice else 1
    code = _class_index(t, values) * k1 + _class_index(s, values)
    if per_slice and t.size:
        code.reshape(n_groups, -1)[...] += np.arange(n_groups, dtype=np.int64)[:, None] * k1 * k1
    confusion = np.bincount(code, minlength=n_groups * k1 * k1).reshape(n_groups, k1, k1)
    confusion = confusion.astype(np.int64)
    truth_area = confusion.sum(axis=2)[:, :-1]  # the last row/column is "other"
    seg_area = confusion.sum(axis=1)[:, :-1]
    inter = np.diagonal(confusion, axis1=1, axis2=2)[:, :-1].copy()
    if not per_slice:
        truth_area, seg_area, inter = truth_area[0], seg_area[0], inter[0]
    return OverlapCounts(truth_area=truth_area, seg_area=seg_area, intersection=inter)


def dice(counts: OverlapCounts, empty_value: float = float("nan")) -> NDArray[np.float64]:
    """DSC of each class (and slice); ``empty_value`` where truth and segmentation are empty."""
    denom = (counts.truth_area + counts.seg_area).astype(np.float64)
    out = np.full(denom.shape, float(empty_value), dtype=np.float64)
    np.divide(2.0 * counts.intersection, denom, out=out, where=denom > 0)
    return out


def mvsf(counts: OverlapCounts, empty_value: float = float("nan")) -> NDArray[np.float64]:
    """MVSF of each class (and slice); ``empty_value`` where truth and segmentation are empty."""
    denom = (counts.truth_area + counts.seg_area).astype(np.float64)
    diff = (counts.truth_area - counts.seg_area).astype(np.float64)
    out = np.full(denom.shape, float(empty_value), dtype=np.float64)
    np.divide(2.0 * diff, denom, out=out, where=denom > 0)
    return out


def _scores(counts: OverlapCounts, empty_value: float, empty_mvsf: float | None) -> Scores:
    return Scores(
        dsc=dice(counts, empty_value),
        mvsf=mvsf(counts, empty_value if empty_mvsf is None else empty_mvsf),
        truth_area=counts.truth_area,
        seg_area=counts.seg_area,
    )


def slice_scores(
    truth: ArrayLike,
    seg: ArrayLike,
    class_values: Sequence[int],
    empty_value: float = float("nan"),
    empty_mvsf: float | None = None,
) -> Scores:
    """DSC, MVSF and areas of every slice ``truth[i]`` and class: arrays of shape (S, K).

    Args:
        truth: ground-truth label map (S, H, W).
        seg: segmentation label map (S, H, W).
        class_values: label values giving the K columns, in order.
        empty_value: value where truth and segmentation are both empty (DSC, and MVSF unless
            ``empty_mvsf`` is given). QC training targets use ``empty_value=1.0, empty_mvsf=0.0``.
        empty_mvsf: MVSF where both are empty; ``None`` means ``empty_value``.

    Raises:
        ValueError: shapes differ, the label maps are not 3D, or ``class_values`` is bad.
    """
    return _scores(
        overlap_counts(truth, seg, class_values, per_slice=True), empty_value, empty_mvsf
    )


def volume_scores(
    truth: ArrayLike,
    seg: ArrayLike,
    class_values: Sequence[int],
    empty_value: float = float("nan"),
    empty_mvsf: float | None = None,
) -> Scores:
    """DSC, MVSF and areas of every class over the whole array: arrays of shape (K,).

    Args:
        truth: ground-truth label map (any number of dimensions).
        seg: segmentation label map, same shape.
        class_values: label values giving the K columns, in order.
        empty_value: value where truth and segmentation are both empty.
        empty_mvsf: MVSF where both are empty; ``None`` means ``empty_value``.

    Raises:
        ValueError: shapes differ or ``class_values`` is bad.
    """
    return _scores(
        overlap_counts(truth, seg, class_values, per_slice=False), empty_value, empty_mvsf
    )
