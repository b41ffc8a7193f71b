"""The slice-wise volume correction of Fournel et al. (2021), kept to compare with.

A slice is wrong when its predicted DSC is below the threshold for the background or any class
segmented on every slice of the heart; every class of a wrong slice is replaced from the
nearest slices that are not wrong. ``monai_qc.correction`` corrects class by class instead
(measured against this rule by ``benchmarks/volume_correction.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monai_qc.correction import DEFAULT_THRESHOLD, _check_arrays, _check_threshold

__all__ = ["default_columns", "find_wrong_slices", "foreground_range", "replace_wrong_slices"]


def foreground_range(seg_area: np.ndarray) -> tuple[int, int] | None:
    """First and last slice holding any foreground (columns 1..K-1), or None when none does."""
    holding = np.flatnonzero(np.asarray(seg_area)[:, 1:].sum(axis=1) > 0)
    return (int(holding[0]), int(holding[-1])) if holding.size else None


def default_columns(seg_area: np.ndarray) -> list[int]:
    """Background plus every foreground column segmented on every slice of the heart.

    "Every slice" means every slice from the first to the last slice holding any foreground.
    In the paper these are BG, LV myocardium and LV cavity.
    """
    area = np.asarray(seg_area)
    span = foreground_range(area)
    if span is None:
        return [0]
    inside = area[span[0] : span[1] + 1]
    return [0, *(j for j in range(1, area.shape[1]) if np.all(inside[:, j] > 0))]


def find_wrong_slices(
    slice_dsc: np.ndarray,
    seg_area: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    columns: Sequence[int] | None = None,
    exclude_ends: bool = True,
) -> np.ndarray:
    """(S,) True for slices whose predicted DSC is below ``threshold`` in any of ``columns``.

    The paper's slice-wise rule. Args: ``slice_dsc`` (S, K) background first (NaN is never
    below the threshold); ``seg_area`` (S, K); ``columns`` that decide (None:
    :func:`default_columns`); ``exclude_ends``: only slices strictly between the first and
    last slice holding foreground can be wrong.
    """
    dsc, area = _check_arrays(slice_dsc, seg_area)
    threshold = _check_threshold(threshold)
    cols = default_columns(area) if columns is None else [int(c) for c in columns]
    bad = [c for c in cols if not 0 <= c < dsc.shape[1]]
    if bad:
        raise ValueError(f"columns {bad} are outside 0..{dsc.shape[1] - 1}")
    with np.errstate(invalid="ignore"):
        wrong = np.any(dsc[:, cols] < threshold, axis=1) if cols else np.zeros(len(dsc), bool)
    if exclude_ends:
        span = foreground_range(area)
        allowed = np.zeros(len(dsc), dtype=bool)
        if span is not None:
            allowed[span[0] + 1 : span[1]] = True
        wrong &= allowed
    return wrong


def replace_wrong_slices(seg_area: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Areas (S, K) with every class of each wrong slice replaced from its neighbours.

    The paper's slice-wise replacement: the mean of the nearest slice not wrong above and
    below (one side where only one has such a slice); without any, nothing changes.
    """
    area = np.asarray(seg_area, dtype=np.float64)
    wrong = np.asarray(wrong, dtype=bool)
    if wrong.shape != area.shape[:1]:
        raise ValueError(f"wrong {wrong.shape} does not match seg_area slices {area.shape[:1]}")
    good = np.flatnonzero(~wrong)
    corrected = area.copy()
    if not good.size:
        return corrected
    for i in np.flatnonzero(wrong):
        above, below = good[good < i], good[good > i]
        neighbours = ([above[-1]] if above.size else []) + ([below[0]] if below.size else [])
        corrected[i] = area[neighbours].mean(axis=0)
    return corrected
