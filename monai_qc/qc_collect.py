"""Moved to :mod:`nnunet_hooks.true_scores`: the collector is a plugin of nnU-Net prediction.

This name is kept for one release; importing a name from it warns (DeprecationWarning). The
core package does not import the nnU-Net adapter, so the module is looked up by name.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = ("TrueScoreCollector", "mean_entropy")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"monai_qc.qc_collect.{name} moved to nnunet_hooks.true_scores.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("nnunet_hooks.true_scores"), name)
    raise AttributeError(f"module 'monai_qc.qc_collect' has no attribute {name!r}")
