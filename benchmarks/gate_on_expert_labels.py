"""How often the QC gate rejects expert segmentations: its false-fail rate.

Every label map of an nnU-Net raw data set (``labelsTr``) is checked as if it were a
segmentation, with the bundle's own thresholds. An expert segmentation should pass; each fail
is a false alarm. Cases are grouped by the bundle's patient split (``docs/data_split.json``),
so the held-out test patients are reported apart. Writes a markdown table and a JSON.

Usage:
    python benchmarks/gate_on_expert_labels.py --dataset Dataset027_ACDC [--bundle PATH] \
        [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from monai_qc.bundle import resolve_bundle
from monai_qc.inference import QCPredictor, QCResult
from monai_qc.io import dataset_file_ending, labelled_case_ids, patient_of, read_volume
from monai_qc.report import write_table_and_data

logger = logging.getLogger("gate_on_expert_labels")

OUT = Path(__file__).parent / "results" / "gate_on_expert_labels.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw data set folder")
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def case_outcome(result: QCResult) -> dict[str, Any]:
    """Verdict, failed classes and flagged slices (with the classes rated low there)."""
    report = result.to_dict()
    low_slices = result.low_slices
    low = {
        int(i): sorted(n for j, n in enumerate(result.class_names, start=1) if low_slices[i, j])
        for i in np.flatnonzero(low_slices.any(axis=1))
    }
    return {
        "verdict": result.verdict,
        "failed_classes": result.failed_classes,
        "flagged_slices": low,
        "n_slices": len(report["slices"]),
        "volume_dsc": report["volume"]["dsc"],
    }


def split_of(bundle: Path) -> dict[str, str]:
    """Patient -> split of the bundle's training data (empty if the bundle does not say)."""
    file = bundle / "docs" / "data_split.json"
    if not file.is_file():
        return {}
    split = json.loads(file.read_text())
    return {patient: name for name, patients in split.items() for patient in patients}


def summary(outcomes: dict[str, dict[str, Any]], splits: dict[str, str]) -> dict[str, Any]:
    """Counts per split of the bundle's data (``all`` for every case)."""
    groups: dict[str, list[dict[str, Any]]] = {"all": list(outcomes.values())}
    for case, outcome in outcomes.items():
        groups.setdefault(splits.get(patient_of(case), "not in the split"), []).append(outcome)
    table = {}
    for name, items in groups.items():
        flagged = [c for o in items for c in o["flagged_slices"].values()]
        table[name] = {
            "volumes": len(items),
            "failed": sum(o["verdict"] == "fail" for o in items),
            "failed_by_volume_dsc": sum(bool(o["failed_classes"]) for o in items),
            "slices": sum(o["n_slices"] for o in items),
            "flagged_slices": len(flagged),
            "flagged_by_class": {
                c: sum(c in names for names in flagged) for c in sorted({*sum(flagged, [])})
            },
        }
    return table


def markdown(results: dict[str, Any]) -> str:
    """The table of false fails per split."""
    lines = [
        "# The QC gate on expert segmentations",
        "",
        f"Bundle: `{results['bundle']}`; data set: `{results['dataset']}`. Each expert label map",
        "is checked as a segmentation with the bundle's thresholds; every fail is a false alarm.",
        "",
        "| patients | volumes | failed | by volume DSC | slices | flagged slices | "
        "flagged for class |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["summary"].items():
        by_class = ", ".join(f"{c} {n}" for c, n in row["flagged_by_class"].items()) or "-"
        failed = f"{row['failed']} ({row['failed'] / row['volumes']:.0%})"
        lines.append(
            f"| {name} | {row['volumes']} | {failed} | {row['failed_by_volume_dsc']} | "
            f"{row['slices']} | {row['flagged_slices']} | {by_class} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Check every expert label map; write the tables."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    bundle = resolve_bundle(args.bundle)
    predictor = QCPredictor.from_bundle(bundle)
    ending = dataset_file_ending(args.dataset)
    cases = labelled_case_ids(args.dataset)
    outcomes = {}
    for case in tqdm(cases, desc="expert labels"):
        image, spacing, _ = read_volume(args.dataset / "imagesTr" / f"{case}_0000{ending}")
        labels = read_volume(args.dataset / "labelsTr" / f"{case}{ending}")[0]
        outcomes[case] = case_outcome(predictor.predict(image, labels, spacing, case))
    results = {
        "bundle": str(args.bundle or bundle.name),
        "dataset": args.dataset.name,
        "thresholds": predictor.thresholds.to_dict(),
        "summary": summary(outcomes, split_of(bundle)),
        "cases": outcomes,
    }
    write_table_and_data(args.out, markdown(results), results)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
