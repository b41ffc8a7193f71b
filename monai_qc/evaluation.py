"""Evaluating QC predictions against the truth: the tables of the QC method, per class.

Slice level (2D): predicted vs true DSC of every test slice on which the class is in the truth
or in the segmentation (slices where both are empty agree trivially and are left out).
Subject level (3D): the 2D_R reconstruction (and the 3D-direct baseline) vs the true 3D DSC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["Agreement", "agreement", "compare_errors", "group_mae", "rank_correlation"]


@dataclass(frozen=True)
class Agreement:
    """Agreement of predicted with true DSC for one class."""

    n: int
    mae: float
    mae_sd: float
    pearson_r: float
    accuracy: float

    def to_dict(self) -> dict[str, float]:
        return {
            "n": self.n, "mae": self.mae, "mae_sd": self.mae_sd, "pearson_r": self.pearson_r,
            "accuracy": self.accuracy,
        }  # fmt: skip


def agreement(predicted: np.ndarray, true: np.ndarray, threshold: float = 0.7) -> Agreement:
    """MAE ± sd, Pearson r and good/bad accuracy (same threshold on both) of finite pairs."""
    keep = np.isfinite(predicted) & np.isfinite(true)
    p, t = predicted[keep], true[keep]
    if p.size == 0:
        return Agreement(0, float("nan"), float("nan"), float("nan"), float("nan"))
    error = np.abs(p - t)
    r = (
        float(stats.pearsonr(p, t)[0])
        if p.size > 2 and p.std() > 0 and t.std() > 0
        else float("nan")
    )
    accuracy = float(np.mean((p >= threshold) == (t >= threshold)))
    return Agreement(int(p.size), float(error.mean()), float(error.std()), r, accuracy)


def compare_errors(error_a: np.ndarray, error_b: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value of paired absolute errors (NaN when undefined)."""
    keep = np.isfinite(error_a) & np.isfinite(error_b)
    a, b = error_a[keep], error_b[keep]
    if a.size < 2 or np.allclose(a, b):
        return float("nan")
    return float(stats.wilcoxon(a, b).pvalue)


def rank_correlation(score: np.ndarray, true: np.ndarray) -> float:
    """Spearman rank correlation of a quality score with the true DSC (finite pairs)."""
    keep = np.isfinite(score) & np.isfinite(true)
    if keep.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(score[keep], true[keep])[0])


def group_mae(
    predicted: np.ndarray, true: np.ndarray, groups: Sequence[str]
) -> Mapping[str, dict[str, Any]]:
    """MAE and count per group (e.g. pathology) of predicted vs true values."""
    out: dict[str, dict[str, Any]] = {}
    group_array = np.asarray(groups)
    for g in sorted(set(groups)):
        keep = (group_array == g) & np.isfinite(predicted) & np.isfinite(true)
        out[g] = {"n": int(keep.sum()), "mae": float(np.abs(predicted[keep] - true[keep]).mean())
                  if keep.any() else float("nan")}  # fmt: skip
    return out
