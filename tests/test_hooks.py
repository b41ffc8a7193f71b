"""The monai-qc hooks: entry-point plugins, blocking, the built-in QC plugin, hook docs."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import nnunet_fixtures
import numpy as np
import pytest

from monai_qc.errors import BundleError
from monai_qc.phantom import PHANTOM_LABELS, PHANTOM_SPACING, make_phantom
from monai_qc.run_manifest import (
    RUN_MANIFEST_NAME,
    CaseIdentity,
    bundle_identity,
    case_key,
    file_sha256,
    read_run_manifest,
)
from nnunet_hooks import hookspecs
from nnunet_hooks.default_plugin import QCPlugin, QCSettings, label_lookup, qc_plugin_manager
from nnunet_hooks.hookspecs import SegmentedCase, hookimpl
from nnunet_hooks.manager import get_plugin_manager
from nnunet_hooks.predict_cli import qc_nnunet_predictions

nnunet_output_folder = nnunet_fixtures.nnunet_output_folder

#: A third-party plugin implementing every hook, installed through a real entry point.
RECORDER_MODULE = "qc_test_recorder"
RECORDER_SOURCE = """
from nnunet_hooks.hookspecs import hookimpl

CALLS = []


@hookimpl
def run_started(config, output_folder):
    CALLS.append(("run_started", config, output_folder))


@hookimpl
def case_segmented(case):
    CALLS.append(("case_segmented", case))


@hookimpl
def case_failed(case_id, message):
    CALLS.append(("case_failed", case_id, message))


@hookimpl
def case_reported(case_id, report, output_folder):
    CALLS.append(("case_reported", case_id, report, output_folder))


@hookimpl
def run_finished(summary):
    CALLS.append(("run_finished", summary))
"""


def hook_names() -> set[str]:
    """Names of the hooks declared in hookspecs.py."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {name for name, obj in vars(hookspecs).items() if hasattr(obj, marker)}


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Install the recorder as distribution ``qc-test-recorder`` with entry point ``recorder``."""
    site = tmp_path / "site"
    info = site / "qc_test_recorder-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qc-test-recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[monai_qc]\nrecorder = {RECORDER_MODULE}\n")
    (site / f"{RECORDER_MODULE}.py").write_text(RECORDER_SOURCE)
    monkeypatch.delitem(sys.modules, RECORDER_MODULE, raising=False)
    monkeypatch.syspath_prepend(str(site))
    return importlib.import_module(RECORDER_MODULE)


def test_entry_point_plugin_receives_every_hook(
    recorder: ModuleType, nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    images, predictions = nnunet_output_folder
    settings = QCSettings(bundle=str(untrained_bundle), correct_volumes=True)
    summary = qc_nnunet_predictions(images, predictions, settings)

    calls = recorder.CALLS
    assert {c[0] for c in calls} == hook_names()
    assert calls[0][0] == "run_started" and calls[-1][0] == "run_finished"
    config, output_folder = calls[0][1], calls[0][2]
    assert output_folder == str(predictions)
    assert config["labels"] == PHANTOM_LABELS
    assert config["qc"]["bundle"] == str(untrained_bundle)
    segmented = {c[1].case_id: c[1] for c in calls if c[0] == "case_segmented"}
    assert sorted(segmented) == ["ph_0", "ph_1"]
    image, labels = make_phantom(1, n_slices=6, size=(64, 64))
    case = segmented["ph_1"]
    np.testing.assert_allclose(case.image, image, rtol=1e-6)
    np.testing.assert_array_equal(case.segmentation, labels)
    assert case.spacing == pytest.approx(PHANTOM_SPACING)
    assert case.output_file == str(predictions / "ph_1.nii.gz")
    failed = {c[1]: c[2] for c in calls if c[0] == "case_failed"}
    assert sorted(failed) == ["empty", "lonely"]
    assert "empty" in failed["empty"] and "no segmentation" in failed["lonely"]
    reported = {c[1]: c[2] for c in calls if c[0] == "case_reported"}
    assert sorted(reported) == ["empty", "lonely", "ph_0", "ph_1"]
    assert {c[3] for c in calls if c[0] == "case_reported"} == {str(predictions / "qc")}
    assert summary["n_cases"] == 4 and summary["qc_folder"] == str(predictions / "qc")
    assert sum(summary["verdicts"].values()) == 4 and summary["verdicts"]["error"] == 2

    qc = predictions / "qc"
    assert (qc / "summary.csv").is_file() and (qc / "report.html").is_file()
    for name, report in reported.items():
        assert json.loads((qc / f"{name}.json").read_text())["verdict"] == report["verdict"]
    good = reported["ph_0"]
    assert good["verdict"] in ("pass", "fail") and len(good["slices"]) == 6
    assert set(good["volume"]["dsc"]) == set(PHANTOM_LABELS)
    assert set(good["correction"]) >= {"wrong_slices", "volumes_ml", "corrected_ml"}
    assert good["segmentation"] == str(predictions / "ph_0.nii.gz")
    assert reported["empty"]["verdict"] == "error"


def test_plugins_are_blocked_by_name(
    recorder: ModuleType, nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    assert get_plugin_manager().get_plugin("recorder") is recorder
    assert get_plugin_manager(blocked=["recorder"]).get_plugin("recorder") is None
    assert get_plugin_manager(load_entry_points=False).get_plugin("recorder") is None
    manager = qc_plugin_manager()
    assert isinstance(manager.get_plugin("qc"), QCPlugin)
    assert manager.get_plugin("recorder") is recorder

    images, predictions = nnunet_output_folder
    summary = qc_nnunet_predictions(
        images, predictions, QCSettings(bundle=str(untrained_bundle)), blocked=["qc"]
    )
    assert "verdicts" not in summary and not (predictions / "qc").exists()
    called = [c[0] for c in recorder.CALLS]
    assert called.count("case_segmented") == 2 and "case_reported" not in called


def test_every_hook_is_documented_and_tested() -> None:
    names = hook_names()
    assert names >= {"run_started", "case_segmented", "case_reported", "run_finished"}
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for name in sorted(names):
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and "\n" not in doc, f"hook {name} needs a one-line docstring"
        assert re.search(rf"^def {name}\(", RECORDER_SOURCE, re.M), f"recorder lacks {name}"
        assert len(re.findall(rf"\b{name}\b", tests)) > 1, f"hook {name} is not tested"


class _Reports:
    """A plugin keeping every reported case."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}

    @hookimpl
    def case_reported(
        self, case_id: str, report: dict[str, Any], output_folder: str | None
    ) -> None:
        self.reports[case_id] = report


def _case(case_id: str, seed: int, **changes: Any) -> SegmentedCase:
    image, labels = make_phantom(seed, n_slices=5, size=(64, 64))
    fields = {"image": image, "segmentation": labels, "spacing": PHANTOM_SPACING, **changes}
    return SegmentedCase(case_id, **fields)


def test_qc_plugin_reports_errors_and_goes_on(untrained_bundle: Path, tmp_path: Path) -> None:
    reports = _Reports()
    manager = qc_plugin_manager([reports], load_entry_points=False)
    qc = {"bundle": str(untrained_bundle), "min_dsc": {"*": 0.0, "LV": 0.99}, "out": str(tmp_path)}
    manager.hook.run_started(config={"qc": qc}, output_folder=None)
    noise = np.random.default_rng(0).random((4, 64, 64))
    manager.hook.case_segmented(case=_case("short", 0, image=noise))
    manager.hook.case_segmented(case=_case("blank", 1, image=np.zeros((5, 64, 64))))
    manager.hook.case_segmented(case=_case("no_image", 2, image=None))
    manager.hook.case_segmented(case=_case("good", 3))
    manager.hook.run_finished(summary={})

    errors = {k: r["error"] for k, r in reports.reports.items() if r["verdict"] == "error"}
    assert sorted(errors) == ["blank", "no_image", "short"]
    assert "differs from segmentation shape" in errors["short"] and "blank" in errors["blank"]
    good = reports.reports["good"]
    assert good["thresholds"]["min_dsc"] == {"RV": 0.0, "MYO": 0.0, "LV": 0.99}
    assert good["thresholds"]["min_slice_dsc"] == {"RV": 0.3, "MYO": 0.3, "LV": 0.3}
    assert good["verdict"] == "fail" and good["failed_classes"] == ["LV"]
    assert "correction" not in good
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "blank.json",
        "figures",  # of the failed case (only failed cases get figures by default)
        "good.json",
        "no_image.json",
        "report.html",
        "short.json",
        "summary.csv",
    ]


def test_qc_plugin_maps_the_data_set_labels_by_name(untrained_bundle: Path) -> None:
    reports = _Reports()
    manager = qc_plugin_manager([reports], load_entry_points=False)
    swapped = {"LV": 1, "MYO": 2, "RV": 3}  # RV and LV values swapped
    config = {"qc": {"bundle": str(untrained_bundle)}, "labels": swapped}
    manager.hook.run_started(config=config, output_folder=None)
    case = _case("swapped", 4)
    areas = {name: int((case.segmentation == value).sum()) for name, value in swapped.items()}
    manager.hook.case_segmented(case=case)
    report = reports.reports["swapped"]
    assert {n: sum(s["area"][n] for s in report["slices"]) for n in areas} == areas

    with pytest.raises(ValueError, match="differ from the QC bundle"):
        manager.hook.run_started(config={**config, "labels": {"LV": 1}}, output_folder=None)
    with pytest.raises(ValueError, match="one integer per class"):
        label_lookup({"RV": [1, 2], "MYO": 2, "LV": 3}, PHANTOM_LABELS)


def test_qc_settings_are_checked(untrained_bundle: Path) -> None:
    with pytest.raises(ValueError, match="unknown QC setting"):
        QCSettings.from_config({"bundel": "x"})
    settings = QCSettings(bundle="b", min_dsc={"LV": 0.8}, correct_volumes=True)
    assert QCSettings.from_config(settings.to_config()) == settings
    manager = qc_plugin_manager(load_entry_points=False)
    qc = {"bundle": str(untrained_bundle), "min_slice_dsc": {"LA": 0.5}}
    with pytest.raises(ValueError, match="unknown class"):
        manager.hook.run_started(config={"qc": qc}, output_folder=None)


def _only_good_cases(folders: tuple[Path, Path]) -> tuple[Path, Path]:
    """The nnU-Net output folder with only its two good cases (ph_0, ph_1)."""
    images, predictions = folders
    for path in (images / "empty_0000.nii.gz", images / "lonely_0000.nii.gz"):
        path.unlink()
    (predictions / "empty.nii.gz").unlink()
    return images, predictions


def test_nnunet_qc_writes_a_run_manifest_and_stamps_every_report(
    nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    images, predictions = nnunet_output_folder
    settings = QCSettings(bundle=str(untrained_bundle), min_dsc={"LV": 0.5})
    summary = qc_nnunet_predictions(images, predictions, settings)
    qc = predictions / "qc"
    manifest = read_run_manifest(qc)
    assert manifest is not None and manifest.command == "nnunet-qc"
    assert summary["run_id"] == manifest.run_id and len(manifest.run_id) == 20
    assert manifest.bundle == bundle_identity(untrained_bundle) == summary["bundle"]
    assert sorted(manifest.cases) == ["empty", "lonely", "ph_0", "ph_1"]
    assert manifest.thresholds["min_dsc"] == {"RV": 0.7, "MYO": 0.7, "LV": 0.5}
    assert manifest.settings == {"correct_volumes": False, "labels": PHANTOM_LABELS, "model": {}}
    ph_0 = manifest.cases["ph_0"]
    assert ph_0.image == str(images / "ph_0_0000.nii.gz")
    assert ph_0.image_sha256 == file_sha256(images / "ph_0_0000.nii.gz")
    assert ph_0.segmentation_sha256 == file_sha256(predictions / "ph_0.nii.gz")
    assert manifest.cases["lonely"] == CaseIdentity()  # no segmentation: nothing paired

    reports = {p.stem: json.loads(p.read_text()) for p in qc.glob("*.json")}
    assert sorted(reports) == ["empty", "lonely", "ph_0", "ph_1", "run_manifest"]
    for case in ("empty", "lonely", "ph_0", "ph_1"):
        report = reports[case]
        assert report["run_id"] == manifest.run_id, case
        assert report["inputs"] == manifest.cases[case].to_dict(), case
        assert report["bundle"] == manifest.bundle, case
    expected_key = case_key(
        ph_0.image_sha256,
        ph_0.segmentation_sha256,
        manifest.bundle["sha256"],
        manifest.thresholds,
        manifest.settings,
    )
    assert reports["ph_0"]["qc_key"] == expected_key
    assert reports["ph_1"]["qc_key"] not in (None, expected_key)
    assert reports["empty"]["verdict"] == "error" and reports["empty"]["qc_key"] is not None
    assert reports["lonely"]["qc_key"] is None  # no image hash: never reused

    manifest_text = (qc / RUN_MANIFEST_NAME).read_text()
    again = qc_nnunet_predictions(images, predictions, settings)
    assert again["run_id"] == manifest.run_id
    assert (qc / RUN_MANIFEST_NAME).read_text() == manifest_text  # reruns are byte-identical
    (predictions / "ph_1.nii.gz").write_bytes((predictions / "ph_0.nii.gz").read_bytes())
    changed = qc_nnunet_predictions(images, predictions, settings)
    assert changed["run_id"] != manifest.run_id
    assert json.loads((qc / "ph_1.json").read_text())["run_id"] == changed["run_id"]


def test_run_thresholds_do_not_leak_into_other_runs(
    nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    images, predictions = nnunet_output_folder
    manager = qc_plugin_manager([], load_entry_points=False)
    plugin = manager.get_plugin("qc")
    strict = plugin.prepare(QCSettings(bundle=str(untrained_bundle), min_dsc={"*": 0.9}))
    default = plugin.prepare(QCSettings(bundle=str(untrained_bundle)))
    assert strict.thresholds.min_dsc == {"RV": 0.9, "MYO": 0.9, "LV": 0.9}
    assert default.thresholds.min_dsc == {"RV": 0.7, "MYO": 0.7, "LV": 0.7}
    assert strict.network is default.network  # one network, loaded once

    config = {"qc": {"bundle": str(untrained_bundle), "min_dsc": {"LV": 0.2}}, "cases": {}}
    manager.hook.run_started(config=config, output_folder=None)
    first = plugin._predictor
    manager.hook.run_started(
        config={**config, "qc": {"bundle": str(untrained_bundle)}}, output_folder=None
    )
    assert first.thresholds.min_dsc["LV"] == 0.2
    assert plugin._predictor.thresholds.min_dsc["LV"] == 0.7
    assert default.thresholds.min_dsc["LV"] == 0.7


def test_a_pinned_bundle_sha256_is_enforced(
    nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    images, predictions = nnunet_output_folder
    sha = bundle_identity(untrained_bundle)["sha256"]
    wrong = QCSettings(bundle=str(untrained_bundle), bundle_sha256="0" * 64)
    with pytest.raises(BundleError, match=f"SHA-256 is {sha}, not the expected 0000"):
        qc_nnunet_predictions(images, predictions, wrong)
    assert not (predictions / "qc").exists()
    pinned = QCSettings(bundle=str(untrained_bundle), bundle_sha256=sha.upper())
    manager = qc_plugin_manager([], load_entry_points=False)
    assert manager.get_plugin("qc").prepare(pinned).identity["sha256"] == sha
    with pytest.raises(BundleError, match="not the expected"):  # also once loaded
        manager.get_plugin("qc").prepare(wrong)


def _gate(qc: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "monai_qc", "gate", str(qc)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_nnunet_qc_cli_prints_the_bundle_and_the_gate_fails_a_missing_report(
    nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    images, predictions = _only_good_cases(nnunet_output_folder)
    sha = bundle_identity(untrained_bundle)["sha256"]
    command = [sys.executable, "-m", "monai_qc", "nnunet-qc", "--images", str(images)]
    command += ["--predictions", str(predictions), "--bundle", str(untrained_bundle)]
    command += ["--min-dsc", "*=0", "--min-slice-dsc", "*=0"]
    wrong = subprocess.run(
        [*command, "--bundle-sha256", "ab" * 32], capture_output=True, text=True, timeout=120
    )
    assert wrong.returncode == 2 and f"SHA-256 is {sha}, not the expected abab" in wrong.stderr
    assert not (predictions / "qc").exists()

    run = subprocess.run(
        [*command, "--bundle-sha256", sha], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 pass, 0 fail, 0 error" in run.stdout
    manifest = read_run_manifest(predictions / "qc")
    assert manifest is not None
    assert f"sha256 {sha}; run {manifest.run_id}" in run.stdout
    assert f"sha256 {sha}; run {manifest.run_id}: 2 cases" in run.stderr  # before the cases

    qc = predictions / "qc"
    gate = _gate(qc)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    (qc / "ph_1.json").unlink()  # a case of the manifest without its report
    gate = _gate(qc)
    assert gate.returncode == 1 and "ph_1" in gate.stdout + gate.stderr, gate.stdout
