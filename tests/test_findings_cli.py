"""Wrong passes the deterministic checks stop, end to end with the shipped bundle.

A stray blob of LV labels in a corner (outside the crop the network rates) and an LV missed
on one mid slice both passed before; ``check`` now fails them with a finding. The demo's
phantom with a blanked mid slice fails too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

CLI = [sys.executable, "-m", "monai_qc"]
CASE = "acdc_001_ED"  # LV 272.3 mL in the expert labels


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def test_demo_fails_the_blanked_phantom(tmp_path: Path) -> None:
    run = _run("demo", "--out", str(tmp_path / "demo"))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "phantom_03_blanked    verdict: fail" in lines
    for name, last in (("RV", 7), ("MYO", 8), ("LV", 8)):
        message = f"{name} is missing on slice 4, between slices 0 and {last} that hold it"
        assert f"phantom_03_blanked    finding: {message}" in lines
    assert "phantom_01_none       verdict: pass" in lines
    report = json.loads((tmp_path / "demo" / "qc" / "phantom_03_blanked.json").read_text())
    assert [(f["check"], f["class"], f["slices"]) for f in report["findings"]] == [
        ("class_gap", name, [4]) for name in ("RV", "MYO", "LV")
    ]
    assert report["verdict"] == "fail"


def _write(labels: np.ndarray, reference: sitk.Image, acdc: Path, folder: Path, name: str) -> None:
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(folder / "segs" / f"{name}.nii.gz"))
    source = acdc / "imagesTr" / f"{CASE}_0000.nii.gz"
    shutil.copy(source, folder / "images" / f"{name}_0000.nii.gz")


@pytest.mark.slow
def test_stray_blob_and_blanked_slice_fail_an_acdc_case(acdc: Path, tmp_path: Path) -> None:
    reference = sitk.ReadImage(str(acdc / "labelsTr" / f"{CASE}.nii.gz"))
    labels = sitk.GetArrayFromImage(reference)
    (tmp_path / "images").mkdir()
    (tmp_path / "segs").mkdir()
    _write(labels, reference, acdc, tmp_path, "intact")
    stray = labels.copy()
    stray[4:7, 4:24, 4:24] = 3  # 3 slices x 20 x 20 LV voxels in the top-left corner
    _write(stray, reference, acdc, tmp_path, "stray")
    blanked = labels.copy()
    lv_slices = np.flatnonzero((labels == 3).any(axis=(1, 2)))
    mid = int(lv_slices[len(lv_slices) // 2])
    blanked[mid][blanked[mid] == 3] = 0
    _write(blanked, reference, acdc, tmp_path, "blanked")

    out = tmp_path / "qc"
    images, segs = str(tmp_path / "images"), str(tmp_path / "segs")
    run = _run("check", "--images", images, "--segs", segs, "--out", str(out))
    assert run.returncode == 1, run.stderr
    names = ("intact", "stray", "blanked")
    reports = {n: json.loads((out / f"{n}.json").read_text()) for n in names}

    assert reports["intact"]["findings"] == []
    assert reports["intact"]["verdict"] == "pass"
    assert reports["intact"]["volume"]["segmented_ml"]["LV"] == 272.34

    stray_report = reports["stray"]
    assert stray_report["verdict"] == "fail"
    assert stray_report["volume"]["segmented_ml"]["LV"] == 299.34  # 27 mL never rated
    (finding,) = stray_report["findings"]
    assert (finding["check"], finding["class"], finding["slices"]) == (
        "outside_rated_region",
        "LV",
        [4, 5, 6],
    )
    assert "1 LV component outside the rated region, 27.0 mL" in finding["message"]
    assert finding["message"] in stray_report["reasons"]

    blanked_report = reports["blanked"]
    assert blanked_report["verdict"] == "fail"
    (finding,) = blanked_report["findings"]
    assert (finding["check"], finding["class"], finding["slices"]) == ("class_gap", "LV", [mid])
    first, last = int(lv_slices[0]), int(lv_slices[-1])
    assert finding["message"] == (
        f"LV is missing on slice {mid}, between slices {first} and {last} that hold it"
    )
