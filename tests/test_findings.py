"""The deterministic checks on phantoms: foreground outside the rated region, class gaps."""

from __future__ import annotations

import numpy as np
import pytest

from monai_qc.findings import (
    CLASS_GAP,
    OUTSIDE_RATED_REGION,
    class_gaps,
    outside_rated_region,
    validate_contiguous_classes,
)
from monai_qc.inference import slice_areas
from monai_qc.phantom import PHANTOM_LABELS, PHANTOM_SPACING, make_phantom
from monai_qc.transforms import CropBox, foreground_square_box

NAMES = list(PHANTOM_LABELS)  # RV, MYO, LV: label values 1, 2, 3 are the class indices
VOXEL_ML = float(np.prod(PHANTOM_SPACING)) / 1000.0  # 0.0225 mL


def field_of_view_phantom(seed: int, n_slices: int = 8) -> np.ndarray:
    """Phantom labels (96 x 96 heart) in the middle of a 192 x 192 field of view."""
    _, labels = make_phantom(seed, n_slices=n_slices, size=(96, 96))
    return np.pad(labels, ((0, 0), (48, 48), (48, 48)))


def test_expert_phantom_has_no_finding() -> None:
    labels = field_of_view_phantom(1)
    box = foreground_square_box(labels)
    assert outside_rated_region(labels, box, NAMES, PHANTOM_SPACING) == []
    assert class_gaps(slice_areas(labels, 4), NAMES, NAMES) == []


def test_stray_blobs_in_corners_are_found_with_their_volume() -> None:
    labels = field_of_view_phantom(2)
    seg = labels.copy()
    seg[3:6, 2:10, 2:10] = 3  # 3 slices x 8 x 8 LV voxels in the top-left corner
    seg[5, 182:188, 182:188] = 3  # 6 x 6 LV voxels on one slice, bottom-right corner
    box = foreground_square_box(seg)  # the crop still follows the heart
    assert box == foreground_square_box(labels)
    (finding,) = outside_rated_region(seg, box, NAMES, PHANTOM_SPACING)
    assert finding.check == OUTSIDE_RATED_REGION and finding.class_name == "LV"
    assert finding.slices == (3, 4, 5)
    ml = (3 * 64 + 36) * VOXEL_ML  # 5.13 mL
    assert f"2 LV components outside the rated region, {ml:.1f} mL" in finding.message
    assert finding.to_dict() == {
        "check": "outside_rated_region",
        "class": "LV",
        "slices": [3, 4, 5],
        "message": finding.message,
    }


def test_component_reaching_out_of_the_box_counts_whole() -> None:
    seg = np.zeros((3, 40, 40), dtype=np.int64)
    seg[1, 10:20, 10:20] = 1
    seg[0:2, 18:20, 19:30] = 2  # a MYO bar from inside the box to beyond its right edge
    box = CropBox(5, 5, 25, 25)
    (finding,) = outside_rated_region(seg, box, ["A", "B"], (2.0, 1.0, 1.0))
    assert finding.class_name == "B" and finding.slices == (0, 1)
    assert "1 B component outside the rated region, 0.1 mL" in finding.message  # 44 voxels
    # nothing outside a box holding everything, also one that reaches past the image
    assert outside_rated_region(seg, CropBox(-10, -10, 50, 50), ["A", "B"]) == []


def test_mid_slice_gap_is_found_only_for_contiguous_classes() -> None:
    _, labels = make_phantom(3, n_slices=9, size=(96, 96))
    seg = labels.copy()
    seg[4][seg[4] == 3] = 0  # LV missed on the mid slice
    seg[5:7][seg[5:7] == 1] = 0  # RV missed on two slices
    areas = slice_areas(seg, 4)
    found = class_gaps(areas, NAMES, ["RV", "MYO", "LV"])
    assert [(f.check, f.class_name, f.slices) for f in found] == [
        (CLASS_GAP, "RV", (5, 6)),
        (CLASS_GAP, "LV", (4,)),
    ]
    assert found[1].message == "LV is missing on slice 4, between slices 0 and 8 that hold it"
    assert class_gaps(areas, NAMES, ["MYO"]) == []
    assert class_gaps(areas, NAMES, []) == []


def test_missing_end_slices_are_not_gaps() -> None:
    """A class that starts late or stops early (base, apex) is not a gap; nor is one slice."""
    _, labels = make_phantom(4, n_slices=8, size=(96, 96))
    seg = labels.copy()
    seg[:2][seg[:2] == 3] = 0
    seg[6:][seg[6:] == 3] = 0
    seg[seg == 1] = 0
    seg[3][labels[3] == 1] = 1  # RV on one slice only
    assert class_gaps(slice_areas(seg, 4), NAMES, NAMES) == []


def test_contiguous_classes_setting_is_validated() -> None:
    assert validate_contiguous_classes(None, PHANTOM_LABELS) == ()
    assert validate_contiguous_classes(["LV", "RV"], PHANTOM_LABELS) == ("LV", "RV")
    with pytest.raises(ValueError, match="x.json: unknown class.*LA; classes: RV, MYO, LV"):
        validate_contiguous_classes(["LV", "LA"], PHANTOM_LABELS, "x.json")
    with pytest.raises(ValueError, match="a list of class names"):
        validate_contiguous_classes("LV", PHANTOM_LABELS)
