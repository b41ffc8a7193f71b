"""How well the missed truth of a blanked slice is estimated, and what it does to the 3D DSC.

For every expert label map of nnU-Net raw data sets, every class and every slice strictly
between the class's first and last slice, the class is removed from that one slice (a
segmentation that missed the structure there, otherwise perfect). :func:`gap_truth_area`
estimates the missed area by interpolating the neighbouring slices; the table compares it
with the true area, and compares the 2D_R 3D DSC, computed with the true scores of the intact
slices, with and without the estimate against the true 3D DSC of the damaged map. No network
is involved: this isolates the reconstruction.

Usage:
    python benchmarks/missed_slice_reconstruction.py \
        --dataset ../shared/data/Dataset027_ACDC --dataset ../shared/data/Dataset028_ACDCtest
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from monai_qc.io import (
    dataset_file_ending,
    label_map_from_dataset_json,
    labelled_case_ids,
    read_volume,
)
from monai_qc.reconstruction import gap_truth_area, reconstruct_volume_dsc
from monai_qc.report import write_table_and_data

OUT = Path(__file__).parent / "results" / "missed_slice_reconstruction.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, action="append", required=True, help="raw data set")
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def blanked_slice_rows(truth_area: np.ndarray) -> list[dict[str, float]]:
    """One row per class and interior slice of one volume: area and 3D DSC errors.

    Args:
        truth_area: (S, K) expert area per slice of each foreground class.
    """
    rows = []
    n_slices, n_classes = truth_area.shape
    for k in range(n_classes):
        present = np.flatnonzero(truth_area[:, k] > 0)
        for i in present[1:-1]:
            seg = truth_area.copy()
            seg[i, k] = 0
            ones, zeros = np.ones_like(seg), np.zeros_like(seg)  # true scores: perfect elsewhere
            total = truth_area[:, k].sum()
            true_dsc = 2 * (total - truth_area[i, k]) / (2 * total - truth_area[i, k])
            missed = gap_truth_area(seg)
            plain = reconstruct_volume_dsc(ones, zeros, seg)[k]
            fixed = reconstruct_volume_dsc(ones, zeros, seg, missed_area=missed)[k]
            rows.append(
                {
                    "class": k,
                    "true_area": float(truth_area[i, k]),
                    "estimated_area": float(missed[i, k]),
                    "true_dsc": float(true_dsc),
                    "dsc_without": float(plain),
                    "dsc_with": float(fixed),
                }
            )
    return rows


def summarise(rows: list[dict[str, float]], names: list[str]) -> tuple[str, dict[str, Any]]:
    """Markdown table and data per class."""
    lines = [
        "| class | blanked slices | area: median relative error | area: 90th percentile "
        "| true 3D DSC (mean) | 2D_R without estimate: MAE | 2D_R with estimate: MAE "
        "| with estimate: max error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    data: dict[str, Any] = {}
    for k, name in enumerate(names):
        sel = [r for r in rows if r["class"] == k]
        if not sel:
            continue
        rel = np.array([abs(r["estimated_area"] - r["true_area"]) / r["true_area"] for r in sel])
        true = np.array([r["true_dsc"] for r in sel])
        without = np.abs(np.array([r["dsc_without"] for r in sel]) - true)
        with_ = np.abs(np.array([r["dsc_with"] for r in sel]) - true)
        data[name] = {
            "n": len(sel),
            "area_rel_error_median": float(np.median(rel)),
            "area_rel_error_p90": float(np.percentile(rel, 90)),
            "true_dsc_mean": float(true.mean()),
            "mae_without": float(without.mean()),
            "mae_with": float(with_.mean()),
            "max_error_with": float(with_.max()),
        }
        d = data[name]
        lines.append(
            f"| {name} | {d['n']} | {d['area_rel_error_median']:.1%} | "
            f"{d['area_rel_error_p90']:.1%} | {d['true_dsc_mean']:.3f} | "
            f"{d['mae_without']:.4f} | {d['mae_with']:.4f} | {d['max_error_with']:.4f} |"
        )
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows: list[dict[str, float]] = []
    names: list[str] = []
    sources = []
    for dataset in args.dataset:
        labels = label_map_from_dataset_json(dataset / "dataset.json")
        names = names or list(labels)
        ending = dataset_file_ending(dataset)
        cases = labelled_case_ids(dataset)
        sources.append(f"{dataset.name} ({len(cases)} label maps)")
        for case in tqdm(cases, desc=dataset.name, unit="case"):
            seg = read_volume(dataset / "labelsTr" / f"{case}{ending}")[0]
            area = np.stack([(seg == v).sum(axis=(1, 2)) for v in labels.values()], axis=1)
            rows.extend(blanked_slice_rows(area.astype(np.float64)))
    table, data = summarise(rows, names)
    text = (
        "# Missed truth of a blanked slice: interpolation and the 2D_R 3D DSC\n\n"
        f"Expert label maps of {', '.join(sources)}; each class removed from one slice between "
        "its first and last slice at a time, the rest left intact. The 2D_R DSC uses the true "
        "scores of the intact slices, so its error is the reconstruction's alone. From "
        "`python benchmarks/missed_slice_reconstruction.py "
        + " ".join(f"--dataset {d}" for d in args.dataset)
        + "`.\n\n"
        + table
        + "\n"
    )
    write_table_and_data(args.out, text, data)
    print(text)


if __name__ == "__main__":
    main()
