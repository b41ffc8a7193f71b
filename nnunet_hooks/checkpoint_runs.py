"""Run every kept checkpoint of every variant over a data set, in-process, firing the hooks.

Cases are read and preprocessed once by nnU-Net's own preprocessor; each checkpoint is then
loaded into an ``nnUNetPredictor`` through ``manual_initialization`` (no files written by
nnU-Net) and its segmentations, in the geometry of the original images, are handed to the
plugins through the ``case_segmented`` hook.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import torch
from tqdm import tqdm

from monai_qc.bundle import read_checkpoint
from monai_qc.io import patient_of
from nnunet_hooks.hookspecs import SegmentedCase
from nnunet_hooks.trainers import nnUNetTrainerQCVariant, snapshot_name
from nnunet_hooks.variants import TRAINER_NAME, VariantSpec, variant_output_folder
from nnunet_hooks.workspace import VariantWorkspace

__all__ = [
    "Checkpoint",
    "PreprocessedCase",
    "list_checkpoints",
    "patient_subset",
    "preprocess_cases",
    "run_checkpoints",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """One kept snapshot of one variant."""

    spec: VariantSpec
    epoch: int
    path: Path

    @property
    def name(self) -> str:
        """Identifier of the segmentation model, e.g. ``v03_e0012``."""
        return f"{self.spec.name}_e{self.epoch:04d}"

    def model_name(self, whole_slice: bool) -> str:
        """Name of its segmentations: ``_ws`` marks whole-slice inference."""
        return f"{self.name}_ws" if whole_slice else self.name


@dataclass
class PreprocessedCase:
    """A case read and preprocessed once, reused by every checkpoint."""

    case_id: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    data: np.ndarray
    properties: dict[str, Any]


def list_checkpoints(ws: VariantWorkspace) -> list[Checkpoint]:
    """Every snapshot file of every variant of a workspace, in variant and epoch order."""
    checkpoints = []
    for spec in ws.load_variants():
        folder = variant_output_folder(ws.results, ws.dataset_name, spec)
        for epoch in spec.snapshot_epochs:
            path = folder / snapshot_name(epoch)
            if path.is_file():
                checkpoints.append(Checkpoint(spec, epoch, path))
    return checkpoints


def patient_subset(fraction: float, seed: int) -> Callable[[Checkpoint, Sequence[str]], set[str]]:
    """A ``select`` for :func:`run_checkpoints`: a seeded fraction of the patients per checkpoint.

    Both phases of a patient are kept together; each checkpoint draws its own patients.
    """

    def select(checkpoint: Checkpoint, case_ids: Sequence[str]) -> set[str]:
        patients = sorted({patient_of(c) for c in case_ids})
        rng = np.random.default_rng([seed, *checkpoint.name.encode()])
        n = max(1, int(round(fraction * len(patients))))
        chosen = set(rng.choice(patients, size=n, replace=False).tolist())
        return {c for c in case_ids if patient_of(c) in chosen}

    return select


def _plans(ws: VariantWorkspace) -> tuple[Any, dict]:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((ws.preprocessed_dataset / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((ws.preprocessed_dataset / "dataset.json").read_text())
    return PlansManager(plans), dataset_json


def preprocess_cases(
    ws: VariantWorkspace, case_ids: Sequence[str], base_configuration: str = "2d"
) -> Iterator[PreprocessedCase]:
    """Read and preprocess cases with nnU-Net's preprocessor of the base configuration."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    plans_manager, dataset_json = _plans(ws)
    configuration = plans_manager.get_configuration(base_configuration)
    reader = plans_manager.image_reader_writer_class()
    preprocessor = DefaultPreprocessor(verbose=False)
    ending = dataset_json["file_ending"]
    for case_id in case_ids:
        files = sorted(
            str(p)
            for p in (ws.dataset / "imagesTr").glob(f"{case_id}_[0-9][0-9][0-9][0-9]{ending}")
        )
        data, properties = reader.read_images(files)
        image = np.asarray(data[0], dtype=np.float32).copy()
        spacing = tuple(float(s) for s in properties["spacing"])
        data, _, properties = preprocessor.run_case_npy(
            data, None, properties, plans_manager, configuration, dataset_json
        )
        yield PreprocessedCase(case_id, image, spacing, data, properties)  # type: ignore[arg-type]


def _whole_slice_predictor_class() -> type:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class WholeSlicePredictor(nnUNetPredictor):
        """nnUNetPredictor whose 2D inference runs all slices of a case in one batch.

        The network is fully convolutional, so instead of tiling every slice with the
        training patch (one forward pass per tile and slice, Gaussian-weighted), each slice is
        zero-padded to a multiple of the network's total stride and the whole stack goes
        through the network at once: several times faster on a CPU. Instance normalisation
        then sees whole slices instead of training-sized patches, which lowers the quality of
        the segmentations (for the LV cavity of a well-trained variant, 3D DSC about 0.2
        lower): useful extra quality variety for QC training data, not a way to segment.
        """

        @torch.inference_mode()
        def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> torch.Tensor:
            if len(self.configuration_manager.patch_size) != 2 or input_image.ndim != 4:
                return super().predict_sliding_window_return_logits(input_image)
            strides = self.configuration_manager.pool_op_kernel_sizes
            step = [int(np.prod([s[d] for s in strides])) for d in range(2)]
            height, width = input_image.shape[-2:]
            pad_h, pad_w = (-height) % step[0], (-width) % step[1]
            x = torch.nn.functional.pad(input_image.float(), (0, pad_w, 0, pad_h))
            logits = self.network(x.permute(1, 0, 2, 3).to(self.device))  # (S, K, H, W)
            return logits[..., :height, :width].permute(1, 0, 2, 3).cpu()

    return WholeSlicePredictor


def _predictor(
    ws: VariantWorkspace, checkpoint: Checkpoint, device: torch.device, whole_slice: bool
) -> Any:
    """An ``nnUNetPredictor`` with the weights of ``checkpoint``.

    The checkpoint is read as data (``weights_only``, numpy scalars of nnU-Net's logs
    allowed). These are the workspace's own training checkpoints, so one that names other
    objects is still loaded, as trusted code, and logged with its file
    (:func:`monai_qc.bundle.read_checkpoint`); do not put checkpoints from elsewhere there.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    plans_manager, dataset_json = _plans(ws)
    configuration = plans_manager.get_configuration(checkpoint.spec.configuration)
    inference_patch = configuration.configuration["qc_variant"].get("inference_patch_size")
    if whole_slice and inference_patch:
        configuration = ConfigurationManager(
            {**configuration.configuration, "patch_size": inference_patch}
        )
    n_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainerQCVariant.build_network_architecture(
        plans_manager, configuration, 1, n_outputs, enable_deep_supervision=False
    )
    weights = read_checkpoint(checkpoint.path, allow_code=True)["network_weights"]
    network.load_state_dict(weights)
    predictor_class = _whole_slice_predictor_class() if whole_slice else nnUNetPredictor
    predictor = predictor_class(use_mirroring=False, device=device, allow_tqdm=False)
    predictor.manual_initialization(
        network, plans_manager, configuration, [weights], dataset_json, TRAINER_NAME, None
    )
    return predictor


def run_checkpoints(
    ws: VariantWorkspace,
    hook: pluggy.HookRelay,
    cases: Sequence[PreprocessedCase],
    checkpoints: Sequence[Checkpoint],
    training_cases: Callable[[VariantSpec], list[str]],
    skip: Callable[[Checkpoint], bool] = lambda c: False,
    device: str = "cpu",
    select: Callable[[Checkpoint, Sequence[str]], set[str]] | None = None,
    whole_slice: bool = False,
) -> int:
    """Segment ``cases`` with every checkpoint, firing the run and case hooks; return runs done.

    By default nnU-Net's sliding window runs at the training patch size (no mirroring);
    ``whole_slice`` uses the faster whole-slice inference instead. ``select`` may pick, per
    checkpoint, the case ids it segments (default: all).
    """
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape as to_original_shape,
    )

    done = 0
    for checkpoint in tqdm(checkpoints, desc="checkpoints", unit="model"):
        if skip(checkpoint):
            continue
        t0 = time.perf_counter()
        predictor = _predictor(ws, checkpoint, torch.device(device), whole_slice)
        model = {
            "name": checkpoint.model_name(whole_slice),
            "inference": "whole-slice" if whole_slice else "sliding-window",
            "variant": checkpoint.spec.name,
            "epoch": checkpoint.epoch,
            "width_divisor": checkpoint.spec.width_divisor,
            "data_fraction": checkpoint.spec.data_fraction,
            "checkpoint": str(checkpoint.path),
            "training_cases": training_cases(checkpoint.spec),
        }
        hook.run_started(config={"model": model}, output_folder=None)
        chosen = None if select is None else select(checkpoint, [c.case_id for c in cases])
        for case in cases:
            if chosen is not None and case.case_id not in chosen:
                continue
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(case.data))
            segmentation, probabilities = to_original_shape(
                logits,
                predictor.plans_manager,
                predictor.configuration_manager,
                predictor.label_manager,
                copy.deepcopy(case.properties),
                return_probabilities=True,
            )
            hook.case_segmented(
                case=SegmentedCase(
                    case.case_id,
                    np.asarray(segmentation),
                    case.image,
                    case.spacing,
                    case.properties,
                    model,
                    probabilities=np.asarray(probabilities, dtype=np.float32),
                )
            )
        n_cases = len(cases) if chosen is None else len(chosen)
        hook.run_finished(summary={"model": model, "n_cases": n_cases})
        done += 1
        logger.info("%s: %d cases in %.0f s", model["name"], n_cases, time.perf_counter() - t0)
    return done
