"""A readable summary of a QC data set: counts per split and the true-DSC histogram per class."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from monai_qc.report import atomic_write_text
from monai_qc.sampling import assign_bins

__all__ = ["summarize_qc_dataset"]


def _histogram_png(
    rows: list[dict[str, str]], classes: list[str], bins: list[float], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 3.2), sharey=True)
    for ax, cls in zip(np.atleast_1d(axes), classes, strict=True):
        values = np.array([float(r[f"dsc_{cls}"]) for r in rows])
        ax.hist(values, bins=np.linspace(0, 1, 41), color="#4477aa")
        for edge in bins:
            ax.axvline(edge, color="#aa3377", lw=0.6, ls="--")
        ax.set_title(f"{cls}: true 3D DSC")
        ax.set_xlabel("DSC")
    np.atleast_1d(axes)[0].set_ylabel("segmentations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize_qc_dataset(out_dir: Path, timings: dict[str, float] | None = None) -> str:
    """Write ``summary.md`` and ``dsc_histogram.png`` next to a QC data set; return the text."""
    manifest: dict[str, Any] = json.loads((out_dir / "manifest.json").read_text())
    with open(out_dir / "records.csv") as f:
        rows = list(csv.DictReader(f))
    classes = [c for c in manifest["classes"][1:]]
    bins = manifest["bins"]
    labels = [f"[{lo:g}, {hi:g}]" for lo, hi in zip(bins[:-1], bins[1:], strict=True)]
    lines = [
        "# QC data set",
        "",
        f"- segmentation models (checkpoints): {manifest['n_models']}",
        f"- 3D segmentations collected: {manifest['n_records_collected']} "
        f"({manifest['n_records_usable']} not empty)",
        f"- balanced on the true 3D DSC of {manifest['balance_class']}; bins {', '.join(labels)}; "
        f"per bin: {manifest.get('per_bin') or 'the smallest bin count'}",
        "",
        "| split | patients | 3D samples | 2D samples |",
        "|---|---|---|---|",
    ]
    for split in ("train", "val", "test"):
        lines.append(
            f"| {split} | {manifest['patients'][split]} | {manifest['samples_3d'][split]} "
            f"| {manifest['samples_2d'][split]} |"
        )
    lines += ["", "True 3D DSC of the balanced set per bin (all splits):", ""]
    lines += ["| class | " + " | ".join(labels) + " | > 0.9 |", "|---" * (len(labels) + 2) + "|"]
    for cls in classes:
        values = np.array([float(r[f"dsc_{cls}"]) for r in rows])
        counts = np.bincount(assign_bins(values, bins) + 1, minlength=len(bins))[1:]
        lines.append(
            f"| {cls} | " + " | ".join(str(c) for c in counts) + f" | {int((values > 0.9).sum())} |"
        )
    before = manifest["bin_counts_before"]
    lines += ["", f"Before balancing ({manifest['balance_class']}): {before}"]
    if timings:
        lines += ["", "| stage | wall time (s, summed over its calls) |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in timings.items()]
    lines += ["", "![true 3D DSC histogram](dsc_histogram.png)", ""]
    text = "\n".join(lines)
    atomic_write_text(out_dir / "summary.md", text)
    _histogram_png(rows, classes, bins, out_dir / "dsc_histogram.png")
    return text
