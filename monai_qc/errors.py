"""Exceptions raised by monai-qc.

Exception tree::

    QCError
    ├── QCInputError (also a ValueError)   bad image/segmentation input, names the file
    └── BundleError                        a QC bundle that cannot be found or loaded
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BundleError", "QCError", "QCInputError"]


class QCError(Exception):
    """Base class of every monai-qc error."""


class QCInputError(QCError, ValueError):
    """An image or segmentation that cannot be quality-controlled.

    Args:
        path: the offending file (or a case identifier when there is no file).
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class BundleError(QCError):
    """A QC bundle that cannot be found, parsed or loaded."""
