"""The hooks a monai-qc plugin can implement around a segmentation run.

A plugin is any object (or module) with functions named like the hooks below, decorated
with :data:`hookimpl`; it is registered through the ``monai_qc`` entry-point group or by
:func:`nnunet_hooks.manager.get_plugin_manager`. Hooks receive keyword arguments, so a plugin
may accept only those it needs.

``run_started``'s ``config`` holds the plugins' settings, ``"model"`` and ``"labels"``, and may
hold ``"command"`` (what runs) and, when the run knows them before its first case, ``"cases"``:
``{case id: {"image": channel-0 file, "image_sha256": hash of an image given as an array,
"segmentation": an existing segmentation to check, "remake": the run segments the case
(again)}}``, every key optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pluggy

__all__ = ["PROJECT_NAME", "SegmentedCase", "hookimpl", "hookspec"]

PROJECT_NAME = "monai_qc"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@dataclass
class SegmentedCase:
    """A case whose segmentation has just been made.

    Attributes:
        case_id: nnU-Net case identifier.
        segmentation: label values, (S, H, W) in the geometry of the input image.
        image: first channel of the input image, (S, H, W), or None when not loaded.
        spacing: voxel spacing in array order (sz, sy, sx), mm.
        properties: nnU-Net's properties of the case (geometry of the original file).
        model: what made the segmentation (e.g. variant name, epoch, checkpoint path).
        output_file: where the segmentation was or will be written, if anywhere.
        probabilities: softmax probabilities (K, S, H, W) in the same geometry, when the
            run kept them (None otherwise).
    """

    case_id: str
    segmentation: np.ndarray
    image: np.ndarray | None
    spacing: tuple[float, float, float]
    properties: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    output_file: str | None = None
    probabilities: np.ndarray | None = None


@hookspec
def run_started(config: dict[str, Any], output_folder: str | None) -> None:
    """A segmentation run starts, with its configuration and output folder."""


@hookspec
def case_segmented(case: SegmentedCase) -> None:
    """A case has been segmented (called in the main process, as soon as it exists)."""


@hookspec
def case_failed(case_id: str, message: str) -> None:
    """A case could not be segmented or read (the message says why); the run goes on."""


@hookspec
def case_reported(case_id: str, report: dict[str, Any], output_folder: str | None) -> None:
    """A case's QC report is ready (the per-case report dictionary)."""


@hookspec
def run_finished(summary: dict[str, Any]) -> None:
    """A segmentation run has finished, with a summary of what it did."""
