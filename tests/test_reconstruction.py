"""Tests of the 2D_R reconstruction of the 3D DSC from per-slice scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_qc.metrics import slice_scores, volume_scores
from monai_qc.reconstruction import (
    estimated_truth_area,
    gap_truth_area,
    reconstruct_volume_dsc,
    slice_error_fraction,
)

NAN = float("nan")


def _label_maps(
    seed: int, shape: tuple[int, int, int], n_classes: int, p_fg: float, p_flip: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random truth and a segmentation that disagrees with it on a fraction of voxels."""
    rng = np.random.default_rng(seed)
    weights = np.r_[1.0 - p_fg, np.full(n_classes - 1, p_fg / (n_classes - 1))]
    truth = rng.choice(n_classes, size=shape, p=weights).astype(np.uint8)
    seg = truth.copy()
    flip = rng.random(shape) < p_flip
    seg[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    return truth, seg


def _blind(truth: np.ndarray, seg: np.ndarray, classes: list[int]) -> np.ndarray:
    """Per class: is there a slice with truth but no segmentation (the blind spot)?"""
    t = slice_scores(truth, seg, classes)
    return ((t.truth_area > 0) & (t.seg_area == 0)).any(axis=0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 10), st.integers(1, 10)),
    n_classes=st.integers(2, 4),
    p_fg=st.floats(0.0, 0.9),
    p_flip=st.floats(0.0, 0.7),
    targets=st.sampled_from(["nan", "training"]),
)
def test_true_slice_scores_reproduce_volume_dsc(
    seed: int,
    shape: tuple[int, int, int],
    n_classes: int,
    p_fg: float,
    p_flip: float,
    targets: str,
) -> None:
    classes = list(range(n_classes))
    truth, seg = _label_maps(seed, shape, n_classes, p_fg, p_flip)
    if targets == "nan":
        sl = slice_scores(truth, seg, classes)  # both-empty slices: NaN
    else:
        sl = slice_scores(truth, seg, classes, empty_value=1.0, empty_mvsf=0.0)
    recon = reconstruct_volume_dsc(sl.dsc, sl.mvsf, sl.seg_area)
    true_dsc = volume_scores(truth, seg, classes).dsc
    blind = _blind(truth, seg, classes)
    # Exact identity wherever no truth hides on a slice with an empty segmentation.
    np.testing.assert_allclose(recon[~blind], true_dsc[~blind], atol=1e-6, rtol=0)
    # Elsewhere the hidden truth is ignored: the reconstruction can only overestimate.
    for k in np.flatnonzero(blind):
        assert math.isnan(recon[k]) or recon[k] >= true_dsc[k] - 1e-9
    # The estimated truth area equals the true area on every visible slice.
    area = estimated_truth_area(sl.mvsf, sl.seg_area)
    visible = sl.seg_area > 0
    np.testing.assert_allclose(area[visible], sl.truth_area[visible], rtol=1e-9)
    assert (area[~visible] == 0).all()


def test_blind_spot_overestimates() -> None:
    truth = np.zeros((2, 4, 5), np.uint8)
    truth[:, :2, :] = 1  # 10 voxels of class 1 on each slice
    seg = truth.copy()
    seg[1] = 0  # the segmentation misses slice 1 entirely
    sl = slice_scores(truth, seg, [0, 1])
    assert sl.dsc[1, 1] == 0.0 and sl.mvsf[1, 1] == 2.0  # the slice scores do say so...
    recon = reconstruct_volume_dsc(sl.dsc, sl.mvsf, sl.seg_area)
    true_dsc = volume_scores(truth, seg, [0, 1]).dsc
    assert true_dsc[1] == pytest.approx(2 * 10 / (20 + 10))  # 0.667
    assert recon[1] == pytest.approx(1.0)  # ...but slice 1 has |z| = 0 and counts for nothing


def test_hand_computed_prediction() -> None:
    # Slice 0: |z|=10, MVSF=0 -> |y|=10, DSC 0.8 -> inter 8.
    # Slice 1: |z|=6, MVSF=2/3 -> |y|=6*(8/3)/(4/3)=12, DSC 0.5 -> inter 4.5.
    dsc = np.array([[0.8], [0.5]])
    mv = np.array([[0.0], [2 / 3]])
    area = np.array([[10], [6]])
    np.testing.assert_allclose(estimated_truth_area(mv, area), [[10.0], [12.0]])
    expected = 2 * (8 + 4.5) / (10 + 12 + 10 + 6)
    np.testing.assert_allclose(reconstruct_volume_dsc(dsc, mv, area), [expected])


def test_all_empty_class_is_nan() -> None:
    truth = np.zeros((3, 4, 4), np.uint8)
    truth[0, 0, 0] = 2
    seg = np.zeros_like(truth)
    sl = slice_scores(truth, seg, [0, 1, 2])
    recon = reconstruct_volume_dsc(sl.dsc, sl.mvsf, sl.seg_area)
    assert recon[0] == pytest.approx(volume_scores(truth, seg, [0, 1, 2]).dsc[0])
    assert math.isnan(recon[1])  # absent from truth and segmentation
    assert math.isnan(recon[2])  # present in truth only: invisible (true DSC is 0)


def test_nan_scores_on_empty_slices_are_ignored() -> None:
    dsc = np.array([[0.9, NAN], [NAN, NAN]])
    mv = np.array([[0.1, NAN], [NAN, NAN]])
    area = np.array([[20, 0], [0, 0]])
    recon = reconstruct_volume_dsc(dsc, mv, area)
    assert np.isfinite(recon[0]) and math.isnan(recon[1])
    recon_nan = reconstruct_volume_dsc(np.array([[NAN]]), np.array([[0.0]]), np.array([[5]]))
    assert math.isnan(recon_nan[0])  # a missing score on a visible slice is not hidden


def test_extreme_mvsf_does_not_crash() -> None:
    dsc = np.array([[0.0, 0.2, 1.0], [0.0, 0.0, 0.0]])
    mv = np.array([[2.0, -2.0, 2.0], [-2.0, 2.0, 3.0]])
    area = np.array([[5, 5, 0], [4, 0, 0]])
    with np.errstate(all="raise"):
        truth = estimated_truth_area(mv, area)
        recon = reconstruct_volume_dsc(dsc, mv, area)
    assert np.isfinite(truth).all()
    assert truth[0, 0] > 1e6 and truth[0, 1] == 0.0 and truth[1, 0] == 0.0
    assert recon[0] == 0.0
    assert recon[1] == pytest.approx(2 * (0.5 * 0.2 * 5) / (0 + 5))
    assert math.isnan(recon[2])


def test_batch_axes() -> None:
    rng = np.random.default_rng(3)
    dsc = rng.random((2, 5, 3))
    mv = rng.uniform(-2, 2, (2, 5, 3))
    area = rng.integers(0, 30, (2, 5, 3))
    batched = reconstruct_volume_dsc(dsc, mv, area)
    assert batched.shape == (2, 3)
    for b in range(2):
        np.testing.assert_allclose(batched[b], reconstruct_volume_dsc(dsc[b], mv[b], area[b]))


def test_validation_errors() -> None:
    ok = np.ones((3, 2))
    with pytest.raises(ValueError, match="same shape"):
        reconstruct_volume_dsc(ok, np.ones((3, 3)), ok)
    with pytest.raises(ValueError, match="slice_dsc"):
        reconstruct_volume_dsc(np.ones(3), ok, ok)
    with pytest.raises(ValueError, match="seg_area"):
        reconstruct_volume_dsc(ok, ok, -ok)
    with pytest.raises(ValueError, match="eps"):
        estimated_truth_area(ok, ok, eps=0.0)


def test_gap_truth_area_interpolates_only_inside_gaps() -> None:
    area = np.array([[0, 10], [0, 20], [5, 0], [0, 0], [0, 50], [0, 0]], dtype=float)
    missed = gap_truth_area(area)
    # class 1: gap on slices 2-3 between 20 (slice 1) and 50 (slice 4); slice 5 is past the end
    np.testing.assert_allclose(missed[:, 1], [0, 0, 30, 40, 0, 0])
    # class 0 is segmented on one slice only: nothing to interpolate
    np.testing.assert_array_equal(missed[:, 0], 0)
    batch = gap_truth_area(np.stack([area, area]))
    np.testing.assert_array_equal(batch[1], missed)


def test_missed_area_lowers_the_3d_dsc_as_the_missed_truth_does() -> None:
    truth = np.array([[40.0], [60.0], [80.0], [60.0]])
    seg = truth.copy()
    seg[2] = 0  # the structure missed on one slice between two that hold it
    ones, zeros = np.ones_like(seg), np.zeros_like(seg)
    true_dsc = 2 * 160 / (160 + 240)
    assert reconstruct_volume_dsc(ones, zeros, seg)[0] == pytest.approx(1.0)
    estimate = reconstruct_volume_dsc(ones, zeros, seg, missed_area=gap_truth_area(seg))[0]
    assert estimate == pytest.approx(2 * 160 / (160 + 160 + 60))  # interpolated 60 for 80
    assert abs(estimate - true_dsc) < 0.05
    with pytest.raises(ValueError, match="missed_area"):
        reconstruct_volume_dsc(ones, zeros, seg, missed_area=-ones)


def test_slice_error_fraction_sizes_a_slice_against_its_class() -> None:
    area = np.array([[10.0], [100.0], [100.0], [0.0]])
    dsc = np.array([[0.2], [0.9], [0.2], [0.1]])
    mvsf = np.zeros_like(area)
    fraction = slice_error_fraction(dsc, mvsf, area)
    # disagreement (1 - DSC)(|y| + |z|) with |y| = |z| (MVSF 0), over the class's 210 voxels
    np.testing.assert_allclose(fraction[:3, 0], [0.8 * 20 / 210, 0.1 * 200 / 210, 0.8 * 200 / 210])
    assert fraction[3, 0] == np.inf  # an empty slice cannot be sized: never excused
