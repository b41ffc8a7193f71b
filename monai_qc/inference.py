"""QCPredictor: an image and its segmentation in, predicted per-slice and 3D quality out."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_qc.bundle import load_bundle, load_weights, resolve_bundle
from monai_qc.errors import BundleError, QCInputError
from monai_qc.findings import (
    Finding,
    class_gaps,
    outside_rated_region,
    validate_contiguous_classes,
)
from monai_qc.reconstruction import (
    gap_truth_area,
    reconstruct_volume_dsc,
    slice_error_fraction,
)
from monai_qc.run_manifest import bundle_identity
from monai_qc.thresholds import Thresholds

__all__ = [
    "QCPredictor",
    "QCResult",
    "Thresholds",
    "beyond_segmented_extent",
    "class_indices",
    "slice_areas",
]

logger = logging.getLogger(__name__)

#: A class missing from a slice's segmentation is reported as null (absent from the truth
#: too) when its predicted DSC is at least this: the network then expects no truth there.
ABSENT_DSC = 0.5


def beyond_segmented_extent(seg_area: np.ndarray) -> np.ndarray:
    """(S, K) True on slices before the first or after the last slice segmented with a class.

    False everywhere for a class segmented on no slice. On such end slices the network cannot
    tell the end of the structure (apex, base) from a segmentation that stopped short: it rates
    both as missed, so its rating there carries no information.
    """
    present = seg_area > 0
    index = np.arange(len(seg_area))[:, None]
    first = present.argmax(axis=0)
    last = len(seg_area) - 1 - present[::-1].argmax(axis=0)
    return present.any(axis=0) & ((index < first) | (index > last))


def class_indices(
    segmentation: np.ndarray, labels: Mapping[str, int], source: str | Path | None = None
) -> np.ndarray:
    """Label values -> class indices (0 background, j = j-th foreground label by value)."""
    values = [0, *sorted(labels.values())]
    lookup = np.full(max(values) + 1, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    seg = np.asarray(segmentation)
    if not np.issubdtype(seg.dtype, np.integer):
        if not np.all(np.isfinite(seg)) or np.any(seg != np.round(seg)):
            raise QCInputError(source, "segmentation holds non-integer values")
        seg = seg.astype(np.int64)
    present = np.unique(seg)
    unknown = [int(v) for v in present if v < 0 or v >= len(lookup) or lookup[v] < 0]
    if unknown:
        raise QCInputError(source, f"unknown label values {unknown}; the model knows {values}")
    return lookup[seg]


def slice_areas(indices: np.ndarray, n_classes: int) -> np.ndarray:
    """Voxel count of every class on every slice, (S, K)."""
    n_slices = indices.shape[0]
    codes = indices.reshape(n_slices, -1) + n_classes * np.arange(n_slices)[:, None]
    return np.bincount(codes.ravel(), minlength=n_slices * n_classes).reshape(n_slices, n_classes)


@dataclass
class QCResult:
    """Predicted quality of one segmentation. Arrays have K columns, background first."""

    case: str
    labels: dict[str, int]
    slice_dsc: np.ndarray
    slice_mvsf: np.ndarray
    seg_area: np.ndarray
    volume_dsc: np.ndarray
    spacing: tuple[float, float, float]
    thresholds: Thresholds
    extra: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        """Foreground class names in column order (column 0, background, is not named)."""
        return sorted(self.labels, key=self.labels.__getitem__)

    def _absent(self) -> np.ndarray:
        """(S, K) True where a class is taken as absent from both maps (reported null).

        A class not segmented on a slice is absent there when the network predicts so
        (:data:`ABSENT_DSC`) or when the slice lies beyond the class's segmented slices
        (:func:`beyond_segmented_extent`). A gap inside that extent, or a class segmented
        nowhere, keeps the network's rating and can be flagged as missed.
        """
        empty = self.seg_area == 0
        return empty & ((self.slice_dsc >= ABSENT_DSC) | beyond_segmented_extent(self.seg_area))

    @property
    def low_slices(self) -> np.ndarray:
        """(S, K) True where a class's predicted slice DSC is below its slice threshold.

        ... and its predicted disagreement reaches ``thresholds.min_slice_error`` of the class's
        volume. Column 0 (background) is never set; classes taken as absent are not low.
        """
        low = np.zeros(self.slice_dsc.shape, dtype=bool)
        absent = self._absent()
        large = (
            slice_error_fraction(self.slice_dsc, self.slice_mvsf, self.seg_area)
            >= self.thresholds.min_slice_error
        )
        for j, name in enumerate(self.class_names, start=1):
            if name in self.thresholds.min_slice_dsc:
                below = self.slice_dsc[:, j] < self.thresholds.min_slice_dsc[name]
                low[:, j] = below & ~absent[:, j] & large[:, j]
        return low

    @property
    def flagged(self) -> np.ndarray:
        """(S,) True for slices whose predicted DSC is below a slice threshold."""
        return self.low_slices.any(axis=1)

    @property
    def failed_classes(self) -> list[str]:
        """Classes with a case threshold whose reconstructed 3D DSC is below it or not finite.

        A class with no finite 3D DSC (segmented on no slice, or a NaN rating) has no value
        to compare: it fails rather than passing unchecked.
        """
        return [
            name
            for j, name in enumerate(self.class_names, start=1)
            if name in self.thresholds.min_dsc
            and not (
                np.isfinite(self.volume_dsc[j])
                and self.volume_dsc[j] >= self.thresholds.min_dsc[name]
            )
        ]

    @property
    def verdict(self) -> str:
        """``"fail"`` when a class or a slice is below its threshold or on any finding."""
        failed = self.failed_classes or self.flagged.any() or self.findings
        return "fail" if failed else "pass"

    def reasons(self) -> list[str]:
        """Why the verdict is ``"fail"``, one sentence each (empty for a pass)."""
        out = []
        for name in self.failed_classes:
            j = self.class_names.index(name) + 1
            limit = self.thresholds.min_dsc[name]
            if np.isfinite(self.volume_dsc[j]):
                value = f"{self.volume_dsc[j]:.3f}"
                out.append(f"{name}: predicted 3D DSC {value} below {limit:.3f}")
            elif self.seg_area[:, j].sum() == 0:
                out.append(f"{name}: segmented on no slice, so no 3D DSC (threshold {limit:.3f})")
            else:
                out.append(f"{name}: no finite predicted 3D DSC (threshold {limit:.3f})")
        low = self.low_slices
        for j, name in enumerate(self.class_names, start=1):
            if low[:, j].any():
                slices = ", ".join(str(int(i)) for i in np.flatnonzero(low[:, j]))
                limit = self.thresholds.min_slice_dsc[name]
                out.append(f"{name}: predicted slice DSC below {limit:.3f} on slice(s) {slices}")
        return out + [finding.message for finding in self.findings]

    def segmented_ml(self) -> dict[str, float]:
        """Segmented volume of every class, mL."""
        voxel_ml = float(np.prod(self.spacing)) / 1000.0
        totals = self.seg_area.sum(axis=0)
        return {name: float(totals[j]) * voxel_ml for j, name in enumerate(self.class_names, 1)}

    def to_dict(self) -> dict[str, Any]:
        """The per-case report (see the README for the format)."""
        absent, flagged = self._absent(), self.flagged
        names = self.class_names

        def row(values: np.ndarray, mask: np.ndarray) -> dict[str, float | None]:
            return {
                n: None if mask[j] or not np.isfinite(values[j]) else round(float(values[j]), 4)
                for j, n in enumerate(names, start=1)
            }

        slices = [
            {
                "index": i,
                "dsc": row(self.slice_dsc[i], absent[i]),
                "mvsf": row(self.slice_mvsf[i], absent[i]),
                "area": {n: int(self.seg_area[i, j]) for j, n in enumerate(names, start=1)},
                "flagged": bool(flagged[i]),
            }
            for i in range(self.slice_dsc.shape[0])
        ]
        no_mask = np.zeros(len(names) + 1, dtype=bool)
        return {
            "case": self.case,
            "labels": dict(self.labels),
            "slices": slices,
            "volume": {
                "dsc": row(self.volume_dsc, no_mask),
                "segmented_ml": {k: round(v, 3) for k, v in self.segmented_ml().items()},
            },
            "spacing": list(self.spacing),
            "thresholds": self.thresholds.to_dict(),
            "failed_classes": self.failed_classes,
            "flagged_slices": [int(i) for i in np.flatnonzero(flagged)],
            "findings": [finding.to_dict() for finding in self.findings],
            "reasons": self.reasons(),
            "verdict": self.verdict,
            **self.extra,
        }


class QCPredictor:
    """Predicts per-slice DSC/MVSF and the reconstructed 3D DSC of a segmentation.

    Args:
        network: QC network mapping (B, C, H, W) to (B, 2K) (DSCs then MVSFs).
        preprocessing: callable (image, class-index segmentation) -> (S, C, H, W) tensor; C is
            1+K, or (2c+1)(1+K) for a network reading c neighbouring slices on each side.
        labels: foreground class name -> label value.
        thresholds: case and slice thresholds.
        device: torch device of the network.
        name: name of the model (reported).
        identity: the bundle's name, version and SHA-256 (``bundle_identity``),
            reported with every result; None for a network not loaded from a bundle.
        contiguous_classes: classes that must be present on every slice between their first
            and last slice; a gap is a ``class_gap`` finding (:func:`class_gaps`).

    Foreground outside the crop box the preprocessing records (``last_box``) is never rated:
    it is an ``outside_rated_region`` finding (:func:`outside_rated_region`).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: Any,
        labels: Mapping[str, int],
        thresholds: Thresholds | None = None,
        device: str | torch.device = "cpu",
        name: str = "qc",
        identity: Mapping[str, str] | None = None,
        contiguous_classes: Sequence[str] = (),
    ) -> None:
        context = getattr(network, "context_slices", 0)
        stacked = getattr(preprocessing, "context_slices", context)
        if stacked != context:
            raise ValueError(
                f"the network reads context_slices={context} (neighbouring slices on each "
                f"side) but the preprocessing stacks context_slices={stacked}; set the "
                "preprocessing's context_slices to match"
            )
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.preprocessing = preprocessing
        self.labels = dict(labels)
        self.n_classes = 1 + len(self.labels)
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.identity = dict(identity) if identity else {"name": name, "version": "", "sha256": ""}
        self.contiguous_classes = validate_contiguous_classes(contiguous_classes, self.labels)

    @classmethod
    def from_bundle(
        cls,
        path_or_name: str | Path | None = None,
        device: str | torch.device = "cpu",
        expected_sha256: str | None = None,
    ) -> QCPredictor:
        """A predictor from a bundle folder or the name of a shipped bundle (default one).

        A bundle is code (its configs may run Python): load only bundles you trust, and pin
        one by its identity with ``expected_sha256`` (see :func:`bundle_identity`).

        Raises:
            BundleError: the bundle cannot be loaded, or its SHA-256 is not ``expected_sha256``.
        """
        root = resolve_bundle(path_or_name).resolve()
        identity = bundle_identity(root)
        if expected_sha256 is not None and identity["sha256"] != expected_sha256.lower():
            raise BundleError(
                f"{root}: bundle SHA-256 is {identity['sha256']}, not the expected "
                f"{expected_sha256}; refusing to load it"
            )
        logger.info(
            "QC bundle %s version %s sha256 %s",
            identity["name"],
            identity["version"] or "?",
            identity["sha256"],
        )
        parser, root = load_bundle(root)
        labels = {str(k): int(v) for k, v in parser.get_parsed_content("labels").items()}
        network = parser.get_parsed_content("network_def")
        load_weights(network, root / "models" / "model.pt")
        names = sorted(labels, key=labels.__getitem__)
        thresholds = Thresholds.from_config(parser.get_parsed_content("thresholds"), names)
        setting = f"{root / 'configs' / 'inference.json'}: contiguous_classes"
        has_setting = "contiguous_classes" in parser.get()
        contiguous = parser.get_parsed_content("contiguous_classes") if has_setting else None
        try:
            contiguous = validate_contiguous_classes(contiguous, labels, setting)
        except ValueError as error:
            raise BundleError(str(error)) from error
        return cls(
            network,
            parser.get_parsed_content("preprocessing"),
            labels,
            thresholds,
            device,
            name=root.name,
            identity=identity,
            contiguous_classes=contiguous,
        )

    def predict(
        self,
        image: np.ndarray,
        segmentation: np.ndarray,
        spacing: Sequence[float] | None = None,
        case: str = "case",
    ) -> QCResult:
        """QC of one subject: image and segmentation (S, H, W) with label values.

        Args:
            image: the image, slices along the first axis.
            segmentation: the segmentation to check, same shape.
            spacing: voxel spacing (sz, sy, sx) in mm; None means 1 mm (volumes in voxels).
            case: case identifier, used in the result and in error messages.
        """
        image = np.asarray(image)
        segmentation = np.asarray(segmentation)
        if image.ndim != 3 or segmentation.ndim != 3:
            raise QCInputError(
                case,
                f"expected 3D arrays, got image {image.shape} and "
                f"segmentation {segmentation.shape}",
            )
        if image.shape != segmentation.shape:
            raise QCInputError(
                case,
                f"image shape {image.shape} differs from segmentation shape {segmentation.shape}",
            )
        if not np.all(np.isfinite(image)):
            raise QCInputError(case, "image holds NaN or infinite values")
        if image.size and image.min() == image.max():
            raise QCInputError(case, "the image is blank (constant): nothing to check")
        indices = class_indices(segmentation, self.labels, case)
        if not indices.any():
            raise QCInputError(case, "segmentation is empty (background only)")
        inputs = self.preprocessing(image.astype(np.float32), indices)
        with torch.inference_mode():
            output = self.network(torch.as_tensor(inputs).to(self.device)).float().cpu().numpy()
        k = self.n_classes
        dsc, mvsf = output[:, :k].astype(np.float64), output[:, k : 2 * k].astype(np.float64)
        areas = slice_areas(indices, k)
        names = sorted(self.labels, key=self.labels.__getitem__)
        spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
        findings = class_gaps(areas, names, self.contiguous_classes)
        # truth missed on a gap of a contiguous class counts in the 3D DSC (interpolated area)
        missed = gap_truth_area(areas)
        missed[:, [j for j, n in enumerate(names, 1) if n not in self.contiguous_classes]] = 0
        missed[:, 0] = 0
        box = getattr(self.preprocessing, "last_box", None)
        if box is not None:
            findings = outside_rated_region(indices, box, names, spacing) + findings
        else:
            logger.debug("%s: the preprocessing records no crop box; all foreground rated", case)
        return QCResult(
            case=case,
            labels=self.labels,
            slice_dsc=dsc,
            slice_mvsf=mvsf,
            seg_area=areas,
            volume_dsc=reconstruct_volume_dsc(dsc, mvsf, areas, missed_area=missed),
            spacing=spacing,  # type: ignore[arg-type]
            thresholds=self.thresholds,
            extra={"model": self.name, "bundle": dict(self.identity)},
            findings=findings,
        )
