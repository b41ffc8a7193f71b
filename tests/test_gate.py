"""Tests of the CI gate: thresholds, per-case rules, run manifests, exit codes and JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from monai_qc.gate import (
    NO_MANIFEST,
    GateOutcome,
    GateUsageError,
    evaluate_report,
    format_outcomes,
    format_result,
    parse_thresholds,
    run_gate,
    write_junit_xml,
)
from monai_qc.report import write_case_report
from monai_qc.report_view import ReportFormatError
from monai_qc.run_manifest import CaseIdentity, RunManifest, write_run_manifest

BUNDLE = {"name": "test_qc", "version": "0", "sha256": "0" * 64}


def make_report(case: str, slice_dsc: list[float | None], volume: float | None) -> dict[str, Any]:
    """A passing report with classes LV and RV; ``slice_dsc`` and ``volume`` are LV's values."""
    return {
        "case": case,
        "labels": {"LV": 1, "RV": 2},
        "slices": [
            {"index": i, "dsc": {"LV": d, "RV": 0.9}, "mvsf": {"LV": 0.0}, "flagged": False}
            for i, d in enumerate(slice_dsc)
        ],
        "volume": {"dsc": {"LV": volume, "RV": 0.9}},
        "failed_classes": [],
        "flagged_slices": [],
        "findings": [],
        "warnings": [],
        "verdict": "pass",
    }


def write_run(
    folder: Path, reports: Mapping[str, dict[str, Any] | None], command: str = "check"
) -> RunManifest:
    """A report folder as a run writes it: the manifest of every case, then its reports.

    A case whose report is None has none (the run stopped before it).
    """
    cases = {
        c: CaseIdentity(f"{c}_0000.nii.gz", "1" * 64, f"{c}.nii.gz", "2" * 64) for c in reports
    }
    manifest = RunManifest.create(command, BUNDLE, {"min_dsc": 0.7}, cases)
    write_run_manifest(manifest, folder)
    for report in reports.values():
        if report is not None:
            write_case_report({**report, "run_id": manifest.run_id}, folder)
    return manifest


# -- thresholds ------------------------------------------------------------------------------


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


# -- one report ------------------------------------------------------------------------------


def test_evaluate_report_volume_and_slices() -> None:
    report = make_report("c", [0.9, 0.4, None, 0.3], 0.7)
    assert evaluate_report(report, {}, {}).passed  # no thresholds, verdict pass
    outcome = evaluate_report(report, {"LV": 0.75}, {"LV": 0.5})
    assert outcome == GateOutcome("c", False, outcome.reasons)
    assert len(outcome.reasons) == 2
    assert "LV: volume DSC 0.700 < 0.750" in outcome.reasons[0]
    assert "slice(s) 1, 3" in outcome.reasons[1] and "lowest 0.300 on slice 3" in outcome.reasons[1]
    assert evaluate_report(report, {"*": 0.6}, {"RV": 0.85}).passed


def test_null_slice_values_are_skipped() -> None:
    report = make_report("c", [None, 0.95, None], 0.96)
    assert evaluate_report(report, {"LV": 0.95}, {"LV": 0.99}).reasons == [
        "LV: slice DSC < 0.990 on slice(s) 1 (lowest 0.950 on slice 1)"
    ]
    assert evaluate_report(report, {"LV": 0.95}, {"LV": 0.95}).passed


@pytest.mark.parametrize("volume", [None, math.nan, math.inf, "missing", "no dsc"])
def test_class_with_volume_threshold_and_no_finite_value_fails(volume: Any) -> None:
    report = make_report("c", [0.9, 0.9], 0.9)
    if volume == "missing":
        del report["volume"]["dsc"]["LV"]
    elif volume == "no dsc":
        report["volume"]["dsc"] = {}
    else:
        report["volume"]["dsc"]["LV"] = volume
    outcome = evaluate_report(report, {"LV": 0.85}, {"*": 0.0})
    assert not outcome.passed
    assert outcome.reasons == ["LV: no volume DSC (class not segmented or not rated)"]
    # '*' and the report's own thresholds apply too; only a class with no threshold is exempt
    assert not evaluate_report(report, {"*": 0.0}, {}).passed
    report["thresholds"] = {"min_dsc": {"LV": 0.5}}
    assert not evaluate_report(report, {}, {}).passed
    report["thresholds"] = {"min_dsc": {"RV": 0.5}}
    assert evaluate_report(report, {}, {}).passed == (volume != "no dsc")


def test_error_verdict_fails() -> None:
    report = {"case": "e", "verdict": "error", "error": "x.nii.gz: cannot be read"}
    outcome = evaluate_report(report, {"LV": 0.5}, {})
    assert not outcome.passed and outcome.reasons == ["error: x.nii.gz: cannot be read"]


def test_unknown_class() -> None:
    with pytest.raises(ValueError, match="unknown class.*MYO"):
        evaluate_report(make_report("c", [0.9], 0.9), {"MYO": 0.5}, {})


def test_thresholds_default_to_the_reports() -> None:
    report = make_report("c", [0.9, 0.55], 0.8)
    report["thresholds"] = {"min_dsc": {"LV": 0.85}, "min_slice_dsc": 0.6}
    outcome = evaluate_report(report, {}, {})
    assert not outcome.passed and len(outcome.reasons) == 2
    assert evaluate_report(report, {"LV": 0.5}, {"LV": 0.5}).passed  # explicit overrides


def test_fail_verdict_passes_only_when_every_listed_reason_is_re_evaluated() -> None:
    report = make_report("c", [0.9, 0.55], 0.8)
    report.update(
        verdict="fail",
        thresholds={"min_dsc": {"LV": 0.85, "RV": 0.85}, "min_slice_dsc": 0.6},
        failed_classes=["LV"],
        flagged_slices=[1],
    )
    assert not evaluate_report(report, {}, {}).passed  # the report's own thresholds
    assert evaluate_report(report, {"LV": 0.5}, {"*": 0.5}).passed  # re-evaluated: lower
    del report["thresholds"]
    # no slice threshold for RV, which is rated on the flagged slice: not re-evaluated
    outcome = evaluate_report(report, {"LV": 0.5}, {"LV": 0.5})
    assert outcome.reasons == [
        "report flags slice(s) 1, which the gate could not re-evaluate (a class rated there "
        "has no slice threshold, or the slice has no rating)"
    ]
    outcome = evaluate_report(report, {}, {"*": 0.0})
    assert outcome.reasons == [
        "report fails LV, and the gate has no volume threshold for LV to re-evaluate it"
    ]
    report["flagged_slices"] = [7]  # a slice the report does not rate
    assert not evaluate_report(report, {"*": 0.0}, {"*": 0.0}).passed


@pytest.mark.parametrize("listed", [{}, {"failed_classes": None, "flagged_slices": None}])
def test_fail_verdict_without_listed_reasons_stays_fail(listed: dict[str, Any]) -> None:
    report = make_report("c", [0.9], 0.9)
    for key in ("failed_classes", "flagged_slices"):
        report.pop(key)
    report.update(verdict="fail", **listed)
    outcome = evaluate_report(report, {"*": 0.0}, {"*": 0.0})
    assert outcome.reasons == [
        "report verdict is fail and lists no failed class, flagged slice or finding"
    ]
    assert not evaluate_report(report, {}, {}).passed


def test_findings_fail_whatever_the_thresholds() -> None:
    report = make_report("c", [0.9], 0.9)
    report["findings"] = [
        {"check": "class_gap", "class": "LV", "slices": [4], "message": "LV is missing on slice 4"},
        "hand-written",
    ]
    outcome = evaluate_report(report, {"*": 0.0}, {"*": 0.0})
    assert outcome.reasons == [
        "finding: class_gap: LV is missing on slice 4",
        "finding: hand-written",
    ]


def test_warnings_are_kept_and_do_not_fail() -> None:
    report = make_report("c", [0.9], 0.9)
    report["warnings"] = ["origin differs between image and segmentation by 2.0 mm"]
    outcome = evaluate_report(report, {"*": 0.5}, {})
    assert outcome.passed and outcome.warnings == report["warnings"]
    assert format_outcomes([outcome]).splitlines() == [
        "WARN c: origin differs between image and segmentation by 2.0 mm",
        "1 of 1 cases passed",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verdict": "ok"}, "'verdict' is 'ok'"),
        ({"case": 3}, "'case' is 3"),
        ({"labels": {}}, "names no class"),
        ({"slices": []}, "not a non-empty list"),
        ({"volume": {"dsc": {"LV": "0.9", "RV": 0.9}}}, r"volume.dsc.LV is '0.9'"),
        ({"volume": {"dsc": {"LV": True, "RV": 0.9}}}, r"volume.dsc.LV is True"),
        ({"findings": "none"}, "findings is str"),
        ({"flagged_slices": [1.5]}, "not a slice index"),
        ({"thresholds": {"min_dsc": 7}}, r"outside \[0, 1\]"),
        ({"run_id": 5}, "'run_id' is 5"),
    ],
)
def test_malformed_reports_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ReportFormatError, match=message):
        evaluate_report({**make_report("c", [0.9], 0.9), **change}, {"*": 0.5}, {})


# -- a report folder -------------------------------------------------------------------------


def test_run_gate_exit_codes(tmp_path: Path) -> None:
    error = {"case": "c", "verdict": "error", "error": "bad seg"}
    manifest = write_run(
        tmp_path,
        {
            "a": make_report("a", [0.9, 0.85], 0.9),
            "b": make_report("b", [0.9, 0.2], 0.6),
            "c": error,
        },
    )
    result = run_gate(tmp_path, {"LV": 0.5}, {"LV": 0.1})
    assert result.code == 1 and result.run_id == manifest.run_id
    assert [(o.case, o.passed) for o in result.outcomes] == [("a", True), ("b", True), ("c", False)]
    assert result.outcomes[2].reasons == ["error: bad seg"]
    result = run_gate(tmp_path, {"LV": 0.7}, {"LV": 0.5})
    assert [o.passed for o in result.outcomes] == [True, False, False]
    text = format_result(result)
    assert "FAIL b:" in text and f"1 of 3 cases passed (run {manifest.run_id})" in text
    for case in ("b", "c"):
        (tmp_path / f"{case}.json").unlink()
    write_run(tmp_path, {"a": make_report("a", [0.9], 0.9)})
    assert run_gate(tmp_path, {"LV": 0.5}).code == 0


def test_case_of_the_manifest_without_report_fails(tmp_path: Path) -> None:
    write_run(tmp_path, {"a": make_report("a", [0.9], 0.9), "b": None})
    result = run_gate(tmp_path)
    assert result.code == 1
    assert [(o.case, o.passed, o.reasons) for o in result.outcomes] == [
        ("a", True, []),
        ("b", False, ["no report: the case was not checked"]),
    ]


def test_report_of_another_run_or_case_fails(tmp_path: Path) -> None:
    old = write_run(
        tmp_path, {"a": make_report("a", [0.9], 0.9), "z": make_report("z", [0.9], 0.9)}
    )
    new = write_run(tmp_path, {"a": None, "b": make_report("b", [0.9], 0.9)}, command="nnunet-qc")
    assert old.run_id != new.run_id
    result = run_gate(tmp_path)
    outcomes = {o.case: o for o in result.outcomes}
    assert result.code == 1 and sorted(outcomes) == ["a", "b", "z"]
    assert outcomes["a"].reasons == [
        f"report belongs to another run (run_id {old.run_id}, this run is {new.run_id}): "
        "the case was not checked by this run"
    ]
    assert outcomes["b"].passed
    assert outcomes["z"].reasons == [
        f"report of a case that run {new.run_id} (run_manifest.json) does not list: "
        "not checked by this run"
    ]
    report = {**make_report("a", [0.9], 0.9), "run_id": None}
    write_case_report(report, tmp_path)
    outcomes = {o.case: o for o in run_gate(tmp_path).outcomes}
    assert "run_id missing" in outcomes["a"].reasons[0]


def test_unreadable_reports_stop_the_gate(tmp_path: Path) -> None:
    write_run(tmp_path, {"a": make_report("a", [0.9], 0.9), "b": make_report("b", [0.9], 0.9)})
    cases = {
        "dangling link": lambda p: (p.unlink(), p.symlink_to(tmp_path / "gone.json")),
        "bad JSON": lambda p: p.write_text("{truncated"),
        "no verdict": lambda p: p.write_text(json.dumps({"case": "b", "labels": {}})),
        "neither key": lambda p: p.write_text(json.dumps({"labels": {"LV": 1}})),
        "other case": lambda p: p.write_text(json.dumps(make_report("a", [0.9], 0.9))),
        "a folder": lambda p: (p.unlink(), p.mkdir()),
    }
    expected = {
        "dangling link": "dangling symbolic link",
        "bad JSON": "is not valid JSON",
        "no verdict": "'verdict' is None",
        "neither key": "'case' is None",
        "other case": "holds the report of case 'a', whose report file is 'a.json'",
        "a folder": "cannot be read",
    }
    good = (tmp_path / "b.json").read_text()
    for name, damage in cases.items():
        path = tmp_path / "b.json"
        damage(path)
        with pytest.raises(GateUsageError, match=expected[name]) as info:
            run_gate(tmp_path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value), name
        assert info.value.exit_code == 2
        path.rmdir() if path.is_dir() else path.unlink()
        path.write_text(good)
    assert run_gate(tmp_path).code == 0


def test_other_json_files_are_left_aside(tmp_path: Path) -> None:
    write_run(tmp_path, {"a": make_report("a", [0.9], 0.9)})
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"LV": 1}}))
    (tmp_path / ".hidden.json").write_text("{")
    result = run_gate(tmp_path)
    assert result.code == 0 and result.ignored == ["dataset.json"]
    assert format_result(result).splitlines()[0] == "ignored (not case reports): dataset.json"


def test_folder_without_manifest(tmp_path: Path) -> None:
    write_case_report(make_report("a", [0.9, 0.85], 0.9), tmp_path)
    write_case_report(make_report("b", [0.9, 0.2], 0.6), tmp_path)
    with pytest.raises(GateUsageError) as info:
        run_gate(tmp_path)
    assert str(info.value) == f"{tmp_path}: {NO_MANIFEST}"
    result = run_gate(tmp_path, {"LV": 0.7}, allow_no_manifest=True)
    assert result.code == 1 and result.run_id is None
    assert [o.passed for o in result.outcomes] == [True, False]
    assert format_result(result).endswith(
        "1 of 2 cases passed (no run_manifest.json: only the reports found were gated)"
    )


def test_run_gate_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(GateUsageError, match="not a directory") as info:
        run_gate(tmp_path / "missing")
    assert info.value.exit_code == 2
    with pytest.raises(GateUsageError, match="no case reports"):
        run_gate(tmp_path, allow_no_manifest=True)
    write_run(tmp_path, {})
    with pytest.raises(GateUsageError, match="run_manifest.json: the run lists no case"):
        run_gate(tmp_path)
    write_run(tmp_path, {"a": make_report("a", [0.9], 0.9)})
    with pytest.raises(GateUsageError, match="unknown class"):
        run_gate(tmp_path, {"Liver": 0.5})
    (tmp_path / "run_manifest.json").write_text("{}")
    with pytest.raises(GateUsageError, match="run_manifest.json: is not a monai-qc run manifest"):
        run_gate(tmp_path)


# -- JUnit -----------------------------------------------------------------------------------


def test_write_junit_xml(tmp_path: Path) -> None:
    outcomes = [
        GateOutcome("a", True, [], ["origin differs"]),
        GateOutcome("b<&>", False, ["LV: volume DSC 0.600 < 0.700", "error: \x01odd"]),
    ]
    path = write_junit_xml(outcomes, tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a", "b<&>"]
    assert cases[0].find("failure") is None
    assert cases[0].findtext("system-out") == "warning: origin differs"
    failure = cases[1].find("failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == "LV: volume DSC 0.600 < 0.700"
    assert "error: ?odd" in failure.text
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]

    write_junit_xml([], tmp_path / "error.xml", error="qc: no run_manifest.json")
    suite = ET.parse(tmp_path / "error.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("errors")) == ("1", "1")
    assert suite.find("testcase/error").get("message") == "qc: no run_manifest.json"


def test_junit_lists_missing_cases_as_failures(tmp_path: Path) -> None:
    write_run(tmp_path / "qc", {"a": make_report("a", [0.9], 0.9), "b": None})
    path = write_junit_xml(run_gate(tmp_path / "qc").outcomes, tmp_path / "junit.xml")
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [(c.get("name"), c.find("failure").get("message")) for c in failed] == [
        ("b", "no report: the case was not checked")
    ]


def test_gate_counts_low_slices_as_the_predictor_flags_them() -> None:
    """min_slice_error: the report's own by default, overridable; the verdicts agree."""
    import numpy as np

    from monai_qc.inference import QCResult
    from monai_qc.thresholds import Thresholds

    dsc = np.array([[1.0, 0.9], [1.0, 0.2], [1.0, 0.9]])
    areas = np.array([[900, 400], [990, 10], [700, 300]])  # a tiny slice rated 0.2
    result = QCResult("tiny", {"RV": 1}, dsc, np.zeros_like(dsc), areas, np.array([1.0, 0.9]),
                      (1, 1, 1), Thresholds({"RV": 0.7}, {"RV": 0.3}, 0.03))  # fmt: skip
    report = result.to_dict()
    assert report["verdict"] == "pass" and report["flagged_slices"] == []
    assert evaluate_report(report, {}, {}).passed
    strict = evaluate_report(report, {}, {}, min_slice_error=0.0)
    assert not strict.passed and "slice(s) 1" in strict.reasons[0]
    no_mvsf = {**report, "slices": [{k: v for k, v in s.items() if k != "mvsf"}
                                    for s in report["slices"]]}  # fmt: skip
    assert not evaluate_report(no_mvsf, {}, {}).passed  # cannot size the slice: no excuse
