"""Balancing QC training data by quality, and splitting it by patient.

The QC method (Fournel et al. 2021) stratifies segmentations on one class's true 3D DSC with
fixed bins and keeps the same number from every bin, then splits train/validation/test with
the same stratification. Here the split is by patient: no patient (and so neither phase of
one patient) is on two sides.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["DEFAULT_BINS", "assign_bins", "balance_by_bins", "split_by_patient"]

logger = logging.getLogger(__name__)

#: DSC bins of the method ([0.6, 0.7] added: the paper's list skips it).
DEFAULT_BINS: tuple[float, ...] = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)


def assign_bins(values: ArrayLike, edges: Sequence[float] = DEFAULT_BINS) -> np.ndarray:
    """Bin index of each value (right-closed bins, the first one closed); -1 for NaN/outside."""
    edges_array = np.asarray(edges, dtype=float)
    if edges_array.ndim != 1 or len(edges_array) < 2 or np.any(np.diff(edges_array) <= 0):
        raise ValueError(f"bin edges must be increasing with at least two values, got {edges}")
    v = np.asarray(values, dtype=float)
    index = np.searchsorted(edges_array, v, side="left") - 1
    index[v == edges_array[0]] = 0
    index[~np.isfinite(v) | (v < edges_array[0]) | (v > edges_array[-1])] = -1
    return index


def balance_by_bins(
    values: ArrayLike,
    edges: Sequence[float] = DEFAULT_BINS,
    seed: int = 0,
    per_bin: int | None = None,
) -> np.ndarray:
    """Indices of a subset holding the same number of items from every populated bin.

    Args:
        values: the stratification value of each item (e.g. one class's true 3D DSC).
        edges: bin edges.
        seed: seed of the random choice within each bin.
        per_bin: items per bin; default the smallest populated bin's count. A bin with
            fewer items contributes all it has.

    Returns:
        Sorted indices into ``values``.
    """
    bins = assign_bins(values, edges)
    counts = np.bincount(bins[bins >= 0], minlength=len(edges) - 1)
    populated = counts[counts > 0]
    if populated.size == 0:
        raise ValueError("no value falls in any bin")
    empty = [f"[{edges[int(i)]}, {edges[int(i) + 1]}]" for i in np.flatnonzero(counts == 0)]
    if empty:
        logger.warning("empty DSC bins: %s", ", ".join(empty))
    n = int(populated.min()) if per_bin is None else int(per_bin)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(bins == b), size=min(n, int(counts[b])), replace=False)
        for b in range(len(counts))
        if counts[b] > 0
    ]
    return np.sort(np.concatenate(chosen))


def split_by_patient(
    patients: Sequence[str],
    values: ArrayLike,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    edges: Sequence[float] = DEFAULT_BINS,
    seed: int = 0,
) -> np.ndarray:
    """Split items into train (0), validation (1) and test (2) by patient, stratified.

    Each patient is stratified by the bin of its items' median value; within each stratum the
    patients are shuffled and dealt out in the given fractions (largest remainders).

    Returns:
        The split (0, 1 or 2) of every item.
    """
    values = np.asarray(values, dtype=float)
    if len(patients) != len(values):
        raise ValueError(f"{len(patients)} patients for {len(values)} values")
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    by_patient: dict[str, list[float]] = defaultdict(list)
    for patient, value in zip(patients, values, strict=True):
        by_patient[patient].append(float(value))
    names = sorted(by_patient)
    strata = assign_bins([float(np.nanmedian(by_patient[p])) for p in names], edges)
    rng = np.random.default_rng(seed)
    side: dict[str, int] = {}
    carry = np.zeros(3)
    for stratum in np.unique(strata):
        members = [names[i] for i in np.flatnonzero(strata == stratum)]
        rng.shuffle(members)
        exact = np.asarray(fractions) * len(members) + carry
        counts = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - counts))[: len(members) - counts.sum()]:
            counts[i] += 1
        carry = exact - counts
        bounds = np.cumsum(counts)
        for j, patient in enumerate(members):
            side[patient] = int(np.searchsorted(bounds, j, side="right"))
    return np.array([side[p] for p in patients], dtype=int)
