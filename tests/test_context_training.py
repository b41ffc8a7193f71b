"""Training, evaluating and bundling a QC network that reads each slice with its neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import qc_data_fixtures

qc_data = qc_data_fixtures.qc_data


def test_samples_with_context_match_the_subject_transform(qc_data: dict[str, Path]) -> None:
    """QCSamples.inputs(context=1) equals with_context_slices of each record's whole stack."""
    import torch

    from monai_qc.training import load_samples
    from monai_qc.transforms import with_context_slices

    val = load_samples(qc_data["data"] / "val.npz")
    assert val.slice_index is not None
    shuffled = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))
    x = val.inputs(shuffled, context=1)
    for record in np.unique(val.record):
        rows = torch.from_numpy(np.flatnonzero(val.record == record))
        rows = rows[np.argsort(val.slice_index[rows.numpy()])]
        expected = with_context_slices(val.inputs(rows), 1)
        where = [int((shuffled == r).nonzero()) for r in rows]
        assert torch.equal(x[where], expected)


def test_context_augmentation_turns_every_slice_alike_and_keeps_absent_ones_empty() -> None:
    """One transform per sample for all its slices; a slice beyond the stack stays zeros."""
    import torch

    from monai_qc.augmentation import augment_inputs
    from monai_qc.transforms import with_context_slices

    x, _ = qc_data_fixtures.phantom_inputs(3)
    stacked = with_context_slices(x, 1)
    same = stacked.clone()
    same[:, 3:] = stacked[:, 7:11].repeat(1, 3, 1, 1)  # every slice's labels: the centre's
    y = augment_inputs(same, torch.Generator().manual_seed(0), 3)
    labels_out = y[:, 3:].unflatten(1, (3, 4))
    assert torch.equal(labels_out[:, 0], labels_out[:, 1])
    assert torch.equal(labels_out[:, 2], labels_out[:, 1])
    z = augment_inputs(stacked, torch.Generator().manual_seed(0), 3)
    assert not z[0, 0].any() and not z[0, 3:7].any()  # before the first slice
    assert not z[-1, 2].any() and not z[-1, 11:].any()  # after the last slice
    assert torch.equal(z[1:, 3:7].sum(1), torch.ones(7, 64, 64))


def test_context_network_trains_and_bundles(qc_data: dict[str, Path], tmp_path: Path) -> None:
    """A context_resnet2d fits, its bundle passes verify_net_in_out and predicts a subject."""
    from monai_qc.training import TrainConfig, fit_slices

    config = TrainConfig("context_resnet2d", 1, 16, spatial_size=32, damage_probability=0.5)
    network = fit_slices(qc_data["data"], tmp_path / "fit", config)
    history = json.loads((tmp_path / "fit" / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["val_loss"])
    bundle = qc_data_fixtures.write_phantom_bundle(tmp_path / "bundle", network, "context_resnet2d")
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["preprocessing"]["context_slices"] == 1
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 15
    qc_data_fixtures.assert_bundle_verifies_and_predicts(bundle)
