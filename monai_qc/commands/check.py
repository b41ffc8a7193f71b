"""``monai-qc check``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

__all__ = ["check"]

_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def _sha256_hex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise click.BadParameter("expected 64 hexadecimal digits (a SHA-256)")
    return value.lower() if value else None


@click.command()
@click.option("--images", type=_dir, required=True, help="Folder of images.")
@click.option("--segs", type=_dir, required=True, help="Folder of segmentations to check.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for <case>.json, run_manifest.json, summary.csv and report.html.",
)
@click.option("--bundle", default=None, help="QC bundle folder or shipped bundle name.")
@click.option(
    "--bundle-sha256",
    default=None,
    metavar="HEX",
    callback=_sha256_hex,
    help="Expected SHA-256 of the bundle (printed by every run); another bundle stops the run "
    "before it is loaded. A bundle is code: load only bundles you trust.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--overwrite", is_flag=True, help="Check every case again, reusing no earlier report."
)
@click.option(
    "--strict",
    is_flag=True,
    help="An origin or direction differing between image and segmentation is an error "
    "(by default a warning in the report).",
)
@click.option(
    "--figures",
    type=click.Choice(["all", "failed", "none"]),
    default="failed",
    show_default=True,
    help="Which cases get PNG figures in the report: every case, those that did not pass "
    "(where a person will look; drawing is most of a case's time), or none.",
)
@click.option(
    "--no-fail",
    is_flag=True,
    help="Exit 0 whatever the verdicts (still 2 when the run cannot be done), e.g. when "
    "'monai-qc gate' decides next.",
)
def check(
    images: Path,
    segs: Path,
    out: Path,
    bundle: str | None,
    bundle_sha256: str | None,
    device: str,
    overwrite: bool,
    strict: bool,
    figures: str,
    no_fail: bool,
) -> None:
    """QC of existing segmentations (nnU-Net naming: <case>_0000.ext + <case>.ext).

    Exit status 0 when every case passes, 1 when any fails or could not be checked (0 with
    --no-fail), 2 when the run cannot be done (bundle not found or not the pinned one,
    --out not writable, no cases found, disk full). A case's earlier report in --out is
    reused only when it rated the same files (by SHA-256) with the same bundle, thresholds
    and settings.
    """
    from tqdm import tqdm

    from monai_qc.bundle import resolve_bundle
    from monai_qc.check import CheckRunError, check_folder
    from monai_qc.check_cases import prepare_report_folder
    from monai_qc.errors import BundleError, QCInputError
    from monai_qc.inference import QCPredictor
    from monai_qc.run_manifest import bundle_identity

    try:
        prepare_report_folder(out)
        root = resolve_bundle(bundle).resolve()
        identity = bundle_identity(root)
        click.echo(
            f"QC bundle {identity['name']} version {identity['version'] or '?'} "
            f"sha256 {identity['sha256']} ({root})",
            err=True,
        )
        if bundle_sha256 is not None and identity["sha256"] != bundle_sha256:
            raise BundleError(
                f"{root}: bundle SHA-256 is {identity['sha256']}, not the expected "
                f"--bundle-sha256 {bundle_sha256}; refusing to load it"
            )
        predictor = QCPredictor.from_bundle(root, device=device, expected_sha256=identity["sha256"])
        summary = check_folder(
            predictor, images, segs, out, overwrite=overwrite, strict=strict, echo=tqdm.write,
            figures=figures,
        )  # fmt: skip
    except (BundleError, QCInputError, CheckRunError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    click.echo(
        f"{summary.passed} passed, {summary.failed} failed, {summary.errors} errors"
        + (f" ({summary.skipped} unchanged, not checked again)" if summary.skipped else "")
        + f"; run {summary.run_id}"
    )
    click.echo(f"report: {summary.html}")
    sys.exit(0 if no_fail or summary.failed == summary.errors == 0 else 1)
