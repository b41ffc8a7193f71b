"""Tests of reading, validating and pairing inputs (real files written with SimpleITK)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from monai_qc.errors import QCInputError
from monai_qc.io import (
    CasePair,
    dataset_file_ending,
    label_map_from_dataset_json,
    labelled_case_ids,
    load_case,
    pair_cases,
    read_volume,
    split_image_name,
)

SHAPE = (4, 32, 32)
SPACING = (5.0, 1.25, 1.5)  # (sz, sy, sx)
LABELS = (1, 2, 3)


def write(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    """Write ``array`` (S, H, W) with ``spacing`` (sz, sy, sx) to ``path``."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def make_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(100.0, 20.0, SHAPE).astype(np.float32)


def make_seg() -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[:, 8:24, 8:24] = 1
    seg[:, 12:20, 12:20] = 2
    seg[1:3, 14:18, 14:18] = 3
    return seg


@pytest.fixture
def case_files(tmp_path: Path) -> tuple[Path, Path]:
    image = write(tmp_path / "img" / "c1_0000.nii.gz", make_image())
    seg = write(tmp_path / "seg" / "c1.nii.gz", make_seg())
    return image, seg


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_read_volume_formats(tmp_path: Path, ext: str) -> None:
    image = make_image()
    array, spacing, sitk_image = read_volume(write(tmp_path / f"x{ext}", image))
    assert array.shape == SHAPE
    np.testing.assert_array_equal(array, image)
    assert spacing == pytest.approx(SPACING)
    assert sitk_image.GetDimension() == 3


def test_read_volume_squeezes_4d_of_size_1(tmp_path: Path) -> None:
    path = tmp_path / "x.mha"
    sitk.WriteImage(sitk.GetImageFromArray(make_image()[None], isVector=False), str(path))
    array, _, image = read_volume(path)
    assert array.shape == SHAPE and image.GetDimension() == 3


def test_read_volume_rejects_true_4d(tmp_path: Path) -> None:
    path = tmp_path / "x.mha"
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((2, *SHAPE), np.float32), isVector=False), str(path)
    )
    with pytest.raises(QCInputError, match="4D image"):
        read_volume(path)


def test_read_volume_rejects_2d(tmp_path: Path) -> None:
    path = write(tmp_path / "x.nii.gz", np.zeros((32, 32), np.float32), spacing=(1.0, 1.0))
    with pytest.raises(QCInputError, match="2D image") as info:
        read_volume(path)
    assert info.value.path == str(path)


def test_read_volume_unreadable_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x00not an image\xff" * 20)
    with pytest.raises(QCInputError, match="cannot be read") as info:
        read_volume(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(QCInputError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")


def test_load_case_ok(case_files: tuple[Path, Path]) -> None:
    image, seg = case_files
    case = load_case("c1", image, seg, LABELS)
    assert case.case_id == "c1"
    assert case.image.dtype == np.float32 and case.image.shape == SHAPE
    assert np.issubdtype(case.segmentation.dtype, np.integer)
    np.testing.assert_array_equal(case.segmentation, make_seg())
    assert case.spacing == pytest.approx(SPACING)
    assert (case.image_path, case.seg_path) == (image, seg)


def test_load_case_float_integral_segmentation_is_accepted(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nrrd", make_image())
    seg = write(tmp_path / "s.nrrd", make_seg().astype(np.float32))
    case = load_case("c", image, seg, LABELS)
    assert case.segmentation.max() == 3


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".nii.gz", ".nii"])
def test_load_case_nan_image(tmp_path: Path, ext: str) -> None:
    """ITK's NIfTI reader reads NaN/inf as 0; the raw NIfTI voxels are scanned instead."""
    array = make_image()
    array[0, 0, 0] = np.nan
    array[1, 0, 0] = np.inf
    image = write(tmp_path / f"i{ext}", array)
    seg = write(tmp_path / "s.nii.gz", make_seg())
    with pytest.raises(QCInputError, match="2 non-finite") as info:
        load_case("c", image, seg, LABELS)
    assert info.value.path == str(image)


def test_load_case_shape_mismatch(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = write(tmp_path / "s.nii.gz", make_seg()[:3])
    with pytest.raises(QCInputError, match=r"shape \(3, 32, 32\).*\(4, 32, 32\)") as info:
        load_case("c", image, seg, LABELS)
    assert info.value.path == str(seg)


def test_load_case_spacing_mismatch(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = write(tmp_path / "s.nii.gz", make_seg(), spacing=(5.0, 1.25, 1.6))
    with pytest.raises(QCInputError, match="spacing") as info:
        load_case("c", image, seg, LABELS)
    assert "1.6" in str(info.value) and "1.5" in str(info.value)


def test_load_case_spacing_within_tolerance(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = write(tmp_path / "s.nii.gz", make_seg(), spacing=(5.0, 1.25, 1.5 * (1 + 2e-4)))
    assert load_case("c", image, seg, LABELS).spacing == pytest.approx(SPACING)


def test_load_case_non_integer_segmentation(tmp_path: Path) -> None:
    seg_array = make_seg().astype(np.float32)
    seg_array[0, 10, 10] = 0.5
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = write(tmp_path / "s.nii.gz", seg_array)
    with pytest.raises(QCInputError, match="non-integer values \\(0.5\\)"):
        load_case("c", image, seg, LABELS)


def test_load_case_unknown_label(tmp_path: Path) -> None:
    seg_array = make_seg()
    seg_array[0, 0, 0] = 7
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = write(tmp_path / "s.nii.gz", seg_array)
    with pytest.raises(QCInputError, match=r"\[7\].*known: 0 = background, 1, 2, 3") as info:
        load_case("c", image, seg, LABELS)
    assert info.value.path == str(seg)


def test_load_case_empty_segmentation(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = write(tmp_path / "s.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(QCInputError, match="segmentation is empty") as info:
        load_case("c", image, seg, LABELS)
    assert info.value.path == str(seg)


def _write_seg_with_geometry(
    path: Path,
    origin: tuple[float, ...] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] | None = None,
) -> Path:
    seg_image = sitk.GetImageFromArray(make_seg())
    seg_image.SetSpacing(tuple(reversed(SPACING)))
    seg_image.SetOrigin(origin)
    if direction is not None:
        seg_image.SetDirection(direction)
    sitk.WriteImage(seg_image, str(path))
    return path


def test_load_case_origin_mismatch_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    seg = _write_seg_with_geometry(tmp_path / "s.nii.gz", origin=(10.0, 0.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="monai_qc.io"):
        case = load_case("c", image, seg, LABELS)
    assert len(case.warnings) == 1
    assert "origin (10.0, 0.0, 0.0) differs from the image's (0.0, 0.0, 0.0)" in case.warnings[0]
    assert f"{seg}: {case.warnings[0]}" in caplog.text
    np.testing.assert_array_equal(case.segmentation, make_seg())


def test_load_case_direction_mismatch_is_a_warning(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    flipped = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    seg = _write_seg_with_geometry(tmp_path / "s.nii.gz", direction=flipped)
    warnings = load_case("c", image, seg, LABELS).warnings
    assert len(warnings) == 1 and "direction (-1.0, 0.0, 0.0," in warnings[0]


def test_load_case_matching_geometry_has_no_warnings(case_files: tuple[Path, Path]) -> None:
    assert load_case("c1", *case_files, LABELS, strict=True).warnings == []


def test_load_case_strict_turns_geometry_warnings_into_errors(tmp_path: Path) -> None:
    image = write(tmp_path / "i.nii.gz", make_image())
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    seg = _write_seg_with_geometry(tmp_path / "s.nii.gz", (0.0, 4.0, 0.0), flipped)
    assert len(load_case("c", image, seg, LABELS, strict=False).warnings) == 2
    with pytest.raises(QCInputError, match="origin .* differs.*; segmentation direction") as info:
        load_case("c", image, seg, LABELS, strict=True)
    assert info.value.path == str(seg)


def test_split_image_name() -> None:
    assert split_image_name("a_0000.nii.gz") == ("a_0000", ".nii.gz")
    assert split_image_name("B.MHA") == ("B", ".MHA")
    assert split_image_name("a.raw") is None
    assert split_image_name(".hidden.nii.gz") is None


def test_pair_cases_nnunet_and_same_name(tmp_path: Path) -> None:
    images, segs = tmp_path / "images", tmp_path / "segs"
    img, seg = make_image(), make_seg()
    write(images / "b_0000.nrrd", img)
    write(images / "b_0001.nrrd", img)  # second channel: ignored
    write(images / "a_0000.nii.gz", img)
    write(images / "c.mha", img)  # same-name pair
    write(images / "d_0000.nii.gz", img)  # no segmentation
    (images / "dataset.json").write_text("{}")
    (images / "notes.txt").write_text("not an image")
    write(segs / "a.nii.gz", seg)
    write(segs / "b.nii.gz", seg)  # extension differs from its image
    write(segs / "c.mha", seg)
    write(segs / "e.nrrd", seg)  # no image
    pairs, problems = pair_cases(images, segs)
    assert pairs == [
        CasePair("a", images / "a_0000.nii.gz", segs / "a.nii.gz"),
        CasePair("b", images / "b_0000.nrrd", segs / "b.nii.gz"),
        CasePair("c", images / "c.mha", segs / "c.mha"),
    ]
    assert [case for case, _ in problems] == ["d", "e"]
    assert "no segmentation" in problems[0][1] and "d_0000.nii.gz" in problems[0][1]
    assert "no image" in problems[1][1] and "e.nrrd" in problems[1][1]


def test_pair_cases_ambiguous_and_same_folder(tmp_path: Path) -> None:
    images, segs = tmp_path / "images", tmp_path / "segs"
    write(images / "a_0000.nii.gz", make_image())
    write(images / "a.nii.gz", make_image())
    write(segs / "a.nii.gz", make_seg())
    pairs, problems = pair_cases(images, segs)
    assert pairs == [] and problems[0][0] == "a" and "several images" in problems[0][1]

    both = tmp_path / "both"
    write(both / "x_0000.mha", make_image())
    write(both / "x.mha", make_seg())
    pairs, problems = pair_cases(both, both)
    assert pairs == [CasePair("x", both / "x_0000.mha", both / "x.mha")] and problems == []


def test_pair_cases_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(QCInputError, match="not a directory"):
        pair_cases(tmp_path / "nope", tmp_path)


def test_label_map_from_dataset_json(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "LV": 3, "RV": 1, "MYO": 2}}))
    assert list(label_map_from_dataset_json(path).items()) == [("RV", 1), ("MYO", 2), ("LV", 3)]
    path.write_text(json.dumps({"labels": {"0": "background", "1": "liver"}}))
    assert label_map_from_dataset_json(path) == {"liver": 1}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"labels": {"background": 0, "whole": [1, 2], "core": 2}}', "region-based"),
        ('{"name": "x"}', 'no "labels"'),
        ('{"labels": {"background": 0, "a": 1, "b": 1}}', "share values"),
        ("{not json", "not valid JSON"),
    ],
)
def test_label_map_errors(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(content)
    with pytest.raises(QCInputError, match=match):
        label_map_from_dataset_json(path)


def test_dataset_file_ending_and_case_ids(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"file_ending": ".nrrd"}))
    (tmp_path / "labelsTr").mkdir()
    for name in ("case_2.nrrd", "case_1.nrrd", "case_3.nii.gz"):
        (tmp_path / "labelsTr" / name).write_bytes(b"")
    assert dataset_file_ending(tmp_path) == ".nrrd"
    assert labelled_case_ids(tmp_path) == ["case_1", "case_2"]


@pytest.mark.parametrize(
    ("content", "match"),
    [('{"name": "x"}', 'no "file_ending"'), ("[1]", "not a JSON object"), (None, "cannot be read")],
)
def test_dataset_file_ending_errors(tmp_path: Path, content: str | None, match: str) -> None:
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(QCInputError, match=match) as caught:
        dataset_file_ending(tmp_path)
    assert "dataset.json" in str(caught.value)
