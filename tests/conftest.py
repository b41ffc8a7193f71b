"""Shared fixtures: a QC bundle with untrained weights, phantoms and the shared ACDC data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_qc.bundle_writer import write_bundle
from monai_qc.networks import build_qc_network
from monai_qc.phantom import PHANTOM_LABELS

ACDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Dataset027_ACDC"


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
    """The shared ACDC data set; tests using it skip where it is absent."""
    if not (ACDC / "dataset.json").is_file():
        pytest.skip(f"shared ACDC data not found at {ACDC} (it lives beside the repository)")
    return ACDC
