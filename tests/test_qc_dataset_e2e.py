"""End to end on a tiny synthetic nnU-Net data set: variants -> predictions -> QC data set.

Real nnU-Net planning, preprocessing, training and prediction on the CPU; a few iterations.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from monai_qc.phantom import write_nnunet_dataset
from monai_qc.qc_dataset import split_patients
from monai_qc.sampling import assign_bins

CLI = [sys.executable, "-m", "monai_qc"]
BINS = "0,0.5,1"


def _run(*args: str) -> str:
    run = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    dataset = write_nnunet_dataset(
        root / "Dataset901_Phantom", 8, seed=1, n_slices=5, size=(64, 64)
    )
    work, out = root / "work", root / "qc_data"
    _run(
        *("variants", "train", "--dataset", str(dataset), "--work", str(work), "-n", "2"),
        *("--seed", "3", "--width-divisors", "8", "--fractions", "0.5,1.0", "--epochs", "1", "2"),
        *("--iterations-per-epoch", "3", "--batch-size", "2", "--patch-size", "64", "64"),
    )
    _run("variants", "predict", "--work", str(work))
    _run(
        *("build-dataset", "--work", str(work), "--out", str(out), "--bins", BINS),
        *("--fractions", "0.5", "0.25", "0.25", "--balance-class", "LV"),
    )
    return {"dataset": dataset, "work": work, "out": out}


@pytest.mark.slow
def test_snapshots_follow_the_schedule(built: dict[str, Path]) -> None:
    variants = json.loads((built["work"] / "variants.json").read_text())
    results = built["work"] / "nnUNet_results" / "Dataset901_Phantom"
    for v in variants:
        folder = (
            results / f"nnUNetTrainerQCVariant__nnUNetPlans__qc_{v['name']}" / f"fold_{v['fold']}"
        )
        kept = sorted(p.name for p in folder.glob("checkpoint_epoch*.pth"))
        expected = [1] if v["num_epochs"] == 1 else [1, 2]
        assert kept == [f"checkpoint_epoch{e:04d}.pth" for e in expected]
    collected = sorted(p.stem for p in (built["work"] / "collected").glob("*.json"))
    assert len(collected) == sum(1 if v["num_epochs"] == 1 else 2 for v in variants)


@pytest.mark.slow
def test_manifest_scores_equal_an_independent_recomputation(built: dict[str, Path]) -> None:
    with open(built["out"] / "records.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    for row in rows:
        segmentation = np.load(built["work"] / "collected" / f"{row['model']}.npz")[row["case"]]
        truth = sitk.ReadImage(str(built["dataset"] / "labelsTr" / f"{row['case']}.nii.gz"))
        seg_image = sitk.GetImageFromArray(segmentation.astype(np.uint8))
        seg_image.CopyInformation(truth)
        overlap.Execute(sitk.Cast(truth, sitk.sitkUInt8), seg_image)
        for name, label in (("RV", 1), ("MYO", 2), ("LV", 3)):
            truth_has = (sitk.GetArrayFromImage(truth) == label).any()
            if truth_has and (segmentation == label).any():
                assert float(row[f"dsc_{name}"]) == pytest.approx(
                    overlap.GetDiceCoefficient(label), abs=1e-5
                )
                assert float(row[f"mvsf_{name}"]) == pytest.approx(
                    overlap.GetVolumeSimilarity(label), abs=1e-5
                )
            elif truth_has:
                assert float(row[f"dsc_{name}"]) == 0.0


@pytest.mark.slow
def test_balanced_and_split_by_patient(built: dict[str, Path]) -> None:
    with open(built["out"] / "records.csv") as f:
        rows = list(csv.DictReader(f))
    bins = [float(b) for b in BINS.split(",")]
    counts = np.bincount(assign_bins([float(r["dsc_LV"]) for r in rows], bins), minlength=2)
    populated = counts[counts > 0]
    assert populated.min() == populated.max()  # the same number from every populated bin
    side_of: dict[str, set[str]] = {}
    for r in rows:
        side_of.setdefault(r["patient"], set()).add(r["split"])
    assert all(len(sides) == 1 for sides in side_of.values())  # no patient on two sides
    manifest = json.loads((built["out"] / "manifest.json").read_text())
    data = {s: np.load(built["out"] / f"{s}.npz") for s in ("train", "val", "test")}
    for split, arrays in data.items():
        assert len(arrays["dsc"]) == manifest["samples_2d"][split]
        assert arrays["image"].shape[1:] == (128, 128)
        if len(arrays["dsc"]):
            assert arrays["dsc"].min() >= 0.0 and arrays["dsc"].max() <= 1.0
    assert sum(manifest["samples_3d"].values()) == len(rows)
    for split, patients in manifest["split_patients"].items():  # the records' own split
        assert patients == sorted({r["patient"] for r in rows if r["split"] == split})
        assert len(patients) == manifest["patients"][split]
    assert split_patients(built["out"]) == manifest["split_patients"]
    assert (built["out"] / "summary.md").is_file() and (
        built["out"] / "dsc_histogram.png"
    ).is_file()
