"""rate_case: one case's report and figures, as check and the nnU-Net plugin make them."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_qc.case_report import rate_case
from monai_qc.inference import QCPredictor
from monai_qc.phantom import PHANTOM_SPACING, make_phantom
from monai_qc.report_html import figure_paths
from monai_qc.thresholds import Thresholds


def test_figures_are_drawn_for_the_cases_asked_and_stale_ones_removed(
    untrained_bundle: Path, tmp_path: Path
) -> None:
    image, labels = make_phantom(2, n_slices=6, size=(64, 64))
    strict = QCPredictor.from_bundle(untrained_bundle)
    strict.thresholds = Thresholds({"RV": 1.0}, {})  # no rating reaches 1: the case fails
    lenient = QCPredictor.from_bundle(untrained_bundle)
    lenient.thresholds = Thresholds()  # nothing to fail: the case passes
    strip = figure_paths("c", tmp_path)["slices"]

    failed = rate_case(strict, image, labels, PHANTOM_SPACING, "c", figures_dir=tmp_path,
                       figures="failed")  # fmt: skip
    assert failed["verdict"] == "fail" and strip.is_file()
    passed = rate_case(lenient, image, labels, PHANTOM_SPACING, "c", figures_dir=tmp_path,
                       figures="failed")  # fmt: skip
    assert passed["verdict"] == "pass" and not strip.exists()  # the failed run's is gone
    rate_case(lenient, image, labels, PHANTOM_SPACING, "c", figures_dir=tmp_path, figures="all")
    assert strip.is_file()
    rate_case(strict, image, labels, PHANTOM_SPACING, "c", figures_dir=tmp_path, figures="none")
    assert not strip.exists()
    assert passed["slices"] == failed["slices"] and "correction" in passed
    with pytest.raises(ValueError, match="figures"):
        rate_case(strict, image, labels, PHANTOM_SPACING, "c", figures_dir=tmp_path,
                  figures="some")  # fmt: skip
