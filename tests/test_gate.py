"""Tests of the CI gate: thresholds, per-case outcomes, exit codes and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from monai_qc.gate import (
    GateOutcome,
    GateUsageError,
    evaluate_report,
    format_outcomes,
    parse_thresholds,
    run_gate,
    write_junit_xml,
)
from monai_qc.report import write_case_report


def make_report(case: str, slice_dsc: list[float | None], volume: float | None) -> dict[str, Any]:
    """A report with classes LV and RV; ``slice_dsc`` and ``volume`` are LV's values."""
    return {
        "case": case,
        "labels": {"LV": 1, "RV": 2},
        "slices": [
            {"index": i, "dsc": {"LV": d, "RV": 0.9}, "mvsf": {"LV": 0.0}, "flagged": False}
            for i, d in enumerate(slice_dsc)
        ],
        "volume": {"dsc": {"LV": volume, "RV": 0.9}},
        "verdict": "pass",
    }


def test_parse_thresholds() -> None:
    assert parse_thresholds(["LV=0.8", " RV = 0.5 ", "*=0"]) == {"LV": 0.8, "RV": 0.5, "*": 0.0}
    assert parse_thresholds([]) == {}


@pytest.mark.parametrize("item", ["LV", "=0.5", "LV=abc", "LV=1.5", "LV=-0.1", "LV=nan"])
def test_parse_thresholds_errors(item: str) -> None:
    with pytest.raises(ValueError, match="threshold"):
        parse_thresholds([item])


def test_parse_thresholds_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_thresholds(["LV=0.5", "LV=0.6"])


def test_evaluate_report_volume_and_slices() -> None:
    report = make_report("c", [0.9, 0.4, None, 0.3], 0.7)
    assert evaluate_report(report, {}, {}).passed  # no thresholds, verdict pass
    outcome = evaluate_report(report, {"LV": 0.75}, {"LV": 0.5})
    assert outcome == GateOutcome("c", False, outcome.reasons)
    assert len(outcome.reasons) == 2
    assert "LV: volume DSC 0.700 < 0.750" in outcome.reasons[0]
    assert "slice(s) 1, 3" in outcome.reasons[1] and "lowest 0.300 on slice 3" in outcome.reasons[1]
    assert evaluate_report(report, {"*": 0.6}, {"RV": 0.85}).passed


def test_evaluate_report_null_values_skipped() -> None:
    report = make_report("c", [None, None], None)
    assert evaluate_report(report, {"LV": 0.99}, {"LV": 0.99}).passed


def test_evaluate_report_error_verdict() -> None:
    report = {"case": "e", "verdict": "error", "error": "x.nii.gz: cannot be read"}
    outcome = evaluate_report(report, {"LV": 0.5}, {})
    assert not outcome.passed and "cannot be read" in outcome.reasons[0]


def test_evaluate_report_unknown_class() -> None:
    with pytest.raises(ValueError, match="unknown class.*MYO"):
        evaluate_report(make_report("c", [0.9], 0.9), {"MYO": 0.5}, {})


def test_evaluate_report_defaults_from_report() -> None:
    report = make_report("c", [0.9, 0.55], 0.8)
    report["thresholds"] = {"min_dsc": {"LV": 0.85}, "min_slice_dsc": 0.6}
    outcome = evaluate_report(report, {}, {})
    assert not outcome.passed and len(outcome.reasons) == 2
    assert evaluate_report(report, {"LV": 0.5}, {"LV": 0.5}).passed  # explicit overrides
    report["verdict"] = "fail"
    del report["thresholds"]
    assert not evaluate_report(report, {}, {}).passed  # no thresholds: verdict decides


def test_run_gate_exit_codes(tmp_path: Path) -> None:
    write_case_report(make_report("a", [0.9, 0.85], 0.9), tmp_path)
    write_case_report(make_report("b", [0.9, 0.2], 0.6), tmp_path)
    code, outcomes = run_gate(tmp_path, {"LV": 0.5}, {})
    assert code == 0 and [o.case for o in outcomes] == ["a", "b"]
    code, outcomes = run_gate(tmp_path, {"LV": 0.7}, {"LV": 0.5})
    assert code == 1 and [o.passed for o in outcomes] == [True, False]
    text = format_outcomes(outcomes)
    assert "FAIL b:" in text and "1 of 2 cases passed" in text

    write_case_report({"case": "c", "verdict": "error", "error": "bad seg"}, tmp_path)
    code, outcomes = run_gate(tmp_path)
    assert code == 1 and outcomes[2].reasons == ["error: bad seg"]


def test_run_gate_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(GateUsageError, match="not a directory") as info:
        run_gate(tmp_path / "missing")
    assert info.value.exit_code == 2
    with pytest.raises(GateUsageError, match="no case reports"):
        run_gate(tmp_path)
    write_case_report(make_report("a", [0.9], 0.9), tmp_path)
    with pytest.raises(GateUsageError, match="unknown class"):
        run_gate(tmp_path, {"Liver": 0.5})
    (tmp_path / "b.json").write_text("{truncated")
    with pytest.raises(GateUsageError, match="b.json"):
        run_gate(tmp_path)


def test_write_junit_xml(tmp_path: Path) -> None:
    outcomes = [
        GateOutcome("a", True, []),
        GateOutcome("b<&>", False, ["LV: volume DSC 0.600 < 0.700", "error: \x01odd"]),
    ]
    path = write_junit_xml(outcomes, tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a", "b<&>"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == "LV: volume DSC 0.600 < 0.700"
    assert "error: ?odd" in failure.text
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]
