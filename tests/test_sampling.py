"""Unit tests: drawing variants, balancing by DSC bins, and the patient-level splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_qc.io import patient_of
from monai_qc.sampling import assign_bins, balance_by_bins, split_by_patient
from nnunet_hooks.variants import sample_variants, write_variant_splits

EDGES = (0.0, 0.2, 0.5, 1.0)


def test_assign_bins_is_right_closed_and_rejects_outside_values() -> None:
    bins = assign_bins([0.0, 0.1, 0.2, 0.21, 0.5, 1.0, np.nan, 1.2, -0.1], EDGES)
    assert bins.tolist() == [0, 0, 0, 1, 1, 2, -1, -1, -1]
    with pytest.raises(ValueError, match="increasing"):
        assign_bins([0.5], (0.0, 0.0, 1.0))


def test_balance_takes_the_same_count_from_every_populated_bin() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 0.2, 50), rng.uniform(0.21, 0.5, 7), [0.9] * 20])
    chosen = balance_by_bins(values, EDGES, seed=1)
    assert np.bincount(assign_bins(values[chosen], EDGES)).tolist() == [7, 7, 7]
    capped = balance_by_bins(values, EDGES, seed=1, per_bin=10)
    assert np.bincount(assign_bins(values[capped], EDGES)).tolist() == [10, 7, 10]
    assert len(set(capped.tolist())) == len(capped)


def test_split_keeps_each_patient_on_one_side_and_follows_the_fractions() -> None:
    rng = np.random.default_rng(3)
    patients = [f"patient{p:03d}" for p in range(40) for _ in range(6)]
    values = rng.uniform(0, 1, len(patients))
    side = split_by_patient(patients, values, (0.5, 0.25, 0.25), EDGES, seed=0)
    by_patient: dict[str, set[int]] = {}
    for patient, s in zip(patients, side, strict=True):
        by_patient.setdefault(patient, set()).add(int(s))
    assert all(len(s) == 1 for s in by_patient.values())
    counts = np.bincount([next(iter(s)) for s in by_patient.values()], minlength=3)
    assert counts.tolist() == [20, 10, 10]
    with pytest.raises(ValueError, match="summing to 1"):
        split_by_patient(patients, values, (0.5, 0.5, 0.5), EDGES)


def test_sample_variants_is_seeded_and_keeps_a_reference() -> None:
    specs = sample_variants(8, seed=5, epoch_range=(2, 40))
    assert specs == sample_variants(8, seed=5, epoch_range=(2, 40))
    reference = specs[0]
    assert (reference.width_divisor, reference.data_fraction, reference.num_epochs) == (4, 1.0, 40)
    assert all(2 <= s.num_epochs <= 40 for s in specs)
    assert [s.fold for s in specs] == list(range(5, 13))
    longer = sample_variants(8, seed=5, epoch_range=(2, 40), reference_epochs=200)
    assert longer[0].num_epochs == 200
    assert longer[0].snapshot_epochs == [25, 50, 100, 200]
    assert longer[1:] == specs[1:]


def test_variant_splits_group_patients_and_use_the_data_fraction(tmp_path: Path) -> None:
    cases = [f"patient{p:03d}_{phase}" for p in range(1, 21) for phase in ("ED", "ES")]
    specs = sample_variants(3, seed=2, data_fractions=(0.25, 0.5), epoch_range=(2, 4))
    splits = write_variant_splits(tmp_path, cases, specs, seed=0)
    assert json.loads((tmp_path / "splits_final.json").read_text()) == splits
    assert len(splits) == 5 + len(specs)
    for split in splits:
        train = {patient_of(c) for c in split["train"]}
        assert not train & {patient_of(c) for c in split["val"]}
        assert len(split["train"]) == 2 * len(train)
    held_out = [c for split in splits[:5] for c in split["val"]]
    assert sorted(held_out) == sorted(cases)
    for spec, split in zip(specs, splits[5:], strict=True):
        assert len(split["train"]) == 2 * round(spec.data_fraction * 20)
