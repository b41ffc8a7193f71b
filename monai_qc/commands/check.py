"""``monai-qc check`` and ``monai-qc gate``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["check", "gate"]

_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.option("--images", type=_dir, required=True, help="Folder of images.")
@click.option("--segs", type=_dir, required=True, help="Folder of segmentations to check.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for <case>.json, summary.csv and report.html.",
)
@click.option("--bundle", default=None, help="QC bundle folder or shipped bundle name.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Check again cases that already have a report.")
def check(
    images: Path, segs: Path, out: Path, bundle: str | None, device: str, overwrite: bool
) -> None:
    """QC of existing segmentations (nnU-Net naming: <case>_0000.ext + <case>.ext).

    Exit status 0 when every case passes, 1 when any fails or could not be checked.
    """
    from monai_qc.check import check_folder
    from monai_qc.errors import BundleError, QCInputError
    from monai_qc.inference import QCPredictor

    try:
        predictor = QCPredictor.from_bundle(bundle, device=device)
        summary = check_folder(predictor, images, segs, out, overwrite=overwrite)
    except (BundleError, QCInputError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"{summary.passed} passed, {summary.failed} failed, {summary.errors} errors"
        + (f" ({summary.skipped} unchanged, not checked again)" if summary.skipped else "")
    )
    click.echo(f"report: {summary.html}")
    sys.exit(0 if summary.failed == summary.errors == 0 else 1)


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
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the outcome as JUnit XML for CI systems.",
)
def gate(
    report_dir: Path, min_dsc: tuple[str, ...], min_slice_dsc: tuple[str, ...], junit: Path | None
) -> None:
    """Exit 0 when every case in REPORT_DIR passes, 1 when any fails, 2 on bad usage.

    Thresholds default to those recorded in the reports (the bundle's).
    """
    from monai_qc.gate import (
        GateUsageError,
        format_outcomes,
        parse_thresholds,
        run_gate,
        write_junit_xml,
    )

    try:
        code, outcomes = run_gate(
            report_dir, parse_thresholds(min_dsc), parse_thresholds(min_slice_dsc)
        )
    except (GateUsageError, ValueError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    click.echo(format_outcomes(outcomes))
    if junit is not None:
        write_junit_xml(outcomes, junit)
    sys.exit(code)
