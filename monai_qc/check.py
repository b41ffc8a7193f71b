"""QC of a folder of existing segmentations: reports per case, summary CSV, HTML page."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from monai_qc.correction import correct_volumes
from monai_qc.errors import QCInputError
from monai_qc.inference import QCPredictor
from monai_qc.io import CasePair, load_case, pair_cases
from monai_qc.report import (
    read_case_report,
    read_reports,
    write_case_report,
    write_html_report,
    write_summary_csv,
)
from monai_qc.report_figures import write_case_figures

__all__ = ["CheckSummary", "check_folder", "check_pairs", "error_report"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckSummary:
    """Counts of a ``check`` run and where its outputs are."""

    passed: int
    failed: int
    errors: int
    skipped: int
    out_dir: Path

    @property
    def html(self) -> Path:
        return self.out_dir / "report.html"


def error_report(case: str, message: str, **extra: Any) -> dict[str, Any]:
    """The report of a case that could not be checked."""
    return {"case": case, "verdict": "error", "error": message, **extra}


def _is_current(report_file: Path, pair: CasePair) -> bool:
    """A finished, readable report newer than both inputs (so a rerun can skip the case)."""
    if not report_file.is_file():
        return False
    newest_input = max(pair.image_path.stat().st_mtime, pair.seg_path.stat().st_mtime)
    if report_file.stat().st_mtime < newest_input:
        return False
    try:
        return read_case_report(report_file)["verdict"] != "error"
    except QCInputError:
        return False


def check_pairs(
    predictor: QCPredictor,
    pairs: Sequence[CasePair],
    out_dir: Path,
    problems: Sequence[tuple[str, str]] = (),
    overwrite: bool = False,
) -> CheckSummary:
    """Check every pair; a case that fails to load is reported as an error, the rest go on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    label_values = [0, *predictor.labels.values()]
    skipped = 0
    for case_id, reason in problems:
        write_case_report(error_report(case_id, reason), out_dir)
    for pair in tqdm(pairs, desc="QC", unit="case", disable=len(pairs) < 2):
        report_file = out_dir / f"{pair.case_id}.json"
        if not overwrite and _is_current(report_file, pair):
            skipped += 1
            continue
        files = {"image": str(pair.image_path), "segmentation": str(pair.seg_path)}
        try:
            case = load_case(pair.case_id, pair.image_path, pair.seg_path, label_values)
            result = predictor.predict(case.image, case.segmentation, case.spacing, pair.case_id)
            correction = correct_volumes(result).to_dict()
            report = {**result.to_dict(), "correction": correction, **files}
            write_case_figures(report, case.image, case.segmentation, out_dir)
        except QCInputError as error:
            logger.warning("%s: %s", pair.case_id, error)
            report = error_report(pair.case_id, str(error), **files)
        write_case_report(report, out_dir)
    reports = read_reports(out_dir)
    write_summary_csv(reports, out_dir / "summary.csv")
    write_html_report(reports, out_dir / "report.html")
    verdicts = [r["verdict"] for r in reports]
    return CheckSummary(
        verdicts.count("pass"), verdicts.count("fail"), verdicts.count("error"), skipped, out_dir
    )


def check_folder(
    predictor: QCPredictor,
    images: Path,
    segmentations: Path,
    out_dir: Path,
    overwrite: bool = False,
) -> CheckSummary:
    """Pair a folder of images with a folder of segmentations and check every case."""
    pairs, problems = pair_cases(images, segmentations)
    return check_pairs(predictor, pairs, out_dir, problems, overwrite)
