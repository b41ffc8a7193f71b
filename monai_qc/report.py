"""Writing QC reports (JSON per case, CSV summary, HTML page) and reading them back.

Every file is written atomically (temporary file in the same folder, ``fsync``,
``os.replace``), so a reader never sees a half-written report. Non-finite numbers are
written as JSON ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from monai_qc.errors import QCInputError
from monai_qc.report_html import figure_paths, render_html
from monai_qc.report_levels import MARGIN, finite_number, report_thresholds, slice_levels

__all__ = [
    "SUMMARY_COLUMNS",
    "csv_text",
    "atomic_write_bytes",
    "atomic_write_text",
    "figure_paths",
    "jsonable",
    "read_case_report",
    "read_reports",
    "write_case_report",
    "write_html_report",
    "write_summary_csv",
    "write_table_and_data",
]

#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = (
    "case",
    "class",
    "label",
    "volume_dsc",
    "lowest_slice_dsc",
    "n_slices",
    "n_flagged",
    "findings",
    "verdict",
    "error",
)
#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_VERDICTS = ("pass", "fail", "error")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; creates the parent folder if needed.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation).

    Returns:
        The path written.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def write_table_and_data(path: str | Path, markdown: str, data: Any) -> Path:
    """Write a results table (markdown, ``path``) and its data beside it (``.json``), atomically.

    Returns:
        The markdown path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, markdown)
    atomic_write_text(path.with_suffix(".json"), json.dumps(jsonable(data), indent=1))
    return path


def jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types: NaN/inf -> None, numpy -> Python, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _check_case_name(case: Any) -> str:
    if not isinstance(case, str) or case in ("", ".", "..") or any(c in case for c in "/\\\0"):
        raise ValueError(f"report 'case' {case!r} cannot be used as a file name")
    return case


def write_case_report(report: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``<out_dir>/<case>.json`` atomically (indent 1, NaN written as null).

    Raises:
        ValueError: the report has no usable ``case`` name.
    """
    case = _check_case_name(report.get("case"))
    text = json.dumps(jsonable(report), indent=1, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(Path(out_dir) / f"{case}.json", text + "\n")


def _validate_report(report: Any, path: Path) -> dict[str, Any]:
    if not isinstance(report, dict):
        raise QCInputError(path, "is not a monai-qc case report (expected a JSON object)")
    if "verdict" in report and report["verdict"] not in _VERDICTS:
        raise QCInputError(path, f"verdict {report['verdict']!r} is not one of {_VERDICTS}")
    missing = [k for k in ("case", "verdict") if k not in report]
    if report.get("verdict") != "error":
        missing += [k for k in ("labels", "slices", "volume") if k not in report]
    if missing:
        raise QCInputError(path, f"case report lacks the key(s) {', '.join(missing)}")
    if report["verdict"] != "error" and not (
        isinstance(report["labels"], dict)
        and isinstance(report["slices"], list)
        and isinstance(report["volume"], dict)
        and isinstance(report["volume"].get("dsc"), dict)
    ):
        raise QCInputError(path, "case report has malformed labels, slices or volume.dsc")
    return report


def read_case_report(path: str | Path) -> dict[str, Any]:
    """Read and check one ``<case>.json`` (NaN/Infinity, if any, are read as None).

    Raises:
        QCInputError: the file is unreadable, not JSON, or not a case report.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QCInputError(path, f"cannot be read: {error}") from error
    try:
        report = json.loads(text, parse_constant=lambda _: None)
    except json.JSONDecodeError as error:
        raise QCInputError(path, f"is not valid JSON: {error}") from error
    return _validate_report(report, path)


def _looks_like_report(path: Path) -> bool:
    """False for JSON files that are clearly something else (dataset.json, plans, ...)."""
    if path.name.startswith("."):
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True  # let read_case_report name the problem
    return not (isinstance(data, dict) and "case" not in data and "verdict" not in data)


def read_reports(report_dir: str | Path) -> list[dict[str, Any]]:
    """Read every case report in ``report_dir``, sorted by case.

    JSON objects with neither ``case`` nor ``verdict`` (e.g. ``dataset.json``) are skipped.

    Raises:
        QCInputError: the folder does not exist or a report is unreadable or invalid.
    """
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise QCInputError(report_dir, "is not a directory")
    paths = [p for p in sorted(report_dir.glob("*.json")) if p.is_file() and _looks_like_report(p)]
    reports = [read_case_report(p) for p in paths]
    return sorted(reports, key=lambda r: str(r["case"]))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def csv_text(value: Any) -> Any:
    """A text cell that a spreadsheet shows as text: a leading ``'`` before a formula start.

    Only strings are changed (numbers stay numbers, a negative one included).
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _class_stats(report: Mapping[str, Any], name: str) -> tuple[float | None, float | None]:
    """Volume DSC and lowest slice DSC of class ``name`` (null slice values skipped)."""
    volume = finite_number(((report.get("volume") or {}).get("dsc") or {}).get(name))
    slices = report.get("slices") or []
    slice_values = [finite_number((s.get("dsc") or {}).get(name)) for s in slices]
    present = [v for v in slice_values if v is not None]
    return volume, (min(present) if present else None)


def _classes(report: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, label value) of the report's classes, sorted by value."""
    labels = report.get("labels") or {}
    return sorted(labels.items(), key=lambda item: (finite_number(item[1]) or 0.0, str(item[0])))


def _finding_checks(report: Mapping[str, Any], name: str) -> str:
    """The checks of the report's findings about class ``name`` or no class, joined by ``;``."""
    findings = report.get("findings") if isinstance(report.get("findings"), list) else []
    checks = [
        str(f.get("check", ""))
        for f in findings
        if isinstance(f, Mapping) and f.get("class") in (None, name)
    ]
    return "; ".join(dict.fromkeys(checks))


def write_summary_csv(reports: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``summary.csv``: a row per case and class (one row for a case without classes).

    Columns are :data:`SUMMARY_COLUMNS`; absent values are empty cells. ``lowest_slice_dsc``
    is the lowest predicted slice DSC of the class, ``n_flagged`` the slices flagged for the
    class (below the report's slice threshold for it, with the report's ``min_slice_error``;
    empty without a slice threshold), ``findings`` the checks of
    the case's findings about the class or the whole case. Text cells that a spreadsheet
    would read as a formula get a leading ``'`` (:func:`csv_text`).
    """
    buffer = io.StringIO()
    # CRLF line ends (RFC 4180): a field holding "\r" or "\n" is then quoted
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(SUMMARY_COLUMNS)
    for report in reports:
        slices = report.get("slices") or []
        slice_limits = report_thresholds(report)[1]
        levels = slice_levels(report)
        for name, label in _classes(report) or [("", "")]:
            volume, lowest = _class_stats(report, name) if name else (None, None)
            flags = levels.get(str(name), []).count("bad")
            n_flagged = flags if str(name) in slice_limits else None
            text = csv_text
            writer.writerow(
                [
                    text(report.get("case", "")),
                    text(name),
                    text(label),
                    _fmt(volume),
                    _fmt(lowest),
                    len(slices),
                    "" if n_flagged is None else n_flagged,
                    text(_finding_checks(report, name)),
                    text(report.get("verdict", "")),
                    text(report.get("error") or ""),
                ]
            )
    return atomic_write_text(path, buffer.getvalue())


def write_html_report(
    reports: Iterable[Mapping[str, Any]],
    path: str | Path,
    title: str = "monai-qc report",
    margin: float = MARGIN,
    *,
    images: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Write the HTML page (inline CSS; figures linked from ``figures/`` beside it).

    Per case the page shows the verdict and why, the findings and warnings, the strip of
    slices framed by predicted DSC against the report's thresholds and the large views of
    flagged slices (where their PNG files exist, see
    :func:`monai_qc.report_figures.write_case_figures`), the predicted DSC of every slice, and
    the volumes (corrected volumes and myocardial mass when the report has a ``correction``).

    Args:
        reports: case reports.
        path: output ``.html`` file.
        title: page title.
        margin: width of the amber band above a threshold
            (:func:`monai_qc.report_levels.colour_limits`).
        images: optional case name -> (image, segmentation) arrays (S, H, W); the figures of
            these cases are drawn first.
    """
    reports = list(reports)
    path = Path(path)
    if images:
        from monai_qc.report_figures import write_case_figures

        for report in reports:
            case = report.get("case")
            if isinstance(case, str) and case in images:
                image, segmentation = images[case]
                write_case_figures(report, image, segmentation, path.parent, margin)
    return atomic_write_text(path, render_html(reports, path.parent, title, margin))
