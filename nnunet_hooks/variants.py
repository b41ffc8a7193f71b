"""Segmentation-model variants of varying quality, expressed in nnU-Net's own files.

A variant differs from the stock 2d configuration along the three axes of the QC method:
network width (features per stage divided by ``width_divisor``), fraction of the training
patients used (a fold of ``splits_final.json``) and training length (epochs). Each variant is
an nnU-Net plans configuration ``qc_<name>`` inheriting from the base configuration, trained
with :class:`nnunet_hooks.trainers.nnUNetTrainerQCVariant` through ``nnUNetv2_train``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from monai_qc.io import patient_of
from nnunet_hooks.environment import nnunet_environment
from nnunet_hooks.trainers import default_snapshot_epochs, snapshot_name

__all__ = [
    "TRAINER_NAME",
    "VariantSpec",
    "add_variant_configurations",
    "sample_variants",
    "train_variant",
    "variant_output_folder",
    "write_variant_splits",
]

logger = logging.getLogger(__name__)

TRAINER_NAME = "nnUNetTrainerQCVariant"


@dataclass(frozen=True)
class VariantSpec:
    """One segmentation-model variant.

    Attributes:
        name: short identifier, e.g. ``v03``; the nnU-Net configuration is ``qc_<name>``.
        width_divisor: features per stage of the base plan are divided by this.
        data_fraction: fraction of the training patients this variant trains on.
        num_epochs: epochs of ``iterations_per_epoch`` iterations.
        iterations_per_epoch: training iterations per epoch.
        batch_size: training batch size.
        patch_size: training patch size (prediction uses the base configuration's patch).
        fold: fold of ``splits_final.json`` holding this variant's training patients.
        seed: seed that drew the variant.
    """

    name: str
    width_divisor: int
    data_fraction: float
    num_epochs: int
    iterations_per_epoch: int
    batch_size: int
    fold: int
    seed: int
    patch_size: tuple[int, int] = (128, 128)

    @property
    def configuration(self) -> str:
        """nnU-Net configuration name of the variant."""
        return f"qc_{self.name}"

    @property
    def snapshot_epochs(self) -> list[int]:
        """Epochs after which a checkpoint snapshot is kept."""
        return default_snapshot_epochs(self.num_epochs, self.max_snapshots)

    max_snapshots: int = 4


def sample_variants(
    n: int,
    seed: int,
    width_divisors: Sequence[int] = (4, 8),
    data_fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    epoch_range: tuple[int, int] = (4, 40),
    iterations_per_epoch: int = 25,
    batch_size: int = 8,
    first_fold: int = 5,
    reference_epochs: int | None = None,
) -> list[VariantSpec]:
    """Draw ``n`` variants at random (seeded); epochs are drawn log-uniformly.

    Variant ``v00`` is the reference: the widest network, all training patients and the most
    epochs (``reference_epochs``, default the top of ``epoch_range``), so that every run holds a
    well-trained model (and good segmentations). The other variants do not depend on it.
    """
    rng = np.random.default_rng(seed)
    low, high = np.log(epoch_range[0]), np.log(epoch_range[1])
    specs = []
    for i in range(n):
        reference = i == 0
        specs.append(
            VariantSpec(
                name=f"v{i:02d}",
                width_divisor=min(width_divisors) if reference else int(rng.choice(width_divisors)),
                data_fraction=max(data_fractions)
                if reference
                else float(rng.choice(data_fractions)),
                num_epochs=(reference_epochs or epoch_range[1])
                if reference
                else int(round(float(np.exp(rng.uniform(low, high))))),
                iterations_per_epoch=iterations_per_epoch,
                batch_size=batch_size,
                fold=first_fold + i,
                seed=seed,
            )
        )
    return specs


def write_variant_splits(
    preprocessed_dataset: Path,
    case_ids: Sequence[str],
    variants: Sequence[VariantSpec],
    seed: int,
    n_cv_folds: int = 5,
) -> list[dict[str, list[str]]]:
    """Write ``splits_final.json``: a patient-grouped CV, then one fold per variant.

    Folds ``0..n_cv_folds-1`` are a cross-validation grouped by patient (both phases of a patient
    on the same side). Each variant's fold trains on ``data_fraction`` of the patients and
    validates on the rest (or on a few training patients when it uses them all).
    """
    rng = np.random.default_rng(seed)
    patients = sorted({patient_of(c) for c in case_ids})
    cases_of = {p: sorted(c for c in case_ids if patient_of(c) == p) for p in patients}
    order = list(rng.permutation(patients))
    splits: list[dict[str, list[str]]] = []
    for k in range(n_cv_folds):
        held_out = set(order[k::n_cv_folds])
        splits.append(
            _split(cases_of, [p for p in patients if p not in held_out], sorted(held_out))
        )
    for spec in sorted(variants, key=lambda v: v.fold):
        if spec.fold != len(splits):
            raise ValueError(f"variant {spec.name}: fold {spec.fold} expected {len(splits)}")
        shuffled = list(rng.permutation(patients))
        n_train = max(2, int(round(spec.data_fraction * len(patients))))
        train_p, val_p = shuffled[:n_train], shuffled[n_train:] or shuffled[:2]
        splits.append(_split(cases_of, sorted(train_p), sorted(val_p)))
    path = preprocessed_dataset / "splits_final.json"
    path.write_text(json.dumps(splits, indent=1))
    return splits


def _split(
    cases_of: Mapping[str, list[str]], train_p: Sequence[str], val_p: Sequence[str]
) -> dict[str, list[str]]:
    return {
        "train": [c for p in train_p for c in cases_of[p]],
        "val": [c for p in val_p for c in cases_of[p]],
    }


def add_variant_configurations(
    plans_file: Path, variants: Sequence[VariantSpec], base_configuration: str = "2d"
) -> None:
    """Add one ``qc_<name>`` configuration per variant to an nnU-Net plans file."""
    plans = json.loads(plans_file.read_text())
    configurations = plans["configurations"]
    if base_configuration not in configurations:
        raise ValueError(f"{plans_file}: no configuration {base_configuration!r} to derive from")
    base_arch = configurations[base_configuration]["architecture"]
    for spec in variants:
        arch = json.loads(json.dumps(base_arch))
        features = arch["arch_kwargs"]["features_per_stage"]
        arch["arch_kwargs"]["features_per_stage"] = [
            max(4, int(f) // spec.width_divisor) for f in features
        ]
        configurations[spec.configuration] = {
            "inherits_from": base_configuration,
            "batch_size": spec.batch_size,
            "patch_size": list(spec.patch_size),
            "architecture": arch,
            "qc_variant": {
                "num_epochs": spec.num_epochs,
                "iterations_per_epoch": spec.iterations_per_epoch,
                "val_iterations_per_epoch": 2,
                "snapshot_epochs": spec.snapshot_epochs,
                "skip_final_validation": True,
                "inference_patch_size": configurations[base_configuration]["patch_size"],
                "spec": asdict(spec),
            },
        }
    plans_file.write_text(json.dumps(plans, indent=1))


def variant_output_folder(
    results: Path, dataset_name: str, spec: VariantSpec, plans_identifier: str = "nnUNetPlans"
) -> Path:
    """nnU-Net's training output folder of a variant (where its snapshots are)."""
    model = results / dataset_name / f"{TRAINER_NAME}__{plans_identifier}__{spec.configuration}"
    return model / f"fold_{spec.fold}"


def train_variant(
    dataset_id: int | str,
    spec: VariantSpec,
    preprocessed: Path,
    results: Path,
    log_file: Path,
    device: str = "cpu",
) -> list[Path]:
    """Train one variant with ``nnUNetv2_train``; return its snapshot files.

    A variant whose final snapshot already exists is not trained again (resumable runs).
    """
    dataset_name = _dataset_name(preprocessed, dataset_id)
    out = variant_output_folder(results, dataset_name, spec)
    final = out / snapshot_name(spec.num_epochs)
    if not final.is_file():
        train = str(Path(sys.executable).with_name("nnUNetv2_train"))
        cmd = [
            train,
            str(dataset_id),
            spec.configuration,
            str(spec.fold),
            "-tr",
            TRAINER_NAME,
            "-device",
            device,
        ]
        logger.info("training %s: %s", spec.name, " ".join(cmd))
        env = nnunet_environment(None, preprocessed, results)
        with open(log_file, "a") as log:
            subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return [
        out / snapshot_name(e) for e in spec.snapshot_epochs if (out / snapshot_name(e)).is_file()
    ]


def _dataset_name(preprocessed: Path, dataset_id: int | str) -> str:
    if isinstance(dataset_id, str) and dataset_id.startswith("Dataset"):
        return dataset_id
    prefix = f"Dataset{int(dataset_id):03d}_"
    matches = sorted(p.name for p in preprocessed.iterdir() if p.name.startswith(prefix))
    if not matches:
        raise FileNotFoundError(f"{preprocessed}: no preprocessed data set with id {dataset_id}")
    return matches[0]
