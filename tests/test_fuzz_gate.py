"""Fuzz test of the gate: a malformed report or a damaged report folder is a fail or an error,
never a pass.

Reports are drawn close to the real format with any key missing or replaced by a random JSON
value, and with NaN, infinities, strings, booleans and out-of-range numbers as DSC values.
Folders are drawn with a missing report, a dangling link, random bytes, a report under
another case's name, a report of another run or of a case the manifest does not list, and
without a manifest. The gate must answer exit 1 or 2 (``GateUsageError``), and exit 0 only
when :func:`well_formed_pass` (an oracle written apart from the gate) says every thresholded
class has finite values at or above its thresholds and nothing else fails the case.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from monai_qc.gate import GateUsageError, evaluate_report, run_gate
from monai_qc.run_manifest import CaseIdentity, RunManifest, write_run_manifest

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
CLASSES = ("LV", "RV")
MISSING = object()  # a key left out of the report

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
#: DSC values: numbers, and the nulls JSON may hold (null, NaN, inf); malformed values are
#: put in by the damage step of :func:`reports`.
dsc_values = st.one_of(
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.sampled_from([math.nan, math.inf, -math.inf, None, 0, 1]),
)
junk_values = st.sampled_from([True, False, "0.9", 2, -1, [0.9], {"LV": 0.9}])
threshold_values = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0, 1, None, math.nan]))
threshold_fields = threshold_values | st.fixed_dictionaries(
    {}, optional=dict.fromkeys(CLASSES, threshold_values)
)
findings = st.lists(
    st.fixed_dictionaries(
        {
            "check": st.just("class_gap"),
            "class": st.just("LV"),
            "slices": st.just([1]),
            "message": st.text(max_size=8),
        }
    ),
    max_size=1,
)


@st.composite
def reports(draw: st.DrawFn, case: str) -> dict[str, Any]:
    """A report shaped like a real one; a few keys (usually none) missing or random."""
    labels = draw(st.sampled_from([{"LV": 3, "RV": 1}] * 3 + [{"LV": 3}]))
    names = [*labels, *draw(st.sampled_from([[], [], ["MYO"]]))]
    per_class = st.fixed_dictionaries({n: dsc_values for n in names})
    n_slices = draw(st.integers(1, 4))
    verdict = draw(st.sampled_from(["pass"] * 4 + ["fail"] * 3 + ["error"]))
    listed = verdict != "pass" or draw(st.booleans())  # a pass usually lists no reason
    report = {
        "case": case,
        "verdict": verdict,
        "error": "cannot be read",
        "labels": labels,
        "slices": [{"index": i, "dsc": draw(per_class), "flagged": False} for i in range(n_slices)],
        "volume": {"dsc": draw(per_class)},
        "thresholds": draw(
            st.fixed_dictionaries(
                {}, optional={"min_dsc": threshold_fields, "min_slice_dsc": threshold_fields}
            )
        ),
        "failed_classes": draw(st.lists(st.sampled_from(names), max_size=2)) if listed else [],
        "flagged_slices": draw(st.lists(st.integers(0, 4), max_size=2, unique=True))
        if listed
        else [],
        "findings": draw(st.one_of(st.just([]), st.just([]), findings)),
        "warnings": draw(st.lists(st.text(max_size=5), max_size=1)),
    }
    targets = [*report, "volume.dsc", "volume.dsc.LV", "slices.0.dsc", "slices.0.dsc.LV"]
    targets += ["slices.0.index", "thresholds.min_dsc"]
    n_damaged = draw(st.sampled_from([0, 0, 1, 2]))
    for target in draw(
        st.lists(st.sampled_from(targets), min_size=n_damaged, max_size=n_damaged, unique=True)
    ):
        *parents, key = target.split(".")
        holder: Any = report
        for parent in parents:
            holder = _child(holder, parent)
        if isinstance(holder, dict):  # not when a parent was replaced already
            holder[key] = draw(st.one_of(junk_values, json_values, st.just(MISSING)))
    return _drop_missing(report)


def _child(holder: Any, step: str) -> Any:
    """``holder[step]`` (a list index when ``holder`` is a list), None when there is none."""
    try:
        if isinstance(holder, list):
            return holder[int(step)]
        return holder.get(step) if isinstance(holder, dict) else None
    except (IndexError, ValueError):
        return None


def _drop_missing(value: Any) -> Any:
    """``value`` with every key whose value is :data:`MISSING` left out, at any depth."""
    if isinstance(value, dict):
        return {k: _drop_missing(v) for k, v in value.items() if v is not MISSING}
    if isinstance(value, list):
        return [_drop_missing(v) for v in value]
    return value


gate_thresholds = st.dictionaries(
    st.sampled_from([*CLASSES, "*", *CLASSES, "*", "MYO"]), st.floats(0.0, 1.0), max_size=2
)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _limit(explicit: Mapping[str, float], own: Any, name: str) -> float | None:
    if name in explicit:
        return explicit[name]
    if "*" in explicit:
        return explicit["*"]
    value = own.get(name) if isinstance(own, dict) else own
    return float(value) if _finite(value) else None


def well_formed_pass(
    report: Any, min_dsc: Mapping[str, float], min_slice: Mapping[str, float]
) -> bool:
    """The oracle: may the gate pass this report? (Written apart from the gate's code.)"""
    if not isinstance(report, dict) or report.get("verdict") not in ("pass", "fail"):
        return False
    labels, slices = report.get("labels"), report.get("slices")
    volume = report.get("volume")
    volume_dsc = volume.get("dsc") if isinstance(volume, dict) else None
    if not (isinstance(labels, dict) and labels and isinstance(slices, list) and slices):
        return False
    if not isinstance(volume_dsc, dict) or report.get("findings"):
        return False
    if not all(isinstance(s, dict) and isinstance(s.get("dsc"), dict) for s in slices):
        return False
    own = report.get("thresholds") if isinstance(report.get("thresholds"), dict) else {}
    volume_limits, slice_limits = {}, {}
    for name in labels:
        limit = _limit(min_dsc, own.get("min_dsc"), name)
        if limit is not None:
            volume_limits[name] = limit
            if not (_finite(volume_dsc.get(name)) and volume_dsc[name] >= limit):
                return False
        limit = _limit(min_slice, own.get("min_slice_dsc"), name)
        if limit is not None:
            slice_limits[name] = limit
            for value in (s["dsc"].get(name) for s in slices):
                skipped = value is None or (isinstance(value, float) and not math.isfinite(value))
                if not skipped and not (_finite(value) and value >= limit):
                    return False
    failed, flagged = report.get("failed_classes") or [], report.get("flagged_slices") or []
    if any(name not in volume_limits for name in failed):
        return False
    for index in flagged:
        rated = [
            name
            for s in slices
            if s.get("index") == index
            for name in labels
            if _finite(s["dsc"].get(name))
        ]
        if not rated or any(name not in slice_limits for name in rated):
            return False
    return report["verdict"] == "pass" or bool(failed or flagged)


@FUZZ
@given(report=reports("c"), min_dsc=gate_thresholds, min_slice=gate_thresholds)
def test_evaluate_report_never_passes_a_bad_report(
    report: dict[str, Any], min_dsc: dict[str, float], min_slice: dict[str, float]
) -> None:
    try:
        outcome = evaluate_report(report, min_dsc, min_slice)
    except ValueError:
        event("refused")
        return  # malformed report or unknown class: exit 2
    event("passed" if outcome.passed else "failed")
    if outcome.passed:
        assert well_formed_pass(report, min_dsc, min_slice), (report, min_dsc, min_slice)


FOLDER_STATES = (
    "ok",
    "no manifest",
    "no manifest, allowed",
    "missing report",
    "dangling link",
    "random bytes",
    "under another name",
    "other run",
    "extra case",
)


@FUZZ
@given(
    report=reports("c"),
    state=st.sampled_from(FOLDER_STATES),
    min_dsc=gate_thresholds,
    min_slice=gate_thresholds,
    junk=st.binary(max_size=20),
)
def test_gate_never_passes_a_damaged_folder(
    report: dict[str, Any],
    state: str,
    min_dsc: dict[str, float],
    min_slice: dict[str, float],
    junk: bytes,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = {"c": CaseIdentity("c_0000.nii.gz", "1" * 64, "c.nii.gz", "2" * 64)}
        manifest = RunManifest.create("check", {"sha256": "0" * 64}, {}, cases)
        if not state.startswith("no manifest"):
            write_run_manifest(manifest, folder)
        report = {**report, "run_id": "other" if state == "other run" else manifest.run_id}
        path = folder / ("d.json" if state in ("under another name", "extra case") else "c.json")
        if state == "extra case":
            report["case"] = "d"
        if state == "dangling link":
            path.symlink_to(folder / "gone" / "c.json")
        elif state == "random bytes":
            path.write_bytes(junk)
        elif state != "missing report":
            path.write_text(json.dumps(report), encoding="utf-8")  # NaN and inf as written
        try:
            result = run_gate(
                folder, min_dsc, min_slice, allow_no_manifest=state == "no manifest, allowed"
            )
        except GateUsageError:
            event(f"{state}: exit 2")
            return
    event(f"{state}: exit {result.code}")
    assert result.code in (0, 1)
    assert result.code == int(not all(o.passed for o in result.outcomes))
    if result.code == 0:
        assert state in ("ok", "no manifest, allowed"), state
        assert well_formed_pass(report, min_dsc, min_slice), (report, min_dsc, min_slice)
