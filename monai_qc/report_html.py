"""The HTML page of a QC run: summary table, then per case verdict, findings, figures, DSCs.

Everything taken from a report is escaped; figures are linked relatively from ``figures/``
beside the page and only where the files exist. No external assets are used.

Colours follow each report's own thresholds (:mod:`monai_qc.report_levels`): a value is red
below the class's threshold (a slice below ``min_slice_dsc`` is flagged, a 3D DSC below
``min_dsc`` fails the case), amber up to the amber bound, green from there; a class without a
threshold is not coloured.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from monai_qc.report_levels import (
    MARGIN,
    class_names,
    colour_limits,
    finite_number,
    level,
    report_thresholds,
    slice_levels,
)

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
.legend span{padding:0 .4em;margin-right:.5em}li.finding{color:#b71c1c}li.warning{color:#8a5a00}"""


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


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _cell(
    value: float | None, limits: tuple[float, float] | None, digits: int = 3, colour: str = ""
) -> str:
    if value is None:
        return "<td>&ndash;</td>"
    colour = colour or level(value, limits)
    css = "" if colour == "none" else f' class="{colour}"'
    return f"<td{css}>{value:.{digits}f}</td>"


def _plain(value: Any, digits: int = 1) -> str:
    number = finite_number(value)
    return "<td>&ndash;</td>" if number is None else f"<td>{number:.{digits}f}</td>"


def _join(values: Sequence[Any]) -> str:
    return ", ".join(_e(str(v)) for v in values)


def _findings(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = report.get("findings")
    return [f for f in found if isinstance(f, Mapping)] if isinstance(found, list) else []


def _warnings(report: Mapping[str, Any]) -> list[str]:
    found = report.get("warnings")
    return [str(w) for w in found] if isinstance(found, list) else []


def _why(report: Mapping[str, Any]) -> str:
    """One sentence saying why a case passed or failed."""
    case_limits, slice_limits = report_thresholds(report)
    volume = _mapping(_mapping(report.get("volume")).get("dsc"))
    reasons = []
    for name in report.get("failed_classes") or []:
        limit = case_limits.get(str(name))
        value = finite_number(volume.get(name))
        below = f" (below {limit:.2f})" if limit is not None else ""
        shown = " none" if value is None else f" {value:.2f}"
        reasons.append(f"{_e(str(name))} predicted 3D DSC{shown}{below}")
    flagged = [
        s.get("index", i) for i, s in enumerate(report.get("slices") or []) if s.get("flagged")
    ]
    if flagged:
        word = "slice" if len(flagged) == 1 else "slices"
        reasons.append(f"{word} {_join(flagged)} flagged (predicted slice DSC below threshold)")
    findings = _findings(report)
    if findings:
        reasons.append(f"{len(findings)} finding(s), see below")
    if reasons:
        return "Needs review: " + "; ".join(reasons) + "."
    if report.get("verdict") != "pass":
        return ""
    names = class_names(report)
    unchecked = [n for n in names if n not in case_limits and n not in slice_limits]
    text = (
        "Passes: every class and slice with a threshold is at or above it, and no check "
        "found a problem."
    )
    if unchecked:
        text += f" No threshold for {_join(unchecked)}: not rated against one."
    return text


def _threshold_line(report: Mapping[str, Any]) -> str:
    """The report's thresholds, one phrase per kind."""
    parts = []
    for label, values in zip(("3D DSC", "slice DSC"), report_thresholds(report), strict=True):
        shown = sorted(set(values.values()))
        if len(shown) == 1 and len(values) == len(class_names(report)):
            parts.append(f"{label} {shown[0]:.2f} for every class")
        elif values:
            parts.append(f"{label} " + ", ".join(f"{_e(n)} {v:.2f}" for n, v in values.items()))
    thresholds = _mapping(report.get("thresholds"))
    error = finite_number(thresholds.get("min_slice_error"))
    if error:
        parts.append(
            f"a slice is flagged only where the predicted disagreement reaches {error:.0%} of "
            "the class's segmented volume (min_slice_error)"
        )
    return "Thresholds of this report: " + ("; ".join(parts) or "none") + "."


def _issues(report: Mapping[str, Any]) -> str:
    """The findings (fail the case) and warnings (do not) of a report, escaped."""
    out = ""
    findings = _findings(report)
    if findings:
        items = []
        for f in findings:
            where = [_e(str(f["class"]))] if f.get("class") is not None else []
            slices = f.get("slices") if isinstance(f.get("slices"), list) else []
            if slices:
                where.append(("slice " if len(slices) == 1 else "slices ") + _join(slices))
            place = f" ({', '.join(where)})" if where else ""
            items.append(
                f'<li class="finding"><strong>{_e(str(f.get("check", "")))}</strong>{place}: '
                f"{_e(str(f.get('message', '')))}</li>"
            )
        out += (
            '<h4>Findings</h4><p class="note">Problems found without the QC network; any '
            "finding fails the case whatever the thresholds.</p><ul>" + "".join(items) + "</ul>"
        )
    warnings = _warnings(report)
    if warnings:
        items = [f'<li class="warning">{_e(w)}</li>' for w in warnings]
        out += (
            '<h4>Warnings</h4><p class="note">Worth a look; they do not change the verdict.</p>'
            "<ul>" + "".join(items) + "</ul>"
        )
    return out


def _figure(path: Path, alt: str, caption: str) -> str:
    if not path.is_file():
        return ""
    rel = quote(f"{FIGURES_DIR}/{path.name}")
    return (
        f'<figure><img src="{_e(rel)}" alt="{_e(alt)}" loading="lazy">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _slice_table(report: Mapping[str, Any], names: list[str], margin: float) -> str:
    """Classes in rows, slices in columns (flagged slices in red headers)."""
    slices = report.get("slices") or []
    levels = slice_levels(report, margin)
    head = "".join(
        f"<th{_FLAG if s.get('flagged') else ''}>{_e(str(s.get('index', i)))}</th>"
        for i, s in enumerate(slices)
    )
    rows = [f"<tr><th>slice</th>{head}</tr>"]
    for name in names:
        cells = "".join(
            _cell(finite_number(_mapping(s.get("dsc")).get(name)), None, 2, levels[name][i])
            for i, s in enumerate(slices)
        )
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    return '<div class="scroll"><table>' + "".join(rows) + "</table></div>"


def _correction_note(corr: Mapping[str, Any]) -> str:
    """What the volume correction did for each class (or, for an older report, overall)."""
    per_class = _mapping(corr.get("per_class"))
    limits = _mapping(corr.get("thresholds"))
    if not per_class:  # a report written before corrections were made per class
        wrong = corr.get("wrong_slices") or []
        return f"Corrected slice(s): {_join(wrong)}." if wrong else "No slice was corrected."
    notes, unchanged = [], []
    for name, entry in per_class.items():
        entry = _mapping(entry)
        wrong = entry.get("wrong_slices") or []
        limit = finite_number(limits.get(name))
        rule = (
            f" (predicted {_e(name)} DSC below {limit:.2f} or a gap)" if limit is not None else ""
        )
        if entry.get("corrected"):
            notes.append(
                f"{_e(name)}: slice(s) {_join(wrong)} rated wrong{rule}; its area there was "
                "replaced by the mean of the nearest slices rated good before and after."
            )
        elif wrong:
            notes.append(
                f"{_e(name)}: <strong>not corrected</strong>, slice(s) {_join(wrong)} rated "
                f"wrong{rule}, but {_e(str(entry.get('reason') or 'the correction declined'))}."
            )
        else:
            unchanged.append(name)
    if unchanged:
        notes.append(f"{_join(unchanged)}: no slice rated wrong, corrected = segmented.")
    return "<br>".join(notes)


def _volume_table(report: Mapping[str, Any], names: list[str], margin: float) -> str:
    """Predicted 3D DSC, segmented and (if any) corrected volumes, myocardial mass."""
    volume = _mapping(report.get("volume"))
    dsc = _mapping(volume.get("dsc"))
    limits = colour_limits(report, "volume", margin)
    corr = report.get("correction") if isinstance(report.get("correction"), Mapping) else None
    segmented = _mapping(volume.get("segmented_ml") or (corr or {}).get("volumes_ml"))
    corrected = _mapping((corr or {}).get("corrected_ml"))
    head = "<tr><th>class</th><th>predicted 3D DSC</th><th>segmented volume (mL)</th>"
    head += "<th>corrected volume (mL)</th></tr>" if corr else "</tr>"
    rows = [head]
    for name in names:
        row = f"<tr><td>{_e(name)}</td>{_cell(finite_number(dsc.get(name)), limits.get(name))}"
        row += _plain(segmented.get(name)) + (_plain(corrected.get(name)) if corr else "")
        rows.append(row + "</tr>")
    if corr and finite_number(corr.get("mass_g")) is not None:
        rows.append(
            "<tr><td>myocardial mass (g)</td><td></td>"
            + _plain(corr.get("mass_g"))
            + _plain(corr.get("corrected_mass_g"))
            + "</tr>"
        )
    out = "<table>" + "".join(rows) + "</table>"
    if corr:
        out += f'<p class="note">Volume correction: {_correction_note(corr)}</p>'
    return out


def _case_section(i: int, report: Mapping[str, Any], html_dir: Path, margin: float) -> str:
    case = str(report.get("case", ""))
    verdict = str(report.get("verdict", ""))
    css = "verdict-error" if verdict == "error" else _e(verdict)
    out = [
        f'<section class="case" id="case-{i}"><h3>{_e(case)} &mdash; '
        f'<span class="{css}">{_e(verdict)}</span></h3>'
    ]
    if verdict == "error":
        return (
            out[0]
            + f'<p class="error">{_e(str(report.get("error", "")))}</p>'
            + _issues(report)
            + "</section>"
        )
    names = class_names(report)
    figures = figure_paths(case, html_dir)
    out.append(f"<p>{_why(report)}</p>")
    out.append(_issues(report))
    out.append(f'<p class="note">{_threshold_line(report)}</p>')
    out.append(
        _figure(
            figures["slices"],
            f"slices of {case}",
            "Every slice with the segmentation outlined; the frame shows the worst class of the "
            "slice against this report's thresholds (red: below a slice threshold, so flagged; "
            "amber: doubtful; green: good; grey: no value or no threshold).",
        )
    )
    out.append("<h4>Predicted DSC per slice</h4>" + _slice_table(report, names, margin))
    out.append("<h4>Volumes</h4>" + _volume_table(report, names, margin))
    flagged = _figure(
        figures["flagged"],
        f"flagged slices of {case}",
        "Flagged slices: the image alone (left) and with the segmentation outlined (right).",
    )
    if flagged:
        out.append("<h4>Flagged slices</h4>" + flagged)
    return "\n".join(out) + "</section>"


_LEGEND = (
    '<p class="note legend">The QC network predicts, without ground truth, the Dice score '
    "(DSC, 0&ndash;1; 1 = the segmentation would match an expert's) of every class on every "
    "slice and of the whole volume. Colours follow each report's thresholds: "
    '<span class="bad">red</span> below the class&#x27;s threshold (a slice below its slice '
    "threshold is flagged; a 3D DSC below the case threshold fails the case), "
    '<span class="warn">amber</span> doubtful (slices: from the slice threshold up to the case '
    "threshold, or {margin:.2f} above the slice threshold when the case threshold is not "
    "higher; 3D DSC: up to {margin:.2f} above the case threshold), "
    '<span class="good">green</span> above; no colour: no threshold for that class. A slice '
    "DSC below the slice threshold is red only where the slice is flagged for the class; where "
    "the report's min_slice_error asks for a larger predicted disagreement than the slice has "
    "(a few pixels at the apex or base), it is amber and not flagged.</p>"
    '<p class="note legend">&ndash; in the slice table: the class is absent from the slice, '
    "no value is rated: it is not segmented there and either the network predicts it is absent "
    "from the truth too, or the slice lies beyond the first or last slice segmented with that "
    "class (apex or base). &ndash; as a 3D DSC: no finite value (a class segmented on no "
    "slice).</p>"
)


def render_html(
    reports: Sequence[Mapping[str, Any]],
    html_dir: str | Path,
    title: str = "monai-qc report",
    margin: float = MARGIN,
) -> str:
    """The HTML page of ``reports``; figures are looked up in ``<html_dir>/figures``.

    ``margin``: width of the amber band above a threshold (see :func:`colour_limits`).
    """
    html_dir = Path(html_dir)
    classes = list(dict.fromkeys(n for r in reports for n in class_names(r)))
    counts = {v: sum(r.get("verdict") == v for r in reports) for v in _VERDICTS}
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(reports)} cases: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "</p>",
        _LEGEND.format(margin=margin),
        "<h2>Summary (predicted 3D DSC)</h2><table><tr><th>case</th><th>verdict</th>"
        + "".join(f"<th>{_e(c)}</th>" for c in classes)
        + "<th>flagged slices</th><th>findings</th></tr>",
    ]
    for i, r in enumerate(reports):
        verdict = str(r.get("verdict", ""))
        volume = _mapping(_mapping(r.get("volume")).get("dsc"))
        limits = colour_limits(r, "volume", margin)
        cells = "".join(_cell(finite_number(volume.get(c)), limits.get(c)) for c in classes)
        n_flagged = sum(bool(s.get("flagged")) for s in r.get("slices") or [])
        body.append(
            f'<tr><td><a href="#case-{i}">{_e(str(r.get("case", "")))}</a></td>'
            f'<td class="{"verdict-error" if verdict == "error" else _e(verdict)}">{_e(verdict)}'
            f"</td>{cells}<td>{n_flagged}</td><td>{len(_findings(r))}</td></tr>"
        )
    body += ["</table>", "<h2>Cases</h2>"]
    body += [_case_section(i, r, html_dir, margin) for i, r in enumerate(reports)]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
