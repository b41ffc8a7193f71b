"""Per-class DSC thresholds: below them a case fails or a slice is flagged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Per-class DSC thresholds below which a case fails or a slice is flagged."""

    min_dsc: dict[str, float] = field(default_factory=dict)
    min_slice_dsc: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], class_names: Sequence[str]) -> Thresholds:
        """From ``{"min_dsc": x or {class: x}, "min_slice_dsc": ...}``."""

        def per_class(value: Any) -> dict[str, float]:
            if value is None:
                return {}
            if isinstance(value, Mapping):
                return {str(k): float(v) for k, v in value.items()}
            return {name: float(value) for name in class_names}

        return cls(per_class(config.get("min_dsc")), per_class(config.get("min_slice_dsc")))

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"min_dsc": dict(self.min_dsc), "min_slice_dsc": dict(self.min_slice_dsc)}
