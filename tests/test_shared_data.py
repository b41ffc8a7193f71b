"""Where the tests find the shared data (MONAI_QC_SHARED_DATA) and the bundle's logging.conf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT_SHARED_DATA, SHARED_DATA_ENV, shared_data

from monai_qc.phantom import write_nnunet_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL_CASE = "tests/test_correction.py::test_real_case_with_lv_missed_on_a_mid_slice_is_restored"


def run_pytest(test: str, shared: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != SHARED_DATA_ENV}
    if shared is not None:
        env[SHARED_DATA_ENV] = str(shared)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_shared_data_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert shared_data() == tmp_path
    monkeypatch.setenv(SHARED_DATA_ENV, "  ")
    assert shared_data() == DEFAULT_SHARED_DATA
    monkeypatch.delenv(SHARED_DATA_ENV)
    assert shared_data() == DEFAULT_SHARED_DATA == ROOT.parent / "shared" / "data"


def test_a_test_needing_acdc_skips_naming_the_variable(tmp_path: Path) -> None:
    run = run_pytest(REAL_CASE, tmp_path)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "1 skipped" in run.stdout
    expected = (
        f"shared data set Dataset027_ACDC not found at {tmp_path / 'Dataset027_ACDC'} "
        f"({SHARED_DATA_ENV}={tmp_path}); set {SHARED_DATA_ENV} to the folder holding "
        "Dataset027_ACDC"
    )
    assert expected in " ".join(run.stdout.split())


@pytest.mark.slow
def test_a_test_needing_acdc_runs_on_data_moved_elsewhere(acdc: Path, tmp_path: Path) -> None:
    """The data in another folder (a link here), named by the variable: the test runs."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Dataset027_ACDC").symlink_to(acdc, target_is_directory=True)
    run = run_pytest(REAL_CASE, elsewhere)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-2000:]


def test_monai_bundle_run_of_the_shipped_bundle_finds_its_logging_conf(tmp_path: Path) -> None:
    """``python -m monai.bundle run`` as the README gives it: no missing-logging-file warning."""
    data = write_nnunet_dataset(tmp_path / "Dataset903_Phantom", 2, seed=4, n_slices=6)
    out = tmp_path / "qc"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", "bundles/cmr_acdc_qc/configs/inference.json",
        "--bundle_root", "bundles/cmr_acdc_qc",
        "--images_dir", str(data / "imagesTr"),
        "--segs_dir", str(data / "labelsTr"),
        "--output_dir", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    logs = run.stdout + run.stderr
    assert run.returncode == 0, logs[-3000:]
    assert "logging.conf does not exist" not in logs
    assert "Setting logging properties based on config" in logs
    # the bundle's format (time - logger - level - message) reaches the package's loggers
    assert " - monai_qc.inference - INFO - QC bundle cmr_acdc_qc version " in run.stderr
    assert sorted(p.name for p in out.glob("phantom_*.json")) == [
        "phantom_001_ED.json",
        "phantom_001_ES.json",
    ]
