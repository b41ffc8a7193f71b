"""nnU-Net integration of monai-qc: trainers for checkpoint variants and prediction hooks."""

from nnunet_hooks.environment import external_trainer_folder, nnunet_environment

__all__ = ["external_trainer_folder", "nnunet_environment"]
