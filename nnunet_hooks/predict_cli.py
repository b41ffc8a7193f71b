"""``nnUNetv2_predict_qc``: ``nnUNetv2_predict`` that also writes a QC report of every case.

Every ``nnUNetv2_predict`` argument is accepted (the parser is nnU-Net's own) plus the QC
options of :func:`build_parser`. Segmentations are written as ``nnUNetv2_predict`` writes
them; reports go to ``<out>/qc``. :func:`predict_with_qc` does the same from Python and
:func:`qc_nnunet_predictions` checks an existing nnU-Net output folder.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nnunet_hooks.default_plugin import PLUGIN_NAME, QCSettings, qc_plugin_manager
from nnunet_hooks.hookspecs import SegmentedCase

__all__ = [
    "build_parser",
    "main",
    "nnunet_predict_parser",
    "predict_with_qc",
    "qc_nnunet_predictions",
]

logger = logging.getLogger(__name__)

#: The command a prediction run records in its run manifest.
COMMAND = "nnUNetv2_predict_qc"


def _builds_parser(statement: ast.stmt) -> bool:
    """``parser = argparse.ArgumentParser(...)`` or ``parser.add_argument(...)``."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
        return len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id == "parser"
    call = statement.value if isinstance(statement, ast.Expr) else None
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "add_argument"
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "parser"
    )


def nnunet_predict_parser() -> argparse.ArgumentParser:
    """``nnUNetv2_predict``'s parser, built by nnU-Net's own statements (same options, defaults).

    nnU-Net builds it inside ``predict_entry_point``; its ``parser = ...`` and
    ``parser.add_argument(...)`` statements are run here, in that module's namespace.
    """
    from nnunetv2.inference import predict_from_raw_data as module

    source = textwrap.dedent(inspect.getsource(module.predict_entry_point))
    function = ast.parse(source).body[0]
    if not isinstance(function, ast.FunctionDef):
        raise RuntimeError("nnunetv2 predict_entry_point: unexpected source")
    statements = [s for s in function.body if _builds_parser(s)]
    namespace = {**vars(module), "argparse": argparse}
    code = compile(ast.Module(body=statements, type_ignores=[]), module.__file__, "exec")
    exec(code, namespace)  # nnU-Net's own argument definitions
    parser = namespace["parser"]
    parser.prog = "nnUNetv2_predict_qc"
    return parser


def build_parser() -> argparse.ArgumentParser:
    """nnU-Net's prediction arguments plus the QC ones."""
    parser = nnunet_predict_parser()
    parser.description = "nnUNetv2_predict, plus a QC report of every case in <out>/qc."
    group = parser.add_argument_group("monai-qc")
    group.add_argument("--qc-bundle", default=None, help="QC bundle folder or shipped name.")
    group.add_argument(
        "--qc-bundle-sha256",
        default=None,
        metavar="HEX",
        help="Expected SHA-256 of the QC bundle (printed by every run); another bundle stops "
        "the run before any prediction. A bundle is code: load only bundles you trust.",
    )
    group.add_argument(
        "--qc-min-dsc",
        action="append",
        default=[],
        metavar="CLASS=VALUE",
        help="Minimum volume DSC of a class ('*' for every class; repeatable).",
    )
    group.add_argument(
        "--qc-min-slice-dsc",
        action="append",
        default=[],
        metavar="CLASS=VALUE",
        help="Minimum slice DSC of a class ('*' for every class; repeatable).",
    )
    group.add_argument("--correct-volumes", action="store_true", help="Add corrected volumes.")
    group.add_argument(
        "--qc-figures",
        choices=("all", "failed", "none"),
        default="failed",
        help="Which cases get PNG figures: every case, those that did not pass (default), none.",
    )
    group.add_argument("--no-qc", action="store_true", help="Segment only, no QC reports.")
    group.add_argument(
        "--qc-block-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="Do not load the monai-qc plugin NAME (repeatable; 'qc' is the built-in one).",
    )
    return parser


def predict_with_qc(
    input_folder: str | Path | list[list[str]],
    output_folder: str | Path,
    model_folder: str | Path,
    folds: Sequence[int | str] | None = (0, 1, 2, 3, 4),
    checkpoint_name: str = "checkpoint_final.pth",
    qc: QCSettings | None = None,
    plugins: Iterable[object] = (),
    blocked: Iterable[str] = (),
    device: str = "cuda",
    num_processes_preprocessing: int = 3,
    num_processes_segmentation_export: int = 3,
    **options: Any,
) -> dict[str, Any]:
    """Segment with a trained nnU-Net model and QC every case as soon as it is segmented.

    Args:
        input_folder: images named as nnU-Net expects (``<case>_0000.<ext>``), or file lists.
        output_folder: where the segmentations go; QC reports go to ``<output_folder>/qc``.
        model_folder: the trained model (``<trainer>__<plans>__<configuration>``).
        folds: folds to ensemble (None: every fold found).
        checkpoint_name: checkpoint file in each fold folder.
        qc: QC settings (None: defaults, QC on ``device``).
        plugins: more plugins to register.
        blocked: plugin names not to load (``"qc"`` turns QC off).
        device: ``"cuda"``, ``"cpu"`` or ``"mps"``.
        num_processes_preprocessing: nnU-Net's ``-npp``.
        num_processes_segmentation_export: nnU-Net's ``-nps`` (both 0: no worker processes).
        **options: ``nnUNetPredictor`` arguments (``tile_step_size``, ``use_mirroring``,
            ``perform_everything_on_device``, ``verbose``, ``allow_tqdm``) and
            ``predict_from_files`` arguments (``save_probabilities``, ``overwrite``,
            ``folder_with_segs_from_prev_stage``, ``num_parts``, ``part_id``).

    Returns:
        The run summary (cases, model), with ``verdicts`` (counts), ``qc_folder``, ``run_id``
        and ``bundle`` unless QC was blocked or no case was left to predict (``n_cases`` 0).

    Raises:
        BundleError: the QC bundle cannot be loaded or is not ``qc.bundle_sha256`` (raised
            before nnU-Net loads its model).
    """
    import torch

    from nnunet_hooks.predictor import QCnnUNetPredictor

    unknown = sorted(set(options) - set(_PREDICTOR_OPTIONS) - set(_FILE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown prediction option(s) {unknown}")
    qc = qc or QCSettings(device="cuda" if device == "cuda" else "cpu")
    manager = qc_plugin_manager(plugins, blocked)
    plugin = manager.get_plugin(PLUGIN_NAME)
    if plugin is not None:
        plugin.prepare(qc)  # a wrong or unusable QC bundle stops the run here
    if folds is None:
        folds = QCnnUNetPredictor.auto_detect_available_folds(str(model_folder), checkpoint_name)
    folds = [folds] if isinstance(folds, str) else list(folds)  # nnU-Net takes "all" alone
    model = {"model_folder": str(model_folder), "folds": folds, "checkpoint": checkpoint_name}
    config = {"command": COMMAND, "qc": qc.to_config(), "model": model}
    predictor = QCnnUNetPredictor(
        manager,
        config,
        device=torch.device(device),
        **{k: v for k, v in options.items() if k in _PREDICTOR_OPTIONS},
    )
    predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint_name)
    predictor.summary = {"output_folder": str(output_folder), "n_cases": 0, "cases": []}
    predictor.predict_from_files(
        input_folder if isinstance(input_folder, list) else str(input_folder),
        str(output_folder),
        num_processes_preprocessing=num_processes_preprocessing,
        num_processes_segmentation_export=num_processes_segmentation_export,
        **{k: v for k, v in options.items() if k in _FILE_OPTIONS},
    )
    if not predictor.summary["n_cases"]:  # nothing left to predict: no run, no hooks
        return predictor.summary
    return _with_verdicts(predictor.summary, manager)


_PREDICTOR_OPTIONS = (
    "tile_step_size",
    "use_mirroring",
    "perform_everything_on_device",
    "verbose",
    "verbose_preprocessing",
    "allow_tqdm",
)
_FILE_OPTIONS = (
    "save_probabilities",
    "overwrite",
    "folder_with_segs_from_prev_stage",
    "num_parts",
    "part_id",
)


def _with_verdicts(summary: dict[str, Any], manager: Any) -> dict[str, Any]:
    plugin = manager.get_plugin(PLUGIN_NAME)
    if plugin is None:
        return dict(summary)
    folder = str(plugin.out_dir) if plugin.out_dir is not None else None
    run_id = plugin.manifest.run_id if plugin.manifest is not None else None
    qc = {"verdicts": plugin.verdicts(), "qc_folder": folder, "run_id": run_id}
    return {**summary, **qc, "bundle": dict(plugin.manifest.bundle if plugin.manifest else {})}


def qc_nnunet_predictions(
    images: str | Path,
    predictions: str | Path,
    qc: QCSettings | None = None,
    plugins: Iterable[object] = (),
    blocked: Iterable[str] = (),
) -> dict[str, Any]:
    """QC of an existing nnU-Net output folder, with the same plugins as a prediction run.

    Labels come from ``<predictions>/dataset.json``; reports go to ``<predictions>/qc``. Cases
    that cannot be paired or read get an ``"error"`` report (hook ``case_failed``).
    ``run_started``'s ``config["cases"]`` lists every case with its channel-0 image and its
    segmentation (None for a case that could not be paired).

    Returns:
        The run summary with ``verdicts``, ``qc_folder``, ``run_id`` and ``bundle``.

    Raises:
        QCInputError: a folder or ``dataset.json`` is missing or unusable.
    """
    from monai_qc.errors import QCInputError
    from monai_qc.io import label_map_from_dataset_json, load_case, pair_cases

    predictions = Path(predictions)
    labels = label_map_from_dataset_json(predictions / "dataset.json")
    pairs, problems = pair_cases(images, predictions)
    manager = qc_plugin_manager(plugins, blocked)
    model = {"predictions": str(predictions)}
    cases: dict[str, dict[str, Any]] = {case: {} for case, _ in problems}
    for pair in pairs:
        cases[pair.case_id] = {"image": str(pair.image_path), "segmentation": str(pair.seg_path)}
    config = {
        "command": "nnunet-qc",
        "qc": (qc or QCSettings()).to_config(),
        "model": model,
        "labels": labels,
        "cases": cases,
    }
    manager.hook.run_started(config=config, output_folder=str(predictions))
    for case_id, reason in problems:
        manager.hook.case_failed(case_id=case_id, message=reason)
    for pair in pairs:
        try:
            case = load_case(pair.case_id, pair.image_path, pair.seg_path, [0, *labels.values()])
        except QCInputError as error:
            manager.hook.case_failed(case_id=pair.case_id, message=str(error))
            continue
        segmented = SegmentedCase(
            pair.case_id,
            case.segmentation,
            case.image,
            case.spacing,
            model=model,
            output_file=str(pair.seg_path),
        )
        manager.hook.case_segmented(case=segmented)
    cases = sorted([p.case_id for p in pairs] + [c for c, _ in problems])
    summary = {"output_folder": str(predictions), "n_cases": len(cases), "cases": cases}
    manager.hook.run_finished(summary=summary)
    return _with_verdicts(summary, manager)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``nnUNetv2_predict_qc`` command (exit status 2 for an unusable QC bundle)."""
    from monai_qc.errors import BundleError
    from monai_qc.gate import parse_thresholds

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        min_dsc = parse_thresholds(args.qc_min_dsc)
        min_slice_dsc = parse_thresholds(args.qc_min_slice_dsc)
    except ValueError as error:
        parser.error(str(error))
    if args.device not in ("cpu", "cuda", "mps"):
        parser.error(f"-device must be cpu, cuda or mps, not {args.device!r}")
    if not 0 <= args.part_id < args.num_parts:
        parser.error(f"-part_id {args.part_id} must be in [0, -num_parts {args.num_parts})")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    qc = QCSettings(
        bundle=args.qc_bundle,
        device="cuda" if args.device == "cuda" else "cpu",
        min_dsc=min_dsc,
        min_slice_dsc=min_slice_dsc,
        correct_volumes=args.correct_volumes,
        figures=args.qc_figures,
        bundle_sha256=args.qc_bundle_sha256,
    )
    blocked = [*args.qc_block_plugin, *([PLUGIN_NAME] if args.no_qc else [])]
    try:
        summary = _predict(args, qc, blocked, get_output_folder(args.d, args.tr, args.p, args.c))
    except BundleError as error:
        print(f"{COMMAND}: error: {error}", file=sys.stderr)
        sys.exit(2)
    if not summary["n_cases"]:
        print(f"nothing to predict: every case of {args.i} is in {args.o}")
    elif "verdicts" in summary:
        counts = ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items())
        print(f"QC: {counts}; report: {Path(summary['qc_folder']) / 'report.html'}")


def _predict(
    args: argparse.Namespace, qc: QCSettings, blocked: list[str], model_folder: str
) -> dict[str, Any]:
    """:func:`predict_with_qc` with the parsed arguments."""
    return predict_with_qc(
        args.i,
        args.o,
        model_folder,
        [f if f == "all" else int(f) for f in args.f],
        args.chk,
        qc=qc,
        blocked=blocked,
        device=args.device,
        num_processes_preprocessing=args.npp,
        num_processes_segmentation_export=args.nps,
        tile_step_size=args.step_size,
        use_mirroring=not args.disable_tta,
        perform_everything_on_device=not args.not_on_device,
        verbose=args.verbose,
        verbose_preprocessing=args.verbose,
        allow_tqdm=not args.disable_progress_bar,
        save_probabilities=args.save_probabilities,
        overwrite=not args.continue_prediction,
        folder_with_segs_from_prev_stage=args.prev_stage_predictions,
        num_parts=args.num_parts,
        part_id=args.part_id,
    )
