"""The mid-slice experiment of volume correction (Fournel et al. 2021, section 5).

A good segmentation ``Z`` has its middle slice replaced by a bad segmentation of the same
slice (``D``); volume correction is then applied to ``D`` (``D+C``). The relative volume error
``RVE = |V - V_truth| / V_truth`` of the three, and the 3D DSC of ``Z`` and ``D``, show that
correction restores the volumes while a 3D score alone hides the damage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from monai_qc.metrics import slice_scores

__all__ = [
    "CONDITIONS",
    "CaseOutcome",
    "class_volumes_ml",
    "damage_slice",
    "markdown_table",
    "mid_slice",
    "relative_volume_error",
    "slice_mean_dsc",
    "summarize",
]

#: The three segmentations compared: undamaged, damaged, damaged then corrected.
CONDITIONS = ("Z", "D", "D+C")


@dataclass(frozen=True)
class CaseOutcome:
    """Results of one case; arrays hold one value per foreground class.

    Attributes:
        case: case id.
        rve: relative volume error per condition (``Z``, ``D``, ``D+C``).
        dsc: true 3D DSC of ``Z`` and ``D``.
        detected: whether correction classed the damaged slice as wrong.
        other_wrong: number of other slices classed as wrong.
    """

    case: str
    rve: Mapping[str, np.ndarray]
    dsc: Mapping[str, np.ndarray]
    detected: bool
    other_wrong: int


def mid_slice(segmentation: np.ndarray) -> int | None:
    """Middle slice among the slices holding foreground (upper middle for an even count)."""
    seg = np.asarray(segmentation)
    if seg.ndim != 3:
        raise ValueError(f"segmentation must be (S, H, W), got shape {seg.shape}")
    holding = np.flatnonzero(seg.reshape(seg.shape[0], -1).any(axis=1))
    return int(holding[len(holding) // 2]) if holding.size else None


def damage_slice(segmentation: np.ndarray, donor: np.ndarray, index: int) -> np.ndarray:
    """A copy of ``segmentation`` whose slice ``index`` is that of ``donor``."""
    if segmentation.shape != donor.shape:
        raise ValueError(f"donor shape {donor.shape} differs from {segmentation.shape}")
    if not 0 <= index < segmentation.shape[0]:
        raise ValueError(f"slice index {index} is outside 0..{segmentation.shape[0] - 1}")
    damaged = segmentation.copy()
    damaged[index] = donor[index]
    return damaged


def slice_mean_dsc(
    truth: np.ndarray, segmentation: np.ndarray, index: int, foreground_values: Sequence[int]
) -> float:
    """True DSC of slice ``index`` averaged over the foreground classes present in the truth.

    NaN when the truth holds no foreground on that slice.
    """
    window = slice(index, index + 1)
    scores = slice_scores(truth[window], segmentation[window], foreground_values)
    present = scores.truth_area[0] > 0
    return float(scores.dsc[0][present].mean()) if present.any() else float("nan")


def class_volumes_ml(
    segmentation: np.ndarray, values: Sequence[int], spacing: Sequence[float]
) -> np.ndarray:
    """Volume (mL) of each label value in ``values``: voxel count times voxel volume."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    seg = np.asarray(segmentation)
    return np.array([np.count_nonzero(seg == v) * voxel_ml for v in values], dtype=np.float64)


def relative_volume_error(volumes: np.ndarray, truth_volumes: np.ndarray) -> np.ndarray:
    """``|V - V_truth| / V_truth`` per class; NaN where the truth volume is zero."""
    v = np.asarray(volumes, dtype=np.float64)
    t = np.asarray(truth_volumes, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, np.abs(v - t) / t, np.nan)


def _mean_sd(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else float("nan")
    sd = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": int(finite.size)}


def _ks_p(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return float(ks_2samp(a, b).pvalue) if a.size and b.size else float("nan")


def summarize(outcomes: Sequence[CaseOutcome], class_names: Sequence[str]) -> dict[str, Any]:
    """Statistics per class: RVE mean/sd per condition, KS p-values, mean 3D DSC.

    Returns:
        ``{"n_cases", "detected_fraction", "mean_other_wrong", "classes": {name: {"rve":
        {condition: {"mean", "sd", "n"}}, "ks_p": {"Z vs D", "Z vs D+C"}, "dsc": {"Z", "D"}}}}``.
    """
    n = len(outcomes)
    classes: dict[str, Any] = {}
    for j, name in enumerate(class_names):
        rve = {c: np.array([o.rve[c][j] for o in outcomes], dtype=float) for c in CONDITIONS}
        dsc = {c: np.array([o.dsc[c][j] for o in outcomes], dtype=float) for c in ("Z", "D")}
        classes[name] = {
            "rve": {c: _mean_sd(v) for c, v in rve.items()},
            "ks_p": {
                "Z vs D": _ks_p(rve["Z"], rve["D"]),
                "Z vs D+C": _ks_p(rve["Z"], rve["D+C"]),
            },
            "dsc": {c: _mean_sd(v)["mean"] for c, v in dsc.items()},
        }
    return {
        "n_cases": n,
        "detected_fraction": float(np.mean([o.detected for o in outcomes])) if n else float("nan"),
        "mean_other_wrong": float(np.mean([o.other_wrong for o in outcomes]))
        if n
        else float("nan"),
        "classes": classes,
    }


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.2g}"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The paper-style table: a row per class, RVE (mean ± sd) of Z, D, D+C, KS p, DSC."""
    lines = [
        "| Class | RVE no damage (Z) | RVE damaged (D) | RVE corrected (D+C) "
        "| KS p Z vs D | KS p Z vs D+C | 3D DSC Z | 3D DSC D |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["classes"].items():
        rve = [f"{_fmt(row['rve'][c]['mean'])} ± {_fmt(row['rve'][c]['sd'])}" for c in CONDITIONS]
        ks = [_p(row["ks_p"][k]) for k in ("Z vs D", "Z vs D+C")]
        dsc = [_fmt(row["dsc"][c]) for c in ("Z", "D")]
        lines.append("| " + " | ".join([name, *rve, *ks, *dsc]) + " |")
    lines += [
        "",
        f"Cases: {summary['n_cases']}; damaged slice detected in "
        f"{_fmt(100 * summary['detected_fraction'], 0)} % of them; "
        f"other slices classed as wrong: {_fmt(summary['mean_other_wrong'])} per case.",
    ]
    return "\n".join(lines) + "\n"
