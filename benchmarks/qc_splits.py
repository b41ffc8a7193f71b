"""Shared entry point of the benchmarks that rate every slice of a QC data set's splits."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from monai_qc.inference import QCPredictor
from monai_qc.report import write_table_and_data

logger = logging.getLogger("qc_splits")

SplitEvaluator = Callable[[Path, str, QCPredictor, list[str]], dict[str, Any]]


def parse_args(
    argv: list[str] | None, description: str | None, splits: str, out: Path
) -> argparse.Namespace:
    """``--data``, ``--bundle``, ``--splits`` and ``--out`` of a per-split benchmark."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True, help="QC data set folder")
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--splits", default=splits, help="comma-separated splits")
    p.add_argument("--out", type=Path, default=out, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def run_splits(
    args: argparse.Namespace,
    evaluate_split: SplitEvaluator,
    markdown: Callable[[dict[str, Any], list[str]], str],
    with_thresholds: bool = False,
) -> None:
    """Evaluate each split with the bundle's predictor; write the tables and their JSON."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    classes = json.loads((args.data / "manifest.json").read_text())["classes"]
    predictor = QCPredictor.from_bundle(args.bundle)
    results: dict[str, Any] = {
        "bundle": str(args.bundle or "shipped (cmr_acdc_qc)"),
        "data": str(args.data),
    }
    if with_thresholds:
        results["thresholds"] = predictor.thresholds.to_dict()
    results["splits"] = {}
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        logger.info("%s split", split)
        results["splits"][split] = evaluate_split(args.data, split, predictor, classes)
    write_table_and_data(args.out, markdown(results, classes), results)
    logger.info("wrote %s", args.out)
