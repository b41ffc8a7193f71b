"""Slice flags on small structures: the ``min_slice_error`` rule against the DSC rule alone.

A slice is flagged for a class when its predicted DSC is below ``min_slice_dsc`` and, with
``min_slice_error`` > 0, its predicted disagreement reaches that fraction of the class's
segmented volume. On expert label maps every flag is false; on copies with one mid slice of
one class damaged in ways the QC network was not trained with (shifted 8-15 px, eroded or
dilated 3-5 px, half cut away, RV and LV swapped; seeded), a flag on the damaged slice is
right when its true DSC is below 0.3. The network is run once per volume; the rule is applied
to its outputs for each ``min_slice_error``.

Usage:
    python benchmarks/slice_flag_rule.py --dataset ../shared/data/Dataset027_ACDC \
        --dataset ../shared/data/Dataset028_ACDCtest
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from monai_qc.inference import QCPredictor, QCResult
from monai_qc.io import dataset_file_ending, labelled_case_ids, read_volume
from monai_qc.report import write_table_and_data

OUT = Path(__file__).parent / "results" / "slice_flag_rule.md"
FRACTIONS = (0.0, 0.01, 0.03, 0.05, 0.08)
DAMAGE = ("shift", "erode", "dilate", "half", "swap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, action="append", required=True, help="raw data set")
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def damage_slice(labels: np.ndarray, value: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of one slice's labels with class ``value`` damaged by ``kind``."""
    mask, out = labels == value, labels.copy()
    if kind == "shift":
        out[mask] = 0
        moved = np.roll(mask, int(rng.integers(8, 16)) * int(rng.choice([-1, 1])), rng.integers(2))
        out[moved & (out == 0)] = value
    elif kind == "erode":
        out[mask & ~ndimage.binary_erosion(mask, iterations=int(rng.integers(3, 6)))] = 0
    elif kind == "dilate":
        grown = ndimage.binary_dilation(mask, iterations=int(rng.integers(3, 6)))
        out[grown & (out == 0)] = value
    elif kind == "half":
        columns = np.nonzero(mask)[1]
        out[mask & (np.arange(labels.shape[1])[None] > np.median(columns))] = 0
    else:  # swap with the other cavity (RV 1 <-> LV 3)
        other = 3 if value == 1 else 1
        out[labels == value], out[labels == other] = other, value
    return out


def slice_dsc(seg: np.ndarray, truth: np.ndarray, value: int) -> float:
    """True DSC of one class on one slice (1 when both are empty)."""
    a, b = seg == value, truth == value
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def flags(result: QCResult, fraction: float) -> np.ndarray:
    """(S, K) flags of ``result`` with ``min_slice_error`` set to ``fraction``."""
    thresholds = replace(result.thresholds, min_slice_error=fraction)
    return replace(result, thresholds=thresholds).low_slices


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(2)
    predictor = QCPredictor.from_bundle(args.bundle)
    rng = np.random.default_rng(args.seed)
    expert: list[QCResult] = []
    damaged: list[tuple[QCResult, int, int, float]] = []
    for dataset in args.dataset:
        ending = dataset_file_ending(dataset)
        for case in tqdm(labelled_case_ids(dataset), desc=dataset.name, unit="case"):
            image, spacing, _ = read_volume(dataset / "imagesTr" / f"{case}_0000{ending}")
            truth = read_volume(dataset / "labelsTr" / f"{case}{ending}")[0].astype(np.int32)
            expert.append(predictor.predict(image, truth, spacing, case))
            value = int(rng.integers(1, 4))
            held = np.flatnonzero((truth == value).any(axis=(1, 2)))
            index = int(rng.choice(held[1:-1])) if len(held) > 2 else int(held[0])
            seg = truth.copy()
            seg[index] = damage_slice(truth[index], value, str(rng.choice(DAMAGE)), rng)
            if (seg[index] == value).any():  # a dropped class is the class_gap check's job
                result = predictor.predict(image, seg, spacing, case)
                column = sorted(predictor.labels.values()).index(value) + 1
                true = slice_dsc(seg[index], truth[index], value)
                damaged.append((result, index, column, true))
    rows: dict[str, Any] = {}
    failed = [(r, i, k) for r, i, k, true in damaged if true < 0.3]
    for fraction in FRACTIONS:
        rows[f"{fraction:g}"] = {
            "expert_volumes_flagged": int(sum(flags(r, fraction).any() for r in expert)),
            "expert_slices_flagged": int(sum(flags(r, fraction).sum() for r in expert)),
            "failed_slices_flagged": int(sum(flags(r, fraction)[i, k] for r, i, k in failed)),
        }
    lines = [
        "# Slice flags on small structures: min_slice_error",
        "",
        f"Bundle `{predictor.name}` (min_slice_dsc {predictor.thresholds.min_slice_dsc}); "
        f"{len(expert)} expert label maps of {', '.join(d.name for d in args.dataset)}; "
        f"{len(damaged)} copies with one mid slice damaged, {len(failed)} of them with a true "
        "slice DSC below 0.3 (seed "
        f"{args.seed}). From `python benchmarks/slice_flag_rule.py "
        + " ".join(f"--dataset {d}" for d in args.dataset)
        + "`.",
        "",
        "| min_slice_error | expert volumes with a flag | flagged expert slices "
        "| damaged slices (true DSC < 0.3) flagged |",
        "|---|---|---|---|",
    ]
    for fraction, row in rows.items():
        lines.append(
            f"| {fraction} | {row['expert_volumes_flagged']} of {len(expert)} | "
            f"{row['expert_slices_flagged']} | {row['failed_slices_flagged']} of {len(failed)} |"
        )
    text = "\n".join(lines) + "\n"
    write_table_and_data(args.out, text, {"rows": rows, "n_expert": len(expert)})
    print(text)


if __name__ == "__main__":
    main()
