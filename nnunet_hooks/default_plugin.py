"""The built-in QC plugin: a QC report for every segmented case, a summary after the run.

It is registered under the name ``"qc"`` like any other plugin (so ``blocked=["qc"]`` turns it
off) and reads its settings from ``config["qc"]`` in ``run_started`` (see :class:`QCSettings`).
Reports go to ``<output folder>/qc``: ``<case>.json``, ``summary.csv`` and ``report.html``.

When ``config["cases"]`` lists the run's cases, ``run_started`` writes ``run_manifest.json``
(:mod:`monai_qc.run_manifest`) into the report folder before the first case, and every report
carries that manifest's ``run_id``, its ``inputs`` (files and SHA-256s) and its ``qc_key``, so
``monai-qc gate`` can fail a case whose report is missing or belongs to another run. Without
``config["cases"]`` no manifest is written and reports carry ``"run_id": null``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from monai_qc.run_manifest import RunManifest, write_run_manifest
from nnunet_hooks.hookspecs import SegmentedCase, hookimpl
from nnunet_hooks.manager import ENTRY_POINT_GROUP, get_plugin_manager
from nnunet_hooks.qc_run import case_identity, report_stamp, run_settings

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
        figures: which cases get PNG figures: ``"all"``, ``"failed"`` (not passed), ``"none"``.
        out: report folder (None: ``<output folder>/qc``).
        bundle_sha256: the bundle's expected SHA-256 (``bundle_identity``); another bundle
            stops the run in ``run_started`` (None: any bundle).
    """

    bundle: str | None = None
    device: str = "cpu"
    min_dsc: Mapping[str, float] = field(default_factory=dict)
    min_slice_dsc: Mapping[str, float] = field(default_factory=dict)
    correct_volumes: bool = False
    figures: str = "failed"
    out: str | None = None
    bundle_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.figures not in ("all", "failed", "none"):
            raise ValueError(f"figures {self.figures!r} is not one of all, failed, none")

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
        for key in ("bundle", "out", "bundle_sha256"):
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
        self.manifest: RunManifest | None = None
        self._predictors: dict[tuple[str | None, str], Any] = {}
        self._predictor: Any = None
        self._lookup: np.ndarray | None = None
        self._run_settings: dict[str, Any] = {}

    @hookimpl
    def run_started(self, config: dict[str, Any], output_folder: str | None) -> None:
        """Load the QC network, apply the run's settings, write the run manifest.

        Errors (a bundle that cannot be loaded or is not the pinned one, unknown classes, a
        report folder that cannot be written) stop the run before its first case.
        """
        self.settings = QCSettings.from_config(config.get("qc"))
        out = self.settings.out or (Path(output_folder) / "qc" if output_folder else None)
        self.out_dir = Path(out) if out else None
        self.reports = {}
        self._predictor = self.prepare(self.settings)
        labels = config.get("labels")
        self._lookup = None
        if labels is not None and dict(labels) != self._predictor.labels:
            self._lookup = label_lookup(labels, self._predictor.labels)
        self._run_settings = run_settings(config, self.settings.correct_volumes)
        self.manifest = self._start_manifest(config)

    def prepare(self, settings: QCSettings) -> Any:
        """The QC predictor of ``settings``: its bundle (loaded once, checked against
        ``settings.bundle_sha256``) with the settings' thresholds.

        The predictor is a shallow copy of the loaded one (same network) with its own
        thresholds, so one run's thresholds never leak into another's.

        Raises:
            BundleError: the bundle cannot be loaded or its SHA-256 is not the expected one.
            ValueError: a threshold for a class the bundle does not know.
        """
        from monai_qc.errors import BundleError
        from monai_qc.inference import QCPredictor

        key = (settings.bundle, settings.device)
        if key not in self._predictors:
            self._predictors[key] = QCPredictor.from_bundle(
                settings.bundle, device=settings.device, expected_sha256=settings.bundle_sha256
            )
        base = self._predictors[key]
        expected = settings.bundle_sha256
        if expected is not None and base.identity["sha256"] != expected.lower():
            raise BundleError(
                f"{settings.bundle or 'default bundle'}: bundle SHA-256 is "
                f"{base.identity['sha256']}, not the expected {expected}; refusing to use it"
            )
        names = sorted(base.labels, key=base.labels.__getitem__)
        predictor = copy.copy(base)
        predictor.thresholds = replace(
            base.thresholds,
            min_dsc=_thresholds(base.thresholds.min_dsc, settings.min_dsc, names),
            min_slice_dsc=_thresholds(base.thresholds.min_slice_dsc, settings.min_slice_dsc, names),
        )
        return predictor

    def _start_manifest(self, config: Mapping[str, Any]) -> RunManifest | None:
        """Write the run manifest of ``config["cases"]`` and remove reports made obsolete.

        A case the run segments again (``"remake"``) loses its earlier report first, so a run
        stopped between writing its segmentation and its report leaves no report to pass.
        """
        from monai_qc.errors import QCInputError

        identity = self._predictor.identity
        cases = config.get("cases")
        manifest = None
        if cases is None:
            logger.warning("the run does not list its cases: no run manifest is written")
        else:
            manifest = RunManifest.create(
                str(config.get("command") or "nnunet_hooks"),
                identity,
                self._predictor.thresholds.to_dict(),
                {str(case): case_identity(entry) for case, entry in cases.items()},
                self._run_settings,
            )
            if self.out_dir is not None:
                try:
                    for case, entry in cases.items():
                        if entry.get("remake"):  # its earlier report rated another segmentation
                            self._remove_report(str(case))
                    write_run_manifest(manifest, self.out_dir)
                except OSError as error:
                    message = f"cannot write the run manifest: {error}"
                    raise QCInputError(self.out_dir, message) from error
        logger.info(
            "QC bundle %s version %s sha256 %s; run %s: %s cases; reports in %s",
            identity.get("name"),
            identity.get("version") or "?",
            identity.get("sha256"),
            manifest.run_id if manifest else "without manifest",
            len(manifest.cases) if manifest else "unlisted",
            self.out_dir,
        )
        return manifest

    def _remove_report(self, case: str) -> None:
        assert self.out_dir is not None
        path = self.out_dir / f"{case}.json"
        if path.parent == self.out_dir and (path.is_file() or path.is_symlink()):
            path.unlink()

    def _stamp(self, case_id: str, segmentation: str | None) -> dict[str, Any]:
        """``run_id``, ``inputs`` and ``qc_key`` of a case's report."""
        return report_stamp(
            self.manifest, self._predictor, self._run_settings, case_id, segmentation
        )

    @hookimpl
    def case_segmented(self, case: SegmentedCase) -> None:
        """QC of one case; a case that cannot be checked gets an ``"error"`` report."""
        from monai_qc.check import error_report

        extra: dict[str, Any] = {
            "segmentation": case.output_file,
            "segmented_by": case.model,
            **self._stamp(case.case_id, case.output_file),
        }
        try:
            report = {**self._check(case), **extra}
        except Exception as error:  # a QC problem must not stop the segmentation run
            logger.warning("%s: QC failed: %s", case.case_id, error)
            report = error_report(case.case_id, f"{type(error).__name__}: {error}", **extra)
            report["bundle"] = dict(self._predictor.identity)
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
        from monai_qc.case_report import rate_case

        return rate_case(
            self._predictor,
            image,
            segmentation,
            case.spacing,
            case.case_id,
            correct=self.settings.correct_volumes,
            figures_dir=self.out_dir,
            figures=self.settings.figures,
        )

    @hookimpl
    def case_failed(self, case_id: str, message: str) -> None:
        """An ``"error"`` report for a case that was not segmented or could not be read."""
        from monai_qc.check import error_report

        report = error_report(case_id, message, **self._stamp(case_id, None))
        report["bundle"] = dict(self._predictor.identity)
        self._report(report)

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
        """Write ``summary.csv`` and ``report.html`` of the run's reports in the folder.

        With a run manifest, only the reports of its cases that carry its ``run_id`` (every
        part of a run shares one manifest); reports that earlier runs left are not summarised.
        """
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
        if self.manifest is not None:
            run_id, cases = self.manifest.run_id, self.manifest.cases
            reports = [r for r in reports if r.get("case") in cases and r.get("run_id") == run_id]
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
