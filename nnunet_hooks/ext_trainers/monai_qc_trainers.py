"""Re-exports the monai-qc trainers for nnU-Net's ``nnUNet_extTrainer`` lookup."""

from nnunet_hooks.trainers import nnUNetTrainerQCVariant

__all__ = ["nnUNetTrainerQCVariant"]
