"""Synthetic slice damage: targets agree with the metrics module, each damage kind does its job."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_qc.metrics import slice_scores as reference_scores
from monai_qc.phantom import make_phantom
from monai_qc.slice_damage import DAMAGE_KINDS, damage_batch, damage_slice, slice_scores

K = 4


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    """Phantom expert labels (S, H, W) with RV = 1, MYO = 2, LV = 3."""
    _, lab = make_phantom(3, n_slices=6, size=(64, 64))
    return torch.as_tensor(lab.astype(np.int64))


def test_slice_scores_match_the_metrics_module(labels: torch.Tensor) -> None:
    """DSC/MVSF of damaged maps equal monai_qc.metrics' values (both empty: 1 and 0)."""
    gen = torch.Generator().manual_seed(0)
    damaged, _ = damage_batch(labels, labels, 1.0, gen)
    damaged[0] = 0  # every class missed on one slice
    dsc, mvsf = slice_scores(damaged, labels, K)
    ref = reference_scores(
        labels.numpy(), damaged.numpy(), range(K), empty_value=1.0, empty_mvsf=0.0
    )
    np.testing.assert_allclose(dsc.numpy(), ref.dsc, atol=1e-6)
    np.testing.assert_allclose(mvsf.numpy(), ref.mvsf, atol=1e-6)
    assert dsc[0, 1:].tolist() == [0.0, 0.0, 0.0] and mvsf[0, 1:].tolist() == [2.0, 2.0, 2.0]


def test_each_damage_kind(labels: torch.Tensor) -> None:
    """expert = truth; drop empties the class; erode/dilate shrink/grow it; shift moves it."""
    seg, truth = labels[3], labels[3]
    lv = 3
    area = int((seg == lv).sum())
    assert torch.equal(damage_slice(seg * 0, truth, "expert", lv), truth)
    assert int((damage_slice(seg, truth, "drop", lv) == lv).sum()) == 0
    assert int((damage_slice(seg, truth, "erode", lv, radius=2) == lv).sum()) < area
    assert int((damage_slice(seg, truth, "dilate", lv, radius=2) == lv).sum()) > area
    shifted = damage_slice(seg, truth, "shift", lv, shift=(5, 0)) == lv
    rolled = torch.roll(seg == lv, shifts=(5, 0), dims=(0, 1))
    assert bool(shifted.any()) and not bool((shifted & ~rolled).any())
    move = (
        torch.nonzero(shifted)[:, 0].float().mean() - torch.nonzero(seg == lv)[:, 0].float().mean()
    )
    assert float(move) > 2.0
    with pytest.raises(ValueError, match="unknown damage"):
        damage_slice(seg, truth, "flipped", lv)
    assert set(DAMAGE_KINDS) == {"expert", "drop", "erode", "dilate", "shift"}


def test_damage_batch_touches_only_the_drawn_share(labels: torch.Tensor) -> None:
    """probability 0 changes nothing; the damaged mask marks exactly the changed slices."""
    gen = torch.Generator().manual_seed(1)
    same, none = damage_batch(labels, labels, 0.0, gen)
    assert torch.equal(same, labels) and not none.any()
    eroded = labels.clone()
    eroded[labels == 2] = 0  # a segmentation that missed the myocardium everywhere
    out, damaged = damage_batch(eroded, labels, 0.5, gen)
    changed = (out != eroded).flatten(1).any(1)
    assert not changed[~damaged].any()
    assert 0 < int(damaged.sum()) < len(labels)


def test_damage_from_expert_gives_near_expert_maps(labels: torch.Tensor) -> None:
    """from_expert 1 damages the expert labels, not a poor segmentation; 0 keeps the old draws."""
    labels = labels.repeat(4, 1, 1)  # 24 maps: every damage kind drawn several times
    poor = torch.roll(labels, shifts=12, dims=1)  # every structure misplaced by 12 pixels
    out_seg, damaged_seg = damage_batch(poor, labels, 1.0, torch.Generator().manual_seed(2))
    out_exp, damaged_exp = damage_batch(
        poor, labels, 1.0, torch.Generator().manual_seed(2), from_expert=1.0
    )
    assert damaged_seg.all() and damaged_exp.all()
    dsc_seg, _ = slice_scores(out_seg, labels, K)
    dsc_exp, _ = slice_scores(out_exp, labels, K)
    # one structure damaged per map, starting from the expert's labels: near-expert scores
    assert float(dsc_exp[:, 1:].mean()) > 0.75 > float(dsc_seg[:, 1:].mean()) + 0.2
    assert (dsc_exp[:, 1:] < 0.999).any(1).sum() >= 12  # most maps are damaged, not copied
    zero, _ = damage_batch(poor, labels, 1.0, torch.Generator().manual_seed(2), from_expert=0.0)
    assert torch.equal(zero, out_seg)
    with pytest.raises(ValueError, match="from_expert"):
        damage_batch(poor, labels, 1.0, torch.Generator(), from_expert=1.5)
