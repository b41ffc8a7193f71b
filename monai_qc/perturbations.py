"""Near-expert segmentations: realistic, small perturbations of expert label maps.

A QC network that never saw segmentations close to the expert's cannot rate them. These turn
an expert label map (S, H, W) into maps a second reader or a strong segmenter could draw:

- :func:`elastic_deform`: a smooth in-plane displacement of the whole map (1-4 px);
- :func:`boundary_jitter`: one class grown or shrunk by 1-2 px on part of its boundary;
- :func:`partial_volume_shift`: one class blurred (sigma ~1 px), thresholded in [0.3, 0.7];
- :func:`stop_short`: one class removed from its first or last slice (base or apex);
- :func:`mix_regions`: one class, or the slices on one side of a split, from a second map;
- :func:`near_expert`: a random composition of the above;
- :func:`near_expert_in_band`: one whose DSC falls in a requested band (balanced data sets).

Each takes a ``numpy.random.Generator`` (same seed, same map) and returns a new map of the
input's shape and dtype holding only the input's values; no class of the input disappears.
``strength`` scales every size parameter (1 = the ranges above).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from monai_qc import metrics

__all__ = [
    "boundary_jitter", "elastic_deform", "mix_regions", "near_expert", "near_expert_in_band",
    "partial_volume_shift", "stop_short", "target_dsc",
]  # fmt: skip

Labels = np.ndarray  # (S, H, W) integer label map
Gen = np.random.Generator
_IN_PLANE = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)  # 4-connected, in-plane
_CROP_MARGIN = 24  # px kept around the foreground by near_expert


def _check(labels: Labels) -> Labels:
    arr = np.asarray(labels)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"expected an integer (S, H, W) label map, got {arr.dtype} {arr.shape}")
    return arr


def _classes(labels: Labels) -> list[int]:
    return [int(v) for v in np.unique(labels) if v != 0]


def _pick_class(labels: Labels, rng: Gen, cls: int | None) -> int | None:
    classes = _classes(labels) if cls is None else [cls] if cls in _classes(labels) else []
    return int(rng.choice(classes)) if classes else None


def _finish(out: Labels, labels: Labels) -> Labels:
    """Restore every class of ``labels`` that ``out`` lost entirely."""
    for value in _classes(labels):
        if not (out == value).any():
            out[labels == value] = value
    return out.astype(labels.dtype, copy=False)


def _fill_nearest(out: Labels, removed: np.ndarray, value: int) -> None:
    """Give removed voxels the label of the nearest voxel of their slice not of ``value``."""
    for z in np.flatnonzero(removed.any(axis=(1, 2))):
        sl, gone = out[z], removed[z]
        source = sl != value
        if not source.any():
            sl[gone] = 0
            continue
        _, (iy, ix) = ndimage.distance_transform_edt(~source, return_indices=True)
        sl[gone] = sl[iy[gone], ix[gone]]


def elastic_deform(
    labels: Labels, rng: Gen, max_displacement: float | None = None, strength: float = 1.0
) -> Labels:
    """Warp the map by a smooth random in-plane field (nearest-neighbour labels).

    ``max_displacement``: the largest displacement in px (default uniform in [1, 4]), times
    ``strength``; the field is Gaussian noise smoothed with a sigma of 6-12 px."""
    labels = _check(labels)
    mag = rng.uniform(1, 4) if max_displacement is None else max_displacement
    smooth = rng.uniform(6, 12)
    field = rng.standard_normal((2, *labels.shape))
    field = np.stack([ndimage.gaussian_filter(f, sigma=(0.5, smooth, smooth)) for f in field])
    field *= mag * strength / (float(np.sqrt((field**2).sum(axis=0)).max()) or 1.0)
    grid = np.indices(labels.shape, dtype=np.float64)
    grid[1:] += field
    return _finish(ndimage.map_coordinates(labels, grid, order=0, mode="nearest"), labels)


def boundary_jitter(
    labels: Labels,
    rng: Gen,
    cls: int | None = None,
    radius: int | None = None,
    grow: bool | None = None,
    strength: float = 1.0,
) -> Labels:
    """Grow or shrink one class by ``radius`` px in-plane inside a random smooth region.

    Defaults: a random class, radius 1 or 2, grow or shrink at random; the region (smoothed
    noise) covers 25-75 % of the volume; ``strength`` multiplies radius and region. Shrunk
    voxels take the label of their nearest neighbour outside the class."""
    labels = _check(labels)
    value = _pick_class(labels, rng, cls)
    r = int(rng.integers(1, 3)) if radius is None else radius
    up = bool(rng.random() < 0.5) if grow is None else grow
    fraction = min(rng.uniform(0.25, 0.75) * strength, 1.0)
    field = ndimage.gaussian_filter(rng.standard_normal(labels.shape), sigma=(0, 8, 8))
    region = field >= np.quantile(field, 1.0 - fraction)
    out = labels.copy()
    if value is None:
        return out
    mask = labels == value
    iterations = max(1, round(r * strength))
    if up:
        grown = ndimage.binary_dilation(mask, _IN_PLANE, iterations=iterations)
        out[grown & ~mask & region] = value
    else:
        kept = ndimage.binary_erosion(mask, _IN_PLANE, iterations=iterations)
        _fill_nearest(out, mask & ~kept & region, value)
    return _finish(out, labels)


def partial_volume_shift(
    labels: Labels,
    rng: Gen,
    cls: int | None = None,
    level: float | None = None,
    strength: float = 1.0,
) -> Labels:
    """Blur one class's mask in-plane and threshold it again, as a partial-volume reader would.

    Defaults: a random class, ``level`` uniform in [0.3, 0.7] (below 0.5 the class grows, above
    it shrinks); the blur's sigma is uniform in [0.7, 1.3] px, times ``strength``. Voxels the
    class loses take the label of their nearest neighbour outside it."""
    labels = _check(labels)
    value = _pick_class(labels, rng, cls)
    sigma = rng.uniform(0.7, 1.3) * strength
    lev = rng.uniform(0.3, 0.7) if level is None else level
    out = labels.copy()
    if value is None:
        return out
    mask = labels == value
    new = ndimage.gaussian_filter(mask.astype(np.float32), sigma=(0, sigma, sigma)) >= lev
    out[new & ~mask] = value
    _fill_nearest(out, mask & ~new, value)
    return _finish(out, labels)


def stop_short(
    labels: Labels, rng: Gen, cls: int | None = None, end: str | None = None, strength: float = 1.0
) -> Labels:
    """Remove one class from the first or last slice holding it (set to background).

    ``end`` is ``"first"`` or ``"last"`` (default: at random); in ACDC stacks the first slice
    is the base, the last the apex. Only a class present on two or more slices is shortened.
    ``strength`` is accepted for a uniform signature and has no effect."""
    labels = _check(labels)
    side = end if end is not None else str(rng.choice(["first", "last"]))
    if side not in ("first", "last"):
        raise ValueError(f"end must be 'first' or 'last', got {end!r}")
    flat = labels.reshape(labels.shape[0], -1)
    candidates = [v for v in _classes(labels) if (flat == v).any(axis=1).sum() >= 2]
    if cls is not None:
        candidates = [cls] if cls in candidates else []
    if not candidates:
        return labels.copy()
    out = labels.copy()
    value = int(rng.choice(candidates))
    holding = np.flatnonzero((flat == value).any(axis=1))
    z = holding[0] if side == "first" else holding[-1]
    out[z][out[z] == value] = 0
    return _finish(out, labels)


def mix_regions(
    labels: Labels,
    rng: Gen,
    other: Labels | None = None,
    region: str | None = None,
    strength: float = 1.0,
) -> Labels:
    """Take the labels of one region from ``other`` (e.g. a model's segmentation).

    ``region``: ``"class"`` (one class's neighbourhood, 2 px in-plane, in either map) or
    ``"slices"`` (the slices on one side of a random split); default at random. Values the input
    does not hold become background. Without ``other``, a more strongly perturbed copy (elastic
    3-6 px and a 2-px boundary jitter, times ``strength``) is used."""
    labels = _check(labels)
    kind = region if region is not None else str(rng.choice(["class", "slices"]))
    if kind not in ("class", "slices"):
        raise ValueError(f"region must be 'class' or 'slices', got {region!r}")
    if other is None:
        src = elastic_deform(labels, rng, rng.uniform(3, 6), strength)
        src = boundary_jitter(src, rng, radius=2, strength=strength)
    else:
        src = np.asarray(other)
        if src.shape != labels.shape:
            raise ValueError(f"other has shape {src.shape}, the labels {labels.shape}")
        src = np.where(np.isin(src, _classes(labels)), src, 0).astype(labels.dtype)
    out = labels.copy()
    if kind == "class":
        value = _pick_class(labels, rng, None)
        if value is None:
            return out
        near = ndimage.binary_dilation((labels == value) | (src == value), _IN_PLANE, 2)
        out[near] = src[near]
    else:
        n = labels.shape[0]
        split = int(rng.integers(1, n)) if n > 1 else 1
        part = slice(0, split) if rng.random() < 0.5 else slice(split, n)
        out[part] = src[part]
    return _finish(out, labels)


_OPS: tuple[Callable[..., Labels], ...] = (
    elastic_deform, boundary_jitter, partial_volume_shift, stop_short, mix_regions,
)  # fmt: skip
_OP_WEIGHTS = np.array([0.3, 0.25, 0.2, 0.1, 0.15])


def near_expert(
    labels: Labels,
    rng: Gen,
    n_ops: tuple[int, int] = (1, 3),
    strength: float = 1.0,
    other: Labels | None = None,
) -> Labels:
    """Apply ``n_ops[0]``-``n_ops[1]`` distinct random operations of this module in turn.

    ``other`` (a second segmentation of the same image) feeds :func:`mix_regions`. Only the
    foreground's in-plane bounding box plus a 24-px margin can change."""
    labels = _check(labels)
    maps = [labels] if other is None else [labels, np.asarray(other)]
    fg = np.logical_or.reduce([(m != 0).any(axis=0) for m in maps])
    box: tuple[slice, ...] = (slice(None),)
    if fg.any():
        for axis in (1, 0):
            idx = np.flatnonzero(fg.any(axis=axis))
            box += (slice(max(idx[0] - _CROP_MARGIN, 0), idx[-1] + _CROP_MARGIN + 1),)
    crop, crop_other = labels[box], None if other is None else np.asarray(other)[box]
    n = int(rng.integers(n_ops[0], n_ops[1] + 1))
    chosen = rng.choice(len(_OPS), size=min(n, len(_OPS)), replace=False, p=_OP_WEIGHTS)
    for i in chosen:
        extra = {"other": crop_other} if _OPS[int(i)] is mix_regions else {}
        crop = _OPS[int(i)](crop, rng, strength=strength, **extra)
    out = labels.copy()
    out[box] = crop
    return out


def target_dsc(truth: Labels, seg: Labels, target_class: int | None = None) -> float:
    """3D DSC of ``target_class``, or the lowest over the classes of ``truth`` (1.0 if none)."""
    classes = _classes(truth) if target_class is None else [target_class]
    if not classes:
        return 1.0
    return float(np.min(metrics.volume_scores(truth, seg, classes, empty_value=1.0).dsc))


def near_expert_in_band(
    labels: Labels,
    rng: Gen,
    band: tuple[float, float],
    n_ops: tuple[int, int] = (1, 3),
    other: Labels | None = None,
    target_class: int | None = None,
    max_evals: int = 24,
) -> tuple[Labels, float]:
    """A :func:`near_expert` map whose DSC (:func:`target_dsc`) falls in ``band`` = [lo, hi).

    For a random recipe (operations and random fields fixed by a drawn seed) the strength is
    searched, doubling then bisecting, until the DSC falls in the band (``hi`` included when 1);
    a recipe that cannot reach it is replaced. Returns the map and its DSC: of at most
    ``max_evals`` maps, the first in the band, or else the closest."""
    labels = _check(labels)
    lo, hi = band
    best: tuple[float, Labels, float] = (np.inf, labels.copy(), 1.0)
    evals = 0
    while evals < max_evals:
        seed = int(rng.integers(2**63 - 1))
        s_lo, s_hi, s = 0.0, np.inf, 1.0
        for _ in range(6):
            out = near_expert(labels, np.random.default_rng(seed), n_ops, s, other)
            score = target_dsc(labels, out, target_class)
            evals += 1
            miss = max(lo - score, score - hi, 1e-9 if score == hi < 1 else 0.0)
            if miss < best[0]:
                best = (miss, out, score)
            if miss == 0.0 or evals >= max_evals:
                return best[1], best[2]
            if score > hi:  # too close to the input: stronger
                s_lo, s = s, (2 * s if s_hi == np.inf else (s + s_hi) / 2)
            else:
                s_hi, s = s, (s_lo + s) / 2
            if s > 6.0:
                break
    return best[1], best[2]
