"""The mid-slice experiment's pure functions on tiny synthetic label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monai_qc.correction import correct_arrays
from monai_qc.correction_experiment import (
    CaseOutcome,
    class_volumes_ml,
    damage_slice,
    markdown_table,
    mid_slice,
    relative_volume_error,
    slice_mean_dsc,
    summarize,
)
from monai_qc.inference import slice_areas


def _stack(n_slices: int, filled: range) -> np.ndarray:
    """(S, 8, 8): label 1 in rows 0-1, label 2 in rows 2-5 on the ``filled`` slices."""
    seg = np.zeros((n_slices, 8, 8), dtype=np.uint8)
    for i in filled:
        seg[i, 0:2] = 1
        seg[i, 2:6] = 2
    return seg


def test_mid_slice_is_middle_of_slices_holding_foreground() -> None:
    assert mid_slice(_stack(10, range(2, 7))) == 4  # slices 2..6
    assert mid_slice(_stack(10, range(2, 6))) == 4  # 2..5: upper middle
    assert mid_slice(_stack(5, range(3, 4))) == 3
    assert mid_slice(np.zeros((4, 3, 3), dtype=np.uint8)) is None
    with pytest.raises(ValueError, match="segmentation"):
        mid_slice(np.zeros((3, 3)))


def test_damage_slice_replaces_one_slice_only() -> None:
    z, donor = _stack(5, range(5)), np.zeros((5, 8, 8), dtype=np.uint8)
    d = damage_slice(z, donor, 2)
    assert not d[2].any()
    assert np.array_equal(np.delete(d, 2, axis=0), np.delete(z, 2, axis=0))
    assert z[2].any()  # the input is untouched
    with pytest.raises(ValueError, match="index"):
        damage_slice(z, donor, 5)
    with pytest.raises(ValueError, match="donor shape"):
        damage_slice(z, donor[:4], 1)


def test_slice_mean_dsc_averages_classes_present_in_truth() -> None:
    truth = _stack(3, range(3))
    seg = truth.copy()
    seg[1, 2:6] = 0  # class 2 missed on slice 1: DSC 0; class 1 intact: DSC 1
    assert slice_mean_dsc(truth, seg, 1, [1, 2]) == pytest.approx(0.5)
    assert slice_mean_dsc(truth, seg, 0, [1, 2]) == pytest.approx(1.0)
    truth[1, 0:2] = 0  # class 1 absent from the truth: only class 2 counts
    assert slice_mean_dsc(truth, seg, 1, [1, 2]) == pytest.approx(0.0)
    assert math.isnan(slice_mean_dsc(np.zeros_like(truth), seg, 1, [1, 2]))


def test_volumes_and_relative_volume_error() -> None:
    seg = _stack(4, range(1, 3))  # 2 slices x 16 voxels of 1, 2 x 32 of 2
    volumes = class_volumes_ml(seg, [1, 2], (10.0, 1.0, 2.0))  # 20 mm^3 per voxel
    assert volumes == pytest.approx([32 * 0.02, 64 * 0.02])
    rve = relative_volume_error(np.array([1.1, 0.5, 3.0]), np.array([1.0, 1.0, 0.0]))
    assert rve[:2] == pytest.approx([0.1, 0.5])
    assert math.isnan(rve[2])


def test_correcting_the_damaged_slice_restores_the_volume() -> None:
    z = _stack(7, range(1, 6))
    d = damage_slice(z, np.zeros_like(z), mid_slice(z) or 0)
    spacing = (10.0, 1.0, 1.0)
    indices = d.astype(np.int64)  # label values are class indices here
    predicted = np.full((7, 3), 0.9)
    predicted[3] = 0.1  # the QC network flags the damaged slice
    result = correct_arrays(predicted, slice_areas(indices, 3), spacing, ["A", "B"], 0.3)
    assert result.wrong_slices == [3]
    truth_ml = class_volumes_ml(z, [1, 2], spacing)
    d_rve = relative_volume_error(class_volumes_ml(d, [1, 2], spacing), truth_ml)
    corrected = np.array([result.corrected_ml["A"], result.corrected_ml["B"]])
    assert d_rve == pytest.approx([0.2, 0.2])
    assert relative_volume_error(corrected, truth_ml) == pytest.approx([0.0, 0.0])


def _outcome(case: str, z: float, d: float, dc: float, detected: bool) -> CaseOutcome:
    return CaseOutcome(
        case=case,
        rve={"Z": np.array([z, z]), "D": np.array([d, d]), "D+C": np.array([dc, np.nan])},
        dsc={"Z": np.array([0.9, 0.8]), "D": np.array([0.7, 0.6])},
        detected=detected,
        other_wrong=1,
    )


def test_summarize_and_table() -> None:
    outcomes = [
        _outcome("a", 0.0, 0.5, 0.0, True),
        _outcome("b", 0.1, 0.7, 0.1, True),
        _outcome("c", 0.2, 0.9, 0.3, False),
    ]
    summary = summarize(outcomes, ["A", "B"])
    assert summary["n_cases"] == 3
    assert summary["detected_fraction"] == pytest.approx(2 / 3)
    assert summary["mean_other_wrong"] == pytest.approx(1.0)
    a = summary["classes"]["A"]
    assert a["rve"]["Z"] == {"mean": pytest.approx(0.1), "sd": pytest.approx(0.1), "n": 3}
    assert a["rve"]["D"]["mean"] == pytest.approx(0.7)
    assert a["ks_p"]["Z vs D"] == pytest.approx(0.1)  # disjoint samples of 3: exact p = 2/20
    assert a["ks_p"]["Z vs D+C"] == pytest.approx(1.0)
    assert a["dsc"] == {"Z": pytest.approx(0.9), "D": pytest.approx(0.7)}
    b = summary["classes"]["B"]
    assert b["rve"]["D+C"]["n"] == 0 and math.isnan(b["rve"]["D+C"]["mean"])
    assert math.isnan(b["ks_p"]["Z vs D+C"])
    table = markdown_table(summary)
    assert "| A | 0.10 ± 0.10 | 0.70 ± 0.20 | 0.13 ± 0.15 | 0.1 | 1 | 0.90 | 0.70 |" in table
    assert "| B |" in table and "n/a ± n/a" in table
    assert "Cases: 3; damaged slice detected in 67 %" in table


def test_summarize_without_cases() -> None:
    summary = summarize([], ["A"])
    assert summary["n_cases"] == 0 and math.isnan(summary["detected_fraction"])
    assert "Cases: 0" in markdown_table(summary)
