"""Pass/fail decisions on QC reports, for continuous integration.

:func:`run_gate` returns exit code 0 when every case passes and 1 when any fails; it raises
:class:`GateUsageError` (exit code 2) for bad usage, a missing or empty report folder, or an
unreadable report. Thresholds given on the command line override the defaults a report
carries under ``"thresholds"``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_qc.errors import QCError
from monai_qc.report import atomic_write_text, read_reports

__all__ = [
    "ALL_CLASSES",
    "GateOutcome",
    "GateUsageError",
    "evaluate_report",
    "format_outcomes",
    "parse_thresholds",
    "run_gate",
    "write_junit_xml",
]

#: Class name in a threshold that applies to every class without its own threshold.
ALL_CLASSES = "*"
_MAX_LISTED = 10
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class GateUsageError(QCError, ValueError):
    """Bad usage of the gate, or reports it cannot read: the command exits with code 2."""

    exit_code = 2


def parse_thresholds(items: Sequence[str]) -> dict[str, float]:
    """Parse ``CLASS=VALUE`` items (``*=VALUE`` for every class) into a dict.

    Raises:
        ValueError: an item is not ``CLASS=VALUE``, a value is not a number in [0, 1], or a
            class is given twice.
    """
    result: dict[str, float] = {}
    for item in items:
        name, sep, text = item.rpartition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"threshold {item!r} is not of the form CLASS=VALUE")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"threshold {item!r}: {text.strip()!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold {item!r}: {value} is outside [0, 1]")
        if name in result:
            raise ValueError(f"threshold for class {name!r} is given twice")
        result[name] = value
    return result


@dataclass
class GateOutcome:
    """Whether one case passes the gate, and why not."""

    case: str
    passed: bool
    reasons: list[str] = field(default_factory=list)


def _value(raw: Any, case: str, what: str) -> float | None:
    """A report number, None when null/NaN; ValueError when it is not a number."""
    if raw is None:
        return None
    if isinstance(raw, np.generic):
        raw = raw.item()
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"case {case}: {what} is {raw!r}, not a number")
    return float(raw) if math.isfinite(raw) else None


def _threshold(explicit: Mapping[str, float], default: Any, name: str) -> float | None:
    """Threshold of class ``name``: explicit, then ``*``, then the report's default."""
    if name in explicit:
        return explicit[name]
    if ALL_CLASSES in explicit:
        return explicit[ALL_CLASSES]
    if isinstance(default, Mapping):
        default = default.get(name)
    if default is None or isinstance(default, bool) or not isinstance(default, (int, float)):
        return None
    return float(default)


def _listed(indices: list[Any]) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    return shown + (f", ... ({len(indices)} slices)" if len(indices) > _MAX_LISTED else "")


def evaluate_report(
    report: Mapping[str, Any],
    min_dsc: Mapping[str, float],
    min_slice_dsc: Mapping[str, float],
) -> GateOutcome:
    """Decide whether one case report passes.

    A case fails when its verdict is ``"error"``, when a class's volume DSC is below its
    ``min_dsc``, or when any slice's DSC of a class is below its ``min_slice_dsc``. Null
    values are skipped. A class without a threshold uses the report's
    ``thresholds.min_dsc`` / ``thresholds.min_slice_dsc`` (a number or a per-class dict)
    when present. When no threshold applies at all, the report's own verdict decides.

    Raises:
        ValueError: a threshold names a class the report does not have, or the report is
            malformed.
    """
    case = str(report.get("case", "?"))
    if report.get("verdict") == "error":
        return GateOutcome(case, False, [f"error: {report.get('error') or 'no message'}"])
    labels = report.get("labels")
    if not isinstance(labels, Mapping):
        raise ValueError(f"case {case}: report has no 'labels' mapping")
    unknown = sorted((set(min_dsc) | set(min_slice_dsc)) - set(labels) - {ALL_CLASSES})
    if unknown:
        raise ValueError(
            f"threshold for unknown class(es) {', '.join(unknown)}; "
            f"classes of case {case}: {', '.join(labels)}"
        )
    defaults = report.get("thresholds")
    defaults = defaults if isinstance(defaults, Mapping) else {}
    volume = (report.get("volume") or {}).get("dsc") or {}
    slices = report.get("slices") or []
    reasons: list[str] = []
    checked = False
    for name in labels:
        limit = _threshold(min_dsc, defaults.get("min_dsc"), name)
        if limit is not None:
            checked = True
            value = _value(volume.get(name), case, f"volume DSC of {name}")
            if value is not None and value < limit:
                reasons.append(f"{name}: volume DSC {value:.3f} < {limit:.3f}")
        limit = _threshold(min_slice_dsc, defaults.get("min_slice_dsc"), name)
        if limit is None:
            continue
        checked = True
        low = []
        for sl in slices:
            value = _value((sl.get("dsc") or {}).get(name), case, f"slice DSC of {name}")
            if value is not None and value < limit:
                low.append((value, sl.get("index")))
        if low:
            worst = min(low, key=lambda item: item[0])
            reasons.append(
                f"{name}: slice DSC < {limit:.3f} on slice(s) {_listed([i for _, i in low])} "
                f"(lowest {worst[0]:.3f} on slice {worst[1]})"
            )
    if not checked and report.get("verdict") == "fail":
        reasons.append("report verdict is fail (no thresholds given)")
    return GateOutcome(case, not reasons, reasons)


def run_gate(
    report_dir: str | Path,
    min_dsc: Mapping[str, float] | None = None,
    min_slice_dsc: Mapping[str, float] | None = None,
) -> tuple[int, list[GateOutcome]]:
    """Evaluate every case report in ``report_dir``.

    Returns:
        Exit code (0: every case passes, 1: some case fails) and the outcomes, by case.

    Raises:
        GateUsageError: (exit code 2) the folder is missing or holds no reports, a report is
            unreadable or malformed, or a threshold names an unknown class.
    """
    try:
        reports = read_reports(report_dir)
    except ValueError as error:
        raise GateUsageError(str(error)) from error
    if not reports:
        raise GateUsageError(f"{report_dir}: no case reports (*.json) found")
    try:
        outcomes = [evaluate_report(r, min_dsc or {}, min_slice_dsc or {}) for r in reports]
    except ValueError as error:
        raise GateUsageError(str(error)) from error
    return (0 if all(o.passed for o in outcomes) else 1), outcomes


def format_outcomes(outcomes: Sequence[GateOutcome]) -> str:
    """Human-readable lines: one per failing case with its reasons, then a count."""
    lines = [f"FAIL {o.case}: " + "; ".join(o.reasons) for o in outcomes if not o.passed]
    n_passed = sum(o.passed for o in outcomes)
    return "\n".join([*lines, f"{n_passed} of {len(outcomes)} cases passed"])


def write_junit_xml(
    outcomes: Sequence[GateOutcome], path: str | Path, suite: str = "monai-qc gate"
) -> Path:
    """Write a JUnit XML file: one ``testcase`` per case, a ``failure`` when it fails."""
    failures = sum(not o.passed for o in outcomes)
    attrib = {"name": suite, "tests": str(len(outcomes)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", attrib)
    suite_el = ET.SubElement(root, "testsuite", attrib)
    for outcome in outcomes:
        case_el = ET.SubElement(
            suite_el,
            "testcase",
            classname="monai_qc.gate",
            name=_XML_ILLEGAL.sub("?", outcome.case),
        )
        if not outcome.passed:
            text = _XML_ILLEGAL.sub("?", "\n".join(outcome.reasons))
            failure = ET.SubElement(case_el, "failure", message=text.split("\n", 1)[0])
            failure.text = text
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return atomic_write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n")
