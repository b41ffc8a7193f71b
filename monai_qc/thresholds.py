"""Per-class DSC thresholds: below them a case fails or a slice is flagged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Per-class DSC thresholds below which a case fails or a slice is flagged.

    ``min_slice_error``: a slice whose DSC of a class is below ``min_slice_dsc`` is flagged
    only when its predicted disagreement is at least this fraction of the class's segmented
    volume (:func:`~monai_qc.reconstruction.slice_error_fraction`), so a low DSC on a few
    pixels at the apex or base, where the DSC of even an expert is low, is not a flag. 0 flags
    every low slice. Empty slices of a class keep the DSC rule alone.
    """

    min_dsc: dict[str, float] = field(default_factory=dict)
    min_slice_dsc: dict[str, float] = field(default_factory=dict)
    min_slice_error: float = 0.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], class_names: Sequence[str]) -> Thresholds:
        """From ``{"min_dsc": x or {class: x}, "min_slice_dsc": ..., "min_slice_error": f}``."""

        def per_class(value: Any) -> dict[str, float]:
            if value is None:
                return {}
            if isinstance(value, Mapping):
                return {str(k): float(v) for k, v in value.items()}
            return {name: float(value) for name in class_names}

        error = float(config.get("min_slice_error") or 0.0)
        if not 0.0 <= error <= 1.0:
            raise ValueError(f"min_slice_error {error} is outside [0, 1]")
        return cls(
            per_class(config.get("min_dsc")), per_class(config.get("min_slice_dsc")), error
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_dsc": dict(self.min_dsc),
            "min_slice_dsc": dict(self.min_slice_dsc),
            "min_slice_error": self.min_slice_error,
        }
