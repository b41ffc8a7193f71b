"""3D DSC reconstructed from per-slice DSC and MVSF (the "2D_R" formula).

For slice ``i`` of one class, with ``|z_i|`` the segmentation area and ``DSC_i``, ``MVSF_i``
the (predicted) slice scores::

    |ŷ_i|        = |z_i| (2 + MVSF_i) / (2 - MVSF_i)        estimated truth area
    |ŷ_i ∩ z_i|  = ½ DSC_i (|ŷ_i| + |z_i|)                  estimated intersection
    DSC_3D       = 2 Σ|ŷ_i ∩ z_i| / (Σ|ŷ_i| + Σ|z_i|)

With the true slice DSC and MVSF this reproduces the true 3D DSC exactly, provided every slice
holding truth of the class also holds segmentation of it.

Missed slices: where ``|z_i| = 0`` the scores cannot size the truth (MVSF of an empty
segmentation is -2 whatever the truth), so the formula alone sees a structure missed on a whole
slice as absent and overestimates the 3D DSC. :func:`gap_truth_area` estimates the truth that a
segmentation missed on a slice *between* two slices holding the class (a gap) by linear
interpolation of the segmented areas of the nearest slices below and above; passed as
``missed_area`` it joins the truth sum with an intersection of 0, which lowers the 3D DSC as the
missed truth would. A class missed on end slices (apex, base) stays invisible. The scores of
empty slices are ignored, so NaN (undefined) scores there are harmless; a NaN score on a slice
with a non-empty segmentation makes the class's result NaN.

MVSF is clipped to ``[-2, 2 - eps]`` before use: ``+2`` would divide by zero, while ``-2`` (no
truth on the slice) gives an estimated truth area of exactly 0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "estimated_truth_area",
    "gap_truth_area",
    "reconstruct_volume_dsc",
    "slice_error_fraction",
]

DEFAULT_EPS = 1e-6


def _as_scores(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (..., S, K), got {arr.shape}")
    return arr


def _check_inputs(
    seg_area: ArrayLike, **scores: ArrayLike
) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    area = _as_scores("seg_area", seg_area)
    if np.isnan(area).any() or (area < 0).any():
        raise ValueError("seg_area must be non-negative numbers (no NaN)")
    arrays = []
    for name, values in scores.items():
        arr = _as_scores(name, values)
        if arr.shape != area.shape:
            raise ValueError(
                f"{name} must have the same shape as seg_area, got {arr.shape} and {area.shape}"
            )
        arrays.append(arr)
    return area, arrays


def _truth_area(
    mvsf: NDArray[np.float64], area: NDArray[np.float64], eps: float
) -> NDArray[np.float64]:
    visible = area > 0
    m = np.clip(np.where(visible, mvsf, 0.0), -2.0, 2.0 - eps)
    return np.where(visible, area * (2.0 + m) / (2.0 - m), 0.0)


def estimated_truth_area(
    slice_mvsf: ArrayLike, seg_area: ArrayLike, eps: float = DEFAULT_EPS
) -> NDArray[np.float64]:
    """Truth area ``|ŷ_i|`` implied by each slice's MVSF and segmentation area.

    Args:
        slice_mvsf: MVSF per slice and class, shape (..., S, K).
        seg_area: segmentation area ``|z_i|`` (voxels), same shape.
        eps: MVSF is clipped to ``[-2, 2 - eps]``.

    Returns:
        ``|ŷ_i|``, same shape; 0 where ``seg_area`` is 0 (the blind spot).

    Raises:
        ValueError: shapes differ, arrays are not at least 2D, or ``seg_area`` is negative.
    """
    if not 0.0 < eps < 4.0:
        raise ValueError(f"eps must be in (0, 4), got {eps}")
    area, (m,) = _check_inputs(seg_area, slice_mvsf=slice_mvsf)
    return _truth_area(m, area, eps)


def gap_truth_area(seg_area: ArrayLike) -> NDArray[np.float64]:
    """Truth area a segmentation missed on slices inside a class's gaps, by interpolation.

    A gap is a slice where the class is empty although slices below and above hold it. There
    the estimate is the linear interpolation (by slice index) of the nearest non-empty slices'
    areas; everywhere else it is 0.

    Args:
        seg_area: segmentation area per slice and class, shape (..., S, K).

    Returns:
        The estimated missed truth area, same shape.
    """
    area = _as_scores("seg_area", seg_area)
    flat = area.reshape(-1, *area.shape[-2:])
    missed = np.zeros_like(flat)
    index = np.arange(area.shape[-2])
    for b, k in np.ndindex(flat.shape[0], flat.shape[-1]):
        column = flat[b, :, k]
        present = np.flatnonzero(column > 0)
        if present.size < 2:
            continue
        gap = (column == 0) & (index > present[0]) & (index < present[-1])
        if gap.any():
            missed[b, gap, k] = np.interp(index[gap], present, column[present])
    return missed.reshape(area.shape)


def reconstruct_volume_dsc(
    slice_dsc: ArrayLike,
    slice_mvsf: ArrayLike,
    seg_area: ArrayLike,
    eps: float = DEFAULT_EPS,
    missed_area: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """3D DSC of each class from per-slice DSC, MVSF and segmentation areas (2D_R).

    Args:
        slice_dsc: DSC per slice and class, shape (..., S, K); leading axes are a batch.
        slice_mvsf: MVSF per slice and class, same shape.
        seg_area: segmentation area ``|z_i|`` per slice and class (voxels), same shape.
        eps: MVSF is clipped to ``[-2, 2 - eps]``.
        missed_area: estimated truth area on slices where the segmentation is empty (e.g.
            :func:`gap_truth_area`), same shape; it counts as truth with no intersection.
            None: missed truth is not estimated (the formula of the paper).

    Returns:
        The reconstructed 3D DSC, shape (..., K). NaN for a class whose segmentation is empty
        on every slice (nothing to reconstruct from) or that has a NaN score on a slice with a
        non-empty segmentation.

    Raises:
        ValueError: shapes differ, arrays are not at least 2D, or ``seg_area`` is negative.
    """
    if not 0.0 < eps < 4.0:
        raise ValueError(f"eps must be in (0, 4), got {eps}")
    area, (d, m) = _check_inputs(seg_area, slice_dsc=slice_dsc, slice_mvsf=slice_mvsf)
    visible = area > 0
    truth = _truth_area(m, area, eps)
    if missed_area is not None:
        missed = _as_scores("missed_area", missed_area)
        if missed.shape != area.shape or np.isnan(missed).any() or (missed < 0).any():
            raise ValueError("missed_area must be non-negative numbers shaped like seg_area")
        truth = truth + np.where(visible, 0.0, missed)
    inter = np.where(visible, 0.5 * np.where(visible, d, 0.0) * (truth + area), 0.0)
    denom = truth.sum(axis=-2) + area.sum(axis=-2)
    out = np.full(denom.shape, np.nan, dtype=np.float64)
    np.divide(2.0 * inter.sum(axis=-2), denom, out=out, where=denom > 0)
    return out


def slice_error_fraction(
    slice_dsc: ArrayLike, slice_mvsf: ArrayLike, seg_area: ArrayLike, eps: float = DEFAULT_EPS
) -> NDArray[np.float64]:
    """Predicted disagreement of each slice as a fraction of the class's segmented volume.

    The disagreement ``|ŷ_i| + |z_i| - 2|ŷ_i ∩ z_i| = (1 - DSC_i)(|ŷ_i| + |z_i|)`` is the area
    the segmentation and the (predicted) truth do not share on slice ``i``; it is divided by
    the class's segmented area over all slices. A low DSC on a tiny end slice is a small
    fraction, a failed slice mid-structure a large one. ``inf`` where the class is empty on
    the slice (its missed truth cannot be sized from the scores), NaN where a score is NaN.

    Args:
        slice_dsc, slice_mvsf, seg_area: per slice and class, shape (..., S, K).
        eps: MVSF is clipped to ``[-2, 2 - eps]``.
    """
    area, (d, m) = _check_inputs(seg_area, slice_dsc=slice_dsc, slice_mvsf=slice_mvsf)
    truth = _truth_area(m, area, eps)
    error = (1.0 - np.clip(d, 0.0, 1.0)) * (truth + area)
    total = np.broadcast_to(area.sum(axis=-2, keepdims=True), area.shape)
    out = np.full(area.shape, np.inf)
    np.divide(error, total, out=out, where=area > 0)
    return out
