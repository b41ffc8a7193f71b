"""The ``monai-qc`` command line: one command group, heavy imports inside the commands."""

from __future__ import annotations

import logging

import click

from monai_qc.commands.bundle_info import bundle_info
from monai_qc.commands.check import check
from monai_qc.commands.demo import demo
from monai_qc.commands.gate import gate
from monai_qc.commands.model import evaluate, train
from monai_qc.commands.nnunet import nnunet_qc
from monai_qc.commands.variants import build_dataset, variants

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="monai-qc")
def main(verbose: int) -> None:
    """Quality control of segmentations without ground truth."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


main.add_command(bundle_info)
main.add_command(check)
main.add_command(demo)
main.add_command(gate)
main.add_command(variants)
main.add_command(build_dataset)
main.add_command(train)
main.add_command(evaluate)
main.add_command(nnunet_qc)
