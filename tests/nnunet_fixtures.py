"""nnU-Net fixtures: a tiny model trained on phantoms, and an nnU-Net output folder.

Import them into a test module (``from nnunet_fixtures import tiny_nnunet_model``).
``tiny_nnunet_model`` is session-scoped, so it is trained once per run; nnU-Net's path
variables are only ever passed to subprocesses (``env=``), never set in this process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from monai_qc.phantom import (
    PHANTOM_LABELS,
    make_phantom,
    write_nnunet_dataset,
    write_volume,
)
from nnunet_hooks.variants import (
    TRAINER_NAME,
    VariantSpec,
    add_variant_configurations,
    train_variant,
    variant_output_folder,
    write_variant_splits,
)
from nnunet_hooks.workspace import VariantWorkspace

DATASET_NAME = "Dataset901_QCPhantom"

#: One epoch of 5 iterations of a network 8 times narrower than nnU-Net's 2d plan.
TINY_SPEC = VariantSpec(
    name="tiny",
    width_divisor=8,
    data_fraction=1.0,
    num_epochs=1,
    iterations_per_epoch=5,
    batch_size=2,
    fold=5,
    seed=0,
    patch_size=(64, 64),
)


@dataclass(frozen=True)
class TinyNnunetModel:
    """A trained nnU-Net model and the environment its commands need.

    Attributes:
        workspace: nnU-Net's raw, preprocessed and results folders.
        spec: the variant trained (configuration ``qc_tiny``, fold 5).
        env: environment for nnU-Net subprocesses (nnU-Net paths, external trainers).
    """

    workspace: VariantWorkspace
    spec: VariantSpec
    env: dict[str, str]

    @property
    def dataset(self) -> Path:
        """The raw data set (imagesTr, labelsTr, dataset.json)."""
        return self.workspace.dataset

    @property
    def model_folder(self) -> Path:
        """nnU-Net's trained model folder (``<trainer>__<plans>__<configuration>``)."""
        ws = self.workspace
        return variant_output_folder(ws.results, ws.dataset_name, self.spec).parent

    def predict_args(self) -> list[str]:
        """``nnUNetv2_predict`` arguments naming this model, on the CPU."""
        return [
            "-d",
            str(self.workspace.dataset_id),
            "-c",
            self.spec.configuration,
            "-tr",
            TRAINER_NAME,
            "-f",
            str(self.spec.fold),
            "-chk",
            "checkpoint_final.pth",
            "-device",
            "cpu",
        ]


@pytest.fixture(scope="session")
def tiny_nnunet_model(tmp_path_factory: pytest.TempPathFactory) -> TinyNnunetModel:
    """Plan, preprocess (2d) and train a tiny model on 6 phantom cases (6 slices, 64x64)."""
    root = tmp_path_factory.mktemp("nnunet")
    dataset = write_nnunet_dataset(
        root / "source" / DATASET_NAME, n_cases=6, seed=0, n_slices=6, size=(64, 64)
    )
    ws = VariantWorkspace(root / "work", dataset)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # for the subprocesses: no thread oversubscription
        plans = ws.plan_and_preprocess("2d")
        write_variant_splits(ws.preprocessed_dataset, ws.case_ids(), [TINY_SPEC], seed=0)
        add_variant_configurations(plans, [TINY_SPEC])
        train_variant(ws.dataset_id, TINY_SPEC, ws.preprocessed, ws.results, ws.logs / "train.log")
        model = TinyNnunetModel(ws, TINY_SPEC, ws.environment())
    final = variant_output_folder(ws.results, ws.dataset_name, TINY_SPEC) / "checkpoint_final.pth"
    if not final.is_file():
        raise RuntimeError(f"training wrote no {final}; see {ws.logs / 'train.log'}")
    return model


@pytest.fixture
def nnunet_output_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Images and an nnU-Net output folder (phantom labels as segmentations, dataset.json).

    Cases ``ph_0`` and ``ph_1`` are good; ``empty`` has an empty segmentation and ``lonely``
    has no segmentation at all.
    """
    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir()
    predictions.mkdir()
    for i, case in enumerate(["ph_0", "ph_1", "empty"]):
        image, labels = make_phantom(i, n_slices=6, size=(64, 64))
        write_volume(image, images / f"{case}_0000.nii.gz")
        write_volume(labels if case != "empty" else 0 * labels, predictions / f"{case}.nii.gz")
    write_volume(make_phantom(9, n_slices=6, size=(64, 64))[0], images / "lonely_0000.nii.gz")
    dataset = {
        "channel_names": {"0": "cineMRI"},
        "labels": {"background": 0, **PHANTOM_LABELS},
        "file_ending": ".nii.gz",
    }
    (predictions / "dataset.json").write_text(json.dumps(dataset))
    return images, predictions
