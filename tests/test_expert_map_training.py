"""The QC ResNet that also learns to map the expert labels (``expert_map_resnet2d``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import qc_data_fixtures
import torch

from monai_qc.augmentation import augment_with_expert_labels
from monai_qc.bundle_writer import training_summary
from monai_qc.networks import build_qc_network, soft_overlap
from monai_qc.slice_damage import slice_scores

phantom_inputs = qc_data_fixtures.phantom_inputs
qc_data = qc_data_fixtures.qc_data


def test_expert_labels_are_augmented_with_the_segmentation() -> None:
    """Expert labels equal to the segmentation stay equal to it after flips, turns and zooms."""
    x, seg = phantom_inputs(3)
    y, truth = augment_with_expert_labels(x, seg, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and truth.shape == seg.shape
    assert torch.equal(y[:, 1:].sum(1), torch.ones(8, 64, 64))
    assert torch.equal(y[:, 1:].argmax(1), truth)
    assert not torch.equal(truth, seg)  # the maps did move


def test_soft_overlap_of_a_one_hot_map_is_its_dice_and_mvsf() -> None:
    """With a hard map in place of probabilities, the features are the slice DSC and MVSF."""
    _, seg = phantom_inputs(1)
    _, other = phantom_inputs(2)
    onehot = [torch.nn.functional.one_hot(m, 4).permute(0, 3, 1, 2).float() for m in (seg, other)]
    features = soft_overlap(onehot[1], onehot[0])
    dsc, mvsf = slice_scores(seg, other, 4)
    big = (onehot[0].sum((2, 3)) > 100) & (onehot[1].sum((2, 3)) > 100)
    assert big.sum() > 10
    assert torch.allclose(features[:, :4][big], dsc[big], atol=0.01)
    assert torch.allclose(features[:, 4:8][big], mvsf[big], atol=0.01)


def test_expert_map_network_outputs_and_needs_expert_labels(tmp_path: Path) -> None:
    """Scores in range, a K-class map at input size, and no fit without expert labels."""
    from monai_qc.training import TrainConfig, fit

    network = build_qc_network("expert_map_resnet2d", 4).eval()
    x, _ = phantom_inputs(4)
    with torch.no_grad():
        scores, logits = network.forward_with_map(x)
        assert torch.equal(network(x), scores)
    assert scores.shape == (8, 8) and logits.shape == (8, 4, 64, 64)
    assert bool(((scores[:, :4] >= 0) & (scores[:, :4] <= 1)).all())
    assert not build_qc_network("resnet2d", 4).maps_expert_labels
    with pytest.raises(ValueError, match="learns from expert labels"):
        fit(TrainConfig("expert_map_resnet2d", 1), x, torch.zeros(8, 8), x, torch.zeros(8, 8), 4,
            tmp_path)  # fmt: skip


@pytest.mark.slow
def test_expert_map_network_trains_and_bundles(qc_data: dict[str, Path], tmp_path: Path) -> None:
    """Two epochs fit, the map loss falls, the bundle passes verify_net_in_out and predicts."""
    from monai_qc.training import TrainConfig, fit_slices

    config = TrainConfig(
        "expert_map_resnet2d", 2, 16, spatial_size=32, damage_probability=0.5, expert_map_weight=1
    )
    network = fit_slices(qc_data["data"], tmp_path / "fit", config)
    history = json.loads((tmp_path / "fit" / "history.json").read_text())
    assert len(history) == 2 and np.isfinite(history[-1]["val_loss"])
    assert history[1]["train_map_loss"] < history[0]["train_map_loss"]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    bundle = qc_data_fixtures.write_phantom_bundle(
        tmp_path / "bundle", network, "expert_map_resnet2d", config
    )
    settings = json.loads((bundle / "configs" / "train.json").read_text())["train_config"]
    assert settings["expert_map_weight"] == 1
    assert "1 x Dice + cross-entropy of its expert-label map" in training_summary(settings)
    qc_data_fixtures.assert_bundle_verifies_and_predicts(bundle)
