"""What a QC run records of its cases: their files' hashes and the stamp of every report.

See :mod:`monai_qc.run_manifest` for the manifest these fill and the ``monai-qc gate`` checks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from monai_qc.run_manifest import CaseIdentity, RunManifest, case_key, file_sha256

__all__ = ["case_identity", "report_stamp", "run_settings"]

logger = logging.getLogger(__name__)

#: Keys of ``config["model"]`` recorded in the manifest's settings (what made the segmentations).
_MODEL_SETTINGS = ("model_folder", "folds", "checkpoint", "trainer", "plans", "dataset")


def _sha256_or_none(path: str | None) -> str | None:
    """SHA-256 of a file, or None when there is no path or the file cannot be read."""
    if not path:
        return None
    try:
        return file_sha256(path)
    except OSError as error:
        logger.warning("%s: cannot be hashed: %s", path, error)
        return None


def case_identity(entry: Mapping[str, Any]) -> CaseIdentity:
    """A case of ``config["cases"]`` with its files' SHA-256s.

    ``image_sha256`` is the SHA-256 of the channel-0 image file (the image QC reads; other
    channels are not hashed) unless the entry gives it (an image passed as an array);
    ``segmentation_sha256`` that of an existing segmentation to check (None for a
    segmentation the run has yet to make). A file that cannot be read gets None: its case
    becomes an ``"error"`` report when it is loaded.
    """
    image = entry.get("image")
    segmentation = entry.get("segmentation")
    return CaseIdentity(
        image=str(image) if image is not None else None,
        image_sha256=entry.get("image_sha256") or _sha256_or_none(image),
        segmentation=str(segmentation) if segmentation is not None else None,
        segmentation_sha256=_sha256_or_none(segmentation),
    )


def run_settings(config: Mapping[str, Any], correct_volumes: bool) -> dict[str, Any]:
    """What besides inputs, bundle and thresholds a run's reports depend on (plain JSON).

    The volume correction setting, the data set's labels and what made the segmentations
    (``config["model"]``'s model folder, folds, checkpoint, trainer, plans and data set).
    """
    model = config.get("model") or {}
    recorded = {
        "correct_volumes": correct_volumes,
        "labels": config.get("labels"),
        "model": {k: model[k] for k in _MODEL_SETTINGS if k in model},
    }
    return json.loads(json.dumps(recorded, default=str))


def report_stamp(
    manifest: RunManifest | None,
    predictor: Any,
    settings: Mapping[str, Any],
    case_id: str,
    segmentation: str | None,
) -> dict[str, Any]:
    """``run_id``, ``inputs`` and ``qc_key`` of a case's report.

    ``inputs`` are the manifest's files of the case with ``segmentation`` (the file the report
    rates, when given) and its SHA-256 (None while the file does not exist). ``qc_key`` is None
    when the image's hash is unknown (a case the run could not pair with an image).
    """
    known = (manifest.cases.get(case_id) if manifest else None) or CaseIdentity()
    segmentation = segmentation or known.segmentation
    if segmentation == known.segmentation and known.segmentation_sha256:
        segmentation_sha256: str | None = known.segmentation_sha256
    elif segmentation is not None and os.path.isfile(segmentation):
        segmentation_sha256 = _sha256_or_none(segmentation)
    else:
        segmentation_sha256 = None
    inputs = replace(known, segmentation=segmentation, segmentation_sha256=segmentation_sha256)
    key = None
    if inputs.image_sha256 is not None:
        key = case_key(
            inputs.image_sha256,
            segmentation_sha256,
            predictor.identity["sha256"],
            predictor.thresholds.to_dict(),
            settings,
        )
    run_id = manifest.run_id if manifest else None
    return {"run_id": run_id, "inputs": inputs.to_dict(), "qc_key": key}
