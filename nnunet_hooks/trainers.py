"""nnU-Net trainers that keep checkpoint snapshots for quality-varied QC training data.

A variant's schedule lives in the nnU-Net plans, in the ``qc_variant`` entry of its
configuration (written by :mod:`nnunet_hooks.variants`), so that training and prediction read
the same files nnU-Net already uses::

    "qc_variant": {"num_epochs": 8, "iterations_per_epoch": 25, "val_iterations_per_epoch": 2,
                   "snapshot_epochs": [1, 2, 4, 8], "skip_final_validation": true}

Snapshots are written as ``checkpoint_epoch<NNNN>.pth`` next to nnU-Net's own checkpoints.
"""

from __future__ import annotations

from os.path import join

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = ["default_snapshot_epochs", "nnUNetTrainerQCVariant", "snapshot_name"]


def default_snapshot_epochs(num_epochs: int, max_snapshots: int | None = None) -> list[int]:
    """Epochs ``num_epochs``, ``num_epochs/2``, ``num_epochs/4``, ... (at most ``max_snapshots``).

    Halving from the end keeps the well-trained end of the run and still reaches the poorly
    trained start, which is what quality-varied QC training data needs.
    """
    epochs: list[int] = []
    epoch = num_epochs
    while epoch >= 1 and (max_snapshots is None or len(epochs) < max_snapshots):
        epochs.append(epoch)
        epoch //= 2
    return sorted(set(epochs))


def snapshot_name(epoch: int) -> str:
    """File name of the snapshot taken after ``epoch`` completed epochs."""
    return f"checkpoint_epoch{epoch:04d}.pth"


class nnUNetTrainerQCVariant(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming convention)
    """nnUNetTrainer with a short, configurable schedule and checkpoint snapshots."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        spec = dict(self.configuration_manager.configuration.get("qc_variant", {}))
        self.num_epochs = int(spec.get("num_epochs", 20))
        self.num_iterations_per_epoch = int(spec.get("iterations_per_epoch", 25))
        self.num_val_iterations_per_epoch = int(spec.get("val_iterations_per_epoch", 2))
        self.snapshot_epochs = sorted(
            int(e) for e in spec.get("snapshot_epochs", default_snapshot_epochs(self.num_epochs))
        )
        self.skip_final_validation = bool(spec.get("skip_final_validation", True))
        self.save_every = self.num_epochs + 1  # snapshots replace the periodic "latest"

    def on_epoch_end(self) -> None:
        """Write a snapshot when the epoch just completed is on the schedule."""
        completed = self.current_epoch + 1
        if completed in self.snapshot_epochs:
            self.save_checkpoint(join(self.output_folder, snapshot_name(completed)))
        super().on_epoch_end()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Skip nnU-Net's full validation unless the variant asks for it (QC computes its own)."""
        if self.skip_final_validation:
            self.print_to_log_file("Final validation skipped (qc_variant.skip_final_validation)")
            return
        super().perform_actual_validation(save_probabilities)
