"""Tests of the QC input transforms on small synthetic phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_qc.transforms import (
    Clahe,
    Clahed,
    CropBox,
    ForegroundSquareCrop,
    ForegroundSquareCropd,
    QCSliceInputs,
    QCSliceInputsd,
    QCVolumeInput,
    QCVolumeInputd,
    crop_to_box,
    foreground_square_box,
    resize_slices,
    with_context_slices,
)

K = 4  # background + 3 foreground classes


def phantom(
    n_slices: int = 6, shape: tuple[int, int] = (80, 96), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Concentric disc (3) / ring (2) / outer ring (1) per slice, centre jittered per slice."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    seg = np.zeros((n_slices, h, w), dtype=np.int64)
    img = rng.normal(100.0, 10.0, size=(n_slices, h, w)).astype(np.float32)
    for i in range(n_slices):
        cy, cx = 0.45 * h + rng.integers(-4, 5), 0.55 * w + rng.integers(-4, 5)
        r = np.hypot(yy - cy, xx - cx)
        radius = 6 + i  # structures grow along the stack
        seg[i][r < radius + 6] = 1
        seg[i][r < radius + 3] = 2
        seg[i][r < radius] = 3
        img[i] += 80.0 * seg[i]
    return img, seg


def test_slice_inputs_shape_dtype_onehot() -> None:
    img, seg = phantom()
    out = QCSliceInputs(K)(img, seg)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (6, 1 + K, 128, 128)
    onehot = out[:, 1:]
    assert set(torch.unique(onehot).tolist()) <= {0.0, 1.0}
    assert torch.equal(onehot.sum(dim=1), torch.ones(6, 128, 128))
    assert float(out[:, 0].min()) >= 0.0 and float(out[:, 0].max()) <= 1.0
    # every foreground class survives the crop and resize on every slice
    assert bool((onehot.sum(dim=(2, 3)) > 0).all())


def test_box_contains_all_foreground_and_is_square() -> None:
    img, seg = phantom()
    box = foreground_square_box(seg, margin=0.25, min_margin=4)
    assert box.side == box.x1 - box.x0 > 0
    ys, xs = np.nonzero(seg.max(axis=0))
    assert box.y0 < ys.min() and ys.max() < box.y1 - 1
    assert box.x0 < xs.min() and xs.max() < box.x1 - 1
    # the crop keeps every foreground pixel of every slice (one box for all slices)
    cropped = crop_to_box(seg, box)
    assert cropped.shape == (seg.shape[0], box.side, box.side)
    np.testing.assert_array_equal(np.bincount(cropped.ravel())[1:], np.bincount(seg.ravel())[1:])


def test_stray_false_positives_do_not_widen_the_crop() -> None:
    seg = np.zeros((3, 100, 100), dtype=np.int64)
    seg[1, 40:60, 40:60] = 2
    seg[2, 2:4, 90:93] = 1  # a stray blob far from the structure
    box = foreground_square_box(seg, margin=0.25, min_margin=0)
    assert (box.y0, box.x0, box.side) == (35, 35, 30)
    union = foreground_square_box(seg, margin=0.25, min_margin=0, largest_component=False)
    assert union.side > 2 * box.side


def test_margin_rules() -> None:
    seg = np.zeros((2, 100, 100), dtype=np.int64)
    seg[0, 40:60, 30:50] = 1  # 20 x 20 box on slice 0 only
    assert foreground_square_box(seg, margin=0.25, min_margin=0).side == 20 + 2 * 5
    assert foreground_square_box(seg, margin=0.0, min_margin=7).side == 20 + 2 * 7
    assert foreground_square_box(seg, margin=0.0, min_margin=0) == CropBox(40, 30, 60, 50)
    with pytest.raises(ValueError, match="margin"):
        foreground_square_box(seg, margin=-1.0)


def test_same_box_for_all_slices_and_recorded() -> None:
    img, seg = phantom()
    crop = ForegroundSquareCrop()
    img_c, seg_c = crop(img, seg)
    assert crop.last_box == foreground_square_box(seg)
    assert img_c.shape == seg_c.shape == (6, crop.last_box.side, crop.last_box.side)
    tr = QCSliceInputs(K)
    tr(img, seg)
    assert tr.last_box == crop.last_box


def test_box_outside_image_is_padded() -> None:
    img, seg = phantom(n_slices=2, shape=(40, 40))
    seg = np.zeros_like(seg)
    seg[:, 0:10, 0:10] = 2  # in the corner: the square box leaves the image
    img_c, seg_c = ForegroundSquareCrop(margin=0.5, min_margin=4)(img, seg)
    box = foreground_square_box(seg, margin=0.5, min_margin=4)
    assert box.y0 < 0 and box.x0 < 0
    assert seg_c[:, 0, 0].tolist() == [0, 0]
    assert img_c[:, 0, 0].tolist() == [img.min()] * 2
    assert int((seg_c == 2).sum()) == int((seg == 2).sum())


def test_empty_segmentation_fallback_central_square() -> None:
    img, _ = phantom(n_slices=3, shape=(60, 100))
    seg = np.zeros(img.shape, dtype=np.int64)
    assert foreground_square_box(seg) == CropBox(0, 20, 60, 80)
    out = QCSliceInputs(K)(img, seg)
    assert out.shape == (3, 1 + K, 128, 128)
    assert bool((out[:, 1] == 1).all())


def test_dict_forms_equal_array_forms() -> None:
    img, seg = phantom(seed=3)
    expected = QCSliceInputs(K)(img, seg)
    d = QCSliceInputsd(K)({"image": img, "seg": seg, "other": 1})
    assert torch.equal(d["qc_input"], expected)
    assert d["crop_box"] == foreground_square_box(seg) and d["other"] == 1
    vol = QCVolumeInputd(K, output_key="x")({"image": img, "seg": seg})
    assert torch.equal(vol["x"], QCVolumeInput(K)(img, seg))
    crop = ForegroundSquareCropd()({"image": img, "seg": seg})
    img_c, seg_c = ForegroundSquareCrop()(img, seg)
    np.testing.assert_array_equal(crop["image"], img_c)
    np.testing.assert_array_equal(crop["seg"], seg_c)
    np.testing.assert_array_equal(Clahed(keys="image")({"image": img})["image"], Clahe()(img))


def test_clahe_range_and_errors() -> None:
    img, _ = phantom(n_slices=2)
    out = Clahe(clip_limit=0.02)(img)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.1
    constant = Clahe()(np.full((2, 32, 32), 7.0))
    assert np.isfinite(constant).all()
    img[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Clahe()(img)


def test_labels_stay_exact_with_nearest() -> None:
    rng = np.random.default_rng(1)
    lab = rng.integers(0, K, size=(3, 64, 64)).astype(np.float32)
    up = resize_slices(lab, (128, 128), labels=True)
    assert up.shape == (3, 128, 128)
    np.testing.assert_array_equal(up.numpy()[:, ::2, ::2], lab)
    counts = [int((up == k).sum()) for k in range(K)]
    assert counts == [4 * int((lab == k).sum()) for k in range(K)]


def test_volume_input_shape() -> None:
    img, seg = phantom(n_slices=11)
    out = QCVolumeInput(K)(img, seg)
    assert out.shape == (1 + K, 128, 128, 8) and out.dtype == torch.float32
    assert torch.equal(out[1:].sum(dim=0), torch.ones(128, 128, 8))
    assert set(torch.unique(out[1:]).tolist()) <= {0.0, 1.0}
    # nearest neighbour: every image value is a value of the cropped, CLAHE-processed stack
    img_c, _ = ForegroundSquareCrop()(img, seg)
    assert set(out[0].unique().tolist()) <= set(Clahe()(img_c).ravel().tolist())
    assert QCVolumeInput(K, spatial_size=(64, 64, 4))(img, seg).shape == (1 + K, 64, 64, 4)


@pytest.mark.parametrize(
    ("image", "seg", "match"),
    [
        (np.zeros((4, 4)), np.zeros((4, 4), dtype=int), "3D"),
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 9), dtype=int), "shape"),
        (np.zeros((2, 8, 8)), np.full((2, 8, 8), K, dtype=int), "outside"),
        (np.zeros((2, 8, 8)), np.full((2, 8, 8), -1, dtype=int), "outside"),
        (np.zeros((2, 8, 8)), np.full((2, 8, 8), 0.5), "non-integer"),
        (np.full((2, 8, 8), np.nan), np.zeros((2, 8, 8), dtype=int), "NaN"),
    ],
)
def test_bad_inputs_raise(image: np.ndarray, seg: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QCSliceInputs(K)(image, seg)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        QCSliceInputs(1)
    with pytest.raises(ValueError, match="spatial_size"):
        QCVolumeInput(K, spatial_size=(128, 128))


def test_context_slices_stack_each_slice_with_its_neighbours() -> None:
    """Images first, then one-hots, slice order; beyond the stack all zeros (no background)."""
    img, seg = phantom()
    plain = QCSliceInputs(K, spatial_size=(32, 32))(img, seg)
    out = QCSliceInputs(K, spatial_size=(32, 32), context_slices=1)(img, seg)
    s = len(img)
    assert out.shape == (s, 3 * (1 + K), 32, 32)
    assert torch.equal(out, with_context_slices(plain, 1))
    images, onehots = out[:, :3], out[:, 3:].unflatten(1, (3, K))
    for i in range(s):
        for j, offset in enumerate((-1, 0, 1)):
            k = i + offset
            if 0 <= k < s:
                assert torch.equal(images[i, j], plain[k, 0])
                assert torch.equal(onehots[i, j], plain[k, 1:])
            else:
                assert not images[i, j].any() and not onehots[i, j].any()
    assert torch.equal(with_context_slices(plain, 0), plain)
    with pytest.raises(ValueError, match="context_slices must be >= 0"):
        QCSliceInputs(K, context_slices=-1)
