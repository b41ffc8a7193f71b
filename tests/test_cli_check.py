"""``monai-qc check`` and ``monai-qc gate`` run as the installed console script."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from monai_qc.phantom import make_phantom, write_volume

CLI = [sys.executable, "-m", "monai_qc"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def phantom_folders(tmp_path: Path) -> tuple[Path, Path]:
    images, segs = tmp_path / "images", tmp_path / "segs"
    images.mkdir()
    segs.mkdir()
    for i in range(2):
        image, labels = make_phantom(i, n_slices=6, size=(80, 80))
        write_volume(image, images / f"ph_{i}_0000.nii.gz")
        write_volume(labels, segs / f"ph_{i}.nii.gz")
    image, labels = make_phantom(5, n_slices=6, size=(80, 80))
    write_volume(image, images / "bad_0000.nrrd")
    write_volume(labels[:, :70], segs / "bad.nrrd")  # shape mismatch
    write_volume(image, images / "lonely_0000.mha")  # no segmentation
    return images, segs


def test_check_writes_reports_and_reports_failures(
    untrained_bundle: Path, phantom_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    images, segs = phantom_folders
    out = tmp_path / "qc"
    run = _run(
        "check",
        "--images",
        str(images),
        "--segs",
        str(segs),
        "--out",
        str(out),
        "--bundle",
        str(untrained_bundle),
    )
    assert run.returncode == 1, run.stderr
    assert f"report: {out / 'report.html'}" in run.stdout
    good = json.loads((out / "ph_0.json").read_text())
    assert len(good["slices"]) == 6
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(segs / "ph_0.nii.gz")))
    assert good["slices"][2]["area"]["MYO"] == int((labels[2] == 2).sum())
    assert good["spacing"] == [10.0, 1.5, 1.5]
    bad = json.loads((out / "bad.json").read_text())
    assert bad["verdict"] == "error"
    assert "bad.nrrd" in bad["error"] and "shape" in bad["error"]
    lonely = json.loads((out / "lonely.json").read_text())
    assert lonely["verdict"] == "error"
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["case"] for r in rows} == {"ph_0", "ph_1", "bad", "lonely"}
    assert sum(r["case"] == "ph_0" for r in rows) == 3  # one row per class
    assert "ph_1" in (out / "report.html").read_text()

    # a second run resumes: finished cases are not checked again
    again = _run(
        "check",
        "--images",
        str(images),
        "--segs",
        str(segs),
        "--out",
        str(out),
        "--bundle",
        str(untrained_bundle),
    )
    assert "(2 unchanged, not checked again)" in again.stdout

    gate = _run("gate", str(out), "--junit", str(tmp_path / "junit.xml"))
    assert gate.returncode == 1
    assert "bad" in gate.stdout
    assert (tmp_path / "junit.xml").is_file()


def test_check_without_usable_bundle_says_so(phantom_folders, tmp_path: Path) -> None:
    images, segs = phantom_folders
    run = _run(
        "check",
        "--images",
        str(images),
        "--segs",
        str(segs),
        "--out",
        str(tmp_path / "qc"),
        "--bundle",
        str(tmp_path / "nowhere"),
    )
    assert run.returncode == 2  # a problem of the whole run, not of a case
    assert "no such bundle folder" in run.stderr


def test_gate_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _run("gate", str(tmp_path / "missing")).returncode == 2
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.json").write_text(
        '{"case": "a", "verdict": "pass", "labels": {"LV": 3},'
        ' "slices": [{"index": 0, "dsc": {"LV": 0.9}, "flagged": false}],'
        ' "volume": {"dsc": {"LV": 0.9}}}'
    )
    assert _run("gate", str(tmp_path / "r"), "--min-dsc", "LV=0.8").returncode == 2  # no manifest
    hand_made = ("gate", str(tmp_path / "r"), "--allow-no-manifest", "--min-dsc")
    assert _run(*hand_made, "LV=0.8").returncode == 0
    assert _run(*hand_made, "LV=0.95").returncode == 1
    assert _run(*hand_made, "XX=0.5").returncode == 2
    assert _run(*hand_made, "LV=abc").returncode == 2


@pytest.mark.slow
def test_check_on_two_acdc_cases(untrained_bundle: Path, acdc: Path, tmp_path: Path) -> None:
    """Integration: real ACDC images with their expert labels and a damaged copy."""
    images, segs = tmp_path / "images", tmp_path / "segs"
    images.mkdir()
    segs.mkdir()
    for case in ("acdc_001_ED", "acdc_002_ES"):
        shutil.copy(acdc / "imagesTr" / f"{case}_0000.nii.gz", images)
        shutil.copy(acdc / "labelsTr" / f"{case}.nii.gz", segs)
    labels = sitk.ReadImage(str(segs / "acdc_002_ES.nii.gz"))
    array = sitk.GetArrayFromImage(labels)
    array[array == 3] = 9  # a label the model does not know
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(labels)
    sitk.WriteImage(damaged, str(segs / "acdc_002_ES.nii.gz"))
    out = tmp_path / "qc"
    run = _run(
        "check",
        "--images",
        str(images),
        "--segs",
        str(segs),
        "--out",
        str(out),
        "--bundle",
        str(untrained_bundle),
    )
    assert run.returncode == 1, run.stderr
    report = json.loads((out / "acdc_001_ED.json").read_text())
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(acdc / "labelsTr" / "acdc_001_ED.nii.gz")))
    assert len(report["slices"]) == truth.shape[0] == 10
    assert [s["area"]["LV"] for s in report["slices"]] == [int((t == 3).sum()) for t in truth]
    assert report["spacing"] == [10.0, 1.5, 1.5]
    error = json.loads((out / "acdc_002_ES.json").read_text())
    assert error["verdict"] == "error" and "label values [9]" in error["error"]
