"""The HTML page of a QC run: summary table, then per case verdict, figures, DSCs, volumes.

Everything taken from a report is escaped; figures are linked relatively from ``figures/``
beside the page and only where the files exist. No external assets are used.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

__all__ = ["FIGURES_DIR", "figure_paths", "render_html"]

#: Folder of the figures, beside the HTML page.
FIGURES_DIR = "figures"
_VERDICTS = ("pass", "fail", "error")
_e = html.escape
_FLAG = ' class="flagged"'

_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.good{background:#c8e6c9}.warn{background:#ffe0b2}.bad{background:#ffcdd2}
th.flagged{background:#ffcdd2;color:#8b0000;border-bottom:3px solid #8b0000}.error{color:#b71c1c}
.pass{color:#1b5e20;font-weight:bold}.fail,.verdict-error{color:#b71c1c;font-weight:bold}
.scroll{overflow-x:auto}figure{margin:.5em 0 1em}figure img{max-width:100%;height:auto}
figcaption,.note{color:#555;font-size:.9em}section.case{border-top:2px solid #ddd;margin-top:1.5em}
.legend span{padding:0 .4em;margin-right:.5em}"""


def figure_paths(case: str, out_dir: str | Path) -> dict[str, Path]:
    """Where the figures of ``case`` live: ``{"slices": ..., "flagged": ...}``.

    The file stem is the case name, with characters other than letters, digits, ``.``,
    ``_`` and ``-`` replaced (plus a short hash of the name then, so names stay distinct).
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", case).lstrip(".") or "case"
    if stem != case:
        stem += "-" + hashlib.sha1(case.encode("utf-8")).hexdigest()[:8]
    folder = Path(out_dir) / FIGURES_DIR
    return {kind: folder / f"{stem}_{kind}.png" for kind in ("slices", "flagged")}


def _number(value: Any) -> float | None:
    """``value`` as a finite float (numpy scalars included), else None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _names(report: Mapping[str, Any]) -> list[str]:
    """Foreground class names sorted by label value."""
    labels = report.get("labels") or {}
    return [str(n) for n, _ in sorted(labels.items(), key=lambda kv: (_number(kv[1]) or 0, kv[0]))]


def _cell(value: float | None, good: float, poor: float, digits: int = 3) -> str:
    if value is None:
        return "<td>&ndash;</td>"
    level = "good" if value >= good else "warn" if value >= poor else "bad"
    return f'<td class="{level}">{value:.{digits}f}</td>'


def _plain(value: Any, digits: int = 1) -> str:
    number = _number(value)
    return "<td>&ndash;</td>" if number is None else f"<td>{number:.{digits}f}</td>"


def _join(values: Sequence[Any]) -> str:
    return ", ".join(_e(str(v)) for v in values)


def _why(report: Mapping[str, Any]) -> str:
    """One sentence saying why a case passed or failed."""
    thresholds = report.get("thresholds") or {}
    volume = (report.get("volume") or {}).get("dsc") or {}
    reasons = []
    for name in report.get("failed_classes") or []:
        limit = _number((thresholds.get("min_dsc") or {}).get(name))
        value = _number(volume.get(name))
        below = f" (below {limit:.2f})" if limit is not None else ""
        shown = "" if value is None else f" {value:.2f}"
        reasons.append(f"{_e(str(name))} predicted 3D DSC{shown}{below}")
    flagged = [
        s.get("index", i) for i, s in enumerate(report.get("slices") or []) if s.get("flagged")
    ]
    if flagged:
        word = "slice" if len(flagged) == 1 else "slices"
        reasons.append(f"{word} {_join(flagged)} flagged (predicted slice DSC below threshold)")
    if reasons:
        return "Needs review: " + "; ".join(reasons) + "."
    if report.get("verdict") == "pass":
        return "Passes: every class and every slice is above its threshold."
    return ""


def _figure(path: Path, alt: str, caption: str) -> str:
    if not path.is_file():
        return ""
    rel = quote(f"{FIGURES_DIR}/{path.name}")
    return (
        f'<figure><img src="{_e(rel)}" alt="{_e(alt)}" loading="lazy">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _slice_table(report: Mapping[str, Any], names: list[str], good: float, poor: float) -> str:
    """Classes in rows, slices in columns (flagged slices in red headers)."""
    slices = report.get("slices") or []
    head = "".join(
        f"<th{_FLAG if s.get('flagged') else ''}>{_e(str(s.get('index', i)))}</th>"
        for i, s in enumerate(slices)
    )
    rows = [f"<tr><th>slice</th>{head}</tr>"]
    for name in names:
        cells = "".join(
            _cell(_number((s.get("dsc") or {}).get(name)), good, poor, 2) for s in slices
        )
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    return '<div class="scroll"><table>' + "".join(rows) + "</table></div>"


def _volume_table(report: Mapping[str, Any], names: list[str], good: float, poor: float) -> str:
    """Predicted 3D DSC, segmented and (if any) corrected volumes, myocardial mass."""
    volume = _mapping(report.get("volume"))
    dsc = _mapping(volume.get("dsc"))
    corr = report.get("correction") if isinstance(report.get("correction"), Mapping) else None
    segmented = _mapping(volume.get("segmented_ml") or (corr or {}).get("volumes_ml"))
    corrected = _mapping((corr or {}).get("corrected_ml"))
    head = "<tr><th>class</th><th>predicted 3D DSC</th><th>segmented volume (mL)</th>"
    head += "<th>corrected volume (mL)</th></tr>" if corr else "</tr>"
    rows = [head]
    for name in names:
        row = f"<tr><td>{_e(name)}</td>{_cell(_number(dsc.get(name)), good, poor)}"
        row += _plain(segmented.get(name)) + (_plain(corrected.get(name)) if corr else "")
        rows.append(row + "</tr>")
    if corr and _number(corr.get("mass_g")) is not None:
        rows.append(
            "<tr><td>myocardial mass (g)</td><td></td>"
            + _plain(corr.get("mass_g"))
            + _plain(corr.get("corrected_mass_g"))
            + "</tr>"
        )
    out = "<table>" + "".join(rows) + "</table>"
    if corr:
        wrong = corr.get("wrong_slices") or []
        limit = _number(corr.get("threshold"))
        rule = f"predicted DSC below {limit:.2f} for {_join(corr.get('classes') or [])}"
        note = (
            f"Corrected: slice(s) {_join(wrong)} had {rule}; their areas were replaced by the "
            "mean of the nearest good slices above and below."
            if wrong
            else f"No slice had {rule}: the corrected volumes equal the segmented ones."
        )
        out += f'<p class="note">{note}</p>'
    return out


def _case_section(
    i: int, report: Mapping[str, Any], html_dir: Path, good: float, poor: float
) -> str:
    case = str(report.get("case", ""))
    verdict = str(report.get("verdict", ""))
    css = "verdict-error" if verdict == "error" else _e(verdict)
    out = [
        f'<section class="case" id="case-{i}"><h3>{_e(case)} &mdash; '
        f'<span class="{css}">{_e(verdict)}</span></h3>'
    ]
    if verdict == "error":
        return out[0] + f'<p class="error">{_e(str(report.get("error", "")))}</p></section>'
    names = _names(report)
    figures = figure_paths(case, html_dir)
    out.append(f"<p>{_why(report)}</p>")
    out.append(
        _figure(
            figures["slices"],
            f"slices of {case}",
            "Every slice with the segmentation outlined; the frame shows the lowest predicted "
            "DSC of the slice (green good, amber doubtful, red poor).",
        )
    )
    out.append("<h4>Predicted DSC per slice</h4>" + _slice_table(report, names, good, poor))
    out.append("<h4>Volumes</h4>" + _volume_table(report, names, good, poor))
    flagged = _figure(
        figures["flagged"],
        f"flagged slices of {case}",
        "Flagged slices: the image alone (left) and with the segmentation outlined (right).",
    )
    if flagged:
        out.append("<h4>Flagged slices</h4>" + flagged)
    return "\n".join(out) + "</section>"


def render_html(
    reports: Sequence[Mapping[str, Any]],
    html_dir: str | Path,
    title: str = "monai-qc report",
    good: float = 0.8,
    poor: float = 0.6,
) -> str:
    """The HTML page of ``reports``; figures are looked up in ``<html_dir>/figures``."""
    html_dir = Path(html_dir)
    classes = list(dict.fromkeys(n for r in reports for n in _names(r)))
    counts = {v: sum(r.get("verdict") == v for r in reports) for v in _VERDICTS}
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(reports)} cases: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "</p>",
        '<p class="note legend">The QC network predicts, without ground truth, the Dice score '
        "(DSC, 0&ndash;1; 1 = the segmentation would match an expert's) of every class on "
        "every slice and of the whole volume. "
        f'<span class="good">&ge; {good:.2f} good</span>'
        f'<span class="warn">{poor:.2f}&ndash;{good:.2f} doubtful</span>'
        f'<span class="bad">&lt; {poor:.2f} poor</span>'
        "A slice is <em>flagged</em> when a class's predicted DSC is below its threshold.</p>",
        "<h2>Summary (predicted 3D DSC)</h2><table><tr><th>case</th><th>verdict</th>"
        + "".join(f"<th>{_e(c)}</th>" for c in classes)
        + "<th>flagged slices</th></tr>",
    ]
    for i, r in enumerate(reports):
        verdict = str(r.get("verdict", ""))
        volume = (r.get("volume") or {}).get("dsc") or {}
        cells = "".join(_cell(_number(volume.get(c)), good, poor) for c in classes)
        n_flagged = sum(bool(s.get("flagged")) for s in r.get("slices") or [])
        body.append(
            f'<tr><td><a href="#case-{i}">{_e(str(r.get("case", "")))}</a></td>'
            f'<td class="{"verdict-error" if verdict == "error" else _e(verdict)}">{_e(verdict)}'
            f"</td>{cells}<td>{n_flagged}</td></tr>"
        )
    body += ["</table>", "<h2>Cases</h2>"]
    body += [_case_section(i, r, html_dir, good, poor) for i, r in enumerate(reports)]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
