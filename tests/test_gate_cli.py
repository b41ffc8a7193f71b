"""``python -m monai_qc gate`` end to end, on report folders written by the real QC code.

The reports come from the shipped bundle run on phantom files read back from disk (an intact
phantom, one with no LV at all, one with a stray LV blob outside the rated region), with the
run manifest a QC run writes before its first case. Each test damages the folder the way a
crash, a rerun or a hand edit would, and checks the gate's exit status and its words.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from monai_qc.phantom import PHANTOM_SPACING, make_phantom, write_volume
from monai_qc.report import write_case_report
from monai_qc.run_manifest import CaseIdentity, RunManifest, file_sha256, write_run_manifest

CLI = [sys.executable, "-m", "monai_qc", "gate"]
#: The README's volume-only recipe: no slice check, a 3D DSC threshold for LV.
VOLUME_ONLY = ("--min-slice-dsc", "*=0", "--min-dsc", "LV=0.85")
ZERO = ("--min-slice-dsc", "*=0", "--min-dsc", "*=0")


def _gate(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, str(folder), *args], capture_output=True, text=True, timeout=120)


class Run:
    """Reports of phantom cases made by the shipped bundle, and how to lay out a run folder."""

    def __init__(self, root: Path) -> None:
        from monai_qc.inference import QCPredictor
        from monai_qc.io import load_case

        predictor = QCPredictor.from_bundle(None)
        self.bundle = predictor.identity or {}
        self.thresholds = predictor.thresholds.to_dict()
        self.identities: dict[str, CaseIdentity] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        for seed, case in ((0, "ph_intact"), (1, "ph_nolv"), (0, "ph_blob")):
            image, labels = make_phantom(seed, n_slices=6, size=(80, 80))
            if case == "ph_nolv":
                labels[labels == 3] = 0
            if case == "ph_blob":
                labels[1:3, 2:8, 2:8] = 3  # a corner the network never rates
            image_path, seg_path = root / f"{case}_0000.nii.gz", root / f"{case}.nii.gz"
            write_volume(image, image_path, PHANTOM_SPACING)
            write_volume(labels, seg_path, PHANTOM_SPACING)
            inputs = load_case(case, image_path, seg_path, [0, *predictor.labels.values()])
            result = predictor.predict(inputs.image, inputs.segmentation, inputs.spacing, case)
            identity = CaseIdentity(
                str(image_path), file_sha256(image_path), str(seg_path), file_sha256(seg_path)
            )
            self.identities[case] = identity
            self.reports[case] = {
                **result.to_dict(),
                "image": str(image_path),
                "segmentation": str(seg_path),
                "inputs": identity.to_dict(),
                "warnings": list(inputs.warnings),
            }

    def manifest(
        self, cases: list[str], thresholds: Mapping[str, Any] | None = None
    ) -> RunManifest:
        identities = {case: self.identities[case] for case in cases}
        return RunManifest.create(
            "check", self.bundle, thresholds or self.thresholds, identities, {}
        )

    def write(
        self,
        folder: Path,
        cases: list[str],
        reported: list[str] | None = None,
        with_manifest: bool = True,
    ) -> RunManifest:
        """The manifest of ``cases``, then the reports of ``reported`` (default: all)."""
        manifest = self.manifest(cases)
        folder.mkdir(parents=True, exist_ok=True)
        if with_manifest:
            write_run_manifest(manifest, folder)
        for case in cases if reported is None else reported:
            write_case_report({**self.reports[case], "run_id": manifest.run_id}, folder)
        return manifest


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(tmp_path_factory.mktemp("phantom_inputs"))


def test_real_reports_are_what_the_tests_assume(run: Run) -> None:
    intact, nolv, blob = (run.reports[c] for c in ("ph_intact", "ph_nolv", "ph_blob"))
    assert intact["verdict"] == "pass" and intact["volume"]["dsc"]["LV"] > 0.85
    assert nolv["volume"]["dsc"]["LV"] is None and nolv["volume"]["segmented_ml"]["LV"] == 0
    assert nolv["failed_classes"] == ["LV"] and nolv["findings"] == []
    assert [f["check"] for f in blob["findings"]] == ["outside_rated_region"]


def test_volume_only_recipe_fails_a_segmentation_without_lv(run: Run, tmp_path: Path) -> None:
    manifest = run.write(tmp_path / "qc", ["ph_intact", "ph_nolv"])
    gate = _gate(tmp_path / "qc", *VOLUME_ONLY)
    assert gate.returncode == 1, gate.stderr
    assert gate.stdout.splitlines() == [
        "FAIL ph_nolv: LV: no volume DSC (class not segmented or not rated)",
        f"1 of 2 cases passed (run {manifest.run_id})",
    ]
    manifest = run.write(tmp_path / "intact", ["ph_intact"])
    gate = _gate(tmp_path / "intact", *VOLUME_ONLY)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert gate.stdout.splitlines() == [f"1 of 1 cases passed (run {manifest.run_id})"]


@pytest.mark.parametrize("dsc", ["empty", "nan"])
def test_hand_made_volume_dsc_without_values_fails(run: Run, dsc: str, tmp_path: Path) -> None:
    manifest = run.write(tmp_path, ["ph_intact"])
    report = json.loads((tmp_path / "ph_intact.json").read_text())
    if dsc == "empty":
        report["volume"]["dsc"] = {}
    else:
        report["volume"]["dsc"]["MYO"] = math.nan
    (tmp_path / "ph_intact.json").write_text(json.dumps(report))  # NaN written as NaN
    gate = _gate(tmp_path, *ZERO)
    assert gate.returncode == 1, gate.stderr
    missing = ["RV", "MYO", "LV"] if dsc == "empty" else ["MYO"]
    reasons = "; ".join(f"{n}: no volume DSC (class not segmented or not rated)" for n in missing)
    assert gate.stdout.splitlines() == [
        f"FAIL ph_intact: {reasons}",
        f"0 of 1 cases passed (run {manifest.run_id})",
    ]


def test_fail_verdict_without_listed_reasons_stays_fail(run: Run, tmp_path: Path) -> None:
    run.write(tmp_path, ["ph_intact"])
    report = json.loads((tmp_path / "ph_intact.json").read_text())
    report["verdict"] = "fail"
    del report["failed_classes"], report["flagged_slices"]
    (tmp_path / "ph_intact.json").write_text(json.dumps(report))
    gate = _gate(tmp_path, *ZERO)
    assert gate.returncode == 1
    assert gate.stdout.splitlines()[0] == (
        "FAIL ph_intact: report verdict is fail and lists no failed class, flagged slice or finding"
    )


def test_findings_fail_even_with_zero_thresholds(run: Run, tmp_path: Path) -> None:
    run.write(tmp_path, ["ph_intact", "ph_blob"])
    gate = _gate(tmp_path, *ZERO)
    assert gate.returncode == 1
    message = run.reports["ph_blob"]["findings"][0]["message"]
    assert gate.stdout.splitlines()[0] == (
        f"FAIL ph_blob: finding: outside_rated_region: {message}"
    )
    assert "1 LV component outside the rated region" in message


def test_case_without_report_fails_and_is_in_the_junit(run: Run, tmp_path: Path) -> None:
    qc = tmp_path / "qc"
    run.write(qc, ["ph_intact", "ph_nolv"], reported=["ph_intact"])  # the run died after one
    gate = _gate(qc, *VOLUME_ONLY, "--junit", str(tmp_path / "junit.xml"))
    assert gate.returncode == 1
    assert gate.stdout.splitlines()[0] == "FAIL ph_nolv: no report: the case was not checked"
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "1")
    names = {c.get("name"): c.find("failure") for c in suite.findall("testcase")}
    assert names["ph_intact"] is None
    assert names["ph_nolv"].get("message") == "no report: the case was not checked"


def test_report_of_another_run_fails(run: Run, tmp_path: Path) -> None:
    old = run.write(tmp_path, ["ph_intact"])
    thresholds = {**run.thresholds, "min_dsc": {"RV": 0.9, "MYO": 0.9, "LV": 0.9}}
    new = run.manifest(["ph_intact"], thresholds)
    write_run_manifest(new, tmp_path)  # a rerun that stopped before rewriting the report
    assert new.run_id != old.run_id
    gate = _gate(tmp_path, *ZERO)
    assert gate.returncode == 1
    assert gate.stdout.splitlines()[0] == (
        f"FAIL ph_intact: report belongs to another run (run_id {old.run_id}, this run is "
        f"{new.run_id}): the case was not checked by this run"
    )


def test_report_of_a_case_outside_the_manifest_fails(run: Run, tmp_path: Path) -> None:
    manifest = run.write(tmp_path, ["ph_intact"])
    write_case_report({**run.reports["ph_blob"], "run_id": manifest.run_id}, tmp_path)
    gate = _gate(tmp_path, *ZERO, "--min-dsc", "LV=0.5")
    assert gate.returncode == 1
    assert gate.stdout.splitlines()[0].startswith(
        f"FAIL ph_blob: report of a case that run {manifest.run_id} (run_manifest.json) "
        "does not list"
    )


@pytest.mark.parametrize("damage", ["dangling link", "no verdict"])
def test_unreadable_report_exits_2_naming_it(run: Run, damage: str, tmp_path: Path) -> None:
    run.write(tmp_path / "qc", ["ph_intact", "ph_nolv"])
    path = tmp_path / "qc" / "ph_nolv.json"
    if damage == "dangling link":
        path.unlink()
        path.symlink_to(tmp_path / "lost" / "ph_nolv.json")
        problem = f"dangling symbolic link (to {tmp_path / 'lost' / 'ph_nolv.json'})"
    else:
        report = json.loads(path.read_text())
        del report["verdict"]
        path.write_text(json.dumps(report))
        problem = "not a usable case report: 'verdict' is None"
    gate = _gate(tmp_path / "qc", *ZERO, "--junit", str(tmp_path / "junit.xml"))
    assert gate.returncode == 2 and gate.stdout == ""
    assert len(gate.stderr.splitlines()) == 1
    assert gate.stderr.startswith(f"Error: {path}: {problem}")
    error = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase/error")
    assert error is not None and str(path) in error.get("message", "")


def test_folder_without_manifest(run: Run, tmp_path: Path) -> None:
    run.write(tmp_path, ["ph_intact", "ph_nolv"], with_manifest=False)
    gate = _gate(tmp_path, *VOLUME_ONLY)
    assert gate.returncode == 2 and gate.stdout == ""
    assert gate.stderr == (
        f"Error: {tmp_path}: no run_manifest.json: cannot tell whether every case was checked; "
        "pass --allow-no-manifest to gate these reports anyway\n"
    )
    gate = _gate(tmp_path, *VOLUME_ONLY, "--allow-no-manifest")
    assert gate.returncode == 1
    assert gate.stdout.splitlines() == [
        "FAIL ph_nolv: LV: no volume DSC (class not segmented or not rated)",
        "1 of 2 cases passed (no run_manifest.json: only the reports found were gated)",
    ]


def test_help_documents_every_exit_status() -> None:
    help_text = subprocess.run(
        [*CLI, "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for line in ("  0  every case", "  1  some case fails", "  2  the gate cannot decide"):
        assert line in help_text
    assert "--allow-no-manifest" in help_text
