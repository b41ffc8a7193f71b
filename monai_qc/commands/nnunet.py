"""``monai-qc nnunet-qc``: QC of an existing nnU-Net output folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

__all__ = ["nnunet_qc"]

_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("nnunet-qc")
@click.option("--images", type=_dir, required=True, help="Folder of input images (<case>_0000).")
@click.option(
    "--predictions",
    type=_dir,
    required=True,
    help="nnU-Net output folder (segmentations and dataset.json); reports go to its qc/.",
)
@click.option("--bundle", default=None, help="QC bundle folder or shipped bundle name.")
@click.option(
    "--bundle-sha256",
    default=None,
    metavar="HEX",
    help="Expected SHA-256 of the bundle (printed by every run); another bundle stops the run "
    "before any case. A bundle is code: load only bundles you trust.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--min-dsc",
    multiple=True,
    metavar="CLASS=VALUE",
    help="Volume DSC threshold of a class, overriding the bundle's ('*' for all; repeatable).",
)
@click.option(
    "--min-slice-dsc",
    multiple=True,
    metavar="CLASS=VALUE",
    help="Slice DSC threshold of a class, overriding the bundle's ('*' for all; repeatable).",
)
@click.option("--correct-volumes", is_flag=True, help="Add corrected volumes to the reports.")
@click.option(
    "--figures",
    type=click.Choice(["all", "failed", "none"]),
    default="failed",
    show_default=True,
    help="Which cases get PNG figures: every case, those that did not pass, or none.",
)
@click.option(
    "--block-plugin",
    multiple=True,
    metavar="NAME",
    help="Do not load the monai-qc plugin NAME (repeatable).",
)
def nnunet_qc(
    images: Path,
    predictions: Path,
    bundle: str | None,
    bundle_sha256: str | None,
    device: str,
    min_dsc: tuple[str, ...],
    min_slice_dsc: tuple[str, ...],
    correct_volumes: bool,
    figures: str,
    block_plugin: tuple[str, ...],
) -> None:
    """QC of nnU-Net segmentations already made, with the plugins of nnUNetv2_predict_qc.

    Labels come from the predictions' dataset.json. Writes qc/run_manifest.json (the cases
    expected, their files' SHA-256s, the bundle) before the first case and prints the bundle's
    name, version and SHA-256. Exit status 0 when every case passes, 1 when any fails or could
    not be checked, 2 when the run could not start (bundle, pin, labels, report folder).
    """
    from monai_qc.errors import BundleError, QCInputError
    from monai_qc.gate import parse_thresholds
    from nnunet_hooks.default_plugin import QCSettings
    from nnunet_hooks.predict_cli import qc_nnunet_predictions

    try:
        settings = QCSettings(
            bundle=bundle,
            device=device,
            min_dsc=parse_thresholds(min_dsc),
            min_slice_dsc=parse_thresholds(min_slice_dsc),
            correct_volumes=correct_volumes,
            figures=figures,
            bundle_sha256=bundle_sha256,
        )
        plugin_log = logging.getLogger("nnunet_hooks.default_plugin")
        plugin_log.setLevel(min(plugin_log.getEffectiveLevel(), logging.INFO))  # the bundle line
        summary = qc_nnunet_predictions(images, predictions, settings, blocked=block_plugin)
    except (BundleError, QCInputError, ValueError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    counts = summary.get("verdicts")
    if counts is None:
        click.echo("QC plugin blocked: no reports written")
        return
    bundle_id = summary["bundle"]
    click.echo(
        f"bundle {bundle_id.get('name')} version {bundle_id.get('version') or '?'} "
        f"sha256 {bundle_id.get('sha256')}; run {summary['run_id']}"
    )
    click.echo(", ".join(f"{n} {v}" for v, n in counts.items()))
    click.echo(f"report: {Path(summary['qc_folder']) / 'report.html'}")
    sys.exit(0 if counts["fail"] == counts["error"] == 0 else 1)
