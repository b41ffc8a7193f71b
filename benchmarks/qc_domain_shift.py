"""How the QC accuracy holds up when the images look like another scanner's.

The shipped network has only seen ACDC (two Siemens scanners of one centre). Other centres
differ in contrast, noise, coil shading and resolution. This benchmark takes the held-out
test records of a QC data set (nnU-Net variant segmentations of the test patients, with their
true 3D DSC), alters only the image with a MONAI transform per shift, keeps the segmentation
(so the true DSC is unchanged) and measures the predicted 3D DSC against the truth: MAE, mean
signed error, Pearson r, good/bad accuracy, and how often the gate fails good and bad volumes.
Writes a markdown table and a JSON.

Usage:
    python benchmarks/qc_domain_shift.py --dataset Dataset027_ACDC --data QC_DATA \
        --collected WORK/collected [--bundle PATH] [--split test] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    AdjustContrast,
    GaussianSmooth,
    GibbsNoise,
    RandBiasField,
    RandRicianNoise,
)
from tqdm import tqdm

from monai_qc.bundle import resolve_bundle
from monai_qc.evaluation import agreement
from monai_qc.inference import QCPredictor
from monai_qc.io import dataset_file_ending, read_volume
from monai_qc.report import write_table_and_data

logger = logging.getLogger("qc_domain_shift")

OUT = Path(__file__).parent / "results" / "qc_domain_shift.md"
GOOD = 0.7  # a class is good at true 3D DSC >= 0.7 (the evaluation's threshold)

Shift = Callable[[np.ndarray], np.ndarray]


def _channel_first(transform: Callable[[Any], Any]) -> Shift:
    """Apply a MONAI array transform to an (S, H, W) volume as one channel."""

    def apply(volume: np.ndarray) -> np.ndarray:
        out = transform(torch.as_tensor(volume[None], dtype=torch.float32))
        return np.asarray(out[0], dtype=np.float32)

    return apply


def shifts(seed: int = 0) -> dict[str, tuple[str, Shift]]:
    """Name -> (description, image transform) of each simulated scanner difference."""
    shading = {c: RandBiasField(coeff_range=(-c, c), prob=1.0) for c in (0.1, 0.2)}
    noise = {
        sd: RandRicianNoise(prob=1.0, std=sd, relative=True, sample_std=False) for sd in (0.1, 0.25)
    }
    for transform in (*shading.values(), *noise.values()):
        transform.set_random_state(seed)
    table: list[tuple[str, str, Any]] = [
        ("none", "the ACDC image as acquired", None),
        ("gamma 0.5", "brighter mid-tones (MONAI AdjustContrast, gamma 0.5)", AdjustContrast(0.5)),
        ("gamma 2", "darker mid-tones (AdjustContrast, gamma 2)", AdjustContrast(2.0)),
        ("shading 0.1", "smooth random multiplicative field as coils give (RandBiasField, "
         "coefficients within +-0.1): intensity varies about 1.4-fold over the heart region",
         shading[0.1]),
        ("shading 0.2", "the same with coefficients within +-0.2: about 2-fold", shading[0.2]),
        ("noise 10 %", "Rician noise, sd 10 % of the image sd (RandRicianNoise)", noise[0.1]),
        ("noise 25 %", "Rician noise, sd 25 % of the image sd", noise[0.25]),
        ("blur 1 px", "in-plane Gaussian blur, sigma 1 pixel (GaussianSmooth): lower resolution",
         GaussianSmooth(sigma=(0.0, 1.0, 1.0))),
        ("blur 2 px", "in-plane Gaussian blur, sigma 2 pixels",
         GaussianSmooth(sigma=(0.0, 2.0, 2.0))),
        ("Gibbs ringing", "k-space truncation ringing (GibbsNoise, alpha 0.5)",
         GibbsNoise(alpha=0.5)),
    ]  # fmt: skip
    return {
        name: (text, (lambda v: v) if transform is None else _channel_first(transform))
        for name, text, transform in table
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw data set folder")
    p.add_argument("--data", type=Path, required=True, help="QC data set folder (records.csv)")
    p.add_argument("--collected", type=Path, required=True, help="collected segmentations")
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--split", default="test", help="records of this split of the QC data set")
    p.add_argument("--seed", type=int, default=0, help="seed of the random shifts")
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def split_records(data: Path, split: str) -> list[dict[str, str]]:
    """The rows of ``records.csv`` in ``split``."""
    with open(data / "records.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["split"] == split]
    if not rows:
        raise SystemExit(f"{data / 'records.csv'}: no records in split {split!r}")
    return rows


def scores(true: np.ndarray, pred: np.ndarray, failed: np.ndarray) -> dict[str, Any]:
    """Per-class agreement (R, K arrays; the evaluation's measures on the volumes a 3D DSC is
    reconstructed for) with the mean signed error, and the gate's fail rates on good / bad
    volumes."""
    rows = [agreement(pred[:, j], true[:, j], GOOD) for j in range(true.shape[1])]
    error = pred - true
    good_volume = (true >= GOOD).all(axis=1)
    return {
        "n": [row.n for row in rows],
        "mae": [row.mae for row in rows],
        "bias": [float(np.nanmean(error[:, j])) for j in range(true.shape[1])],
        "r": [row.pearson_r for row in rows],
        "accuracy": [row.accuracy for row in rows],
        "good_volumes": int(good_volume.sum()),
        "good_failed": float(failed[good_volume].mean()) if good_volume.any() else None,
        "bad_failed": float(failed[~good_volume].mean()) if (~good_volume).any() else None,
    }


def markdown(results: dict[str, Any]) -> str:
    """Tables of the 3D accuracy and the gate per shift."""
    classes = results["classes"]
    head = f"({' / '.join(classes)})"
    lines = [
        "# QC accuracy on images altered like another scanner's",
        "",
        f"Bundle: `{results['bundle']}`. {results['n_records']} {results['split']}-split "
        f"volumes of the QC data set (nnU-Net variant segmentations of {results['n_patients']} "
        "held-out patients). Only the image is altered; the segmentation and its true 3D DSC "
        "stay the same. Predicted 3D DSC (2D_R) against the true one.",
        "",
        f"| shift | MAE {head} | mean error {head} | r {head} | accuracy {head} | "
        "gate fails good / bad volumes |",
        "|---|---|---|---|---|---|",
    ]

    def cells(values: list[float], fmt: str) -> str:
        return " / ".join(format(v, fmt) for v in values)

    for name, row in results["shifts"].items():
        rates = (row["good_failed"], row["bad_failed"])
        gate = " / ".join("-" if rate is None else f"{rate:.0%}" for rate in rates)
        lines.append(
            f"| {name} | {cells(row['mae'], '.3f')} | {cells(row['bias'], '+.3f')} | "
            f"{cells(row['r'], '.3f')} | {cells(row['accuracy'], '.1%')} | {gate} |"
        )
    lines += ["", "Shifts:", ""]
    lines += [f"- {name}: {text}" for name, text in results["descriptions"].items()]
    first = next(iter(results["shifts"].values()))
    counts = " / ".join(str(n) for n in first["n"])
    lines += [
        "",
        f"Volumes with a reconstructed 3D DSC ({' / '.join(classes)}): {counts}; a class the "
        "segmentation holds on no slice has none (the gate rates its slices instead).",
        f"Good volumes: every class at true 3D DSC >= {GOOD} ({first['good_volumes']} of "
        f"{results['n_records']}); the gate uses the bundle's thresholds.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Predict every record's 3D DSC under every shift; write the tables."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    bundle = resolve_bundle(args.bundle)
    predictor = QCPredictor.from_bundle(bundle)
    classes = list(predictor.labels)
    rows = split_records(args.data, args.split)
    true = np.array([[float(row[f"dsc_{c}"]) for c in classes] for row in rows])
    ending = dataset_file_ending(args.dataset)
    named = shifts(args.seed)
    pred = {name: np.zeros_like(true) for name in named}
    failed = {name: np.zeros(len(rows), dtype=bool) for name in named}
    for i, row in enumerate(tqdm(rows, desc="records")):
        image, spacing, _ = read_volume(args.dataset / "imagesTr" / f"{row['case']}_0000{ending}")
        with np.load(args.collected / f"{row['model']}.npz") as segmentations:
            seg = segmentations[row["case"]]
        for name, (_, shift) in named.items():
            result = predictor.predict(shift(image.astype(np.float32)), seg, spacing, row["case"])
            pred[name][i] = result.volume_dsc[1:]
            failed[name][i] = result.verdict == "fail"
    results = {
        "bundle": str(args.bundle or bundle.name),
        "split": args.split,
        "n_records": len(rows),
        "n_patients": len({row["patient"] for row in rows}),
        "classes": classes,
        "seed": args.seed,
        "descriptions": {name: text for name, (text, _) in named.items()},
        "shifts": {name: scores(true, pred[name], failed[name]) for name in named},
    }
    write_table_and_data(args.out, markdown(results), results)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
