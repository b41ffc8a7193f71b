"""Tests of the per-class volume correction on hand-made areas and on a real ACDC case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_qc.correction import correct_arrays, correct_class, correct_volumes
from monai_qc.findings import CLASS_GAP, Finding
from monai_qc.inference import QCPredictor, QCResult, Thresholds
from monai_qc.io import read_volume
from monai_qc.slicewise_correction import (
    default_columns,
    find_wrong_slices,
    foreground_range,
    replace_wrong_slices,
)

SPACING = (10.0, 1.5, 1.5)  # 22.5 mm3 = 0.0225 mL per voxel
VOXEL_ML = 0.0225
NAMES = ["RV", "MYO", "LV"]


def stack(n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(S, 4) predicted DSCs, all good (0.9), and areas (BG, RV, MYO, LV)."""
    area = np.zeros((n, 4))
    area[:, 0] = 5000
    area[:, 1] = 300
    area[:, 2] = 400
    area[:, 3] = 600
    area[-1, 1] = 0  # no RV at the apex
    return np.full((n, 4), 0.9), area


def result_of(
    dsc: np.ndarray,
    area: np.ndarray,
    thresholds: Thresholds | None = None,
    findings: list[Finding] | None = None,
) -> QCResult:
    return QCResult(
        case="c",
        labels={"RV": 1, "MYO": 2, "LV": 3},
        slice_dsc=dsc,
        slice_mvsf=np.zeros_like(dsc),
        seg_area=area.astype(np.int64),
        volume_dsc=np.full(dsc.shape[1], 0.9),
        spacing=SPACING,
        thresholds=thresholds or Thresholds(),
        findings=findings or [],
    )


def test_only_the_class_rated_wrong_is_replaced() -> None:
    dsc, area = stack()
    undamaged = correct_arrays(dsc, area, SPACING, NAMES)
    assert undamaged.wrong_slices == []
    assert undamaged.volumes_ml == pytest.approx(
        {"RV": 6 * 300 * VOXEL_ML, "MYO": 7 * 400 * VOXEL_ML, "LV": 7 * 600 * VOXEL_ML}
    )
    assert undamaged.corrected_ml == undamaged.volumes_ml
    area[3, 1:] = [50, 900, 640]  # MYO badly segmented on slice 3, RV and LV a little off
    dsc[3, 2] = 0.1  # the QC network sees MYO only
    fixed = correct_arrays(dsc, area, SPACING, NAMES)
    assert fixed.wrong_slices == [3]
    assert fixed.corrected_ml["MYO"] == pytest.approx(7 * 400 * VOXEL_ML)
    # RV and LV are rated good on slice 3: their measured areas are kept
    assert fixed.corrected_ml["LV"] == pytest.approx((6 * 600 + 640) * VOXEL_ML)
    assert fixed.corrected_ml["RV"] == pytest.approx((5 * 300 + 50) * VOXEL_ML)
    assert fixed.mass_g == pytest.approx((6 * 400 + 900) * VOXEL_ML * 1.05)
    assert fixed.corrected_mass_g == pytest.approx(7 * 400 * VOXEL_ML * 1.05)
    data = json.loads(json.dumps(fixed.to_dict(), allow_nan=False))
    assert data["per_class"]["MYO"] == {"corrected": True, "wrong_slices": [3], "reason": None}
    assert data["per_class"]["LV"] == {
        "corrected": False,
        "wrong_slices": [],
        "reason": "no slice rated wrong",
    }
    assert data["thresholds"] == {"RV": 0.3, "MYO": 0.3, "LV": 0.3}


def test_the_slice_wise_rule_made_lv_worse_and_the_per_class_rule_does_not() -> None:
    """A slice picked for MYO had its (right) LV area replaced by a neighbour's."""
    dsc, area = stack(8)
    area[:, 3] = [900, 850, 800, 760, 700, 520, 400, 200]  # LV, truth as segmented
    dsc[4, 2] = 0.2  # MYO rated wrong on slice 4
    dsc[5, 2] = 0.25  # and on slice 5
    truth_lv = area[:, 3].sum() * VOXEL_ML
    old_wrong = find_wrong_slices(dsc, area, 0.3)
    old_lv = replace_wrong_slices(area, old_wrong)[:, 3].sum() * VOXEL_ML
    assert old_lv == pytest.approx((900 + 850 + 800 + 760 + 580 + 580 + 400 + 200) * VOXEL_ML)
    assert old_lv < truth_lv - 1.0  # the old rule lost more than 1 mL of a right LV
    new = correct_arrays(dsc, area, SPACING, NAMES)
    assert new.corrected_ml["LV"] == pytest.approx(truth_lv)
    assert new.classes["MYO"].corrected and new.classes["MYO"].wrong_slices == [4, 5]


def test_wrong_neighbours_are_never_taken_as_good() -> None:
    area = np.array([10, 11, 11, 12, 99, 98, 14, 16, 8], dtype=float)
    dsc = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.2, 0.9, np.nan, 0.9])
    fixed, wrong, reason = correct_class(dsc, area)
    assert wrong == [4, 5] and reason is None
    np.testing.assert_array_equal(fixed, [10, 11, 11, 12, 13, 13, 14, 16, 8])  # (12 + 14) / 2
    dsc[7] = 0.1  # slice 7 wrong: slice 6 and the end slice 8 are its neighbours
    fixed, wrong, _ = correct_class(dsc, area)
    assert wrong == [4, 5, 7] and fixed[7] == pytest.approx((14 + 8) / 2)
    dsc[8] = 0.05  # the end slice is rated wrong too: slice 7 has no good slice after it
    fixed, wrong, reason = correct_class(dsc, area)
    assert fixed is None and wrong == [4, 5, 7]
    assert reason == "slice 7 has no slice rated good after it"
    dsc[8] = np.nan  # a slice without a rating is not good either
    assert correct_class(dsc, area)[2] == "slice 7 has no slice rated good after it"


def test_declined_when_too_few_good_slices_remain() -> None:
    dsc, area = stack()
    dsc[[1, 2, 3, 4], 3] = 0.1  # LV rated wrong on 4 of its 7 slices
    out = correct_volumes(result_of(dsc, area))
    lv = out.classes["LV"]
    assert not lv.corrected and lv.wrong_slices == [1, 2, 3, 4]
    assert lv.reason == "only 3 of the 7 slices from 0 to 6 are rated good (at least 50% needed)"
    assert out.corrected_ml["LV"] is None and out.corrected_ml["MYO"] == out.volumes_ml["MYO"]
    data = out.to_dict()
    assert data["corrected_ml"]["LV"] is None
    assert data["per_class"]["LV"]["corrected"] is False
    assert data["wrong_slices"] == [1, 2, 3, 4]
    dsc[1, 3] = 0.9  # 4 of 7 good: corrected
    assert correct_volumes(result_of(dsc, area)).classes["LV"].corrected


def test_a_gap_finding_makes_the_slice_wrong_whatever_its_rating() -> None:
    dsc, area = stack()
    area[3, 3] = 0  # LV missed on slice 3, rated (wrongly) as absent
    gap = Finding(CLASS_GAP, "LV", (3,), "LV is missing on slice 3, between slices 0 and 6")
    assert correct_volumes(result_of(dsc, area)).corrected_ml["LV"] == pytest.approx(
        6 * 600 * VOXEL_ML
    )
    fixed = correct_volumes(result_of(dsc, area, findings=[gap]))
    assert fixed.classes["LV"].wrong_slices == [3]
    assert fixed.corrected_ml["LV"] == pytest.approx(7 * 600 * VOXEL_ML)


def test_thresholds_come_from_the_result_per_class_and_are_strict() -> None:
    dsc, area = stack()
    dsc[2, 1] = 0.45  # RV
    dsc[4, 3] = 0.2999  # LV
    dsc[3, 2] = 0.3  # MYO, not below 0.3
    out = correct_volumes(result_of(dsc, area))
    assert out.wrong_slices == [4] and out.thresholds == {"RV": 0.3, "MYO": 0.3, "LV": 0.3}
    strict = Thresholds(min_slice_dsc={"RV": 0.5, "MYO": 0.3, "LV": 0.3})
    out = correct_volumes(result_of(dsc, area, strict))
    assert out.classes["RV"].wrong_slices == [2] and out.wrong_slices == [2, 4]
    out = correct_volumes(result_of(dsc, area, strict), threshold=0.3001, classes=["MYO"])
    assert list(out.classes) == ["MYO"] and out.wrong_slices == [3]
    assert out.corrected_ml["RV"] == out.volumes_ml["RV"]  # not corrected, as segmented
    with pytest.raises(ValueError, match="background"):
        correct_volumes(result_of(dsc, area), classes=["background"])
    with pytest.raises(ValueError, match="threshold"):
        correct_volumes(result_of(dsc, area), threshold=1.5)


def test_ends_of_each_class_are_exempt() -> None:
    dsc, area = stack(8)
    area[[0, 7], 1:] = 0  # slices outside the heart
    area[6, 1] = 0  # RV ends on slice 5
    dsc[5, 1] = 0.1  # its last slice: not replaced
    dsc[1, 3] = 0.1  # LV's first slice: not replaced
    out = correct_arrays(dsc, area, SPACING, NAMES)
    assert out.wrong_slices == []
    assert out.classes["RV"].reason == "no slice rated wrong"
    assert correct_arrays(np.full((3, 4), 0.1), np.zeros((3, 4)), SPACING).classes["1"].reason == (
        "segmented on no slice"
    )
    out = correct_arrays(dsc, area, SPACING, NAMES, exclude_ends=False)
    assert out.classes["RV"].wrong_slices == [5]
    assert out.classes["RV"].reason == "slice 5 has no slice rated good after it"


def test_input_errors_and_no_myocardium() -> None:
    dsc, area = stack()
    out = correct_arrays(dsc, area, (1.0, 1.0, 1.0), ["A", "B", "C"])
    assert out.mass_g is None and out.corrected_mass_g is None
    assert out.to_dict()["mass_g"] is None
    with pytest.raises(ValueError, match="seg_area"):
        correct_arrays(dsc, area[:, :3], SPACING)
    with pytest.raises(ValueError, match="class_names"):
        correct_arrays(dsc, area, SPACING, ["A"])
    with pytest.raises(ValueError, match="spacing"):
        correct_arrays(dsc, area, (0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="PA"):
        correct_volumes(result_of(dsc, area), classes=["PA"])


def test_slice_wise_rule_kept_for_comparison() -> None:
    dsc, area = stack()
    assert default_columns(area) == [0, 2, 3]  # RV is missing at the apex
    assert foreground_range(area) == (0, 6) and foreground_range(np.zeros((3, 2))) is None
    dsc[3, 2] = 0.1
    dsc[0, 3] = 0.05  # an end slice: exempt
    np.testing.assert_array_equal(np.flatnonzero(find_wrong_slices(dsc, area)), [3])
    steps = np.array([[10, 1], [10, 2], [10, 99], [10, 98], [10, 8], [10, 3]], dtype=float)
    fixed = replace_wrong_slices(steps, np.array([False, False, True, True, False, False]))
    np.testing.assert_array_equal(fixed[:, 1], [1, 2, 5, 5, 8, 3])
    with pytest.raises(ValueError, match="columns"):
        find_wrong_slices(dsc, area, columns=[4])


def test_real_case_with_lv_missed_on_a_mid_slice_is_restored(acdc: Path) -> None:
    """acdc_002_ED (a test patient of the shipped bundle): expert labels, LV dropped on a slice."""
    image, spacing, _ = read_volume(acdc / "imagesTr" / "acdc_002_ED_0000.nii.gz")
    truth, _, _ = read_volume(acdc / "labelsTr" / "acdc_002_ED.nii.gz")
    holding = np.flatnonzero((truth == 3).any(axis=(1, 2)))
    middle = int(holding[len(holding) // 2])
    seg = truth.copy()
    seg[middle][seg[middle] == 3] = 0
    voxel_ml = float(np.prod(spacing)) / 1000
    truth_lv = float((truth == 3).sum()) * voxel_ml
    result = QCPredictor.from_bundle().predict(image, seg, spacing, "acdc_002_ED")
    out = correct_volumes(result)
    assert out.classes["LV"].corrected and middle in out.classes["LV"].wrong_slices
    before = abs(out.volumes_ml["LV"] - truth_lv) / truth_lv
    after = abs(out.corrected_ml["LV"] - truth_lv) / truth_lv
    assert before > 0.08 and after < 0.03
    for name in ("RV", "MYO"):  # rated good on the damaged slice: not touched there
        assert middle not in out.classes[name].wrong_slices
