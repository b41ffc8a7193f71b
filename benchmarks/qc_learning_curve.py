"""How the QC error falls with the number of training patients (a learning curve).

Trains the shipped network's recipe (``monai-qc train --networks resnet2d --epochs 40
--damage-probability 0.3 --select-by val_dsc_mae``) on random subsets of the QC data set's
training patients (all their variant segmentations), then rates the validation and test
splits, which stay whole: 3D (2D_R) DSC MAE and slice DSC MAE per class. A power law fitted
to the mean 3D MAE says roughly how many training patients a target error would take.

Each subset's run folder is resumable; ``--full-run`` reuses a run trained on every training
patient (its ``resnet2d/best.pt``) instead of training that point again.

Usage:
    python benchmarks/qc_learning_curve.py --data QC_DATA --work WORK \
        [--patients 16,32,64] [--full-run RUN] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_qc.bundle import read_state_dict
from monai_qc.evaluate_run import predict_2d, reconstruct_by_record
from monai_qc.networks import build_qc_network
from monai_qc.report import write_table_and_data
from monai_qc.training import QCSamples, record_targets, samples_from_arrays

logger = logging.getLogger("qc_learning_curve")
OUT = Path(__file__).parent / "results" / "qc_learning_curve.md"
RECIPE = ["--networks", "resnet2d", "--epochs", "40", "--damage-probability", "0.3",
          "--select-by", "val_dsc_mae"]  # fmt: skip
SPLITS = ("val", "test")
TARGET_3D_MAE = 0.03


def training_patients(data: Path) -> dict[str, list[int]]:
    """Record ids of each training patient of a QC data set."""
    patients: dict[str, list[int]] = {}
    with open(data / "records.csv") as f:
        for row in csv.DictReader(f):
            if row["split"] == "train":
                patients.setdefault(row["patient"], []).append(int(row["record"]))
    return patients


def write_subset(data: Path, folder: Path, records: set[int]) -> int:
    """A QC data set folder whose training split holds only ``records``; returns its slices.

    Validation and test splits, records and manifest are links to the full data set's files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("val.npz", "test.npz", "records.csv", "manifest.json"):
        link = folder / name
        if not link.exists():
            link.symlink_to((data / name).resolve())
    train = folder / "train.npz"
    with np.load(data / "train.npz") as arrays:
        keep = np.isin(arrays["record"], sorted(records))
        if not train.exists():
            partial = folder / "train.partial.npz"
            np.savez(partial, **{key: arrays[key][keep] for key in arrays.files})
            partial.replace(train)
    return int(keep.sum())


def train(subset: Path, run: Path) -> None:
    """Run the recipe's ``monai-qc train`` on a subset (resumes a stopped run)."""
    command = [sys.executable, "-m", "monai_qc", "train", "--data", str(subset),
               "--run", str(run), *RECIPE]  # fmt: skip
    logger.info("%s", " ".join(command))
    subprocess.run(command, check=True)


@dataclass(frozen=True)
class RatedSplit:
    """A split to rate: its samples, which classes each slice holds, and true 3D DSC."""

    samples: QCSamples
    present: np.ndarray  # (N, K): the class is in the segmentation or the expert labels
    record_ids: np.ndarray
    true_3d: np.ndarray  # (R, K)


def load_rated_splits(data: Path, classes: list[str]) -> dict[str, RatedSplit]:
    """The validation and test splits, read once for every point of the curve."""
    targets = record_targets(data / "records.csv", classes)
    splits = {}
    for split in SPLITS:
        with np.load(data / f"{split}.npz") as arrays:
            samples = samples_from_arrays({key: arrays[key] for key in arrays.files})
            present = (arrays["truth_area"] > 0) | (samples.seg_area > 0)
        ids = np.unique(samples.record)
        splits[split] = RatedSplit(samples, present, ids, np.stack([targets[int(r)] for r in ids]))
    return splits


def rate_splits(weights: Path, splits: dict[str, RatedSplit], classes: list[str]) -> dict[str, Any]:
    """3D and slice DSC MAE per class of the validation and test splits."""
    network = build_qc_network("resnet2d", len(classes))
    network.load_state_dict(read_state_dict(weights))
    network.eval()
    k = len(classes)
    out: dict[str, Any] = {}
    for name, split in splits.items():
        samples, present = split.samples, split.present
        pred = predict_2d(network, samples)
        pred_3d = reconstruct_by_record(samples, pred[:, :k], pred[:, k:], split.record_ids)
        true_2d = samples.dsc.numpy()
        out[name] = {
            classes[c]: {
                "mae_3d": float(np.nanmean(np.abs(pred_3d[:, c] - split.true_3d[:, c]))),
                "mae_2d": float(np.abs(pred[present[:, c], c] - true_2d[present[:, c], c]).mean()),
            }
            for c in range(1, k)
        }
    return out


def power_law(points: list[dict[str, Any]], classes: list[str]) -> dict[str, float] | None:
    """Fit mean 3D MAE (val and test, all classes) = a * patients^-b; patients for the target.

    None with fewer than two subset sizes.
    """
    if len({p["patients"] for p in points}) < 2:
        return None
    n = np.array([p["patients"] for p in points], dtype=float)
    mae = np.array(
        [np.mean([p["splits"][s][c]["mae_3d"] for s in SPLITS for c in classes]) for p in points]
    )
    slope, intercept = np.polyfit(np.log(n), np.log(mae), 1)
    b, a = -float(slope), float(np.exp(intercept))
    patients = (a / TARGET_3D_MAE) ** (1 / b) if b > 0 else float("inf")
    return {"a": a, "b": b, "patients_for_target": float(patients)}


def markdown(results: dict[str, Any], fg: list[str]) -> str:
    """The learning-curve table."""
    cls = " / ".join(fg)
    lines = [
        "# QC error against the number of training patients",
        "",
        f"QC data set: `{results['data']}`. Recipe: `monai-qc train {' '.join(RECIPE)}` on a "
        "random subset of the training patients (seed 0; all their variant segmentations). "
        "Validation and test splits whole. MAE per class "
        f"({cls}).",
        "",
        "| training patients | volumes | slices | best epoch | s per epoch | val 3D MAE | "
        "test 3D MAE | test slice MAE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        val_3d, test_3d, test_2d = (
            " / ".join(f"{p['splits'][split][c][key]:.3f}" for c in fg)
            for split, key in (("val", "mae_3d"), ("test", "mae_3d"), ("test", "mae_2d"))
        )
        lines.append(
            f"| {p['patients']} | {p['volumes']} | {p['slices']} | {p['best_epoch']} | "
            f"{p['epoch_s']:.0f} | {val_3d} | {test_3d} | {test_2d} |"
        )
    fit = results["power_law"]
    if fit is None:
        return "\n".join([*lines, ""])
    lines += [
        "",
        f"Power law of the mean 3D MAE (val and test, {cls}): {fit['a']:.3f} x patients^-"
        f"{fit['b']:.3f}; a mean 3D MAE of {TARGET_3D_MAE} would take about "
        f"{fit['patients_for_target']:.0f} training patients at this recipe, if the trend held.",
        "One training run (seed 0) per point; s per epoch: the median epoch's wall time on 2 CPU "
        "cores (training and validation).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="QC data set folder")
    p.add_argument("--work", type=Path, required=True, help="folder for subsets and their runs")
    p.add_argument("--patients", default="16,32,64", help="comma-separated subset sizes")
    p.add_argument("--full-run", type=Path, default=None,
                   help="run trained on all training patients, reused for that point")  # fmt: skip
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    classes = json.loads((args.data / "manifest.json").read_text())["classes"]
    patients = training_patients(args.data)
    rated = load_rated_splits(args.data, classes)
    order = list(np.random.default_rng(0).permutation(sorted(patients)))
    points = []
    for n in sorted(int(x) for x in args.patients.split(",")):
        chosen = order[:n]
        records = {r for name in chosen for r in patients[name]}
        if n >= len(patients) and args.full_run is not None:
            run = args.full_run
            with np.load(args.data / "train.npz") as arrays:
                slices = len(arrays["record"])
        else:
            subset = args.work / f"patients_{n:03d}"
            slices = write_subset(args.data, subset / "data", records)
            run = subset / "run"
            train(subset / "data", run)
        best = json.loads((run / "resnet2d" / "best.json").read_text())
        history = json.loads((run / "resnet2d" / "history.json").read_text())
        points.append({
            "patients": n, "volumes": len(records), "slices": slices,
            "best_epoch": best.get("epoch"),
            "epoch_s": float(np.median([epoch["seconds"] for epoch in history])),
            "splits": rate_splits(run / "resnet2d" / "best.pt", rated, classes),
        })  # fmt: skip
        logger.info("%d patients: %s", n, points[-1]["splits"])
    results = {"data": str(args.data), "recipe": RECIPE, "points": points}
    results["power_law"] = power_law(points, classes[1:])
    write_table_and_data(args.out, markdown(results, classes[1:]), results)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
