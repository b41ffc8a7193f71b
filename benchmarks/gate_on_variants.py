"""Are the QC gate's verdicts right? Its flags and fails checked against the expert labels.

On the validation and test splits of a QC data set (nnU-Net variant segmentations of held-out
patients, with their true slice and volume DSC), the bundled network rates every slice, and
each volume gets the verdict that ``monai-qc check`` would give with the bundle's thresholds:
``fail`` when a class's reconstructed 3D DSC or a slice's predicted DSC is below threshold.

- Per class, the slices the gate flags: how many truly score below 0.5 (precision), their mean
  true DSC, and what share of the truly failed slices (true DSC below 0.3) it flags.
- Per volume: how many good volumes (every class at true 3D DSC >= 0.7) fail, and how many of
  those fails rest on a slice that truly fails (true DSC below 0.3 for a flagged class): the
  gate localises a wrong slice inside a volume whose overall DSC hides it. Bad volumes caught.
- The same counts for slice thresholds 0.1-0.5: the trade between false and missed flags.

Writes markdown + JSON.

Usage:
    python benchmarks/gate_on_variants.py --data QC_DATA [--bundle PATH] [--out FILE.md]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from qc_splits import parse_args, run_splits

from monai_qc.evaluate_run import predict_2d
from monai_qc.inference import QCPredictor, QCResult, Thresholds
from monai_qc.reconstruction import reconstruct_volume_dsc
from monai_qc.training import QCSamples, load_samples, record_targets

OUT = Path(__file__).parent / "results" / "gate_on_variants.md"
GOOD = 0.7  # a volume is good when every class reaches this true 3D DSC
SLICE_WRONG = 0.3  # a slice truly fails below this true DSC (the method's slice threshold)
FLAG_RIGHT = 0.5  # a flag is counted right when the slice's true DSC is below this
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5)  # slice thresholds compared in the second table


def gate_results(
    predictor: QCPredictor,
    thresholds: Thresholds,
    pred: np.ndarray,
    seg_area: np.ndarray,
    record: np.ndarray,
) -> dict[int, QCResult]:
    """The gate's result for every record, from per-slice predictions (N, 2K) in slice order."""
    k = predictor.n_classes
    results = {}
    for r in np.unique(record):
        rows = record == r
        dsc, mvsf, area = pred[rows, :k], pred[rows, k:], seg_area[rows]
        results[int(r)] = QCResult(
            str(r),
            predictor.labels,
            dsc,
            mvsf,
            area,
            reconstruct_volume_dsc(dsc, mvsf, area),
            (1.0, 1.0, 1.0),
            thresholds,
        )
    return results


def verdict_counts(
    results: dict[int, QCResult],
    samples: QCSamples,
    truth_area: np.ndarray,
    targets: dict[int, np.ndarray],
    classes: list[str],
) -> dict[str, Any]:
    """Slice flags per class and volume verdicts, counted against the true DSCs."""
    true_slice = samples.dsc.numpy()
    flags = np.zeros(true_slice.shape, dtype=bool)
    for r, result in results.items():
        flags[samples.record == r] = result.low_slices
    held = (samples.seg_area > 0) | (truth_area > 0)
    per_class = {}
    for j, name in enumerate(classes[1:], start=1):
        flagged = flags[:, j]
        wrong = held[:, j] & (true_slice[:, j] < SLICE_WRONG)
        per_class[name] = {
            "flagged": int(flagged.sum()),
            "right": int((flagged & (true_slice[:, j] < FLAG_RIGHT)).sum()),
            "mean_true_dsc": float(true_slice[flagged, j].mean()) if flagged.any() else None,
            "wrong_slices": int(wrong.sum()),
            "wrong_flagged": int((flagged & wrong).sum()),
        }
    volumes = {"good": 0, "good_failed": 0, "good_failed_on_wrong_slice": 0, "bad": 0}
    volumes["bad_failed"] = 0
    for r, result in results.items():
        rows = samples.record == r
        good = bool(np.all(targets[r][1:] >= GOOD))
        failed = result.verdict == "fail"
        key = "good" if good else "bad"
        volumes[key] += 1
        volumes[f"{key}_failed"] += failed
        if good and failed:
            truly_wrong = flags[rows] & (true_slice[rows] < SLICE_WRONG)
            volumes["good_failed_on_wrong_slice"] += bool(truly_wrong.any())
    return {"slices": per_class, **volumes}


def evaluate_split(
    data: Path, split: str, predictor: QCPredictor, classes: list[str]
) -> dict[str, Any]:
    """Flag and verdict numbers of one split, at the bundle's thresholds and at each of SWEEP.

    A SWEEP value is the slice threshold of every class; the volume thresholds stay the bundle's.
    """
    samples = load_samples(data / f"{split}.npz")
    with np.load(data / f"{split}.npz") as arrays:
        truth_area = arrays["truth_area"]
    pred = predict_2d(predictor.network, samples)
    targets = record_targets(data / "records.csv", classes)

    def counts(thresholds: Thresholds) -> dict[str, Any]:
        results = gate_results(predictor, thresholds, pred, samples.seg_area, samples.record)
        return verdict_counts(results, samples, truth_area, targets, classes)

    shipped = counts(predictor.thresholds)
    sweep = {
        str(t): counts(Thresholds(predictor.thresholds.min_dsc, dict.fromkeys(classes[1:], t)))
        for t in SWEEP
    }
    n_subjects = shipped["good"] + shipped["bad"]
    return {"n_subjects": n_subjects, "n_slices": len(samples), **shipped, "sweep": sweep}


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.0%})" if whole else "-"


def markdown(results: dict[str, Any], classes: list[str]) -> str:
    """The slice table and the volume table of every split."""
    lines = [
        "# Are the QC gate's verdicts right? (nnU-Net variant segmentations)",
        "",
        f"Bundle: `{results['bundle']}`; thresholds: `{json.dumps(results['thresholds'])}`.",
        f"A flag is right when the slice's true DSC is below {FLAG_RIGHT}; a slice truly fails "
        f"below {SLICE_WRONG}; a volume is good when every class reaches true 3D DSC {GOOD}.",
        "",
    ]
    for split, r in results["splits"].items():
        lines += [
            f"## {split} split ({r['n_subjects']} volumes, {r['n_slices']} slices)",
            "",
            "| class | flagged slices | right | mean true DSC of flagged | truly failed slices "
            "flagged |",
            "|---|---|---|---|---|",
        ]
        for name in classes[1:]:
            c = r["slices"][name]
            mean = "-" if c["mean_true_dsc"] is None else f"{c['mean_true_dsc']:.2f}"
            lines.append(
                f"| {name} | {c['flagged']} | {_share(c['right'], c['flagged'])} | {mean} | "
                f"{_share(c['wrong_flagged'], c['wrong_slices'])} |"
            )
        lines += [
            "",
            "| volumes | failed | of those, on a truly failed slice |",
            "|---|---|---|",
            f"| good ({r['good']}) | {_share(r['good_failed'], r['good'])} | "
            f"{_share(r['good_failed_on_wrong_slice'], r['good_failed'])} |",
            f"| bad ({r['bad']}) | {_share(r['bad_failed'], r['bad'])} | |",
            "",
            "The same with another slice threshold for every class (volume thresholds kept):",
            "",
            "| slice threshold | flags right | truly failed slices flagged | good volumes failed "
            "| bad volumes failed |",
            "|---|---|---|---|---|",
        ]
        for threshold, c in r["sweep"].items():
            flagged = sum(x["flagged"] for x in c["slices"].values())
            right = sum(x["right"] for x in c["slices"].values())
            wrong = sum(x["wrong_slices"] for x in c["slices"].values())
            caught = sum(x["wrong_flagged"] for x in c["slices"].values())
            lines.append(
                f"| {threshold} | {_share(right, flagged)} | {_share(caught, wrong)} | "
                f"{_share(c['good_failed'], c['good'])} | {_share(c['bad_failed'], c['bad'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Rate every slice of the chosen splits once; write the tables."""
    args = parse_args(argv, __doc__, "val,test", OUT)
    run_splits(args, evaluate_split, markdown, with_thresholds=True)


if __name__ == "__main__":
    main()
