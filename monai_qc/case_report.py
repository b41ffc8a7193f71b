"""One case's QC report from its arrays: the rating, the volume correction and the figures.

``monai-qc check`` and the nnU-Net plugin (``nnUNetv2_predict_qc``, ``monai-qc nnunet-qc``)
both build a case's report here, so a case gets the same report and figures whichever way it
was checked; each adds its own run stamps (``run_id``, ``inputs``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_qc.correction import correct_volumes
from monai_qc.inference import QCPredictor
from monai_qc.report_figures import write_case_figures
from monai_qc.report_html import figure_paths

__all__ = ["FIGURE_CHOICES", "rate_case"]

#: Which cases get figures: every case, failed and flagged ones (a person will look), none.
FIGURE_CHOICES = ("all", "failed", "none")


def rate_case(
    predictor: QCPredictor,
    image: np.ndarray,
    segmentation: np.ndarray,
    spacing: Sequence[float] | None,
    case_id: str,
    *,
    correct: bool = True,
    figures_dir: str | Path | None = None,
    figures: str = "all",
) -> dict[str, Any]:
    """The report of one case (see the README), with its figures written when asked.

    Args:
        predictor: the QC model.
        image, segmentation: (S, H, W) arrays; label values of the predictor's label map.
        spacing: (sz, sy, sx) in mm.
        case_id: the case's name.
        correct: add the ``correction`` entry (volumes with wrong slices replaced).
        figures_dir: the report folder whose ``figures/`` gets the case's PNGs (None: none).
        figures: ``"all"``, ``"failed"`` (only a case whose verdict is not ``pass``) or
            ``"none"``; the figures of a case not drawn are removed (an earlier run's).

    Raises:
        QCInputError: the arrays cannot be checked.
        OSError: a figure could not be written.
    """
    result = predictor.predict(image, segmentation, spacing, case_id)
    report = result.to_dict()
    if correct:
        report["correction"] = correct_volumes(result).to_dict()
    if figures not in FIGURE_CHOICES:
        raise ValueError(f"figures {figures!r} is not one of {', '.join(FIGURE_CHOICES)}")
    if figures_dir is None:
        return report
    if figures == "all" or (figures == "failed" and report["verdict"] != "pass"):
        write_case_figures(report, image, segmentation, figures_dir)
    else:
        for stale in figure_paths(case_id, figures_dir).values():
            stale.unlink(missing_ok=True)
    return report
