"""Checkpoints are read as data: a pickle that names code is refused unless the caller trusts
the file (its own nnU-Net training runs), and then the load is logged with the file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nnunet_fixtures
import numpy as np
import pytest
import torch
from nnunet_fixtures import TinyNnunetModel

from monai_qc.bundle import read_checkpoint
from monai_qc.training import TrainConfig, fit
from nnunet_hooks.variants import variant_output_folder

tiny_nnunet_model = nnunet_fixtures.tiny_nnunet_model


class _Planted:
    """Unpickling this runs code: it creates the file named by ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.makedirs, (str(self.marker),))


def _planted(path: Path, marker: Path) -> Path:
    torch.save({"network": {}, "payload": _Planted(marker)}, path)
    return path


def test_data_checkpoint_loads_without_code(tmp_path: Path, caplog) -> None:
    data = {
        "network_weights": {"w": torch.arange(3.0)},
        "logging": {"mean_fg_dice": [np.float64(0.25), np.float32(0.5)], "epochs": [np.int64(2)]},
        "init_args": {"device": torch.device("cpu"), "fold": 0},
        "axes": (0, 1),
        "scaler": None,
    }
    torch.save(data, tmp_path / "c.pth")
    with caplog.at_level(logging.WARNING):
        loaded = read_checkpoint(tmp_path / "c.pth")
    assert torch.equal(loaded["network_weights"]["w"], torch.arange(3.0))
    assert loaded["logging"]["mean_fg_dice"] == [0.25, 0.5]
    assert loaded["init_args"]["device"] == torch.device("cpu") and loaded["axes"] == (0, 1)
    assert caplog.records == []


def test_checkpoint_naming_code_is_refused_or_logged_as_trusted(tmp_path: Path, caplog) -> None:
    marker = tmp_path / "code_ran"
    path = _planted(tmp_path / "c.pth", marker)
    with pytest.raises(ValueError, match=r"c\.pth: holds os\.makedirs, not only tensors"):
        read_checkpoint(path)
    assert not marker.exists()
    with caplog.at_level(logging.WARNING, logger="monai_qc.bundle"):
        read_checkpoint(path, allow_code=True)
    assert marker.is_dir()  # what weights_only=False means: the file's code ran
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: holds os.makedirs, not only tensors and plain data; loading it as trusted "
        "code (torch.load weights_only=False)"
    ]
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pth", allow_code=True)


def test_training_resume_refuses_a_checkpoint_naming_code(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = TrainConfig(epochs=1, batch_size=4, augment=False)
    x, y = torch.rand(4, 4, 32, 32), torch.rand(4, 6)
    fit(config, x, y, x, y, 3, run)
    assert read_checkpoint(run / "last.pt")["epoch"] == 1  # what fit writes is plain data
    marker = tmp_path / "code_ran"
    _planted(run / "last.pt", marker)
    with pytest.raises(ValueError, match="last.pt: holds os.makedirs"):
        fit(config, x, y, x, y, 3, run)
    assert not marker.exists()


@pytest.mark.slow
def test_nnunet_checkpoint_loads_as_data(tiny_nnunet_model: TinyNnunetModel, caplog) -> None:
    ws = tiny_nnunet_model.workspace
    path = variant_output_folder(ws.results, ws.dataset_name, tiny_nnunet_model.spec)
    with caplog.at_level(logging.WARNING, logger="monai_qc.bundle"):
        loaded = read_checkpoint(path / "checkpoint_final.pth")  # refuses anything but data
    assert loaded["network_weights"] and all(
        torch.is_tensor(v) for v in loaded["network_weights"].values()
    )
    assert loaded["current_epoch"] >= 1 and caplog.records == []
