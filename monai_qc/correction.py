"""Volume correction: replace the areas of a class on the slices where it is rated wrong.

After Fournel et al. (2021), section 5, class by class. A class is *wrong* on a slice when its
predicted slice DSC is below the slice threshold (0.3 by default) or when a ``class_gap``
finding names the slice for that class. Only slices strictly between the first and last slice
holding the class can be replaced (its most basal and most apical slices cannot be
interpolated). The class's area on a wrong slice is replaced by the mean of its area on the
nearest *good* slice above and the nearest good slice below (good: the class is rated at or
above the threshold there and is not in a gap), and the volume is summed again; the other
classes of that slice keep their areas. The correction of a class is declined, with the reason,
when a wrong slice lacks a good slice on either side or when fewer than half of the class's
slices are good. Myocardial mass is the MYO volume times 1.05 g/mL.

The paper's slice-wise rule (a slice is wrong when any of background, LV myocardium or LV
cavity is rated low, and every class of it is replaced from the nearest slices not wrong) is
kept as :func:`find_wrong_slices` / :func:`replace_wrong_slices` for comparison; it can make
a volume worse and is not used by the reports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_qc.findings import CLASS_GAP
from monai_qc.inference import QCResult

__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_GOOD_FRACTION",
    "MYOCARDIUM_DENSITY",
    "ClassCorrection",
    "VolumeCorrection",
    "correct_arrays",
    "correct_class",
    "correct_volumes",
]

logger = logging.getLogger(__name__)

#: Density of myocardium, g/mL.
MYOCARDIUM_DENSITY = 1.05
#: Predicted slice DSC below which a class is wrong on a slice when no threshold is given.
DEFAULT_THRESHOLD = 0.3
#: Least share of a class's slices that must be good for its correction to go ahead.
MIN_GOOD_FRACTION = 0.5
_MYO = "MYO"


@dataclass(frozen=True)
class ClassCorrection:
    """The correction of one class.

    Attributes:
        corrected: whether areas of the class were replaced.
        wrong_slices: slices where the class is rated wrong and could be replaced.
        reason: why nothing was replaced (None when ``corrected``).
        segmented_ml: segmented volume, mL.
        corrected_ml: volume after correction; the segmented volume when no slice was wrong;
            None when the correction was declined (wrong slices that could not be replaced).
    """

    corrected: bool
    wrong_slices: list[int]
    reason: str | None
    segmented_ml: float
    corrected_ml: float | None

    def to_dict(self) -> dict[str, Any]:
        """``{"corrected", "wrong_slices", "reason"}`` in plain JSON types."""
        return {
            "corrected": self.corrected,
            "wrong_slices": [int(i) for i in self.wrong_slices],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class VolumeCorrection:
    """Segmented and corrected volumes of one case.

    Attributes:
        classes: the correction of every corrected class, by name.
        volumes_ml: segmented volume per foreground class, mL.
        mass_g: myocardial mass from the segmented MYO volume (None without a MYO class).
        thresholds: predicted slice DSC below which each class is wrong.
        exclude_ends: whether the first and last slices holding a class were exempt.
    """

    classes: dict[str, ClassCorrection]
    volumes_ml: dict[str, float]
    mass_g: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    exclude_ends: bool = True

    @property
    def corrected_ml(self) -> dict[str, float | None]:
        """Volume per class after correction (None where declined); others as segmented."""
        return {
            name: self.classes[name].corrected_ml if name in self.classes else volume
            for name, volume in self.volumes_ml.items()
        }

    @property
    def corrected_mass_g(self) -> float | None:
        """Myocardial mass from the corrected MYO volume (None where MYO was declined)."""
        volume = self.corrected_ml.get(_MYO)
        return None if volume is None else volume * MYOCARDIUM_DENSITY

    @property
    def wrong_slices(self) -> list[int]:
        """Every slice on which some class was rated wrong."""
        return sorted({i for c in self.classes.values() for i in c.wrong_slices})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, volumes in mL and masses in g rounded to 3 decimals."""

        def ml(value: float | None) -> float | None:
            return None if value is None else round(float(value), 3)

        return {
            "wrong_slices": self.wrong_slices,
            "volumes_ml": {k: ml(v) for k, v in self.volumes_ml.items()},
            "corrected_ml": {k: ml(v) for k, v in self.corrected_ml.items()},
            "mass_g": ml(self.mass_g),
            "corrected_mass_g": ml(self.corrected_mass_g),
            "per_class": {name: c.to_dict() for name, c in self.classes.items()},
            "thresholds": {k: float(v) for k, v in self.thresholds.items()},
            "exclude_ends": bool(self.exclude_ends),
        }


def _check_arrays(slice_dsc: np.ndarray, seg_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dsc = np.asarray(slice_dsc, dtype=np.float64)
    area = np.asarray(seg_area, dtype=np.float64)
    if dsc.ndim != 2 or dsc.shape != area.shape:
        raise ValueError(
            f"slice_dsc {dsc.shape} and seg_area {area.shape} must both be (S, K), same shape"
        )
    if dsc.shape[1] < 2:
        raise ValueError(f"slice_dsc has {dsc.shape[1]} column(s); expected background + classes")
    return dsc, area


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not in [0, 1]")
    return float(threshold)


def correct_class(
    dsc: np.ndarray,
    area: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    gap_slices: Sequence[int] = (),
    exclude_ends: bool = True,
    min_good_fraction: float = MIN_GOOD_FRACTION,
) -> tuple[np.ndarray | None, list[int], str | None]:
    """Correct the areas (S,) of one class from its predicted slice DSCs (S,).

    Args:
        dsc: predicted DSC of the class per slice; NaN is neither wrong nor good.
        area: segmented pixels of the class per slice.
        threshold: a DSC strictly below it makes the class wrong on a slice.
        gap_slices: slices where the class is missing between slices holding it (wrong too).
        exclude_ends: the first and last slice holding the class are never replaced.
        min_good_fraction: least share of the class's slices (first to last holding it)
            that must be good.

    Returns:
        (corrected areas or None when declined or nothing was wrong, wrong slices, reason
        for not correcting or None).
    """
    dsc = np.asarray(dsc, dtype=np.float64)
    area = np.asarray(area, dtype=np.float64)
    threshold = _check_threshold(threshold)
    holding = np.flatnonzero(area > 0)
    if not holding.size:
        return None, [], "segmented on no slice"
    first, last = int(holding[0]), int(holding[-1])
    extent = np.zeros(len(area), dtype=bool)
    extent[first : last + 1] = True
    gap = np.zeros(len(area), dtype=bool)
    gap[[int(i) for i in gap_slices if 0 <= int(i) < len(area)]] = True
    with np.errstate(invalid="ignore"):
        low = (dsc < threshold) | gap
        good = extent & ~low & np.isfinite(dsc)
    movable = extent.copy()
    if exclude_ends:
        movable[[first, last]] = False
    wrong = [int(i) for i in np.flatnonzero(low & movable)]
    if not wrong:
        return None, [], "no slice rated wrong"
    n_extent, n_good = last - first + 1, int(good.sum())
    if n_good < min_good_fraction * n_extent:
        return (
            None,
            wrong,
            (
                f"only {n_good} of the {n_extent} slices from {first} to {last} are rated good "
                f"(at least {min_good_fraction:.0%} needed)"
            ),
        )
    good_idx = np.flatnonzero(good)
    corrected = area.copy()
    for i in wrong:
        above, below = good_idx[good_idx < i], good_idx[good_idx > i]
        if not above.size or not below.size:
            side = "before" if not above.size else "after"
            return None, wrong, f"slice {i} has no slice rated good {side} it"
        corrected[i] = (area[above[-1]] + area[below[0]]) / 2.0
    return corrected, wrong, None


def correct_arrays(
    slice_dsc: np.ndarray,
    seg_area: np.ndarray,
    spacing: Sequence[float],
    class_names: Sequence[str] | None = None,
    threshold: float | Mapping[str, float] = DEFAULT_THRESHOLD,
    classes: Sequence[str] | None = None,
    exclude_ends: bool = True,
    gaps: Mapping[str, Sequence[int]] | None = None,
    min_good_fraction: float = MIN_GOOD_FRACTION,
) -> VolumeCorrection:
    """Per-class volume correction on plain arrays.

    Args:
        slice_dsc: predicted DSC (S, K), background first (column 0 is not used).
        seg_area: segmented pixels (S, K), background first.
        spacing: voxel spacing (sz, sy, sx) in mm.
        class_names: names of the K-1 foreground columns; None: ``"1"``, ``"2"``, ...
        threshold: slice threshold, one for all classes or per class (missing: 0.3).
        classes: the classes to correct; None: every foreground class.
        exclude_ends: exempt the first and last slices holding each class.
        gaps: class -> slices where it is missing between slices holding it.
        min_good_fraction: see :func:`correct_class`.

    Raises:
        ValueError: shapes, names, spacing or thresholds do not fit.
    """
    dsc, area = _check_arrays(slice_dsc, seg_area)
    names = [str(j) for j in range(1, area.shape[1])] if class_names is None else list(class_names)
    if len(names) != area.shape[1] - 1:
        raise ValueError(f"{len(names)} class_names for {area.shape[1] - 1} foreground columns")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} must be three positive numbers (mm)")
    chosen = list(names) if classes is None else [str(c) for c in classes]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"classes {unknown} are not among the foreground classes {names}")
    if isinstance(threshold, Mapping):
        limits = {n: float(threshold.get(n, DEFAULT_THRESHOLD)) for n in chosen}
    else:
        limits = {n: float(threshold) for n in chosen}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes = {n: float(area[:, j].sum()) * voxel_ml for j, n in enumerate(names, start=1)}
    results = {}
    for name in chosen:
        j = names.index(name) + 1
        fixed, wrong, reason = correct_class(
            dsc[:, j],
            area[:, j],
            limits[name],
            (gaps or {}).get(name, ()),
            exclude_ends,
            min_good_fraction,
        )
        if fixed is not None:
            corrected_ml: float | None = float(fixed.sum()) * voxel_ml
        else:
            corrected_ml = None if wrong else volumes[name]
            if wrong:
                logger.info("volume correction of %s declined: %s", name, reason)
        results[name] = ClassCorrection(
            fixed is not None, wrong, reason, volumes[name], corrected_ml
        )
    return VolumeCorrection(
        classes=results,
        volumes_ml=volumes,
        mass_g=volumes[_MYO] * MYOCARDIUM_DENSITY if _MYO in volumes else None,
        thresholds=limits,
        exclude_ends=exclude_ends,
    )


def correct_volumes(
    result: QCResult,
    threshold: float | Mapping[str, float] | None = None,
    classes: Sequence[str] | None = None,
    exclude_ends: bool = True,
    min_good_fraction: float = MIN_GOOD_FRACTION,
) -> VolumeCorrection:
    """Per-class corrected volumes of a QC result (see the module docstring).

    Args:
        result: the QC result of one case; its ``class_gap`` findings make slices wrong.
        threshold: slice threshold(s); None: the result's ``min_slice_dsc`` per class
            (0.3 for a class without one).
        classes: the classes to correct; None: every foreground class.
        exclude_ends: the first and last slices holding a class are never replaced.
        min_good_fraction: see :func:`correct_class`.

    Raises:
        ValueError: a name in ``classes`` is not a foreground class, or a bad threshold.
    """
    if threshold is None:
        threshold = dict(result.thresholds.min_slice_dsc)
    gaps: dict[str, list[int]] = {}
    for finding in result.findings:
        if finding.check == CLASS_GAP and finding.class_name is not None:
            gaps.setdefault(finding.class_name, []).extend(finding.slices)
    return correct_arrays(
        result.slice_dsc,
        result.seg_area,
        result.spacing,
        result.class_names,
        threshold,
        classes,
        exclude_ends,
        gaps,
        min_good_fraction,
    )
