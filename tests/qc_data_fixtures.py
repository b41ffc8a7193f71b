"""A small QC data set built from phantoms with damaged segmentations, for training tests.

Import it into a test module (``from qc_data_fixtures import qc_data``). ``qc_data`` is
session-scoped, so it is built once per run. :func:`write_phantom_bundle` bundles a network for
its 32-pixel inputs, :func:`assert_bundle_verifies_and_predicts` checks such a bundle, and
:func:`phantom_inputs` builds 2D network inputs of a phantom subject.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_qc.bundle_writer import write_bundle
from monai_qc.inference import QCPredictor
from monai_qc.io import labelled_case_ids, read_volume
from monai_qc.phantom import make_phantom, write_nnunet_dataset
from monai_qc.qc_dataset import build_qc_dataset
from monai_qc.training import TrainConfig
from nnunet_hooks.hookspecs import SegmentedCase
from nnunet_hooks.manager import get_plugin_manager
from nnunet_hooks.true_scores import TrueScoreCollector

CLASSES = ["background", "RV", "MYO", "LV"]


def _damage(labels: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Segmentations of graded quality: erode/dilate classes, shift, drop slices."""
    seg = labels.copy()
    if level == 0:
        return seg
    for value in (1, 2, 3):
        mask = seg == value
        grown = ndimage.binary_dilation(mask, iterations=level) & (seg == 0)
        if rng.random() < 0.5:
            seg[grown] = value
        else:
            seg[mask & ~ndimage.binary_erosion(mask, iterations=level)] = 0
    seg = np.roll(seg, level, axis=2)
    seg[int(rng.integers(0, len(seg)))] = 0
    return seg


@pytest.fixture(scope="session")
def qc_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """QC data set of 12 phantom patients segmented by four models of graded quality."""
    root = tmp_path_factory.mktemp("qcdata")
    dataset = write_nnunet_dataset(
        root / "Dataset902_Phantom", 12, seed=5, n_slices=6, size=(64, 64)
    )
    collected = root / "collected"
    collector = TrueScoreCollector(dataset / "labelsTr", ".nii.gz", [0, 1, 2, 3], collected)
    hook = get_plugin_manager([collector], load_entry_points=False).hook
    rng = np.random.default_rng(0)
    cases = labelled_case_ids(dataset)
    for level in range(4):
        model = {"name": f"m{level}", "training_cases": cases[:4]}
        hook.run_started(config={"model": model}, output_folder=None)
        for case in cases:
            labels = read_volume(dataset / "labelsTr" / f"{case}.nii.gz")[0]
            seg = _damage(labels, level, rng)
            hook.case_segmented(case=SegmentedCase(case, seg, None, (10.0, 1.5, 1.5), {}, model))
        hook.run_finished(summary={"model": model})
    out = root / "qc"
    build_qc_dataset(
        collected,
        dataset,
        out,
        CLASSES,
        "MYO",
        (0, 0.5, 1),
        (0.5, 0.25, 0.25),
        seed=1,
        spatial_size=(32, 32),
    )
    return {"dataset": dataset, "collected": collected, "data": out, "root": root}


def assert_bundle_verifies_and_predicts(bundle: Path) -> None:
    """``monai.bundle verify_net_in_out`` passes on ``bundle`` and it rates a phantom subject."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def"),
            *("--meta_file", str(bundle / "configs" / "metadata.json")),
            *("--config_file", str(bundle / "configs" / "inference.json")),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    image, labels = make_phantom(7, n_slices=6, size=(64, 64))
    report = QCPredictor.from_bundle(bundle).predict(image, labels, (10.0, 1.5, 1.5), "p")
    assert report.slice_dsc.shape == (6, 4)
    assert np.all((report.slice_dsc >= 0) & (report.slice_dsc <= 1))


def write_phantom_bundle(
    folder: Path, network: torch.nn.Module, name: str, train_config: TrainConfig | None = None
) -> Path:
    """A QC bundle of ``network`` (registered as ``name``) for the 32-pixel ``qc_data`` set."""
    return write_bundle(
        folder,
        network,
        name,
        dict(zip(CLASSES[1:], (1, 2, 3), strict=True)),
        {"min_dsc": 0.7, "min_slice_dsc": 0.3},
        spatial_size=(32, 32),
        train_config=train_config,
    )


def phantom_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2D network inputs (8, 1+K, 64, 64) of an 8-slice phantom, and its labels (8, 64, 64)."""
    image, labels = make_phantom(seed, n_slices=8, size=(64, 64))
    seg = torch.as_tensor(labels.astype(np.int64))
    onehot = torch.nn.functional.one_hot(seg, 4).permute(0, 3, 1, 2).float()
    x = torch.cat([torch.as_tensor(image / image.max()).float().unsqueeze(1), onehot], 1)
    return x, seg
