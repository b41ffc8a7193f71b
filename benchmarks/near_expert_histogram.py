"""True DSC of near-expert label maps: how many slices and volumes fall in each DSC band.

For every expert label map of the given data sets, K near-expert maps are made with
:func:`monai_qc.perturbations.near_expert_in_band`. Map ``j`` of the run (over all volumes)
targets the band ``j mod 6`` of 0.70-0.75, ..., 0.95-1.00 for the class ``(j // 6) mod 3``
(RV, MYO, LV), so every volume gets one map per band and the target classes take turns. The
true DSC of every class against the expert map is then counted per 0.05-wide band above 0.70
(and below 0.70 as one row): on slices (a slice counts for a class when the expert or the map
holds it there) and on volumes (3D DSC). A QC training set needs several hundred slices in
every band above 0.70 for every class; the table marks the bands that reach 300.

Usage:
    python benchmarks/near_expert_histogram.py
    python benchmarks/near_expert_histogram.py --dataset ../shared/data/Dataset027_ACDC -k 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_qc import metrics
from monai_qc.io import dataset_file_ending, labelled_case_ids, read_volume
from monai_qc.perturbations import near_expert_in_band
from monai_qc.report import write_table_and_data

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONAI_QC_SHARED_DATA") or ROOT.parent / "shared" / "data")
DATASETS = [SHARED / "Dataset027_ACDC", SHARED / "Dataset028_ACDCtest"]
OUT = Path(__file__).parent / "results" / "near_expert_histogram.md"
CLASSES = {"RV": 1, "MYO": 2, "LV": 3}
TARGETS = [(round(0.70 + 0.05 * i, 2), round(0.75 + 0.05 * i, 2)) for i in range(6)]
EDGES = [0.0, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 1.0 + 1e-9]  # the last band includes 1.00
ROWS = ["< 0.70"] + [f"{lo:.2f}-{hi:.2f}" for lo, hi in TARGETS]
ENOUGH = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, action="append", help="raw data set (default: ACDC x2)")
    p.add_argument("-k", type=int, default=6, help="near-expert maps per expert map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-evals", type=int, default=24, help="maps tried per requested band")
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    return p.parse_args(argv)


def band_counts(values: np.ndarray) -> list[int]:
    """Counts of finite ``values`` per row of ROWS."""
    finite = values[np.isfinite(values)]
    return [int(n) for n in np.histogram(finite, bins=EDGES)[0]]


def run(datasets: list[Path], k: int, seed: int, max_evals: int) -> dict[str, Any]:
    """Make the maps and collect their true slice and volume DSC per class."""
    slice_dsc: list[np.ndarray] = []  # (S, 3) per map
    volume_dsc: list[np.ndarray] = []  # (3,) per map
    hits = np.zeros((len(CLASSES), len(TARGETS)), dtype=np.int64)
    tries = np.zeros_like(hits)
    j = 0
    n_volumes = 0
    start = time.perf_counter()
    for dataset in datasets:
        ending = dataset_file_ending(dataset)
        for case in labelled_case_ids(dataset):
            truth, _, _ = read_volume(dataset / "labelsTr" / f"{case}{ending}")
            rng = np.random.default_rng([seed, n_volumes])
            n_volumes += 1
            for _ in range(k):
                band_idx, cls_idx = j % len(TARGETS), (j // len(TARGETS)) % len(CLASSES)
                j += 1
                target = list(CLASSES.values())[cls_idx]
                band = TARGETS[band_idx]
                seg, score = near_expert_in_band(
                    truth, rng, band, target_class=target, max_evals=max_evals
                )
                tries[cls_idx, band_idx] += 1
                hits[cls_idx, band_idx] += int(band[0] <= score < band[1] or score == band[1] == 1)
                values = list(CLASSES.values())
                slice_dsc.append(metrics.slice_scores(truth, seg, values).dsc)
                volume_dsc.append(metrics.volume_scores(truth, seg, values).dsc)
    slices = np.concatenate(slice_dsc)
    volumes = np.stack(volume_dsc)
    result: dict[str, Any] = {
        "datasets": [d.name for d in datasets],
        "n_volumes": n_volumes,
        "k": k,
        "seed": seed,
        "n_maps": len(volume_dsc),
        "seconds": round(time.perf_counter() - start, 1),
        "bands": ROWS,
        "slices": {},
        "volumes": {},
        "slices_exactly_1": {},
        "target_hit_rate": {},
    }
    for c, name in enumerate(CLASSES):
        result["slices"][name] = band_counts(slices[:, c])
        result["volumes"][name] = band_counts(volumes[:, c])
        result["slices_exactly_1"][name] = int((slices[:, c] == 1.0).sum())
        result["target_hit_rate"][name] = (hits[c] / np.maximum(tries[c], 1)).round(3).tolist()
    worst = np.nanmin(volumes, axis=1)
    result["volumes"]["worst class"] = band_counts(worst)
    return result


def markdown(r: dict[str, Any]) -> str:
    """The results as markdown tables."""
    names = list(CLASSES)
    lines = [
        "# True DSC of near-expert label maps",
        "",
        f"{r['n_maps']} maps: {r['k']} per expert label map of {r['n_volumes']} volumes "
        f"({', '.join(r['datasets'])}), seed {r['seed']}, each targeted at a 3D DSC band of one "
        f"class (`monai_qc.perturbations.near_expert_in_band`); {r['seconds']:.0f} s on one core.",
        "Reproduce: `python benchmarks/near_expert_histogram.py`.",
        "",
        f"## Slices per true slice-DSC band (a slice counts when expert or map holds the class; "
        f"✓ = at least {ENOUGH})",
        "",
        "| band | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for i, row in enumerate(ROWS):
        cells = []
        for name in names:
            n = r["slices"][name][i]
            mark = "" if i == 0 else (" ✓" if n >= ENOUGH else " ✗")
            cells.append(f"{n}{mark}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    exact = ", ".join(f"{n} {r['slices_exactly_1'][n]}" for n in names)
    lines += ["", f"Slices with DSC exactly 1.00 (unchanged), part of the top band: {exact}.", ""]
    lines += [
        "## Volumes per true 3D DSC band",
        "",
        "| band | " + " | ".join([*names, "worst class"]) + " |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for i, row in enumerate(ROWS):
        cells = [str(r["volumes"][n][i]) for n in [*names, "worst class"]]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Share of maps whose targeted class landed in the requested band",
        "",
        "| class | " + " | ".join(ROWS[1:]) + " |",
        "|---|" + "---:|" * len(TARGETS),
    ]
    for name in names:
        rates = " | ".join(f"{x:.2f}" for x in r["target_hit_rate"][name])
        lines.append(f"| {name} | {rates} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run, write the table and its JSON, print the table."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    datasets = args.dataset or DATASETS
    result = run(datasets, args.k, args.seed, args.max_evals)
    text = markdown(result)
    write_table_and_data(args.out, text, result)
    print(text)


if __name__ == "__main__":
    main()
