"""QC of a folder of existing segmentations: reports per case, summary CSV, HTML page.

A run (:func:`check_folder`, :func:`check_pairs`):

1. checks that the report folder can be written (:class:`CheckRunError` otherwise);
2. hashes every input file and writes ``run_manifest.json`` (:mod:`monai_qc.run_manifest`)
   listing every case, those that could not be paired included, before the first case;
3. checks every case. A case's earlier report is reused only when its ``qc_key`` (SHA-256 of
   image and segmentation, the bundle's SHA-256, the thresholds and the settings) is this
   run's and its verdict is not ``"error"``; the reused report gets this run's ``run_id``.
   A case that cannot be checked, or whose name cannot name a file, gets an error report;
4. writes ``summary.csv`` and ``report.html`` of this run's cases (not of reports that
   earlier runs left in the folder).

A file that cannot be written stops the run with :class:`CheckRunError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from monai_qc import __version__
from monai_qc.case_report import rate_case
from monai_qc.check_cases import (
    CheckRunError,
    describe,
    ignored_files,
    prepare_report_folder,
    printable,
    report_file_name,
    shown,
    unusable_case_name,
)
from monai_qc.errors import QCInputError
from monai_qc.inference import QCPredictor
from monai_qc.io import IMAGE_EXTENSIONS, CasePair, load_case, pair_cases
from monai_qc.report import (
    atomic_write_bytes,
    jsonable,
    read_case_report,
    write_html_report,
    write_summary_csv,
)
from monai_qc.run_manifest import (
    CaseIdentity,
    RunManifest,
    case_key,
    file_sha256,
    write_run_manifest,
)

__all__ = [
    "CheckRunError",
    "CheckSummary",
    "check_folder",
    "check_pairs",
    "check_settings",
    "error_report",
]

logger = logging.getLogger(__name__)

#: Receives one line per failing or unchecked case (e.g. ``tqdm.write``).
Echo = Callable[[str], None]


@dataclass(frozen=True)
class CheckSummary:
    """Counts of the cases of a ``check`` run and where its outputs are."""

    passed: int
    failed: int
    errors: int
    skipped: int
    out_dir: Path
    run_id: str = ""

    @property
    def html(self) -> Path:
        return self.out_dir / "report.html"


def error_report(case: str, message: str, **extra: Any) -> dict[str, Any]:
    """The report of a case that could not be checked."""
    return {"case": case, "verdict": "error", "error": message, **extra}


def check_settings(strict: bool = False, figures: str = "failed") -> dict[str, Any]:
    """What besides inputs, bundle and thresholds a ``check`` report depends on."""
    return {"strict": bool(strict), "figures": figures, "monai_qc": __version__}


@dataclass(frozen=True)
class _Case:
    """A case of the run: its report file, its inputs, and why it cannot be checked."""

    case: str
    file: str
    identity: CaseIdentity
    pair: CasePair | None = None
    problem: str | None = None
    key: str | None = None


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError as error:
        logger.warning("%s: cannot be hashed: %s", path, error)
        return None


def _plan(
    predictor: QCPredictor,
    pairs: Sequence[CasePair],
    problems: Sequence[tuple[str, str]],
    settings: Mapping[str, Any],
) -> list[_Case]:
    """Every case of the run, sorted, with its inputs' hashes and its report file name."""
    cases: dict[str, _Case] = {}
    for raw, reason in problems:
        case = printable(raw)
        cases[case] = _Case(case, report_file_name(case), CaseIdentity(), problem=printable(reason))
    thresholds = predictor.thresholds.to_dict()
    for pair in pairs:
        case = printable(pair.case_id)
        image_sha, seg_sha = _sha256(pair.image_path), _sha256(pair.seg_path)
        identity = CaseIdentity(
            printable(str(pair.image_path)), image_sha, printable(str(pair.seg_path)), seg_sha
        )
        key = None
        if image_sha is not None and seg_sha is not None:
            key = case_key(image_sha, seg_sha, predictor.identity["sha256"], thresholds, settings)
        name = report_file_name(case)
        why = unusable_case_name(case)
        problem = None
        if why is not None:
            problem = (
                f"case name '{case}' {why}, so it cannot name a report file; rename its files "
                f"(this report is {name})"
            )
        if case in cases:
            problem = f"several inputs for case '{case}': {cases[case].problem}"
        cases[case] = _Case(case, name, identity, pair, problem, key)
    return [cases[c] for c in sorted(cases)]


def _reusable(path: Path, item: _Case) -> dict[str, Any] | None:
    """The earlier report of a case when it rated exactly this run's inputs, else None."""
    if item.key is None or not path.is_file():
        return None
    try:
        report = read_case_report(path)
    except QCInputError:
        return None
    same = report.get("case") == item.case and report.get("qc_key") == item.key
    return report if same and report["verdict"] != "error" else None


def _check_case(
    predictor: QCPredictor, item: _Case, out_dir: Path, strict: bool, figures: str
) -> dict[str, Any]:
    """The report of one paired case (an error report when it cannot be checked)."""
    assert item.pair is not None
    label_values = [0, *predictor.labels.values()]
    pair = item.pair
    try:
        case = load_case(item.case, pair.image_path, pair.seg_path, label_values, strict=strict)
        try:
            rated = rate_case(
                predictor, case.image, case.segmentation, case.spacing, item.case,
                figures_dir=out_dir, figures=figures,
            )  # fmt: skip
        except OSError as error:
            where = error.filename or str(out_dir / "figures")
            raise OSError(error.errno, error.strerror, where) from error
        report = {**rated, "warnings": list(case.warnings)}
    except QCInputError as error:
        logger.warning("%s: %s", item.case, error)
        report = error_report(item.case, printable(str(error)))
    except OSError:
        raise  # a file could not be written: the run stops
    except Exception as error:  # one case must not stop the run
        logger.warning("%s: QC failed: %s: %s", item.case, type(error).__name__, error)
        report = error_report(item.case, printable(f"{type(error).__name__}: {error}"))
    if report["verdict"] == "error":
        report["bundle"] = dict(predictor.identity)
    return report


def _write_report(report: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write a report atomically unless the file already holds exactly it; returns it as read."""
    text = json.dumps(jsonable(report), indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    data = text.encode("utf-8")
    try:
        unchanged = path.is_file() and not path.is_symlink() and path.read_bytes() == data
    except OSError:
        unchanged = False
    if not unchanged:
        try:
            atomic_write_bytes(path, data)
        except OSError as error:
            raise OSError(error.errno, error.strerror, error.filename or str(path)) from error
    return json.loads(text)


def _console_line(report: Mapping[str, Any]) -> str | None:
    """``FAIL case: first reason`` or ``ERROR case: message``; None for a pass."""
    if report.get("verdict") == "fail":
        reasons = [str(r) for r in report.get("reasons") or []]
        why = reasons[0] if reasons else "see its report"
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        line = f"FAIL {report['case']}: {why}{more}"
    elif report.get("verdict") == "error":
        line = f"ERROR {report['case']}: {report.get('error') or 'not checked'}"
    else:
        return None
    return " ".join(line.split())


def check_pairs(
    predictor: QCPredictor,
    pairs: Sequence[CasePair],
    out_dir: Path,
    problems: Sequence[tuple[str, str]] = (),
    overwrite: bool = False,
    *,
    strict: bool = False,
    echo: Echo | None = None,
    figures: str = "failed",
) -> CheckSummary:
    """Check every pair; a case that cannot be checked gets an error report, the rest go on.

    Args:
        predictor: the QC model.
        pairs: the cases to check.
        out_dir: the report folder.
        problems: ``(case, reason)`` of cases that could not be paired (error reports).
        overwrite: check every case again, reusing no earlier report.
        strict: an origin or direction mismatch is an error, not a warning.
        echo: receives a line per failing or unchecked case (default: the log).
        figures: which cases get PNG figures: ``"all"``, ``"failed"`` (not passed), ``"none"``.

    Raises:
        CheckRunError: the report folder or a file in it cannot be written.
    """
    say = echo or logger.info
    prepare_report_folder(out_dir)
    settings = check_settings(strict, figures)
    cases = _plan(predictor, pairs, problems, settings)
    manifest = RunManifest.create(
        "check",
        predictor.identity,
        predictor.thresholds.to_dict(),
        {item.case: item.identity for item in cases},
        settings,
    )
    reports: list[dict[str, Any]] = []
    skipped = unwritten = 0
    seen: set[str] = set()
    try:
        write_run_manifest(manifest, out_dir)
        for item in tqdm(cases, desc="QC", unit="case", disable=len(cases) < 2):
            if item.file in seen:  # only for names made to collide on purpose
                say(f"ERROR {item.case}: its report file {item.file} is another case's")
                unwritten += 1
                continue
            seen.add(item.file)
            path = out_dir / item.file
            files = {"image": item.identity.image, "segmentation": item.identity.segmentation}
            stamp = {
                **(files if item.pair is not None else {}),
                "run_id": manifest.run_id,
                "inputs": item.identity.to_dict(),
                "qc_key": item.key,
            }
            reused = None if overwrite or item.problem else _reusable(path, item)
            if item.problem is not None:
                report = error_report(item.case, item.problem, bundle=dict(predictor.identity))
            elif reused is not None:
                report, skipped = reused, skipped + 1
            else:
                report = _check_case(predictor, item, out_dir, strict, figures)
            report = _write_report({**report, **stamp}, path)
            reports.append(report)
            if (line := _console_line(report)) is not None:
                say(line)
        write_summary_csv(reports, out_dir / "summary.csv")
        write_html_report(reports, out_dir / "report.html")
    except OSError as error:
        raise CheckRunError(f"--out {out_dir}: the run stopped: {describe(error)}") from error
    verdicts = [r["verdict"] for r in reports]
    return CheckSummary(
        verdicts.count("pass"),
        verdicts.count("fail"),
        verdicts.count("error") + unwritten,
        skipped,
        out_dir,
        manifest.run_id,
    )


def check_folder(
    predictor: QCPredictor,
    images: Path,
    segmentations: Path,
    out_dir: Path,
    overwrite: bool = False,
    *,
    strict: bool = False,
    echo: Echo | None = None,
    figures: str = "failed",
) -> CheckSummary:
    """Pair a folder of images with a folder of segmentations and check every case.

    Raises:
        CheckRunError: no case was found (the files that were ignored are named), or the
            report folder cannot be written.
    """
    images, segmentations = Path(images), Path(segmentations)
    prepare_report_folder(Path(out_dir))
    try:
        pairs, problems = pair_cases(images, segmentations)
        ignored = ignored_files(images, segmentations)
    except OSError as error:
        raise CheckRunError(f"cannot list the input folders: {describe(error)}") from error
    if not pairs and not problems:
        where = f"{images}" if images == segmentations else f"{images} or {segmentations}"
        found = f"ignored: {shown(ignored)}" if ignored else "the folders are empty"
        raise CheckRunError(
            f"no cases found: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {where}; {found}"
        )
    if ignored:
        logger.info("ignored %d files that are not images: %s", len(ignored), shown(ignored))
    return check_pairs(
        predictor, pairs, Path(out_dir), problems, overwrite, strict=strict, echo=echo,
        figures=figures,
    )
