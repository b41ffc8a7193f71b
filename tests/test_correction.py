"""Tests of the volume correction on hand-made areas and predicted DSCs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monai_qc.correction import (
    correct_arrays,
    correct_volumes,
    default_columns,
    find_wrong_slices,
    foreground_range,
    replace_wrong_slices,
)
from monai_qc.inference import QCResult, Thresholds

SPACING = (10.0, 1.5, 1.5)  # 22.5 mm3 = 0.0225 mL per voxel
VOXEL_ML = 0.0225


def stack(n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(S, 4) areas (BG, RV, MYO, LV) and predicted DSCs, all good (0.9)."""
    area = np.zeros((n, 4))
    area[:, 0] = 5000
    area[:, 1] = 300
    area[:, 2] = 400
    area[:, 3] = 600
    area[-1, 1] = 0  # no RV at the apex
    return np.full((n, 4), 0.9), area


def result_of(dsc: np.ndarray, area: np.ndarray) -> QCResult:
    return QCResult(
        case="c",
        labels={"RV": 1, "MYO": 2, "LV": 3},
        slice_dsc=dsc,
        slice_mvsf=np.zeros_like(dsc),
        seg_area=area.astype(np.int64),
        volume_dsc=np.full(dsc.shape[1], 0.9),
        spacing=SPACING,
        thresholds=Thresholds(),
    )


def test_damaged_mid_slice_is_restored() -> None:
    dsc, area = stack()
    undamaged = correct_arrays(dsc, area, SPACING, ["RV", "MYO", "LV"])
    assert undamaged.wrong_slices == []
    assert undamaged.volumes_ml == pytest.approx(
        {"RV": 6 * 300 * VOXEL_ML, "MYO": 7 * 400 * VOXEL_ML, "LV": 7 * 600 * VOXEL_ML}
    )
    area[3, 1:] = [50, 900, 100]  # a bad segmentation of slice 3
    dsc[3, 2] = 0.1  # the QC network sees it (MYO)
    fixed = correct_arrays(dsc, area, SPACING, ["RV", "MYO", "LV"])
    assert fixed.wrong_slices == [3]
    assert fixed.volumes_ml["MYO"] == pytest.approx((6 * 400 + 900) * VOXEL_ML)
    assert fixed.volumes_ml["LV"] == pytest.approx((6 * 600 + 100) * VOXEL_ML)
    assert fixed.corrected_ml == pytest.approx(undamaged.volumes_ml)
    assert fixed.mass_g == pytest.approx((6 * 400 + 900) * VOXEL_ML * 1.05)
    assert fixed.corrected_mass_g == pytest.approx(7 * 400 * VOXEL_ML * 1.05)


def test_mean_of_unequal_neighbours_and_runs_of_wrong_slices() -> None:
    area = np.array([[10, 1], [10, 2], [10, 99], [10, 98], [10, 8], [10, 3]], dtype=float)
    wrong = np.array([False, False, True, True, False, False])
    fixed = replace_wrong_slices(area, wrong)
    np.testing.assert_array_equal(fixed[:, 1], [1, 2, 5, 5, 8, 3])  # (2 + 8) / 2 twice
    np.testing.assert_array_equal(fixed[:, 0], 10)
    one_side = replace_wrong_slices(area, np.array([False, False, False, False, True, True]))
    np.testing.assert_array_equal(one_side[4:, 1], [98, 98])
    everything = np.ones(6, dtype=bool)
    np.testing.assert_array_equal(replace_wrong_slices(area, everything), area)


def test_ends_are_excluded() -> None:
    dsc, area = stack()
    dsc[0, 3] = dsc[6, 0] = 0.05  # basal LV and apical background look bad
    assert not find_wrong_slices(dsc, area).any()
    np.testing.assert_array_equal(
        np.flatnonzero(find_wrong_slices(dsc, area, exclude_ends=False)), [0, 6]
    )
    fixed = correct_arrays(dsc, area, SPACING, exclude_ends=False)
    assert fixed.corrected_ml["2"] == pytest.approx(fixed.volumes_ml["2"])  # equal neighbours


def test_ends_are_the_first_and_last_slices_with_foreground() -> None:
    dsc, area = stack(8)
    area[[0, 7], 1:] = 0  # slices outside the heart
    assert foreground_range(area) == (1, 6)
    dsc[[0, 1, 6, 7], 0] = 0.1
    dsc[2, 3] = 0.1
    np.testing.assert_array_equal(np.flatnonzero(find_wrong_slices(dsc, area)), [2])
    assert foreground_range(np.zeros((3, 2))) is None
    assert not find_wrong_slices(np.zeros((3, 2)), np.zeros((3, 2))).any()


def test_threshold_is_strict() -> None:
    dsc, area = stack()
    dsc[2, 0] = 0.3
    dsc[4, 3] = 0.2999
    np.testing.assert_array_equal(np.flatnonzero(find_wrong_slices(dsc, area, 0.3)), [4])
    np.testing.assert_array_equal(np.flatnonzero(find_wrong_slices(dsc, area, 0.3001)), [2, 4])
    dsc[3, 2] = np.nan
    np.testing.assert_array_equal(np.flatnonzero(find_wrong_slices(dsc, area, 0.3)), [4])


def test_default_columns_skip_classes_missing_on_a_slice() -> None:
    dsc, area = stack()
    assert default_columns(area) == [0, 2, 3]  # RV is missing at the apex
    dsc[3, 1] = 0.0  # so a low RV DSC does not count by default
    assert not find_wrong_slices(dsc, area).any()
    assert find_wrong_slices(dsc, area, columns=[1])[3]


def test_no_wrong_slices_leaves_volumes_unchanged() -> None:
    dsc, area = stack()
    area[:, 2] = [100, 300, 500, 400, 200, 250, 50]
    out = correct_volumes(result_of(dsc, area))
    assert out.wrong_slices == []
    assert out.corrected_ml == out.volumes_ml
    assert out.volumes_ml["MYO"] == pytest.approx(1800 * VOXEL_ML)
    assert out.classes == ["background", "MYO", "LV"]


def test_correct_volumes_by_class_name_and_to_dict() -> None:
    dsc, area = stack()
    area[4, 1] = 1000
    dsc[4, 1] = 0.2  # RV
    assert correct_volumes(result_of(dsc, area)).wrong_slices == []
    out = correct_volumes(result_of(dsc, area), classes=["RV"])
    assert out.wrong_slices == [4]
    assert out.corrected_ml["RV"] == pytest.approx(6 * 300 * VOXEL_ML)
    data = json.loads(json.dumps(out.to_dict(), allow_nan=False))
    assert data["wrong_slices"] == [4]
    assert data["corrected_ml"]["RV"] == pytest.approx(40.5)
    assert data["volumes_ml"]["RV"] == pytest.approx(56.25)
    assert data["mass_g"] == pytest.approx(66.15)
    assert data["classes"] == ["RV"] and data["threshold"] == 0.3
    with pytest.raises(ValueError, match="PA"):
        correct_volumes(result_of(dsc, area), classes=["PA"])


def test_no_myocardium_no_mass_and_input_errors() -> None:
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
    with pytest.raises(ValueError, match="threshold"):
        find_wrong_slices(dsc, area, threshold=1.5)
    with pytest.raises(ValueError, match="columns"):
        find_wrong_slices(dsc, area, columns=[4])
