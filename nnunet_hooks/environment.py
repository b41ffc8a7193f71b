"""nnU-Net's path variables, built per process instead of set globally."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["external_trainer_folder", "nnunet_environment"]


def external_trainer_folder() -> Path:
    """Folder to list in ``nnUNet_extTrainer`` so that nnU-Net finds the monai-qc trainers."""
    return Path(__file__).resolve().parent / "ext_trainers"


def nnunet_environment(
    raw: str | Path | None,
    preprocessed: str | Path,
    results: str | Path,
    base: Mapping[str, str] | None = None,
    n_proc: int = 2,
) -> dict[str, str]:
    """Environment for an nnU-Net subprocess that can find the monai-qc trainers.

    Args:
        raw: ``nnUNet_raw`` folder (may be None when only training or predicting).
        preprocessed: ``nnUNet_preprocessed`` folder.
        results: ``nnUNet_results`` folder.
        base: environment to extend (default: this process's).
        n_proc: default number of nnU-Net worker processes (``nnUNet_def_n_proc``).
    """
    env = dict(os.environ if base is None else base)
    if raw is not None:
        env["nnUNet_raw"] = str(raw)
    env["nnUNet_preprocessed"] = str(preprocessed)
    env["nnUNet_results"] = str(results)
    folders = [str(external_trainer_folder())]
    if env.get("nnUNet_extTrainer"):
        folders += [p for p in env["nnUNet_extTrainer"].split(os.pathsep) if p not in folders]
    env["nnUNet_extTrainer"] = os.pathsep.join(folders)
    env.setdefault("nnUNet_def_n_proc", str(n_proc))
    env.setdefault("nnUNet_n_proc_DA", str(n_proc))
    return env
