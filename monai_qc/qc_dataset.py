"""The QC data set: collected segmentations -> balanced, patient-split, compact training data.

Input: a folder of ``<model>.json`` / ``<model>.npz`` pairs written by
:class:`nnunet_hooks.true_scores.TrueScoreCollector`, and the raw data set for the images.
Output folder:

- ``train.npz``, ``val.npz``, ``test.npz``: one row per 2D sample (a slice of one
  segmentation): ``image`` (N, H, W) float16 after crop + CLAHE + resize, ``seg`` (N, H, W)
  uint8 class indices, ``truth`` (N, H, W) the expert labels cropped and resized like ``seg``
  (what synthetic damage during training scores against), true ``dsc`` and ``mvsf`` (N, K)
  (both-empty classes: DSC 1, MVSF 0),
  ``seg_area`` and ``truth_area`` (N, K) pixel counts at the original resolution, ``record``
  (N,) and ``slice`` (N,).
- ``records.csv``: one row per 3D segmentation (record): model, case, patient, pathology
  group, split, whether the case trained the model, and its true 3D DSC/MVSF per class.
- ``manifest.json``: classes, balancing settings, bin counts, sample counts and the patients
  of each split.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from monai_qc.io import dataset_file_ending, read_volume
from monai_qc.report import atomic_write_text
from monai_qc.sampling import DEFAULT_BINS, assign_bins, balance_by_bins, split_by_patient
from monai_qc.transforms import QCSliceInputs, crop_to_box, resize_slices

__all__ = [
    "SPLITS",
    "Record",
    "build_qc_dataset",
    "load_records",
    "split_patients",
    "training_targets",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Record:
    """One 3D segmentation of one case by one model, with its true scores."""

    model: dict[str, Any]
    case: str
    patient: str
    in_training: bool
    spacing: tuple[float, float, float]
    volume_dsc: np.ndarray
    volume_mvsf: np.ndarray
    slice_dsc: np.ndarray
    slice_mvsf: np.ndarray
    seg_area: np.ndarray
    truth_area: np.ndarray


def _array(values: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def load_records(collected: Path) -> tuple[list[Record], list[int]]:
    """Every record of a collection folder, and the class values (background first)."""
    records: list[Record] = []
    class_values: list[int] = []
    for path in sorted(collected.glob("*.json")):
        document = json.loads(path.read_text())
        class_values = document["class_values"]
        for c in document["cases"]:
            volume = _array([c["volume"]["dsc"], c["volume"]["mvsf"]])
            slices = c["slices"]
            records.append(
                Record(
                    document["model"],
                    c["case"],
                    c["patient"],
                    bool(c["in_training"]),
                    tuple(c["spacing"]),
                    volume[0],
                    volume[1],
                    _array(slices["dsc"]),
                    _array(slices["mvsf"]),
                    _array(slices["seg_area"]).astype(np.int64),
                    _array(slices["truth_area"]).astype(np.int64),
                )  # fmt: skip
            )
    if not records:
        raise FileNotFoundError(f"{collected}: no collected segmentations (*.json)")
    return records, class_values


def training_targets(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice DSC and MVSF targets: a class absent from both maps counts as agreement."""
    both_empty = (record.seg_area == 0) & (record.truth_area == 0)
    dsc = np.where(both_empty, 1.0, record.slice_dsc)
    mvsf = np.where(both_empty, 0.0, record.slice_mvsf)
    return dsc, mvsf


def split_patients(data: Path) -> dict[str, list[str]]:
    """Sorted patient IDs of each split of a built QC data set, from its ``records.csv``."""
    sides: dict[str, set[str]] = {split: set() for split in SPLITS}
    with open(data / "records.csv", newline="") as f:
        for row in csv.DictReader(f):
            sides[row["split"]].add(row["patient"])
    return {split: sorted(patients) for split, patients in sides.items()}


def _pathology_groups(dataset: Path) -> dict[str, str]:
    table = dataset / "cases.csv"
    if not table.is_file():
        return {}
    with open(table) as f:
        return {row["case"]: row.get("group", "") for row in csv.DictReader(f)}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def build_qc_dataset(
    collected: Path,
    dataset: Path,
    out_dir: Path,
    class_names: Sequence[str],
    balance_class: str,
    bins: Sequence[float] = DEFAULT_BINS,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    spatial_size: tuple[int, int] = (128, 128),
    per_bin: int | None = None,
) -> dict[str, Any]:
    """Balance, split and write the QC data set; return the manifest.

    Args:
        collected: folder of collected segmentations and true scores.
        dataset: nnU-Net raw data set holding the images (imagesTr).
        out_dir: output folder.
        class_names: names of the class values, background first.
        balance_class: class whose true 3D DSC is balanced over ``bins``.
        bins: DSC bin edges.
        fractions: train / validation / test fractions of the patients.
        seed: seed of the balancing and of the split.
        spatial_size: in-plane size of the stored slices.
        per_bin: volumes taken from each bin (default: the smallest bin's count, as in the
            method; a larger number keeps every volume of the scarcer bins).
    """
    records, class_values = load_records(collected)
    if len(class_names) != len(class_values):
        raise ValueError(f"{len(class_names)} class names for class values {class_values}")
    column = list(class_names).index(balance_class)
    usable = [r for r in records if r.seg_area[:, 1:].sum() > 0]
    logger.info("%d records, %d with a non-empty segmentation", len(records), len(usable))
    values = np.array([r.volume_dsc[column] for r in usable])
    chosen = balance_by_bins(values, bins, seed, per_bin)
    selected = [usable[i] for i in chosen]
    split = split_by_patient([r.patient for r in selected], values[chosen], fractions, bins, seed)
    groups = _pathology_groups(dataset)
    ending = dataset_file_ending(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = QCSliceInputs(len(class_values), spatial_size)
    lookup = np.zeros(max(class_values) + 1, dtype=np.uint8)
    lookup[class_values] = np.arange(len(class_values))
    images: dict[str, np.ndarray] = {}
    truths: dict[str, np.ndarray] = {}
    archives: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    samples: dict[int, dict[str, list[np.ndarray]]] = {s: {} for s in range(3)}
    for record_id, (record, side) in enumerate(
        tqdm(list(zip(selected, split, strict=True)), desc="QC samples", unit="volume")
    ):
        name = record.model["name"]
        if name not in archives:
            archives[name] = np.load(collected / f"{name}.npz")
        if record.case not in images:
            images[record.case] = read_volume(dataset / "imagesTr" / f"{record.case}_0000{ending}")[
                0
            ]
        if record.case not in truths:
            labels = read_volume(dataset / "labelsTr" / f"{record.case}{ending}")[0]
            truths[record.case] = lookup[labels.astype(np.int64)]
        segmentation = lookup[archives[name][record.case]]
        image_t, seg_t = transform.prepare(images[record.case], segmentation)
        truth = crop_to_box(truths[record.case], transform.last_box, 0).astype(np.float32)
        truth_t = resize_slices(truth, spatial_size, labels=True)
        dsc, mvsf = training_targets(record)
        n = dsc.shape[0]
        for key, value in (
            ("image", image_t.numpy().astype(np.float16)),
            ("seg", seg_t.numpy().astype(np.uint8)),
            ("truth", truth_t.numpy().astype(np.uint8)),
            ("dsc", dsc.astype(np.float32)),
            ("mvsf", mvsf.astype(np.float32)),
            ("seg_area", record.seg_area.astype(np.int32)),
            ("truth_area", record.truth_area.astype(np.int32)),
            ("record", np.full(n, record_id, dtype=np.int32)),
            ("slice", np.arange(n, dtype=np.int16)),
        ):
            samples[int(side)].setdefault(key, []).append(value)
        row = {
            "record": record_id, "split": SPLITS[side], "model": name,
            "variant": record.model.get("variant", ""), "epoch": record.model.get("epoch", ""),
            "case": record.case, "patient": record.patient, "group": groups.get(record.case, ""),
            "in_training": int(record.in_training), "n_slices": n,
        }  # fmt: skip
        for j, cls in enumerate(class_names):
            row[f"dsc_{cls}"] = round(float(record.volume_dsc[j]), 6)
            row[f"mvsf_{cls}"] = round(float(record.volume_mvsf[j]), 6)
        rows.append(row)
    for side, arrays in samples.items():
        _write_npz(
            out_dir / f"{SPLITS[side]}.npz", {k: np.concatenate(v) for k, v in arrays.items()}
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "records.csv", buffer.getvalue())
    sides = [[r for r, x in zip(selected, split, strict=True) if x == s] for s in range(3)]
    manifest = {
        "classes": list(class_names),
        "class_values": class_values,
        "balance_class": balance_class,
        "bins": list(bins),
        "per_bin": per_bin,
        "bin_counts_before": np.bincount(assign_bins(values, bins) + 1, minlength=len(bins))[
            1:
        ].tolist(),
        "fractions": list(fractions),
        "seed": seed,
        "spatial_size": list(spatial_size),
        "n_records_collected": len(records),
        "n_records_usable": len(usable),
        "n_models": len({r.model["name"] for r in records}),
        "samples_3d": {SPLITS[s]: len(sides[s]) for s in range(3)},
        "samples_2d": {SPLITS[s]: sum(r.slice_dsc.shape[0] for r in sides[s]) for s in range(3)},
        "patients": {SPLITS[s]: len({r.patient for r in sides[s]}) for s in range(3)},
        # The split follows the balanced DSC bins, so it changes with the collected
        # segmentations; the lists tell which patients a model trained on this set has seen.
        "split_patients": {SPLITS[s]: sorted({r.patient for r in sides[s]}) for s in range(3)},
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1))
    return manifest
