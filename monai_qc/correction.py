"""Volume correction: replace the measurements of slices the QC network predicts are wrong.

Fournel et al. (2021), section 5: a slice is *wrong* when its predicted DSC is below a
threshold (0.3) for any class that is present on every slice; the most basal and most apical
slices are never classed as wrong. The per-class area of each wrong slice is replaced by the
mean of the nearest good slice above and the nearest good slice below, and the volumes are
summed again. Myocardial mass is the MYO volume times 1.05 g/mL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_qc.inference import QCResult

__all__ = [
    "MYOCARDIUM_DENSITY",
    "VolumeCorrection",
    "correct_arrays",
    "correct_volumes",
    "default_columns",
    "find_wrong_slices",
    "foreground_range",
    "replace_wrong_slices",
]

logger = logging.getLogger(__name__)

#: Density of myocardium, g/mL.
MYOCARDIUM_DENSITY = 1.05
#: Name of column 0 (background) when classes are chosen by name.
BACKGROUND = "background"
_MYO = "MYO"


@dataclass(frozen=True)
class VolumeCorrection:
    """Segmented and corrected volumes of one case.

    Attributes:
        wrong_slices: indices of the slices whose areas were replaced.
        volumes_ml: segmented volume per foreground class, mL.
        corrected_ml: volume per foreground class after replacing the wrong slices, mL.
        mass_g: myocardial mass from the segmented MYO volume (None without a MYO class).
        corrected_mass_g: myocardial mass from the corrected MYO volume.
        threshold: predicted DSC below which a slice is wrong.
        classes: the classes whose DSC decided (``"background"`` for column 0).
        exclude_ends: whether the first and last slices holding foreground were exempt.
    """

    wrong_slices: list[int]
    volumes_ml: dict[str, float]
    corrected_ml: dict[str, float]
    mass_g: float | None = None
    corrected_mass_g: float | None = None
    threshold: float = 0.3
    classes: list[str] = field(default_factory=list)
    exclude_ends: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, volumes in mL and masses in g rounded to 3 decimals."""
        return {
            "wrong_slices": [int(i) for i in self.wrong_slices],
            "volumes_ml": {k: round(float(v), 3) for k, v in self.volumes_ml.items()},
            "corrected_ml": {k: round(float(v), 3) for k, v in self.corrected_ml.items()},
            "mass_g": None if self.mass_g is None else round(float(self.mass_g), 3),
            "corrected_mass_g": (
                None if self.corrected_mass_g is None else round(float(self.corrected_mass_g), 3)
            ),
            "threshold": float(self.threshold),
            "classes": list(self.classes),
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


def foreground_range(seg_area: np.ndarray) -> tuple[int, int] | None:
    """First and last slice holding any foreground (columns 1..K-1), or None when none does."""
    holding = np.flatnonzero(np.asarray(seg_area)[:, 1:].sum(axis=1) > 0)
    return (int(holding[0]), int(holding[-1])) if holding.size else None


def default_columns(seg_area: np.ndarray) -> list[int]:
    """Background plus every foreground column segmented on every slice of the heart.

    "Every slice" means every slice from the first to the last slice holding any foreground
    (slices beyond the structure, e.g. below the apex, hold nothing by design). In the paper
    these are BG, LV myocardium and LV cavity.
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
    threshold: float = 0.3,
    columns: Sequence[int] | None = None,
    exclude_ends: bool = True,
) -> np.ndarray:
    """(S,) True for slices whose predicted DSC is below ``threshold`` in any of ``columns``.

    Args:
        slice_dsc: predicted DSC (S, K), background first. NaN is never below the threshold.
        seg_area: segmented pixels (S, K).
        threshold: a DSC strictly below it makes a slice wrong.
        columns: columns that decide; None: :func:`default_columns`.
        exclude_ends: only slices strictly between the first and last slice holding
            foreground can be wrong (the most basal and most apical slices are exempt).
    """
    dsc, area = _check_arrays(slice_dsc, seg_area)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not in [0, 1]")
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
    """Areas (S, K) with each wrong slice replaced by the mean of its nearest good neighbours.

    The nearest good slice above and the nearest good slice below are averaged; where only
    one side has a good slice, that one is used. Without any good slice nothing changes.
    """
    area = np.asarray(seg_area, dtype=np.float64)
    wrong = np.asarray(wrong, dtype=bool)
    if wrong.shape != area.shape[:1]:
        raise ValueError(f"wrong {wrong.shape} does not match seg_area slices {area.shape[:1]}")
    good = np.flatnonzero(~wrong)
    corrected = area.copy()
    if not good.size:
        if wrong.any():
            logger.warning("every slice is wrong; areas are left uncorrected")
        return corrected
    for i in np.flatnonzero(wrong):
        above, below = good[good < i], good[good > i]
        neighbours = ([above[-1]] if above.size else []) + ([below[0]] if below.size else [])
        corrected[i] = area[neighbours].mean(axis=0)
    return corrected


def correct_arrays(
    slice_dsc: np.ndarray,
    seg_area: np.ndarray,
    spacing: Sequence[float],
    class_names: Sequence[str] | None = None,
    threshold: float = 0.3,
    columns: Sequence[int] | None = None,
    exclude_ends: bool = True,
) -> VolumeCorrection:
    """Volume correction on plain arrays (any areas, e.g. with a slice replaced on purpose).

    Args:
        slice_dsc: predicted DSC (S, K), background first.
        seg_area: segmented pixels (S, K), background first.
        spacing: voxel spacing (sz, sy, sx) in mm.
        class_names: names of the K-1 foreground columns; None: ``"1"``, ``"2"``, ...
        threshold: a DSC strictly below it makes a slice wrong.
        columns: columns that decide; None: :func:`default_columns`.
        exclude_ends: exempt the first and last slices holding foreground.
    """
    dsc, area = _check_arrays(slice_dsc, seg_area)
    names = [str(j) for j in range(1, area.shape[1])] if class_names is None else list(class_names)
    if len(names) != area.shape[1] - 1:
        raise ValueError(f"{len(names)} class_names for {area.shape[1] - 1} foreground columns")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} must be three positive numbers (mm)")
    cols = default_columns(area) if columns is None else [int(c) for c in columns]
    wrong = find_wrong_slices(dsc, area, threshold, cols, exclude_ends)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    before = area.sum(axis=0) * voxel_ml
    after = replace_wrong_slices(area, wrong).sum(axis=0) * voxel_ml
    volumes = {n: float(before[j]) for j, n in enumerate(names, start=1)}
    corrected = {n: float(after[j]) for j, n in enumerate(names, start=1)}
    has_myo = _MYO in volumes
    return VolumeCorrection(
        wrong_slices=[int(i) for i in np.flatnonzero(wrong)],
        volumes_ml=volumes,
        corrected_ml=corrected,
        mass_g=volumes[_MYO] * MYOCARDIUM_DENSITY if has_myo else None,
        corrected_mass_g=corrected[_MYO] * MYOCARDIUM_DENSITY if has_myo else None,
        threshold=float(threshold),
        classes=[BACKGROUND if c == 0 else names[c - 1] for c in cols],
        exclude_ends=exclude_ends,
    )


def correct_volumes(
    result: QCResult,
    threshold: float = 0.3,
    classes: Sequence[str] | None = None,
    exclude_ends: bool = True,
) -> VolumeCorrection:
    """Corrected volumes of a QC result (Fournel et al. 2021, section 5).

    Args:
        result: the QC result of one case.
        threshold: a predicted DSC strictly below it makes a slice wrong (paper: 0.3).
        classes: class names whose DSC decides (``"background"`` for the background);
            None: background plus every foreground class segmented on every slice from the
            first to the last slice holding foreground (the paper's BG, LVM and LVC).
        exclude_ends: the first and last slices holding foreground are never wrong.

    Raises:
        ValueError: a name in ``classes`` is not a class of the result, or bad threshold.
    """
    names = result.class_names
    columns = None
    if classes is not None:
        lookup = {BACKGROUND: 0, **{n: j for j, n in enumerate(names, start=1)}}
        unknown = [c for c in classes if c not in lookup]
        if unknown:
            raise ValueError(f"classes {unknown} are not among {list(lookup)}")
        columns = [lookup[c] for c in classes]
    return correct_arrays(
        result.slice_dsc, result.seg_area, result.spacing, names, threshold, columns, exclude_ends
    )
