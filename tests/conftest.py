"""Shared fixtures: a QC bundle with untrained weights, phantoms and the shared ACDC data.

The shared data (the folder holding ``Dataset027_ACDC``, ``Dataset028_ACDCtest``, ...) is
looked for in ``$MONAI_QC_SHARED_DATA`` and, when that is not set, in ``../shared/data``
beside the repository. Tests that need it skip with the place they looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from monai_qc.bundle_writer import write_bundle
from monai_qc.networks import build_qc_network
from monai_qc.phantom import PHANTOM_LABELS

#: Environment variable naming the folder that holds the shared data sets.
SHARED_DATA_ENV = "MONAI_QC_SHARED_DATA"
#: Where the shared data sets are looked for without it.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data() -> Path:
    """The folder holding the shared data sets: ``$MONAI_QC_SHARED_DATA`` or the default."""
    value = os.environ.get(SHARED_DATA_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_SHARED_DATA


def shared_dataset(name: str) -> Path:
    """``<shared data>/<name>``, or skip the test saying where it was looked for and how to say."""
    folder = shared_data() / name
    if not (folder / "dataset.json").is_file():
        source = (
            f"{SHARED_DATA_ENV}={os.environ[SHARED_DATA_ENV]}"
            if os.environ.get(SHARED_DATA_ENV, "").strip()
            else f"the default, as {SHARED_DATA_ENV} is not set"
        )
        pytest.skip(
            f"shared data set {name} not found at {folder} ({source}); set {SHARED_DATA_ENV} to "
            f"the folder holding {name}"
        )
    return folder


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete QC bundle whose ResNet has seeded, untrained weights."""
    torch.manual_seed(0)
    network = build_qc_network("resnet2d", 1 + len(PHANTOM_LABELS))
    folder = tmp_path_factory.mktemp("bundle") / "untrained_qc"
    thresholds = {"min_dsc": 0.7, "min_slice_dsc": 0.3}
    return write_bundle(folder, network, "resnet2d", PHANTOM_LABELS, thresholds)


@pytest.fixture(scope="session")
def acdc() -> Path:
    """The shared ACDC data set (Dataset027_ACDC); tests using it skip where it is absent."""
    return shared_dataset("Dataset027_ACDC")
