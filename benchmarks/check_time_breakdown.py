"""Where the time of ``monai-qc check`` goes, stage by stage, on real cases.

Each stage of one case is timed as ``check`` runs it (``monai_qc.check`` / ``case_report``):
hashing the two files, reading and verifying them (``load_case``), the bundle's preprocessing
(crop, CLAHE, resize, one-hot), the network's forward pass, the rest of ``predict``
(reconstruction, deterministic checks), the volume correction, the figures and the report
file. The floor is the time to only read the two files with SimpleITK. Medians over the cases,
after one warm-up case.

Usage:
    python benchmarks/check_time_breakdown.py --dataset ../shared/data/Dataset028_ACDCtest \
        [--cases 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from monai_qc.correction import correct_volumes
from monai_qc.inference import QCPredictor, class_indices
from monai_qc.io import dataset_file_ending, labelled_case_ids, load_case
from monai_qc.report import write_case_report, write_table_and_data
from monai_qc.report_figures import write_case_figures
from monai_qc.run_manifest import file_sha256

OUT = Path(__file__).parent / "results" / "check_time_breakdown.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw data set folder")
    p.add_argument("--cases", type=int, default=20, help="cases timed (after one warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def _timed(times: dict[str, list[float]], stage: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    times[stage].append(1000 * (time.perf_counter() - start))
    return value


def time_case(
    predictor: QCPredictor, image: Path, seg: Path, case: str, out: Path
) -> dict[str, list[float]]:
    """Milliseconds of every stage of one case."""
    times: dict[str, list[float]] = defaultdict(list)
    values = [0, *predictor.labels.values()]
    _timed(times, "floor: read both files (SimpleITK only)",
           lambda: (sitk.ReadImage(str(image)), sitk.ReadImage(str(seg))))  # fmt: skip
    _timed(times, "hash both files (SHA-256)", lambda: (file_sha256(image), file_sha256(seg)))
    loaded = _timed(times, "read and verify (load_case)",
                    lambda: load_case(case, image, seg, values))  # fmt: skip
    indices = class_indices(loaded.segmentation, predictor.labels)
    inputs = _timed(times, "preprocess (crop, CLAHE, resize, one-hot)",
                    lambda: predictor.preprocessing(loaded.image, indices))  # fmt: skip
    tensor = torch.as_tensor(inputs)
    with torch.inference_mode():
        _timed(times, "network forward", lambda: predictor.network(tensor))
    predicted = _timed(times, "predict, whole (preprocess + forward + 2D_R + checks)",
                       lambda: predictor.predict(loaded.image, loaded.segmentation,
                                                 loaded.spacing, case))  # fmt: skip
    report = predicted.to_dict()
    report["correction"] = _timed(times, "volume correction",
                                  lambda: correct_volumes(predicted).to_dict())  # fmt: skip
    _timed(times, "figures (PNG strip and flagged slices)",
           lambda: write_case_figures(report, loaded.image, loaded.segmentation, out))  # fmt: skip
    _timed(times, "report file (atomic JSON)", lambda: write_case_report(report, out))
    return times


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = QCPredictor.from_bundle(args.bundle)
    ending = dataset_file_ending(args.dataset)
    cases = labelled_case_ids(args.dataset)[: args.cases + 1]
    totals: dict[str, list[float]] = defaultdict(list)
    slices = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            image = args.dataset / "imagesTr" / f"{case}_0000{ending}"
            seg = args.dataset / "labelsTr" / f"{case}{ending}"
            times = time_case(predictor, image, seg, case, Path(tmp))
            if i == 0:
                continue  # warm-up
            slices.append(sitk.ReadImage(str(seg)).GetSize()[2])
            for stage, values in times.items():
                totals[stage] += values
    medians = {stage: statistics.median(values) for stage, values in totals.items()}
    rest = medians["predict, whole (preprocess + forward + 2D_R + checks)"] - (
        medians["preprocess (crop, CLAHE, resize, one-hot)"] + medians["network forward"]
    )
    case_total = sum(
        medians[s]
        for s in medians
        if not s.startswith(("floor", "preprocess", "network", "predict"))
    ) + medians["predict, whole (preprocess + forward + 2D_R + checks)"]
    lines = [
        f"# Where the time of a check goes ({len(slices)} cases of {args.dataset.name}, "
        f"median {statistics.median(slices):.0f} slices, {args.threads} threads, "
        f"torch {torch.__version__})",
        "",
        f"From `python benchmarks/check_time_breakdown.py --dataset {args.dataset} "
        f"--cases {args.cases} --threads {args.threads}`. Median milliseconds per case.",
        "",
        "| stage | median ms |",
        "|---|---|",
        *(f"| {stage} | {value:.1f} |" for stage, value in medians.items()),
        f"| of which 2D_R and deterministic checks (predict − preprocess − forward) | {rest:.1f} |",
        f"| a case, all stages but the floor (hash, read, predict, correction, figures, report) "
        f"| {case_total:.1f} |",
        "",
        "Per run, not per case: reading the bundle, `summary.csv` and `report.html`.",
    ]
    text = "\n".join(lines) + "\n"
    write_table_and_data(args.out, text, {"medians_ms": medians, "cases": len(slices)})
    print(text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
