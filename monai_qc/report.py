"""Writing QC reports (JSON per case, CSV summary, HTML page) and reading them back.

Every file is written atomically (temporary file in the same folder, ``fsync``,
``os.replace``), so a reader never sees a half-written report. Non-finite numbers are
written as JSON ``null``.
"""

from __future__ import annotations

import csv
import html
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

__all__ = [
    "SUMMARY_COLUMNS",
    "atomic_write_text",
    "jsonable",
    "read_case_report",
    "read_reports",
    "write_case_report",
    "write_html_report",
    "write_summary_csv",
]

#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = (
    "case",
    "class",
    "label",
    "volume_dsc",
    "min_slice_dsc",
    "n_slices",
    "n_flagged",
    "verdict",
    "error",
)
_VERDICTS = ("pass", "fail", "error")


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; creates the parent folder if needed.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _class_stats(report: Mapping[str, Any], name: str) -> tuple[float | None, float | None]:
    """Volume DSC and lowest slice DSC of class ``name`` (None when absent)."""
    volume = _number(((report.get("volume") or {}).get("dsc") or {}).get(name))
    slice_values = [_number((s.get("dsc") or {}).get(name)) for s in report.get("slices") or []]
    present = [v for v in slice_values if v is not None]
    return volume, (min(present) if present else None)


def _classes(report: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, label value) of the report's classes, sorted by value."""
    labels = report.get("labels") or {}
    return sorted(labels.items(), key=lambda item: (_number(item[1]) or 0.0, str(item[0])))


def write_summary_csv(reports: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``summary.csv``: a row per case and class (one row for a case without classes).

    Columns are :data:`SUMMARY_COLUMNS`; absent values are empty cells.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for report in reports:
        slices = report.get("slices") or []
        n_flagged = sum(bool(s.get("flagged")) for s in slices)
        for name, label in _classes(report) or [("", "")]:
            volume, lowest = _class_stats(report, name) if name else (None, None)
            writer.writerow(
                [
                    report.get("case", ""),
                    name,
                    label,
                    _fmt(volume),
                    _fmt(lowest),
                    len(slices),
                    n_flagged,
                    report.get("verdict", ""),
                    report.get("error") or "",
                ]
            )
    return atomic_write_text(path, buffer.getvalue())


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.good{background:#c8e6c9}.warn{background:#ffe0b2}.bad{background:#ffcdd2}
tr.flagged td{background:#ffcdd2;font-weight:bold}.error{color:#b71c1c}
.pass{color:#1b5e20}.fail,.verdict-error{color:#b71c1c;font-weight:bold}"""


def _cell(value: float | None, good: float, poor: float) -> str:
    if value is None:
        return "<td>&ndash;</td>"
    level = "good" if value >= good else "warn" if value >= poor else "bad"
    return f'<td class="{level}">{value:.3f}</td>'


def _case_section(index: int, report: Mapping[str, Any], good: float, poor: float) -> list[str]:
    """HTML of one case: its error or its per-slice table (flagged slices highlighted)."""
    e = html.escape
    out = [f'<h3 id="case-{index}">{e(str(report.get("case", "")))}</h3>']
    if report.get("verdict") == "error":
        return [*out, f'<p class="error">{e(str(report.get("error", "")))}</p>']
    names = [name for name, _ in _classes(report)]
    out.append("<details><summary>per-slice predicted DSC</summary><table>")
    out.append("<tr><th>slice</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>")
    for sl in report.get("slices") or []:
        dsc = sl.get("dsc") or {}
        row_class = ' class="flagged"' if sl.get("flagged") else ""
        cells = "".join(_cell(_number(dsc.get(n)), good, poor) for n in names)
        out.append(f"<tr{row_class}><td>{e(str(sl.get('index', '')))}</td>{cells}</tr>")
    return [*out, "</table></details>"]


def write_html_report(
    reports: Iterable[Mapping[str, Any]],
    path: str | Path,
    title: str = "monai-qc report",
    good: float = 0.8,
    poor: float = 0.6,
) -> Path:
    """Write a self-contained HTML page (inline CSS, no external assets).

    Args:
        reports: case reports.
        path: output ``.html`` file.
        title: page title.
        good: DSC at or above which a value is green.
        poor: DSC below which a value is red (amber in between).
    """
    reports = list(reports)
    e = html.escape
    classes = list(dict.fromkeys(n for r in reports for n, _ in _classes(r)))
    counts = {v: sum(r.get("verdict") == v for r in reports) for v in _VERDICTS}
    body = [
        f"<h1>{e(title)}</h1>",
        f"<p>{len(reports)} cases: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "</p>",
        "<h2>Summary (predicted volume DSC)</h2><table><tr><th>case</th><th>verdict</th>"
        + "".join(f"<th>{e(c)}</th>" for c in classes)
        + "<th>flagged slices</th></tr>",
    ]
    for i, r in enumerate(reports):
        verdict = str(r.get("verdict", ""))
        volume = (r.get("volume") or {}).get("dsc") or {}
        cells = "".join(_cell(_number(volume.get(c)), good, poor) for c in classes)
        n_flagged = sum(bool(s.get("flagged")) for s in r.get("slices") or [])
        body.append(
            f'<tr><td><a href="#case-{i}">{e(str(r.get("case", "")))}</a></td>'
            f'<td class="{"verdict-error" if verdict == "error" else e(verdict)}">{e(verdict)}'
            f"</td>{cells}<td>{n_flagged}</td></tr>"
        )
    body += ["</table>", "<h2>Cases</h2>"]
    for i, r in enumerate(reports):
        body += _case_section(i, r, good, poor)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    return atomic_write_text(path, page)
