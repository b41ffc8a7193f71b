"""A checked, typed view of case reports, as the CI gate reads them.

:func:`parse_report` turns a report dict (``<case>.json``) into a :class:`ReportView` or
raises :class:`ReportFormatError` saying which key is malformed. Numbers that are null, NaN or
infinite become None (no value); anything else that is not a number is malformed. Only the
keys the gate decides on are checked; others are left alone. :func:`read_report_folder` reads
every report of a folder and names the file of any it cannot use (a dangling link, bad JSON,
a malformed report, a ``case`` that is not the file's).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_qc.check_cases import report_file_name
from monai_qc.errors import QCInputError
from monai_qc.report_levels import disagreement_reaches
from monai_qc.run_manifest import RUN_MANIFEST_NAME

__all__ = [
    "VERDICTS",
    "ReportFormatError",
    "ReportView",
    "SliceView",
    "large_disagreement",
    "parse_report",
    "read_report_file",
    "read_report_folder",
]

#: The verdicts a report may carry.
VERDICTS = ("pass", "fail", "error")


class ReportFormatError(ValueError):
    """A report the gate cannot decide on: a key is missing or holds the wrong type."""


@dataclass(frozen=True)
class SliceView:
    """One rated slice: its index, the predicted DSC, MVSF and the area of each class.

    None where the report holds no value (MVSF and area are optional in a report).
    """

    index: int
    dsc: dict[str, float | None]
    mvsf: dict[str, float | None] = field(default_factory=dict)
    area: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportView:
    """What the gate needs of a case report.

    ``min_dsc`` / ``min_slice_dsc`` are the report's own per-class thresholds (the bundle's
    or the run's); ``failed_classes`` and ``flagged_slices`` are the threshold reasons the
    report lists for a ``"fail"``; ``findings`` are the messages of problems found without
    thresholds; ``warnings`` do not change a verdict.
    """

    case: str
    verdict: str
    error: str = ""
    labels: tuple[str, ...] = ()
    volume_dsc: dict[str, float | None] = field(default_factory=dict)
    slices: tuple[SliceView, ...] = ()
    min_dsc: dict[str, float] = field(default_factory=dict)
    min_slice_dsc: dict[str, float] = field(default_factory=dict)
    min_slice_error: float = 0.0
    failed_classes: tuple[str, ...] = ()
    flagged_slices: tuple[int, ...] = ()
    findings: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    run_id: str | None = None


def _number(raw: Any, what: str) -> float | None:
    """A report number: None for null/NaN/inf; ReportFormatError when not a number."""
    if raw is None:
        return None
    if isinstance(raw, np.generic):
        raw = raw.item()
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ReportFormatError(f"{what} is {raw!r}, not a number")
    return float(raw) if math.isfinite(raw) else None


def _mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ReportFormatError(f"{what} is {type(raw).__name__}, not an object")
    return raw


def _list(raw: Any, what: str) -> list[Any]:
    """A list; an absent (None) list is empty."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ReportFormatError(f"{what} is {type(raw).__name__}, not a list")
    return raw


def _class_values(raw: Any, labels: tuple[str, ...], what: str) -> dict[str, float | None]:
    """Values of the report's classes (a class without a key has None)."""
    values = _mapping(raw, what)
    return {name: _number(values.get(name), f"{what}.{name}") for name in labels}


def _thresholds(raw: Any, labels: tuple[str, ...], what: str) -> dict[str, float]:
    """Per-class thresholds from a number (every class), a dict, or null (none)."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        items = [(str(k), _number(v, f"{what}.{k}")) for k, v in raw.items()]
    else:
        value = _number(raw, what)
        items = [(name, value) for name in labels]
    result = {name: value for name, value in items if value is not None}
    bad = [f"{name}={value}" for name, value in result.items() if not 0.0 <= value <= 1.0]
    if bad:
        raise ReportFormatError(f"{what} outside [0, 1]: {', '.join(bad)}")
    return result


def _fraction(raw: Any, what: str) -> float:
    """A fraction in [0, 1]; null or missing is 0."""
    value = _number(raw, what)
    if value is not None and not 0.0 <= value <= 1.0:
        raise ReportFormatError(f"{what} is {value}, outside [0, 1]")
    return value or 0.0


def _finding_message(entry: Any) -> str:
    """The message of a finding; a finding of another shape is shown as it is."""
    if isinstance(entry, Mapping) and isinstance(entry.get("message"), str):
        check = entry.get("check")
        return f"{check}: {entry['message']}" if isinstance(check, str) else entry["message"]
    if isinstance(entry, str):
        return entry
    return f"finding {entry!r}"


def _slice(raw: Any, labels: tuple[str, ...], position: int) -> SliceView:
    what = f"slices[{position}]"
    entry = _mapping(raw, what)
    index = entry.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ReportFormatError(f"{what}.index is {index!r}, not an integer")
    optional = {
        key: _class_values(entry[key], labels, f"{what}.{key}") if entry.get(key) else {}
        for key in ("mvsf", "area")
    }
    return SliceView(index, _class_values(entry.get("dsc"), labels, f"{what}.dsc"), **optional)


def _int_list(raw: Any, what: str) -> tuple[int, ...]:
    items = _list(raw, what)
    if any(isinstance(i, bool) or not isinstance(i, int) for i in items):
        raise ReportFormatError(f"{what} holds a value that is not a slice index: {items!r}")
    return tuple(items)


def _str_list(raw: Any, what: str) -> tuple[str, ...]:
    items = _list(raw, what)
    if not all(isinstance(i, str) for i in items):
        raise ReportFormatError(f"{what} holds a value that is not a string: {items!r}")
    return tuple(items)


def parse_report(report: Any) -> ReportView:
    """Check a report dict and return its :class:`ReportView`.

    Required: ``case`` (a non-empty string) and ``verdict`` (one of :data:`VERDICTS`); for a
    verdict other than ``"error"`` also ``labels`` (an object naming at least one class),
    ``volume.dsc`` (an object) and ``slices`` (a non-empty list of objects with an integer
    ``index`` and a ``dsc`` object, indices unique). Optional: ``thresholds``,
    ``failed_classes``, ``flagged_slices``, ``findings``, ``warnings`` (lists; null counts as
    empty) and ``run_id`` (a string).

    Raises:
        ReportFormatError: a required key is missing or a key holds the wrong type.
    """
    report = _mapping(report, "report")
    case, verdict = report.get("case"), report.get("verdict")
    if not isinstance(case, str) or not case:
        raise ReportFormatError(f"'case' is {case!r}, not a case name")
    if verdict not in VERDICTS:
        raise ReportFormatError(f"'verdict' is {verdict!r}, not one of {', '.join(VERDICTS)}")
    run_id = report.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise ReportFormatError(f"'run_id' is {run_id!r}, not a string")
    common = {
        "case": case,
        "verdict": verdict,
        "findings": tuple(_finding_message(f) for f in _list(report.get("findings"), "findings")),
        "warnings": tuple(str(w) for w in _list(report.get("warnings"), "warnings")),
        "run_id": run_id,
    }
    if verdict == "error":
        return ReportView(error=str(report.get("error") or "no message"), **common)
    labels = tuple(str(name) for name in _mapping(report.get("labels"), "labels"))
    if not labels:
        raise ReportFormatError("'labels' names no class")
    volume = _mapping(report.get("volume"), "volume")
    raw_slices = report.get("slices")
    if not isinstance(raw_slices, list) or not raw_slices:
        raise ReportFormatError(f"'slices' is {raw_slices!r:.60}, not a non-empty list")
    slices = tuple(_slice(s, labels, i) for i, s in enumerate(raw_slices))
    if len({s.index for s in slices}) != len(slices):
        raise ReportFormatError("'slices' lists a slice index twice")
    thresholds = report.get("thresholds")
    thresholds = {} if thresholds is None else _mapping(thresholds, "thresholds")
    return ReportView(
        labels=labels,
        volume_dsc=_class_values(volume.get("dsc"), labels, "volume.dsc"),
        slices=slices,
        min_dsc=_thresholds(thresholds.get("min_dsc"), labels, "thresholds.min_dsc"),
        min_slice_dsc=_thresholds(
            thresholds.get("min_slice_dsc"), labels, "thresholds.min_slice_dsc"
        ),
        min_slice_error=_fraction(thresholds.get("min_slice_error"), "thresholds.min_slice_error"),
        failed_classes=_str_list(report.get("failed_classes"), "failed_classes"),
        flagged_slices=_int_list(report.get("flagged_slices"), "flagged_slices"),
        **common,
    )


def read_report_file(path: Path, must_be_report: bool) -> ReportView | None:
    """The report in ``path``; None for JSON that is no case report (neither case nor verdict).

    Raises:
        QCInputError: the file cannot be read, is not JSON, is a malformed report, or its
            case does not match its file name.
    """
    if path.is_symlink() and not path.exists():
        raise QCInputError(
            path, f"dangling symbolic link (to {os.readlink(path)}): the report is missing"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, UnicodeDecodeError) as error:
        raise QCInputError(path, f"cannot be read: {error}") from error
    except json.JSONDecodeError as error:
        raise QCInputError(path, f"is not valid JSON: {error}") from error
    if isinstance(data, dict) and not ({"case", "verdict"} & data.keys()) and not must_be_report:
        return None
    try:
        view = parse_report(data)
    except ReportFormatError as error:
        raise QCInputError(path, f"not a usable case report: {error}") from error
    if report_file_name(view.case) != path.name:
        raise QCInputError(
            path,
            f"holds the report of case {view.case!r}, whose report file is "
            f"{report_file_name(view.case)!r}",
        )
    return view


def read_report_folder(
    folder: Path, expected: Iterable[str] = ()
) -> tuple[dict[str, ReportView], list[str]]:
    """Reports in ``folder`` by case, and the names of JSON files that are no case report."""
    names = {report_file_name(case) for case in expected}
    reports: dict[str, ReportView] = {}
    ignored = []
    for path in sorted(folder.glob("*.json")):
        if path.name == RUN_MANIFEST_NAME or path.name.startswith("."):
            continue
        view = read_report_file(path, path.name in names)
        if view is None:
            ignored.append(path.name)
        else:
            reports[view.case] = view
    return reports, ignored


def large_disagreement(view: ReportView, name: str, min_slice_error: float | None) -> list[bool]:
    """Per slice: does the class's predicted disagreement reach ``min_slice_error``?

    The same rule as the predictor's flags (:attr:`monai_qc.inference.QCResult.low_slices`):
    ``min_slice_error`` (the report's own when None) of the class's segmented volume, from the
    slice's DSC, MVSF and area. A slice without MVSF or area counts as reached (no excuse).
    """
    fraction = view.min_slice_error if min_slice_error is None else min_slice_error
    rows = [[s.dsc.get(name), s.mvsf.get(name), s.area.get(name)] for s in view.slices]
    values = np.array([[np.nan if v is None else v for v in row] for row in rows], float)
    values = values.reshape(len(rows), 3)
    dsc, mvsf, area = (values[:, [j]] for j in range(3))
    return list(disagreement_reaches(dsc, mvsf, area, fraction)[:, 0])
