"""The main job end to end on synthetic data: phantoms, damaged segmentations, QC, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_qc.check import CheckSummary, check_folder
from monai_qc.inference import QCPredictor
from monai_qc.metrics import slice_scores, volume_scores
from monai_qc.phantom import PHANTOM_LABELS, make_phantom, write_volume
from monai_qc.report import read_case_report

__all__ = ["DemoRow", "damage", "run_demo"]


def damage(labels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A damaged copy of a label map: ``none``, ``eroded``, ``blanked`` or ``shifted``."""
    seg = labels.copy()
    mid = len(seg) // 2
    if kind == "eroded":  # myocardium thinned everywhere
        myo = seg == PHANTOM_LABELS["MYO"]
        seg[myo & ~ndimage.binary_erosion(myo, iterations=2)] = 0
    elif kind == "blanked":  # the mid slice missed entirely
        seg[mid] = 0
    elif kind == "shifted":  # the mid slices misregistered by 6 pixels
        seg[mid - 1 : mid + 2] = np.roll(
            seg[mid - 1 : mid + 2], 6 + int(rng.integers(0, 2)), axis=2
        )
    elif kind != "none":
        raise ValueError(f"unknown damage {kind!r}")
    return seg


@dataclass(frozen=True)
class DemoRow:
    """Predicted against true quality of one demo segmentation, with its verdict."""

    case: str
    damage: str
    predicted: dict[str, float | None]
    true: dict[str, float]
    flagged: list[int]
    damaged_slice_dsc: dict[str, float | None]
    verdict: str = ""
    findings: tuple[str, ...] = ()


def run_demo(
    predictor: QCPredictor, out_dir: Path, seed: int = 7
) -> tuple[CheckSummary, list[DemoRow]]:
    """Write phantom cases with damaged segmentations to ``out_dir`` and check them."""
    images, segs = out_dir / "images", out_dir / "segmentations"
    images.mkdir(parents=True, exist_ok=True)
    segs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truths: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for i, kind in enumerate(("none", "eroded", "blanked", "shifted")):
        image, labels = make_phantom(seed + i, n_slices=9, size=(128, 128))
        seg = damage(labels, kind, rng)
        case = f"phantom_{i + 1:02d}_{kind}"
        write_volume(image, images / f"{case}_0000.nii.gz")
        write_volume(seg, segs / f"{case}.nii.gz")
        truths[case] = (kind, labels, seg)
    summary = check_folder(predictor, images, segs, out_dir / "qc", overwrite=True)
    values = [0, *PHANTOM_LABELS.values()]
    rows = []
    for case, (kind, labels, seg) in truths.items():
        report = read_case_report(out_dir / "qc" / f"{case}.json")
        true = volume_scores(labels, seg, values).dsc
        per_slice = slice_scores(labels, seg, values).dsc
        mid = len(seg) // 2
        rows.append(
            DemoRow(
                case,
                kind,
                report["volume"]["dsc"],
                {n: float(true[j]) for j, n in enumerate(PHANTOM_LABELS, start=1)},
                report["flagged_slices"],
                {
                    n: (None if np.isnan(per_slice[mid, j]) else float(per_slice[mid, j]))
                    for j, n in enumerate(PHANTOM_LABELS, start=1)
                },
                report["verdict"],
                tuple(finding["message"] for finding in report.get("findings", [])),
            )
        )
    return summary, rows
