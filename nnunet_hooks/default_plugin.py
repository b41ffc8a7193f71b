"""The built-in QC plugin: a QC report for every segmented case, a summary after the run.

It is registered under the name ``"qc"`` like any other plugin (so ``blocked=["qc"]`` turns it
off) and reads its settings from ``config["qc"]`` in ``run_started`` (see :class:`QCSettings`).
Reports go to ``<output folder>/qc``: ``<case>.json``, ``summary.csv`` and ``report.html``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from nnunet_hooks.hookspecs import SegmentedCase, hookimpl
from nnunet_hooks.manager import ENTRY_POINT_GROUP, get_plugin_manager

__all__ = ["PLUGIN_NAME", "QCPlugin", "QCSettings", "qc_plugin_manager"]

logger = logging.getLogger(__name__)

#: Name the built-in plugin is registered (and can be blocked) under.
PLUGIN_NAME = "qc"
_ALL = "*"


@dataclass(frozen=True)
class QCSettings:
    """Settings of the QC plugin, passed as ``config["qc"]``.

    Attributes:
        bundle: QC bundle folder or shipped bundle name (None: the default bundle).
        device: torch device of the QC network.
        min_dsc: per-class volume DSC thresholds overriding the bundle's (``"*"``: all).
        min_slice_dsc: per-class slice DSC thresholds overriding the bundle's (``"*"``: all).
        correct_volumes: add corrected volumes (``report["correction"]``) to every report.
        out: report folder (None: ``<output folder>/qc``).
    """

    bundle: str | None = None
    device: str = "cpu"
    min_dsc: Mapping[str, float] = field(default_factory=dict)
    min_slice_dsc: Mapping[str, float] = field(default_factory=dict)
    correct_volumes: bool = False
    out: str | None = None

    def to_config(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> QCSettings:
        """From ``config["qc"]``.

        Raises:
            ValueError: an unknown setting.
        """
        config = dict(config or {})
        unknown = sorted(set(config) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown QC setting(s) {unknown}; known: {list(cls().to_config())}")
        for key in ("bundle", "out"):
            if config.get(key) is not None:
                config[key] = str(config[key])
        return cls(**config)


def _thresholds(base: Mapping[str, float], given: Mapping[str, float], names: list[str]) -> dict:
    """``base`` overridden by ``given`` (``"*"`` for every class not named in ``given``)."""
    unknown = sorted(set(given) - set(names) - {_ALL})
    if unknown:
        raise ValueError(f"threshold for unknown class(es) {unknown}; classes: {names}")
    merged = dict(base)
    if _ALL in given:
        merged.update(dict.fromkeys(names, float(given[_ALL])))
    merged.update({k: float(v) for k, v in given.items() if k != _ALL})
    return merged


def label_lookup(dataset_labels: Mapping[str, Any], qc_labels: Mapping[str, int]) -> np.ndarray:
    """Table mapping the data set's label values to the QC bundle's values of the same name.

    Raises:
        ValueError: region-based labels, or class names that differ from the bundle's.
    """
    if any(isinstance(v, bool) or not isinstance(v, int) for v in dataset_labels.values()):
        raise ValueError(f"data set labels {dict(dataset_labels)} are not one integer per class")
    if set(dataset_labels) != set(qc_labels):
        raise ValueError(
            f"the data set's classes {sorted(dataset_labels)} differ from the QC bundle's "
            f"{sorted(qc_labels)}"
        )
    table = np.zeros(max(dataset_labels.values()) + 1, dtype=np.int64)
    for name, value in dataset_labels.items():
        table[value] = qc_labels[name]
    return table


class QCPlugin:
    """Runs the QC network on every segmented case and writes the reports.

    Args:
        hook: hook relay on which ``case_reported`` is fired.
    """

    def __init__(self, hook: pluggy.HookRelay) -> None:
        self.hook = hook
        self.settings = QCSettings()
        self.out_dir: Path | None = None
        self.reports: dict[str, dict[str, Any]] = {}
        self._predictors: dict[tuple[str | None, str], tuple[Any, Any]] = {}
        self._predictor: Any = None
        self._lookup: np.ndarray | None = None

    @hookimpl
    def run_started(self, config: dict[str, Any], output_folder: str | None) -> None:
        """Load the QC network and apply the run's settings (errors stop the run early)."""
        self.settings = QCSettings.from_config(config.get("qc"))
        out = self.settings.out or (Path(output_folder) / "qc" if output_folder else None)
        self.out_dir = Path(out) if out else None
        self.reports = {}
        self._predictor = self._load(self.settings.bundle, self.settings.device)
        labels = config.get("labels")
        self._lookup = None
        if labels is not None and dict(labels) != self._predictor.labels:
            self._lookup = label_lookup(labels, self._predictor.labels)

    def _load(self, bundle: str | None, device: str) -> Any:
        """The QC predictor of a bundle (loaded once) with this run's thresholds."""
        from dataclasses import replace

        from monai_qc.inference import QCPredictor

        key = (bundle, device)
        if key not in self._predictors:
            predictor = QCPredictor.from_bundle(bundle, device=device)
            self._predictors[key] = (predictor, predictor.thresholds)
        predictor, base = self._predictors[key]
        names = sorted(predictor.labels, key=predictor.labels.__getitem__)
        predictor.thresholds = replace(
            base,
            min_dsc=_thresholds(base.min_dsc, self.settings.min_dsc, names),
            min_slice_dsc=_thresholds(base.min_slice_dsc, self.settings.min_slice_dsc, names),
        )
        return predictor

    @hookimpl
    def case_segmented(self, case: SegmentedCase) -> None:
        """QC of one case; a case that cannot be checked gets an ``"error"`` report."""
        from monai_qc.check import error_report

        extra: dict[str, Any] = {"segmentation": case.output_file, "segmented_by": case.model}
        try:
            report = {**self._check(case), **extra}
        except Exception as error:  # a QC problem must not stop the segmentation run
            logger.warning("%s: QC failed: %s", case.case_id, error)
            report = error_report(case.case_id, f"{type(error).__name__}: {error}", **extra)
        self._report(report)

    def _check(self, case: SegmentedCase) -> dict[str, Any]:
        from monai_qc.errors import QCInputError

        if case.image is None:
            raise QCInputError(case.case_id, "the input image is not available")
        image = np.asarray(case.image)
        segmentation = np.asarray(case.segmentation)
        if self._lookup is not None:
            if segmentation.min() < 0 or segmentation.max() >= len(self._lookup):
                raise QCInputError(case.case_id, "segmentation holds unknown label values")
            segmentation = self._lookup[segmentation]
        result = self._predictor.predict(image, segmentation, case.spacing, case.case_id)
        report = result.to_dict()
        if self.settings.correct_volumes:
            from monai_qc.correction import correct_volumes

            report["correction"] = correct_volumes(result).to_dict()
        return report

    @hookimpl
    def case_failed(self, case_id: str, message: str) -> None:
        """An ``"error"`` report for a case that was not segmented or could not be read."""
        from monai_qc.check import error_report

        self._report(error_report(case_id, message))

    def _report(self, report: dict[str, Any]) -> None:
        from monai_qc.report import write_case_report

        case_id = str(report["case"])
        if self.out_dir is not None:
            write_case_report(report, self.out_dir)
        self.reports[case_id] = report
        out = str(self.out_dir) if self.out_dir is not None else None
        self.hook.case_reported(case_id=case_id, report=report, output_folder=out)

    @hookimpl
    def run_finished(self, summary: dict[str, Any]) -> None:
        """Write ``summary.csv`` and ``report.html`` of every report in the folder."""
        from monai_qc.errors import QCInputError
        from monai_qc.report import read_reports, write_html_report, write_summary_csv

        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            reports = read_reports(self.out_dir)
        except QCInputError as error:
            logger.warning("%s; summarising this run's reports only", error)
            reports = [self.reports[c] for c in sorted(self.reports)]
        write_summary_csv(reports, self.out_dir / "summary.csv")
        write_html_report(reports, self.out_dir / "report.html")

    def verdicts(self) -> dict[str, int]:
        """Number of cases of this run per verdict."""
        counts = dict.fromkeys(("pass", "fail", "error"), 0)
        for report in self.reports.values():
            counts[report["verdict"]] = counts.get(report["verdict"], 0) + 1
        return counts


def qc_plugin_manager(
    plugins: Iterable[object] = (),
    blocked: Iterable[str] = (),
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """A plugin manager with the built-in QC plugin, ``plugins`` and the installed plugins.

    The built-in plugin is registered first, as ``"qc"``; ``blocked`` names plugins (``"qc"``
    included) not to register.
    """
    manager = get_plugin_manager(plugins, load_entry_points=False, blocked=blocked)
    manager.register(QCPlugin(manager.hook), name=PLUGIN_NAME)
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return manager
