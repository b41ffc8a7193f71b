"""False findings of the deterministic checks on expert label maps.

Runs the two checks a QC bundle applies without its network on every expert label map of
nnU-Net raw data sets, with the bundle's own settings: ``outside_rated_region`` (a component
of a class reaching outside the crop box the network rates; the box comes from the bundle's
preprocessing) and ``class_gap`` (a class of the bundle's ``contiguous_classes`` empty on a
slice between slices that hold it). Expert labels are taken as correct, so every finding
is a false one. For context, the table also counts label maps where a class has several 3D
connected components (which the rule allows) and gives the smallest distance, in pixels,
between the foreground and the edge of the crop box (the minimum over each data set).

Usage:
    python benchmarks/findings_on_expert_labels.py \
        --dataset ../shared/data/Dataset027_ACDC --dataset ../shared/data/Dataset028_ACDCtest
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from monai_qc.bundle import load_bundle
from monai_qc.findings import class_gaps, outside_rated_region, validate_contiguous_classes
from monai_qc.inference import class_indices, slice_areas
from monai_qc.io import dataset_file_ending, labelled_case_ids, read_volume
from monai_qc.report import write_table_and_data
from monai_qc.transforms import CropBox, foreground_square_box

OUT = Path(__file__).parent / "results" / "findings_on_expert_labels.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, action="append", required=True, help="raw data set")
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def box_clearance(indices: np.ndarray, box: CropBox) -> int:
    """Pixels between the foreground's in-plane bounding box and the crop box's nearest edge."""
    rows, cols = np.nonzero(indices.any(axis=0))
    return int(
        min(
            rows.min() - box.y0,
            box.y1 - 1 - rows.max(),
            cols.min() - box.x0,
            box.x1 - 1 - cols.max(),
        )
    )


def label_map_row(
    indices: np.ndarray, spacing: tuple[float, ...], names: list[str], settings: dict[str, Any]
) -> dict[str, Any]:
    """Findings and component counts of one label map (class indices, (S, H, W))."""
    crop = settings["cropper"]
    box = foreground_square_box(indices, crop.margin, crop.min_margin, crop.largest_component)
    outside = outside_rated_region(indices, box, names, spacing)
    gaps = class_gaps(slice_areas(indices, 1 + len(names)), names, settings["contiguous"])
    structure = np.ones((3, 3, 3), dtype=bool)
    return {
        "outside": {f.class_name: f.message for f in outside},
        "gap": {f.class_name: f.message for f in gaps},
        "several_components": [
            name
            for j, name in enumerate(names, start=1)
            if ndimage.label(indices == j, structure=structure)[1] > 1
        ],
        "clearance": box_clearance(indices, box),
    }


def table(results: dict[str, dict[str, dict[str, Any]]], names: list[str]) -> list[str]:
    """Markdown rows: per data set and class, label maps with each finding."""
    lines = [
        "| data set | class | label maps | outside_rated_region | class_gap "
        "| several 3D components (allowed) | box clearance, px (data set minimum) |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, rows in results.items():
        clearance = min(r["clearance"] for r in rows.values())
        for name in names:
            outside = sum(name in r["outside"] for r in rows.values())
            gap = sum(name in r["gap"] for r in rows.values())
            several = sum(name in r["several_components"] for r in rows.values())
            lines.append(
                f"| {dataset} | {name} | {len(rows)} | {outside} | {gap} | {several} "
                f"| {clearance} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parser, root = load_bundle(args.bundle)
    labels = {str(k): int(v) for k, v in parser.get_parsed_content("labels").items()}
    names = sorted(labels, key=labels.__getitem__)
    contiguous = (
        parser.get_parsed_content("contiguous_classes")
        if "contiguous_classes" in parser.get()
        else None
    )
    settings = {
        "cropper": parser.get_parsed_content("preprocessing").cropper,
        "contiguous": validate_contiguous_classes(contiguous, labels),
    }
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in args.dataset:
        ending = dataset_file_ending(dataset)
        rows = results[dataset.name] = {}
        for case in tqdm(labelled_case_ids(dataset), desc=dataset.name, unit="case"):
            seg, spacing, _ = read_volume(dataset / "labelsTr" / f"{case}{ending}")
            rows[case] = label_map_row(class_indices(seg, labels), spacing, names, settings)
    flagged = sorted(
        f"{case}: {message}"
        for rows in results.values()
        for case, row in rows.items()
        for message in [*row["outside"].values(), *row["gap"].values()]
    )
    text = "\n".join(
        [
            "# Deterministic checks on expert label maps (false findings)",
            "",
            f"Bundle `{root.name}`: crop margin {settings['cropper'].margin}, at least "
            f"{settings['cropper'].min_margin} px, around the largest connected part of the "
            f"projected foreground; contiguous classes: "
            f"{', '.join(settings['contiguous']) or 'none'}. Every count is a label map with a "
            "finding of that class: expert labels are taken as correct, so each is a false "
            "finding. From `python benchmarks/findings_on_expert_labels.py "
            + " ".join(f"--dataset {d}" for d in args.dataset)
            + "`.",
            "",
            *table(results, names),
            "",
            "False findings: " + ("; ".join(flagged) if flagged else "none") + ".",
            "",
        ]
    )
    write_table_and_data(args.out, text, results)
    print(text)


if __name__ == "__main__":
    main()
