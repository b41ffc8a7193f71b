"""Tests of monai_qc.metrics against hand counts and SimpleITK."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from monai_qc.metrics import (
    OverlapCounts,
    dice,
    mvsf,
    overlap_counts,
    slice_scores,
    volume_scores,
)

CLASSES = [0, 1, 2, 3]
NAN = float("nan")


def _sitk_scores(truth: np.ndarray, seg: np.ndarray, label: int) -> tuple[float, float]:
    """Dice and volume similarity from SimpleITK.

    ``Execute(truth, seg)`` makes truth the ITK "source" and seg the "target"; ITK's volume
    similarity is then 2(|truth| - |seg|)/(|truth| + |seg|), i.e. exactly our MVSF
    (``Execute(seg, truth)`` would give -MVSF).
    """
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(sitk.GetImageFromArray(truth), sitk.GetImageFromArray(seg))
    return f.GetDiceCoefficient(label), f.GetVolumeSimilarity(label)


def _random_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(4, size=shape, p=[0.5, 0.2, 0.2, 0.1]).astype(np.uint8)
    seg = truth.copy()
    flip = rng.random(shape) < rng.uniform(0.05, 0.6)
    seg[flip] = rng.integers(0, 4, size=int(flip.sum()))
    return truth, seg


def _present(truth: np.ndarray, seg: np.ndarray, label: int) -> bool:
    return bool((truth == label).any() or (seg == label).any())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_volume_scores_match_simpleitk(seed: int) -> None:
    truth, seg = _random_pair(seed, (5, 17, 13))
    scores = volume_scores(truth, seg, CLASSES)
    for k, label in enumerate(CLASSES):
        ref_dsc, ref_vs = _sitk_scores(truth, seg, label)
        assert scores.dsc[k] == pytest.approx(ref_dsc, abs=1e-6)
        assert scores.mvsf[k] == pytest.approx(ref_vs, abs=1e-6)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_slice_scores_match_simpleitk_2d(seed: int) -> None:
    truth, seg = _random_pair(seed, (6, 9, 11))
    truth[2][truth[2] == 3] = 0  # make class 3 absent from both on slice 2
    seg[2][seg[2] == 3] = 0
    scores = slice_scores(truth, seg, CLASSES)
    assert scores.dsc.shape == scores.mvsf.shape == (6, 4)
    for i in range(truth.shape[0]):
        for k, label in enumerate(CLASSES):
            if not _present(truth[i], seg[i], label):
                assert math.isnan(scores.dsc[i, k]) and math.isnan(scores.mvsf[i, k])
                continue
            ref_dsc, ref_vs = _sitk_scores(truth[i], seg[i], label)
            assert scores.dsc[i, k] == pytest.approx(ref_dsc, abs=1e-6)
            assert scores.mvsf[i, k] == pytest.approx(ref_vs, abs=1e-6)
            assert scores.truth_area[i, k] == (truth[i] == label).sum()
            assert scores.seg_area[i, k] == (seg[i] == label).sum()


def test_sign_convention_against_simpleitk() -> None:
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 1  # 4 voxels
    seg = np.zeros((4, 4), np.uint8)
    seg[0, 0] = 1  # 1 voxel: under-segmentation -> MVSF > 0
    scores = volume_scores(truth, seg, [0, 1])
    assert scores.mvsf[1] == pytest.approx(2 * (4 - 1) / (4 + 1))
    assert scores.mvsf[1] == pytest.approx(_sitk_scores(truth, seg, 1)[1])
    assert scores.mvsf[1] == pytest.approx(-_sitk_scores(seg, truth, 1)[1])


def test_hand_counts() -> None:
    truth = np.array([[[0, 1, 1], [2, 2, 0]], [[0, 0, 0], [0, 0, 2]]])
    seg = np.array([[[0, 1, 0], [2, 2, 2]], [[0, 1, 0], [0, 0, 0]]])
    per_slice = overlap_counts(truth, seg, [0, 1, 2], per_slice=True)
    np.testing.assert_array_equal(per_slice.truth_area, [[2, 2, 2], [5, 0, 1]])
    np.testing.assert_array_equal(per_slice.seg_area, [[2, 1, 3], [5, 1, 0]])
    np.testing.assert_array_equal(per_slice.intersection, [[1, 1, 2], [4, 0, 0]])
    sl = slice_scores(truth, seg, [0, 1, 2])
    np.testing.assert_allclose(sl.dsc, [[0.5, 2 / 3, 0.8], [0.8, 0.0, 0.0]])
    np.testing.assert_allclose(sl.mvsf, [[0.0, 2 / 3, -0.4], [0.0, -2.0, 2.0]])
    vol = volume_scores(truth, seg, [0, 1, 2])
    np.testing.assert_array_equal(vol.truth_area, [7, 2, 3])
    np.testing.assert_allclose(vol.dsc, [10 / 14, 0.5, 4 / 6])
    np.testing.assert_allclose(vol.mvsf, [0.0, 0.0, 0.0])


def test_class_values_order_and_unlisted_values() -> None:
    truth = np.array([[5, 5, 9, 7]])
    seg = np.array([[5, 9, 9, 4]])
    counts = overlap_counts(truth, seg, [9, 5], per_slice=False)
    np.testing.assert_array_equal(counts.truth_area, [1, 2])
    np.testing.assert_array_equal(counts.seg_area, [2, 1])
    np.testing.assert_array_equal(counts.intersection, [1, 1])
    wide = overlap_counts(
        truth.astype(np.int32) * 100_000, seg * 100_000, [900_000, 500_000], False
    )
    np.testing.assert_array_equal(wide.truth_area, counts.truth_area)
    small = overlap_counts(truth.astype(np.int8) - 20, seg.astype(np.int8) - 20, [-11, -15], False)
    np.testing.assert_array_equal(small.seg_area, counts.seg_area)
    mask = overlap_counts(truth == 5, seg == 5, [0, 1], False)
    np.testing.assert_array_equal(mask.intersection, [2, 1])
    floats = overlap_counts(truth.astype(np.float32), seg.astype(float), [9, 5], False)
    np.testing.assert_array_equal(floats.intersection, counts.intersection)


def test_empty_policy() -> None:
    empty = np.zeros((2, 3, 3), np.uint8)
    one = empty.copy()
    one[1, 1, 1] = 1
    both_empty = volume_scores(empty, empty, [0, 1])
    assert math.isnan(both_empty.dsc[1]) and math.isnan(both_empty.mvsf[1])
    assert both_empty.dsc[0] == 1.0 and both_empty.mvsf[0] == 0.0
    target = volume_scores(empty, empty, [0, 1], empty_value=1.0, empty_mvsf=0.0)
    assert target.dsc[1] == 1.0 and target.mvsf[1] == 0.0
    missed = volume_scores(one, empty, [0, 1])  # truth present, seg empty
    assert missed.dsc[1] == 0.0 and missed.mvsf[1] == 2.0
    assert (missed.dsc[1], missed.mvsf[1]) == pytest.approx(_sitk_scores(one, empty, 1))
    extra = volume_scores(empty, one, [0, 1])  # truth empty, seg present
    assert extra.dsc[1] == 0.0 and extra.mvsf[1] == -2.0
    assert (extra.dsc[1], extra.mvsf[1]) == pytest.approx(_sitk_scores(empty, one, 1))
    per_slice = slice_scores(one, empty, [0, 1], empty_value=-1.0)
    np.testing.assert_array_equal(per_slice.dsc[:, 1], [-1.0, 0.0])
    np.testing.assert_array_equal(per_slice.mvsf[:, 1], [-1.0, 2.0])


def test_one_voxel_identical_and_disjoint() -> None:
    one = np.zeros((1, 4, 4), np.uint8)
    one[0, 2, 3] = 2
    same = volume_scores(one, one, CLASSES)
    assert same.dsc[2] == 1.0 and same.mvsf[2] == 0.0
    truth, seg = _random_pair(7, (3, 8, 8))
    identical = slice_scores(truth, truth, CLASSES)
    present = ~np.isnan(identical.dsc)
    np.testing.assert_array_equal(identical.dsc[present], 1.0)
    np.testing.assert_array_equal(identical.mvsf[present], 0.0)
    other = np.zeros_like(one)
    other[0, 0, 0] = 2
    disjoint = volume_scores(one, other, CLASSES)
    assert disjoint.dsc[2] == 0.0 and disjoint.mvsf[2] == 0.0
    assert disjoint.dsc[2] == pytest.approx(_sitk_scores(one, other, 2)[0])


def test_dice_and_mvsf_from_counts() -> None:
    counts = OverlapCounts(
        truth_area=np.array([4, 0, 0, 3]),
        seg_area=np.array([2, 0, 5, 0]),
        intersection=np.array([2, 0, 0, 0]),
    )
    np.testing.assert_allclose(dice(counts, empty_value=7.0), [2 / 3, 7.0, 0.0, 0.0])
    np.testing.assert_allclose(mvsf(counts), [2 / 3, NAN, -2.0, 2.0])


def test_validation_errors() -> None:
    vol = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        volume_scores(vol, vol[:1], CLASSES)
    with pytest.raises(ValueError, match="3D"):
        slice_scores(vol[0], vol[0], CLASSES)
    with pytest.raises(ValueError, match="class_values"):
        volume_scores(vol, vol, [])
    with pytest.raises(ValueError, match="class_values"):
        volume_scores(vol, vol, [1, 1])
    with pytest.raises(ValueError, match="class_values"):
        volume_scores(vol, vol, [0.5, 1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="truth"):
        volume_scores(np.array(["a"]), np.array(["a"]), [0])
