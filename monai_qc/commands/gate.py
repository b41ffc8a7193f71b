"""``monai-qc gate``: a CI exit status from a folder of QC reports."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["gate"]


@click.command()
@click.argument("report_dir", type=click.Path(path_type=Path))
@click.option(
    "--min-dsc",
    "min_dsc",
    multiple=True,
    metavar="CLASS=VALUE",
    help="Minimum reconstructed 3D DSC of a class (repeatable; '*' for all).",
)
@click.option(
    "--min-slice-dsc",
    "min_slice_dsc",
    multiple=True,
    metavar="CLASS=VALUE",
    help="Minimum predicted DSC of a class on every slice (repeatable; '*' for all).",
)
@click.option(
    "--min-slice-error",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="FRACTION",
    help="A slice below --min-slice-dsc counts only when its predicted disagreement is at "
    "least this fraction of the class's segmented volume (default: the reports' own, the "
    "bundle's; 0 counts every low slice).",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the outcome as JUnit XML for CI systems (one testcase per case).",
)
@click.option(
    "--allow-no-manifest",
    is_flag=True,
    help="Gate a folder without run_manifest.json: only the reports found are evaluated, so "
    "a case that was never checked cannot be noticed.",
)
def gate(
    report_dir: Path,
    min_dsc: tuple[str, ...],
    min_slice_dsc: tuple[str, ...],
    min_slice_error: float | None,
    junit: Path | None,
    allow_no_manifest: bool,
) -> None:
    """Pass or fail the cases of the QC run whose reports are in REPORT_DIR.

    The cases are those of REPORT_DIR/run_manifest.json, written by check, nnunet-qc and
    nnUNetv2_predict_qc before the first case. Thresholds not given here default to those
    recorded in the reports (the bundle's); '*' sets every class without its own.

    \b
    Exit status:
      0  every case of the manifest has a report of this run, and every report passes.
      1  some case fails, printed with why: verdict error; a class below a threshold;
         a class with a volume threshold and no finite volume DSC (e.g. not segmented);
         any finding; a fail the gate cannot re-evaluate from values; a case with no
         report; a report of another run (other run_id); a report of a case the
         manifest does not list.
      2  the gate cannot decide: no such folder; no run_manifest.json (without
         --allow-no-manifest); an unreadable manifest or report (bad JSON, a dangling
         link, a missing case or verdict, a case that is not the file's name); no case
         at all; a bad threshold or one naming an unknown class.
    """
    from monai_qc.gate import (
        GateUsageError,
        format_result,
        parse_thresholds,
        run_gate,
        write_junit_xml,
    )

    try:
        result = run_gate(
            report_dir,
            parse_thresholds(min_dsc),
            parse_thresholds(min_slice_dsc),
            allow_no_manifest=allow_no_manifest,
            min_slice_error=min_slice_error,
        )
    except (GateUsageError, ValueError) as error:
        click.echo(f"Error: {error}", err=True)
        if junit is not None:
            write_junit_xml([], junit, error=str(error))
        sys.exit(2)
    click.echo(format_result(result))
    if junit is not None:
        write_junit_xml(result.outcomes, junit)
    sys.exit(result.code)
