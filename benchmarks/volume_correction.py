"""Effect of volume correction on the ACDC test patients: per-class rule vs slice-wise rule.

For every expert label map of the shipped bundle's test patients (``docs/data_split.json``,
Dataset027_ACDC) and of Dataset028_ACDCtest (80 volumes, real spacing), the shipped QC model
rates (a) the expert labels themselves and (b) ``--variants`` damaged copies: one or two
slices in the middle of the heart damaged, seeded, with the damage kinds of QC training
(:mod:`monai_qc.slice_damage`: a class dropped, eroded, dilated or shifted). Each volume is
then corrected by the slice-wise rule of Fournel et al. (2021) that reports used before
(every class of a slice replaced when background, MYO or LV is rated low there; a first or
last slice rated low still served as a neighbour) and by the per-class rule of
:func:`monai_qc.correction.correct_volumes`. The table gives the relative volume error
|V - V_expert| / V_expert per class, mean and median, segmented / old / new, and how many
volumes the correction made worse (error up by more than 0.5 % of the expert volume) or
better. A declined per-class correction keeps the segmented volume.

Usage:
    python benchmarks/volume_correction.py [--data ../shared/data] [--variants 2] [--seed 0]

About a minute on 2 CPU cores (one thread).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_qc.correction import correct_volumes
from monai_qc.inference import QCPredictor
from monai_qc.io import read_volume
from monai_qc.report import write_table_and_data
from monai_qc.slice_damage import damage_slice
from monai_qc.slicewise_correction import default_columns, find_wrong_slices, replace_wrong_slices

logger = logging.getLogger("volume_correction")

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "volume_correction.md"
SPLIT = ROOT / "bundles" / "cmr_acdc_qc" / "docs" / "data_split.json"
KINDS = ("drop", "erode", "dilate", "shift")
WORSE = 0.005  # error up by more than 0.5 % of the expert volume
METHODS = ("segmented", "old", "new")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("MONAI_QC_SHARED_DATA") or ROOT.parent / "shared" / "data"),
        help="folder holding Dataset027_ACDC and Dataset028_ACDCtest (default: "
        "$MONAI_QC_SHARED_DATA, else ../shared/data)",
    )
    p.add_argument("--variants", type=int, default=2, help="damaged copies per volume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    p.add_argument("--max-cases", type=int, default=None, help="first N volumes per data set")
    return p.parse_args(argv)


def damaged_copy(truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """``truth`` with one or two slices near the middle of the heart damaged."""
    holding = np.flatnonzero(truth.reshape(len(truth), -1).any(axis=1))
    inner = holding[1:-1] if holding.size > 2 else holding
    middle = inner[len(inner) // 2 - 1 : len(inner) // 2 + 2] if inner.size else inner
    n = min(int(rng.integers(1, 3)), len(middle))
    seg, damage = truth.copy(), []
    for i in sorted(rng.choice(middle, size=n, replace=False).tolist()):
        present = [int(c) for c in np.unique(truth[i]) if c > 0]
        kind = KINDS[int(rng.integers(len(KINDS)))]
        cls = int(rng.choice(present))
        radius = int(rng.integers(1, 4))
        shift = (int(rng.integers(-6, 7)), int(rng.integers(-6, 7)))
        t = torch.from_numpy(truth[i].astype(np.int64))
        seg[i] = damage_slice(t, t, kind, cls, radius, shift).numpy().astype(truth.dtype)
        damage.append({"slice": i, "kind": kind, "class": cls, "radius": radius, "shift": shift})
    return seg, damage


def old_corrected_ml(result: Any) -> np.ndarray:
    """Volumes (K-1,) after the slice-wise rule the reports used before (threshold 0.3)."""
    area = result.seg_area.astype(np.float64)
    wrong = find_wrong_slices(result.slice_dsc, area, 0.3, default_columns(area))
    return replace_wrong_slices(area, wrong)[:, 1:].sum(axis=0) * np.prod(result.spacing) / 1000


def rate_volume(
    predictor: QCPredictor, image: np.ndarray, seg: np.ndarray, spacing: tuple, case: str
) -> dict[str, Any]:
    """Segmented, old-corrected and new-corrected volumes (mL) of one segmentation."""
    result = predictor.predict(image, seg, spacing, case)
    new = correct_volumes(result)
    names = result.class_names
    declined = [n for n, c in new.classes.items() if c.wrong_slices and not c.corrected]
    return {
        "segmented": [new.volumes_ml[n] for n in names],
        "old": old_corrected_ml(result).tolist(),
        "new": [new.volumes_ml[n] if v is None else v for n, v in new.corrected_ml.items()],
        "new_wrong": {n: c.wrong_slices for n, c in new.classes.items() if c.wrong_slices},
        "declined": declined,
    }


def cases_of(data: Path, max_cases: int | None) -> list[tuple[str, Path, Path]]:
    """(set, image, label) of the split's test patients and of Dataset028_ACDCtest."""
    test = set(json.loads(SPLIT.read_text())["test"])
    out = []
    for name, keep in (("Dataset027_ACDC", test), ("Dataset028_ACDCtest", None)):
        labels = sorted((data / name / "labelsTr").glob("*.nii.gz"))
        chosen = [p for p in labels if keep is None or p.name[:8] in keep][:max_cases]
        for label in chosen:
            image = data / name / "imagesTr" / label.name.replace(".nii.gz", "_0000.nii.gz")
            out.append((name, image, label))
    return out


def summary_rows(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Markdown rows: per data set, condition and class, errors and worse/better counts."""
    rows = []
    groups = sorted({(r["set"], r["condition"]) for r in records})
    for data_set, condition in groups:
        chosen = [r for r in records if r["set"] == data_set and r["condition"] == condition]
        for k, name in enumerate(names):
            err = {m: np.array([r["rve"][m][k] for r in chosen]) for m in METHODS}
            cells = [f"{err[m].mean():.3f} / {np.median(err[m]):.3f}" for m in METHODS]
            worse = [int((err[m] > err["segmented"] + WORSE).sum()) for m in ("old", "new")]
            better = [int((err[m] < err["segmented"] - WORSE).sum()) for m in ("old", "new")]
            declined = sum(name in r["declined"] for r in chosen)
            rows.append(
                f"| {data_set} | {condition} | {name} | {len(chosen)} | "
                + " | ".join(cells)
                + f" | {worse[0]} / {worse[1]} | {better[0]} / {better[1]} | {declined} |"
            )
    return rows


def worse_rows(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Markdown rows of the volumes the per-class correction made worse, with their damage."""
    rows = []
    for r in records:
        for k, name in enumerate(names):
            before, after = r["rve"]["segmented"][k], r["rve"]["new"][k]
            if after > before + WORSE:
                damage = ", ".join(
                    f"slice {d['slice']}: {names[d['class'] - 1]} {d['kind']}" for d in r["damage"]
                )
                wrong = ", ".join(str(i) for i in r["new_wrong"].get(name, []))
                rows.append(
                    f"| {r['case']} | {name} | {before:.3f} | {after:.3f} | {wrong} | {damage} |"
                )
    return rows


def _rounded(value: Any) -> Any:
    """``value`` with floats rounded to 4 decimals (a smaller JSON)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Rate every volume, correct it both ways, write the table and its data."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    predictor = QCPredictor.from_bundle()
    names = sorted(predictor.labels, key=predictor.labels.__getitem__)
    rng = np.random.default_rng(args.seed)
    records = []
    cases = cases_of(args.data, args.max_cases)
    if not cases:
        raise SystemExit(f"no ACDC label maps under {args.data}")
    for n, (data_set, image_path, label_path) in enumerate(cases, start=1):
        image, spacing, _ = read_volume(image_path)
        truth, _, _ = read_volume(label_path)
        truth_ml = (
            np.array([(truth == predictor.labels[c]).sum() for c in names])
            * np.prod(spacing)
            / 1000
        )
        case = label_path.name[: -len(".nii.gz")]
        variants = [("expert", truth, [])]
        variants += [("damaged", *damaged_copy(truth, rng)) for _ in range(args.variants)]
        for condition, seg, damage in variants:
            rated = rate_volume(predictor, image, seg, spacing, case)
            rve = {m: (np.abs(np.array(rated[m]) - truth_ml) / truth_ml).tolist() for m in METHODS}
            records.append(
                {
                    "set": data_set,
                    "case": case,
                    "condition": condition,
                    "damage": damage,
                    "truth_ml": truth_ml.tolist(),
                    "rve": rve,
                    **rated,
                }
            )
        logger.info("%d/%d %s", n, len(cases), case)
    header = [
        "# Volume correction on the ACDC test patients",
        "",
        f"Shipped QC bundle {predictor.identity.get('name')} {predictor.identity.get('version')}; "
        f"expert label maps and {args.variants} damaged copies of each (1-2 slices in the middle "
        f"of the heart: a class dropped, eroded, dilated or shifted; seed {args.seed}). "
        "Relative volume error |V - V_expert| / V_expert, mean / median, of the segmented "
        "volume, after the old slice-wise correction and after the per-class correction. "
        f"Worse / better: volumes whose error the correction raised / lowered by more than "
        f"{WORSE:.1%} of the expert volume (old / new). Declined: per-class corrections "
        "declined (too few good slices), which keep the segmented volume.",
        "",
        "| data set | labels | class | volumes | segmented | old correction | new correction "
        "| worse old / new | better old / new | declined |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    worse = [
        "",
        "Volumes the per-class correction made worse. A second damaged slice that the QC "
        "network rated good (a dilated structure) was the neighbour the replaced area came "
        "from, or its error had offset the error of the replaced slice; or a shifted structure, "
        "whose area was right, was replaced from its neighbours.",
        "",
        "| case | class | error segmented | error corrected | slices replaced | damage |",
        "|---|---|---|---|---|---|",
        *worse_rows(records, names),
    ]
    text = "\n".join(header + summary_rows(records, names) + worse) + "\n"
    write_table_and_data(args.out, text, {"classes": names, "records": _rounded(records)})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
