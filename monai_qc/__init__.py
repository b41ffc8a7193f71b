"""monai-qc: automatic quality control of segmentations without ground truth.

``QCPredictor`` and ``QCResult`` are imported on first use, so that the command line and
light modules start without loading torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monai_qc.errors import BundleError, QCError, QCInputError

if TYPE_CHECKING:
    from monai_qc.inference import QCPredictor, QCResult

__version__ = "0.1.0"

__all__ = ["BundleError", "QCError", "QCInputError", "QCPredictor", "QCResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("QCPredictor", "QCResult"):
        from monai_qc import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'monai_qc' has no attribute {name!r}")
