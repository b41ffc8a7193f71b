"""``monai-qc bundle-info``: the identity of a QC bundle, to pin it with ``--bundle-sha256``."""

from __future__ import annotations

import sys

import click

__all__ = ["bundle_info"]


@click.command("bundle-info")
@click.option("--bundle", default=None, help="QC bundle folder or shipped bundle name.")
def bundle_info(bundle: str | None) -> None:
    """Print a bundle's name, version, SHA-256 and folder, without loading its configs.

    The SHA-256 covers every file of the bundle's configs/ and models/ folders; pass it to
    check --bundle-sha256, nnunet-qc --bundle-sha256 or nnUNetv2_predict_qc
    --qc-bundle-sha256 to refuse any other bundle. Exit status 2 when the bundle is not found.
    """
    from monai_qc.bundle import resolve_bundle, shipped_bundles
    from monai_qc.errors import BundleError
    from monai_qc.run_manifest import bundle_identity

    try:
        root = resolve_bundle(bundle).resolve()
    except BundleError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    identity = bundle_identity(root)
    click.echo(f"name: {identity['name']}")
    click.echo(f"version: {identity['version']}")
    click.echo(f"sha256: {identity['sha256']}")
    click.echo(f"folder: {root}")
    click.echo(f"shipped bundles: {', '.join(shipped_bundles()) or 'none'}")
