"""Pass/fail decisions on QC reports, for continuous integration.

:func:`run_gate` decides on a report folder written by ``monai-qc check``, ``monai-qc
nnunet-qc`` or ``nnUNetv2_predict_qc``. The folder's ``run_manifest.json`` says which cases the
run was asked to check; the gate evaluates exactly those cases.

Exit statuses (:attr:`GateResult.code`, and ``monai-qc gate``'s):

- ``0``: every case of the manifest has a report written by that run (same ``run_id``), and
  every report passes.
- ``1``: some case fails: a verdict ``"error"``; a class below a threshold; a class with a
  volume threshold and no finite volume DSC; any ``findings``; a ``"fail"`` the gate cannot
  re-evaluate from values; a case of the manifest with no report; a report of another run;
  a report of a case the manifest does not list.
- ``2`` (:class:`GateUsageError`): the gate cannot decide: the folder is missing, it has no
  ``run_manifest.json`` (unless ``allow_no_manifest``), the manifest or a report is
  unreadable (bad JSON, a dangling link, a key missing or of the wrong type, a ``case`` that
  does not match the file name), no case at all, or a threshold names an unknown class.

Thresholds given to the gate override, class by class, those a report carries under
``"thresholds"``; ``*`` sets every class without its own. Null slice DSCs are skipped (the class
is absent from that slice); a null, NaN or missing *volume* DSC of a thresholded class fails.
``warnings`` in a report are shown and do not fail.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_qc.errors import QCError, QCInputError
from monai_qc.report import atomic_write_text
from monai_qc.report_view import (
    ReportView,
    large_disagreement,
    parse_report,
    read_report_folder,
)
from monai_qc.run_manifest import RUN_MANIFEST_NAME, RunManifest, read_run_manifest

__all__ = [
    "ALL_CLASSES",
    "NO_MANIFEST",
    "GateOutcome",
    "GateResult",
    "GateUsageError",
    "evaluate_report",
    "evaluate_view",
    "format_outcomes",
    "format_result",
    "parse_thresholds",
    "run_gate",
    "write_junit_xml",
]

#: Class name in a threshold that applies to every class without its own threshold.
ALL_CLASSES = "*"
#: Why the gate stops on a folder without a run manifest.
NO_MANIFEST = (
    f"no {RUN_MANIFEST_NAME}: cannot tell whether every case was checked; "
    "pass --allow-no-manifest to gate these reports anyway"
)
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
    """Whether one case passes the gate, why not, and the report's warnings."""

    case: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    """The gate's decision on a folder: exit code, outcomes by case, what it left aside."""

    code: int
    outcomes: list[GateOutcome]
    run_id: str | None = None
    ignored: list[str] = field(default_factory=list)


def _threshold(
    explicit: Mapping[str, float], default: Mapping[str, float], name: str
) -> float | None:
    """Threshold of class ``name``: explicit, then ``*``, then the report's own."""
    if name in explicit:
        return explicit[name]
    if ALL_CLASSES in explicit:
        return explicit[ALL_CLASSES]
    return default.get(name)


def _listed(indices: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    return shown + (f", ... ({len(indices)} slices)" if len(indices) > _MAX_LISTED else "")


def _unverified(
    view: ReportView, volume_limits: Mapping[str, float], slice_limits: Mapping[str, float]
) -> list[str]:
    """The reasons a report lists for failing that the gate did not re-evaluate from values."""
    reasons = []
    for name in view.failed_classes:
        if name not in volume_limits:
            reasons.append(
                f"report fails {name}, and the gate has no volume threshold for {name} "
                "to re-evaluate it"
            )
    by_index = {s.index: s for s in view.slices}
    unchecked = []
    for index in view.flagged_slices:
        sl = by_index.get(index)
        rated = [n for n, v in (sl.dsc.items() if sl else ()) if v is not None]
        if not rated or any(name not in slice_limits for name in rated):
            unchecked.append(index)
    if unchecked:
        reasons.append(
            f"report flags slice(s) {_listed(unchecked)}, which the gate could not re-evaluate "
            "(a class rated there has no slice threshold, or the slice has no rating)"
        )
    if view.verdict == "fail" and not (view.failed_classes or view.flagged_slices or view.findings):
        reasons.append("report verdict is fail and lists no failed class, flagged slice or finding")
    return reasons


def evaluate_view(
    view: ReportView,
    min_dsc: Mapping[str, float],
    min_slice_dsc: Mapping[str, float],
    min_slice_error: float | None = None,
) -> GateOutcome:
    """Decide whether one checked report passes (see :func:`evaluate_report`).

    ``min_slice_error`` overrides the report's ``thresholds.min_slice_error`` (None: keep it).
    """
    warnings = list(view.warnings)
    if view.verdict == "error":
        return GateOutcome(view.case, False, [f"error: {view.error}"], warnings)
    unknown = sorted((set(min_dsc) | set(min_slice_dsc)) - set(view.labels) - {ALL_CLASSES})
    if unknown:
        raise ValueError(
            f"threshold for unknown class(es) {', '.join(unknown)}; "
            f"classes of case {view.case}: {', '.join(view.labels)}"
        )
    reasons: list[str] = []
    volume_limits: dict[str, float] = {}
    slice_limits: dict[str, float] = {}
    for name in view.labels:
        limit = _threshold(min_dsc, view.min_dsc, name)
        if limit is not None:
            volume_limits[name] = limit
            value = view.volume_dsc.get(name)
            if value is None:
                reasons.append(f"{name}: no volume DSC (class not segmented or not rated)")
            elif value < limit:
                reasons.append(f"{name}: volume DSC {value:.3f} < {limit:.3f}")
        limit = _threshold(min_slice_dsc, view.min_slice_dsc, name)
        if limit is None:
            continue
        slice_limits[name] = limit
        large = large_disagreement(view, name, min_slice_error)
        low = [
            (v, s.index)
            for s, is_large in zip(view.slices, large, strict=True)
            if (v := s.dsc.get(name)) is not None and v < limit and is_large
        ]
        if low:
            worst = min(low)
            reasons.append(
                f"{name}: slice DSC < {limit:.3f} on slice(s) {_listed([i for _, i in low])} "
                f"(lowest {worst[0]:.3f} on slice {worst[1]})"
            )
    reasons += _unverified(view, volume_limits, slice_limits)
    reasons += [f"finding: {message}" for message in view.findings]
    return GateOutcome(view.case, not reasons, reasons, warnings)


def evaluate_report(
    report: Mapping[str, Any],
    min_dsc: Mapping[str, float],
    min_slice_dsc: Mapping[str, float],
    min_slice_error: float | None = None,
) -> GateOutcome:
    """Decide whether one case report passes.

    A case fails when its verdict is ``"error"``; when a class with a volume threshold has
    no finite volume DSC or one below it; when a slice's DSC of a class is below its slice
    threshold (null slice values are skipped: the class is absent there); on any finding; and
    when the report lists a failed class or a flagged slice the gate did not re-evaluate with
    a threshold of its own, or says ``"fail"`` without listing either. A class's threshold is
    the one given, else ``*``, else the report's ``thresholds`` (a number or a per-class dict).
    A low slice counts only where its predicted disagreement reaches ``min_slice_error`` (the
    report's ``thresholds.min_slice_error`` when None), as the predictor flags it.

    Raises:
        ValueError: the report is malformed (:class:`ReportFormatError`), or a threshold names
            a class the report does not have.
    """
    return evaluate_view(parse_report(report), min_dsc, min_slice_dsc, min_slice_error)


def run_gate(
    report_dir: str | Path,
    min_dsc: Mapping[str, float] | None = None,
    min_slice_dsc: Mapping[str, float] | None = None,
    *,
    allow_no_manifest: bool = False,
    min_slice_error: float | None = None,
) -> GateResult:
    """Evaluate the cases of the run whose reports are in ``report_dir``.

    With ``run_manifest.json`` the gate evaluates exactly the manifest's cases: a case with no
    report, a report with another ``run_id`` and a report of a case not in the manifest fail.
    Without one it stops (exit 2) unless ``allow_no_manifest``, then it evaluates the reports
    it finds. JSON files holding neither ``case`` nor ``verdict`` are left aside (listed in
    :attr:`GateResult.ignored`) unless their name is that of a manifest case's report.

    Raises:
        GateUsageError: (exit code 2) see the module docstring.
    """
    folder = Path(report_dir)
    if not folder.is_dir():
        raise GateUsageError(f"{folder}: is not a directory")
    try:
        manifest = read_run_manifest(folder)
    except QCInputError as error:
        raise GateUsageError(str(error)) from error
    if manifest is None and not allow_no_manifest:
        raise GateUsageError(f"{folder}: {NO_MANIFEST}")
    try:
        reports, ignored = read_report_folder(folder, manifest.cases if manifest else ())
    except QCInputError as error:
        raise GateUsageError(str(error)) from error
    if manifest is None and not reports:
        raise GateUsageError(f"{folder}: no case reports (*.json) found")
    if manifest is not None and not manifest.cases:
        raise GateUsageError(f"{folder / RUN_MANIFEST_NAME}: the run lists no case")
    min_dsc, min_slice_dsc = min_dsc or {}, min_slice_dsc or {}
    try:
        if manifest is None:
            outcomes = [
                evaluate_view(reports[c], min_dsc, min_slice_dsc, min_slice_error)
                for c in sorted(reports)
            ]
        else:
            outcomes = [
                _manifest_outcome(
                    case, reports.get(case), manifest, min_dsc, min_slice_dsc, min_slice_error
                )
                for case in sorted(set(manifest.cases) | set(reports))
            ]
    except ValueError as error:  # a threshold naming a class a report does not have
        raise GateUsageError(str(error)) from error
    code = 0 if all(o.passed for o in outcomes) else 1
    return GateResult(code, outcomes, manifest.run_id if manifest else None, ignored)


def _manifest_outcome(
    case: str,
    view: ReportView | None,
    manifest: RunManifest,
    min_dsc: Mapping[str, float],
    min_slice_dsc: Mapping[str, float],
    min_slice_error: float | None,
) -> GateOutcome:
    """The outcome of one case of a folder with a run manifest."""
    if view is None:
        return GateOutcome(case, False, ["no report: the case was not checked"])
    warnings = list(view.warnings)
    if case not in manifest.cases:
        reason = (
            f"report of a case that run {manifest.run_id} ({RUN_MANIFEST_NAME}) does not list: "
            "not checked by this run"
        )
        return GateOutcome(case, False, [reason], warnings)
    if view.run_id != manifest.run_id:
        reason = (
            f"report belongs to another run (run_id {view.run_id or 'missing'}, this run is "
            f"{manifest.run_id}): the case was not checked by this run"
        )
        return GateOutcome(case, False, [reason], warnings)
    return evaluate_view(view, min_dsc, min_slice_dsc, min_slice_error)


def format_outcomes(outcomes: Sequence[GateOutcome]) -> str:
    """Human-readable lines: warnings, one line per failing case with its reasons, a count."""
    lines = [f"WARN {o.case}: {w}" for o in outcomes for w in o.warnings]
    lines += [f"FAIL {o.case}: " + "; ".join(o.reasons) for o in outcomes if not o.passed]
    n_passed = sum(o.passed for o in outcomes)
    return "\n".join([*lines, f"{n_passed} of {len(outcomes)} cases passed"])


def format_result(result: GateResult) -> str:
    """:func:`format_outcomes`, the files left aside, and which run was gated."""
    lines = [format_outcomes(result.outcomes)]
    if result.ignored:
        lines.insert(0, "ignored (not case reports): " + ", ".join(result.ignored))
    if result.run_id is not None:
        lines[-1] += f" (run {result.run_id})"
    else:
        lines[-1] += f" (no {RUN_MANIFEST_NAME}: only the reports found were gated)"
    return "\n".join(lines)


def write_junit_xml(
    outcomes: Sequence[GateOutcome],
    path: str | Path,
    suite: str = "monai-qc gate",
    error: str | None = None,
) -> Path:
    """Write a JUnit XML file: one ``testcase`` per case, a ``failure`` when it fails.

    Warnings go to the case's ``system-out``. ``error`` (the gate could not decide) is written
    as one ``testcase`` named ``gate`` with an ``error``.
    """
    failures = sum(not o.passed for o in outcomes)
    attrib = {
        "name": suite,
        "tests": str(len(outcomes) + (error is not None)),
        "failures": str(failures),
        "errors": str(int(error is not None)),
    }
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
        if outcome.warnings:
            out = ET.SubElement(case_el, "system-out")
            out.text = _XML_ILLEGAL.sub("?", "\n".join(f"warning: {w}" for w in outcome.warnings))
    if error is not None:
        case_el = ET.SubElement(suite_el, "testcase", classname="monai_qc.gate", name="gate")
        text = _XML_ILLEGAL.sub("?", error)
        ET.SubElement(case_el, "error", message=text).text = text
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return atomic_write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n")
