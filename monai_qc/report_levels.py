"""Colour levels of predicted DSCs against a report's own thresholds.

A value is ``"bad"`` (red) below the class's threshold: a slice below ``min_slice_dsc`` is
flagged, a 3D DSC below ``min_dsc`` fails the case. It is ``"warn"`` (amber) up to the amber
bound: for slices the case threshold, or :data:`MARGIN` above the slice threshold where the
case threshold is not higher; for a 3D DSC, :data:`MARGIN` above the case threshold. Above
that it is ``"good"`` (green). A class without the threshold, or a value that is null, is
``"none"`` (no colour). The same levels frame the slices of the figures.

A slice value below the slice threshold is red only when the slice is flagged for that class:
with ``thresholds.min_slice_error`` > 0 a slice is flagged only where the class's predicted
disagreement reaches that fraction of its segmented volume
(:func:`monai_qc.reconstruction.slice_error_fraction`, from the report's ``dsc``, ``mvsf`` and
``area``); a low DSC on a smaller disagreement (a few pixels at the apex) is amber.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_qc.reconstruction import slice_error_fraction

__all__ = [
    "LEVELS",
    "MARGIN",
    "class_names",
    "colour_limits",
    "disagreement_reaches",
    "finite_number",
    "level",
    "report_thresholds",
    "slice_levels",
    "worst_level",
]

#: Width of the amber band above a threshold where no higher case threshold bounds it.
MARGIN = 0.1
#: Colour levels, worst first.
LEVELS = ("bad", "warn", "good")


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float (numpy scalars included), else None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def class_names(report: Mapping[str, Any]) -> list[str]:
    """Foreground class names of a report, sorted by label value."""
    labels = report.get("labels")
    if not isinstance(labels, Mapping):
        return []
    ordered = sorted(labels.items(), key=lambda kv: (finite_number(kv[1]) or 0, kv[0]))
    return [str(n) for n, _ in ordered]


def _per_class(value: Any, names: Sequence[str]) -> dict[str, float]:
    """A threshold entry: a number for every class or ``{class: number}`` (others dropped)."""
    if finite_number(value) is not None:
        return dict.fromkeys(names, float(value))
    return {
        str(k): float(v)
        for k, v in (value if isinstance(value, Mapping) else {}).items()
        if finite_number(v) is not None
    }


def report_thresholds(report: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The report's own ``(min_dsc, min_slice_dsc)`` per class (a number applies to all)."""
    thresholds = report.get("thresholds")
    thresholds = thresholds if isinstance(thresholds, Mapping) else {}
    names = class_names(report)
    return (
        _per_class(thresholds.get("min_dsc"), names),
        _per_class(thresholds.get("min_slice_dsc"), names),
    )


def colour_limits(
    report: Mapping[str, Any], kind: str, margin: float = MARGIN
) -> dict[str, tuple[float, float]]:
    """Per class ``(red below, amber below)`` of ``kind`` ``"slice"`` or ``"volume"`` values.

    Slices: red below the slice threshold, amber up to the case threshold (or ``margin`` above
    the slice threshold when the case threshold is not higher). 3D DSC: red below the case
    threshold, amber up to ``margin`` above it. Classes without the threshold are left out.
    """
    case, per_slice = report_thresholds(report)
    if kind == "volume":
        return {n: (v, min(v + margin, 1.0)) for n, v in case.items()}
    if kind != "slice":
        raise ValueError(f"kind must be 'slice' or 'volume', not {kind!r}")
    limits = {}
    for name, low in per_slice.items():
        high = case.get(name, -1.0)
        limits[name] = (low, high if high > low else min(low + margin, 1.0))
    return limits


def level(value: float | None, limits: tuple[float, float] | None) -> str:
    """``"bad"``, ``"warn"``, ``"good"`` for a value against ``limits``; ``"none"`` without."""
    if value is None or limits is None or not math.isfinite(value):
        return "none"
    return "bad" if value < limits[0] else "warn" if value < limits[1] else "good"


def worst_level(levels: Sequence[str]) -> str:
    """The worst of ``levels`` (``"none"`` when none is coloured)."""
    return next((name for name in LEVELS if name in levels), "none")


def _slice_matrix(slices: Sequence[Any], key: str, names: Sequence[str]) -> np.ndarray:
    """(S, C) of ``slice[key][class]``; NaN where null or missing."""
    rows = []
    for sl in slices:
        entry = sl.get(key) if isinstance(sl, Mapping) else None
        entry = entry if isinstance(entry, Mapping) else {}
        rows.append([finite_number(entry.get(n)) for n in names])
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    return matrix


def disagreement_reaches(
    dsc: np.ndarray, mvsf: np.ndarray, area: np.ndarray, min_error: float
) -> np.ndarray:
    """Where a slice's predicted disagreement reaches ``min_error`` of its class's volume.

    The predictor's rule for a flag (:attr:`monai_qc.inference.QCResult.low_slices`), from a
    report's values: (S, C) arrays of DSC, MVSF and area, NaN where the report holds none. A
    slice without MVSF or area counts as reached (it gets no excuse); ``min_error`` 0 reaches
    everywhere.
    """
    if min_error <= 0 or not dsc.size:
        return np.ones(dsc.shape, dtype=bool)
    known = np.isfinite(mvsf) & np.isfinite(area)
    with np.errstate(invalid="ignore"):
        fraction = slice_error_fraction(
            np.nan_to_num(dsc, nan=1.0), np.nan_to_num(mvsf), np.maximum(np.nan_to_num(area), 0)
        )
    return ~known | (fraction >= min_error)


def slice_levels(report: Mapping[str, Any], margin: float = MARGIN) -> dict[str, list[str]]:
    """Per class, the level of every slice's predicted DSC (see the module docstring).

    ``"bad"`` marks exactly the slices flagged for the class: below its slice threshold and,
    with ``min_slice_error`` > 0, a predicted disagreement of at least that fraction of the
    class's segmented volume (counted as reached where ``mvsf`` or ``area`` is missing).
    """
    names = class_names(report)
    slices = report.get("slices") if isinstance(report.get("slices"), list) else []
    limits = colour_limits(report, "slice", margin)
    dsc = _slice_matrix(slices, "dsc", names)
    thresholds = report.get("thresholds")
    thresholds = thresholds if isinstance(thresholds, Mapping) else {}
    min_error = finite_number(thresholds.get("min_slice_error")) or 0.0
    large = disagreement_reaches(
        dsc, _slice_matrix(slices, "mvsf", names), _slice_matrix(slices, "area", names), min_error
    )
    out = {}
    for k, name in enumerate(names):
        column = []
        for i in range(len(slices)):
            value = None if not np.isfinite(dsc[i, k]) else float(dsc[i, k])
            colour = level(value, limits.get(name))
            column.append("warn" if colour == "bad" and not large[i, k] else colour)
        out[name] = column
    return out
