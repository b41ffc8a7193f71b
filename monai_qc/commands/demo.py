"""``monai-qc demo``: the main job end to end on synthetic phantoms."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("monai-qc-demo"),
    show_default=True,
    help="Folder for the phantoms and the QC report.",
)
@click.option("--bundle", default=None, help="QC bundle folder or name (default: shipped).")
def demo(out: Path, bundle: str | None) -> None:
    """Make phantom cases with damaged segmentations, check them, print predicted vs true DSC."""
    from monai_qc.demo import run_demo
    from monai_qc.errors import BundleError
    from monai_qc.inference import QCPredictor

    try:
        predictor = QCPredictor.from_bundle(bundle)
    except BundleError as error:
        raise click.ClickException(str(error)) from error
    summary, rows = run_demo(predictor, out)
    click.echo(
        f"{'case':<22}{'class':<6}{'predicted 3D DSC':>18}{'true 3D DSC':>13}  flagged slices"
    )
    for row in rows:
        for name, true in row.true.items():
            predicted = row.predicted.get(name)
            shown = "null" if predicted is None else f"{predicted:.3f}"
            click.echo(f"{row.case:<22}{name:<6}{shown:>18}{true:>13.3f}  {row.flagged}")
        click.echo(f"{row.case:<22}verdict: {row.verdict}")
        for message in row.findings:
            click.echo(f"{row.case:<22}finding: {message}")
    click.echo(f"{summary.passed} passed, {summary.failed} failed, {summary.errors} errors")
    click.echo(f"report: {summary.html.resolve()}")
