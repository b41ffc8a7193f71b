"""A plugin that records every segmentation of a variant run with its true scores.

It implements the ``run_started`` / ``case_segmented`` / ``run_finished`` hooks. For each
segmentation model it writes, atomically, ``<model>.npz`` (the segmentations, uint8, one array
per case) and ``<model>.json`` (the true per-slice and per-volume DSC and MVSF of every case
against the reference labels, and whether the case was in the model's training data).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_qc.io import patient_of, read_volume
from monai_qc.metrics import slice_scores, volume_scores
from monai_qc.report import atomic_write_text, jsonable
from nnunet_hooks.hookspecs import SegmentedCase, hookimpl

__all__ = ["TrueScoreCollector"]

logger = logging.getLogger(__name__)


def mean_entropy(
    probabilities: np.ndarray, segmentation: np.ndarray, class_values: Sequence[int]
) -> list[float | None]:
    """Mean normalised softmax entropy inside each class's segmented region (None if empty).

    Entropy is divided by log(number of channels), so it lies in [0, 1].
    """
    p = np.clip(probabilities, 1e-8, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0) / np.log(p.shape[0])
    return [
        float(entropy[segmentation == v].mean()) if (segmentation == v).any() else None
        for v in class_values
    ]


class TrueScoreCollector:
    """Collects segmentations and their true scores against a labels folder.

    Args:
        labels_dir: reference segmentations (nnU-Net ``labelsTr``).
        file_ending: file ending of the label files, e.g. ``.nii.gz``.
        class_values: label values scored, background first.
        out_dir: where ``<model>.npz`` and ``<model>.json`` go.
    """

    def __init__(
        self, labels_dir: Path, file_ending: str, class_values: Sequence[int], out_dir: Path
    ) -> None:
        self.labels_dir = Path(labels_dir)
        self.file_ending = file_ending
        self.class_values = list(class_values)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._truth: dict[str, np.ndarray] = {}
        self._model: dict[str, Any] = {}
        self._segmentations: dict[str, np.ndarray] = {}
        self._records: list[dict[str, Any]] = []

    def is_complete(self, model_name: str) -> bool:
        """Whether a model's results were already written (for resuming)."""
        return (self.out_dir / f"{model_name}.json").is_file()

    def truth(self, case_id: str) -> np.ndarray:
        """Reference label map of a case (read once)."""
        if case_id not in self._truth:
            path = self.labels_dir / f"{case_id}{self.file_ending}"
            self._truth[case_id] = read_volume(path)[0].astype(np.uint8)
        return self._truth[case_id]

    @hookimpl
    def run_started(self, config: dict[str, Any]) -> None:
        self._model = dict(config["model"])
        self._segmentations, self._records = {}, []

    @hookimpl
    def case_segmented(self, case: SegmentedCase) -> None:
        truth = self.truth(case.case_id)
        segmentation = np.asarray(case.segmentation, dtype=np.uint8)
        if segmentation.shape != truth.shape:
            raise ValueError(
                f"{case.case_id}: segmentation shape {segmentation.shape} differs from the "
                f"reference {truth.shape}"
            )
        per_slice = slice_scores(truth, segmentation, self.class_values)
        volume = volume_scores(truth, segmentation, self.class_values)
        self._segmentations[case.case_id] = segmentation
        entropy = (
            None
            if case.probabilities is None
            else mean_entropy(case.probabilities, segmentation, self.class_values)
        )
        self._records.append(
            {
                "case": case.case_id,
                "patient": patient_of(case.case_id),
                "in_training": case.case_id in set(self._model.get("training_cases", [])),
                "spacing": list(case.spacing),
                "volume": {"dsc": volume.dsc, "mvsf": volume.mvsf},
                "entropy": entropy,
                "slices": {
                    "dsc": per_slice.dsc,
                    "mvsf": per_slice.mvsf,
                    "seg_area": per_slice.seg_area,
                    "truth_area": per_slice.truth_area,
                },
            }
        )

    @hookimpl
    def run_finished(self, summary: dict[str, Any]) -> None:
        name = self._model["name"]
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=self.out_dir)
        os.close(fd)
        np.savez_compressed(tmp, **self._segmentations)  # type: ignore[arg-type]
        os.replace(tmp, self.out_dir / f"{name}.npz")
        model = {k: v for k, v in self._model.items() if k != "training_cases"}
        document = {"model": model, "class_values": self.class_values, "cases": self._records}
        atomic_write_text(self.out_dir / f"{name}.json", json.dumps(jsonable(document)))
        logger.info("%s: %d cases collected", name, len(self._records))
