"""monai-qc: automatic quality control of segmentations without ground truth."""

from monai_qc.errors import BundleError, QCError, QCInputError

__version__ = "0.1.0"

__all__ = ["BundleError", "QCError", "QCInputError", "__version__"]
