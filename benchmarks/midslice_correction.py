"""Mid-slice experiment of volume correction (Fournel et al. 2021, section 5) on the QC test split.

This measures the paper's slice-wise rule (``monai_qc.slicewise_correction``:
``find_wrong_slices`` and ``replace_wrong_slices``); the reports use the per-class rule, measured
by ``benchmarks/volume_correction.py``.

For each test case segmented by the reference model: Z is its segmentation, D is Z with the
middle slice replaced by a bad segmentation of that slice (true slice DSC < 0.5) from another
collected model, D+C is D after volume correction with the QC bundle. Writes a markdown table
of relative volume errors, KS p-values and 3D DSC, and a JSON with the same numbers.

Usage:
    python benchmarks/midslice_correction.py --data QC_DATA --work RUN_DIR \
        --dataset Dataset027_ACDC [--reference-model v00_e0200] [--bundle PATH] \
        [--threshold 0.3] [--classes background,MYO,LV] [--out FILE.md] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from monai_qc.correction_experiment import (
    CaseOutcome,
    class_volumes_ml,
    damage_slice,
    markdown_table,
    mid_slice,
    relative_volume_error,
    slice_mean_dsc,
    summarize,
)
from monai_qc.errors import QCInputError
from monai_qc.inference import QCPredictor
from monai_qc.io import patient_of, read_volume
from monai_qc.metrics import volume_scores
from monai_qc.qc_dataset import split_patients
from monai_qc.report import write_table_and_data
from monai_qc.slicewise_correction import default_columns, find_wrong_slices, replace_wrong_slices

logger = logging.getLogger("midslice_correction")

OUT = Path(__file__).parent / "results" / "midslice_correction.md"
BAD_SLICE_DSC = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="QC data set folder")
    p.add_argument("--work", type=Path, required=True, help="variant workspace (has collected/)")
    p.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw data set folder")
    p.add_argument("--reference-model", default=None, help="default: best mean true 3D DSC")
    p.add_argument("--bundle", default=None, help="QC bundle folder or name (default: shipped)")
    p.add_argument("--threshold", type=float, default=0.3, help="predicted slice DSC threshold")
    p.add_argument(
        "--classes",
        default="background,MYO,LV",
        help="classes whose predicted DSC decides (paper: BG, LVM, LVC); 'auto': those "
        "segmented on every slice",
    )
    p.add_argument("--out", type=Path, default=OUT, help="markdown table (JSON beside it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of bad segmentation")
    p.add_argument("--max-cases", type=int, default=None, help="only the first N test cases")
    return p.parse_args(argv)


def read_labels(data: Path) -> dict[str, int]:
    """Foreground class name -> label value (by value), from the QC data set's manifest."""
    manifest = json.loads((data / "manifest.json").read_text())
    classes, values = manifest["classes"], manifest["class_values"]
    if len(classes) != len(values) or len(classes) < 2:
        raise ValueError(f"{data / 'manifest.json'}: classes {classes} vs values {values}")
    labels = dict(zip(classes[1:], (int(v) for v in values[1:]), strict=True))
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def model_documents(collected: Path) -> dict[str, dict[str, Any]]:
    """``<model>.json`` of every collected model that also has its ``<model>.npz``."""
    docs = {
        p.stem: json.loads(p.read_text())
        for p in sorted(collected.glob("*.json"))
        if p.with_suffix(".npz").is_file()
    }
    if not docs:
        raise FileNotFoundError(f"{collected}: no collected models (<model>.json + .npz)")
    return docs


def best_model(docs: dict[str, dict[str, Any]]) -> str:
    """Model with the highest mean true 3D DSC (foreground classes, then cases)."""

    def score(doc: dict[str, Any]) -> float:
        rows = [[np.nan if v is None else v for v in c["volume"]["dsc"][1:]] for c in doc["cases"]]
        return float(np.nanmean(np.array(rows, dtype=float))) if rows else float("-inf")

    scores = {name: score(doc) for name, doc in docs.items()}
    best = max(scores, key=scores.__getitem__)
    logger.info("reference model %s (mean true 3D DSC %.3f)", best, scores[best])
    return best


def choose_donor(
    truth: np.ndarray,
    case: str,
    index: int,
    pool: dict[str, Any],
    values: list[int],
    rng: np.random.Generator,
) -> tuple[str, np.ndarray, float] | None:
    """A seeded choice among models whose slice ``index`` of ``case`` is bad (DSC < 0.5)."""
    bad: list[tuple[str, np.ndarray, float]] = []
    for name in sorted(pool):
        seg = pool[name][case] if case in pool[name].files else None
        if seg is not None and seg.shape == truth.shape:
            dsc = slice_mean_dsc(truth, seg, index, values)
            if dsc < BAD_SLICE_DSC:
                bad.append((name, seg, dsc))
    return bad[int(rng.integers(len(bad)))] if bad else None


def run_case(
    case: str,
    z: np.ndarray,
    args: argparse.Namespace,
    predictor: QCPredictor,
    pool: dict[str, Any],
    rng: np.random.Generator,
) -> tuple[CaseOutcome | None, dict[str, Any]]:
    """Z, D and D+C of one case; None (with the reason in the info) when it is skipped."""
    image, spacing, _ = read_volume(args.dataset / "imagesTr" / f"{case}_0000.nii.gz")
    truth, _, _ = read_volume(args.dataset / "labelsTr" / f"{case}.nii.gz")
    values = sorted(predictor.labels.values())
    index = mid_slice(z)
    if z.shape != truth.shape:
        return None, {"case": case, "skipped": f"segmentation {z.shape} vs truth {truth.shape}"}
    if index is None:
        return None, {"case": case, "skipped": "the reference segmentation is empty"}
    donor = choose_donor(truth, case, index, pool, values, rng)
    if donor is None:
        return None, {"case": case, "skipped": f"no model has a bad slice {index} (DSC < 0.5)"}
    d = damage_slice(z, donor[1], index)
    result = predictor.predict(image, d, spacing, case)
    wrong_slices, corrected_ml = slicewise_correction(result, args.threshold, args.classes)
    v_truth = class_volumes_ml(truth, values, spacing)
    volumes = {
        "Z": class_volumes_ml(z, values, spacing),
        "D": class_volumes_ml(d, values, spacing),
        "D+C": corrected_ml,
    }
    outcome = CaseOutcome(
        case=case,
        rve={c: relative_volume_error(v, v_truth) for c, v in volumes.items()},
        dsc={c: volume_scores(truth, s, values).dsc for c, s in (("Z", z), ("D", d))},
        detected=index in wrong_slices,
        other_wrong=len(set(wrong_slices) - {index}),
    )
    info = {
        "case": case, "mid_slice": index, "donor": donor[0], "donor_slice_dsc": donor[2],
        "wrong_slices": wrong_slices, "truth_ml": v_truth.tolist(),
        **{f"{c}_ml": v.tolist() for c, v in volumes.items()},
        **{f"rve_{c}": v.tolist() for c, v in outcome.rve.items()},
        **{f"dsc_{c}": v.tolist() for c, v in outcome.dsc.items()},
        "predicted_mid_dsc": result.slice_dsc[index].tolist(),
    }  # fmt: skip
    return outcome, info


def slicewise_correction(
    result: Any, threshold: float, classes: str
) -> tuple[list[int], np.ndarray]:
    """Wrong slices and volumes (mL per foreground class) after the paper's slice-wise rule."""
    area = result.seg_area.astype(np.float64)
    lookup = {"background": 0, **{n: j for j, n in enumerate(result.class_names, start=1)}}
    columns = (
        default_columns(area) if classes == "auto" else [lookup[c] for c in classes.split(",")]
    )
    wrong = find_wrong_slices(result.slice_dsc, area, threshold, columns)
    volumes = replace_wrong_slices(area, wrong)[:, 1:].sum(axis=0) * np.prod(result.spacing) / 1e3
    return [int(i) for i in np.flatnonzero(wrong)], volumes


def select_cases(args: argparse.Namespace, docs: dict[str, dict[str, Any]], ref: str) -> list[str]:
    """Test-split cases the reference model segmented."""
    patients = set(split_patients(args.data)["test"])
    patient = {c["case"]: c.get("patient") or patient_of(c["case"]) for c in docs[ref]["cases"]}
    with np.load(args.work / "collected" / f"{ref}.npz") as z:
        cases = sorted(c for c in z.files if patient.get(c, patient_of(c)) in patients)
    logger.info(
        "%d test patients, %d of their cases segmented by %s", len(patients), len(cases), ref
    )
    return cases[: args.max_cases] if args.max_cases else cases


def main(argv: list[str] | None = None) -> None:
    """Run the experiment and write the table and the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    labels = read_labels(args.data)
    collected = args.work / "collected"
    docs = model_documents(collected)
    ref = args.reference_model or best_model(docs)
    if ref not in docs:
        raise ValueError(f"--reference-model {ref} is not among the collected {sorted(docs)}")
    predictor = QCPredictor.from_bundle(args.bundle)
    if predictor.labels != labels:
        raise ValueError(f"bundle labels {predictor.labels} differ from the data's {labels}")
    unknown = set(args.classes.split(",")) - {"background", *labels}
    if args.classes != "auto" and unknown:
        raise ValueError(f"--classes {sorted(unknown)} are not among background, {list(labels)}")
    cases = select_cases(args, docs, ref)
    pool = {name: np.load(collected / f"{name}.npz") for name in docs if name != ref}
    if not pool:
        logger.warning("only the reference model is collected: no bad segmentations to use")
    rng = np.random.default_rng(args.seed)
    outcomes, infos = [], []
    with np.load(collected / f"{ref}.npz") as reference:
        for case in tqdm(cases, desc="mid-slice experiment", unit="case"):
            try:
                outcome, info = run_case(case, reference[case], args, predictor, pool, rng)
            except QCInputError as error:
                outcome, info = None, {"case": case, "skipped": str(error)}
            if outcome is None:
                logger.warning("%s skipped: %s", case, info["skipped"])
            else:
                outcomes.append(outcome)
            infos.append(info)
    for handle in pool.values():
        handle.close()
    summary = summarize(outcomes, list(labels))
    table = markdown_table(summary)
    header = (
        f"# Mid-slice volume correction\n\nReference model {ref}; QC bundle "
        f"{predictor.name}; threshold {args.threshold}; deciding classes {args.classes}; "
        f"seed {args.seed}; {len(cases) - len(outcomes)} of {len(cases)} test cases skipped.\n\n"
    )
    settings = vars(args) | {"reference_model": ref, "bundle_name": predictor.name}
    document = {"settings": settings, "summary": summary, "cases": infos}
    write_table_and_data(args.out, header + table, document)
    print(header + table)


if __name__ == "__main__":
    main()
