"""Where the QC error comes from: slice DSC, slice MVSF or the 3D reconstruction itself.

On the training, validation and test splits of a QC data set, the bundled network's 3D
(2D_R) DSC is reconstructed four ways: from its predicted slice DSC and MVSF, from predicted
DSC with the true MVSF, from the true DSC with predicted MVSF, and from both true (the
reconstruction's own error: the blind spot of slices whose segmentation is empty). A second
table splits the slice DSC error by whether the segmentation and the expert labels hold the
class on the slice (slices where neither does are left out of the evaluation's 2D scores).
The training split (as stored, without augmentation or synthetic damage) shows how closely the
network fits the slices it learnt from: an error there as large as on held-out patients means
it underfits. Writes markdown + JSON.

Usage:
    python benchmarks/qc_error_sources.py --data QC_DATA [--bundle PATH] [--out FILE.md]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qc_splits import parse_args, run_splits

from monai_qc.evaluate_run import predict_2d, reconstruct_by_record
from monai_qc.inference import QCPredictor
from monai_qc.training import QCSamples, record_targets, samples_from_arrays

OUT = Path(__file__).parent / "results" / "qc_error_sources.md"
SOURCES = {
    "QC prediction (DSC and MVSF predicted)": ("pred", "pred"),
    "predicted DSC, true MVSF": ("pred", "true"),
    "true DSC, predicted MVSF": ("true", "pred"),
    "true DSC and MVSF (reconstruction alone)": ("true", "true"),
}
PRESENCE = ("both", "segmentation only", "expert only", "neither")


def volume_errors(
    samples: QCSamples, pred: np.ndarray, true_3d: np.ndarray, record_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Signed 3D DSC error (R, K) of each reconstruction source in :data:`SOURCES`."""
    k = samples.n_classes
    scores = {
        "pred": (pred[:, :k], pred[:, k:]),
        "true": (samples.dsc.numpy(), samples.mvsf.numpy()),
    }
    return {
        name: reconstruct_by_record(samples, scores[d][0], scores[m][1], record_ids) - true_3d
        for name, (d, m) in SOURCES.items()
    }


def presence_errors(
    samples: QCSamples, truth_area: np.ndarray, pred: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Slice DSC MAE per class and presence case, with counts and shares of the class's error."""
    k = samples.n_classes
    error = np.abs(pred[:, :k] - samples.dsc.numpy())
    seg, truth = samples.seg_area > 0, truth_area > 0
    masks = (seg & truth, seg & ~truth, ~seg & truth, ~seg & ~truth)
    cases = dict(zip(PRESENCE, masks, strict=True))
    out: dict[str, dict[str, Any]] = {}
    for c in range(1, k):
        total = error[:, c].sum()
        out[str(c)] = {
            name: {
                "n": int(mask[:, c].sum()),
                "mae": float(error[mask[:, c], c].mean()) if mask[:, c].any() else None,
                "share": float(error[mask[:, c], c].sum() / total),
            }
            for name, mask in cases.items()
        }
    return out


def evaluate_split(
    data: Path, split: str, predictor: QCPredictor, classes: list[str]
) -> dict[str, Any]:
    """Both tables' numbers for one split."""
    with np.load(data / f"{split}.npz") as arrays:
        loaded = {key: arrays[key] for key in arrays.files}
    samples = samples_from_arrays(loaded)
    targets = record_targets(data / "records.csv", classes)
    record_ids = np.unique(samples.record)
    true_3d = np.stack([targets[int(r)] for r in record_ids])
    pred = predict_2d(predictor.network, samples)
    errors = volume_errors(samples, pred, true_3d, record_ids)
    volume = {
        source: {
            classes[c]: {
                "mae": float(np.nanmean(np.abs(e[:, c]))),
                "bias": float(np.nanmean(e[:, c])),
            }
            for c in range(1, len(classes))
        }
        for source, e in errors.items()
    }
    slices = presence_errors(samples, loaded["truth_area"], pred)
    return {
        "n_subjects": len(record_ids),
        "n_slices": len(samples),
        "volume_dsc": volume,
        "slice_dsc_by_presence": {classes[int(c)]: v for c, v in slices.items()},
    }


def markdown(results: dict[str, Any], classes: list[str]) -> str:
    """Both tables for every split."""
    fg = classes[1:]
    lines = ["# Where the QC error comes from", "", f"Bundle: `{results['bundle']}`.", ""]
    for split, r in results["splits"].items():
        lines += [
            f"## {split} split ({r['n_subjects']} volumes, {r['n_slices']} slices)",
            "",
            "3D (2D_R) DSC error, MAE (mean signed error) per source of the slice scores:",
            "",
            f"| slice scores | {' | '.join(fg)} |",
            f"|---|{'---|' * len(fg)}",
        ]
        for source, cells in r["volume_dsc"].items():
            row = " | ".join(f"{cells[c]['mae']:.4f} ({cells[c]['bias']:+.4f})" for c in fg)
            lines.append(f"| {source} | {row} |")
        lines += [
            "",
            "Slice DSC MAE by where the class is present (n; share of the class's total error):",
            "",
            f"| present in | {' | '.join(fg)} |",
            f"|---|{'---|' * len(fg)}",
        ]
        for case in PRESENCE:
            cells = [r["slice_dsc_by_presence"][c][case] for c in fg]
            row = " | ".join(
                "-" if x["mae"] is None else f"{x['mae']:.3f} (n={x['n']}; {x['share']:.0%})"
                for x in cells
            )
            lines.append(f"| {case} | {row} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Rate every slice of the chosen splits once; write the tables."""
    args = parse_args(argv, __doc__, "train,val,test", OUT)
    run_splits(args, evaluate_split, markdown)


if __name__ == "__main__":
    main()
