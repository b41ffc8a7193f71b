"""Near-expert segmentations: realistic, small perturbations of expert label maps.

They turn an expert label map (S, H, W) into maps a second reader or a strong segmenter draws:

- :func:`elastic_deform`: a smooth in-plane displacement of the whole map (1-4 px);
- :func:`boundary_jitter`: one class grown or shrunk by 1-2 px on part of its boundary;
- :func:`partial_volume_shift`: one class blurred (sigma ~1 px), thresholded in [0.3, 0.7];
- :func:`stop_short`: one class removed from its first or last slice (base or apex);
- :func:`mix_regions`: one class, or the slices on one side of a split, from a second map;
- :func:`near_expert`, :func:`near_expert_in_band`: a random composition of the above, and one
  whose DSC falls in a requested band (to balance a data set over DSC bands).

Each takes a ``numpy.random.Generator`` (same seed, same map) and returns a new map of the
input's shape and dtype holding only its values; no class of the input disappears. ``strength``
scales every size parameter (1 = the ranges above).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from monai_qc import metrics

__all__ = [
    "boundary_jitter", "elastic_deform", "mix_regions", "near_expert", "near_expert_in_band",
    "partial_volume_shift", "stop_short"]  # fmt: skip

Labels = np.ndarray  # (S, H, W) integer label map
Gen = np.random.Generator
_IN_PLANE = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)  # 4-connected, in-plane
_CROP_MARGIN = 24  # px kept around the foreground by near_expert_in_band


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


def _smooth_noise(rng: Gen, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise smoothed in-plane with ``sigma`` px (made on a 4x coarser grid)."""
    n, h, w = shape
    coarse = rng.standard_normal((n, h // 4 + 1, w // 4 + 1), dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma=(0, sigma / 4, sigma / 4))
    return ndimage.gaussian_filter(coarse.repeat(4, 1).repeat(4, 2)[:, :h, :w], (0, 2, 2))


def _crop_box(labels: Labels, other: Labels | None) -> tuple[slice, ...]:
    """The foreground's in-plane bounding box in either map, plus a margin."""
    fg = np.logical_or.reduce([(m != 0).any(axis=0) for m in (labels, other) if m is not None])
    box: tuple[slice, ...] = (slice(None),)
    for axis in (1, 0) if fg.any() else ():
        idx = np.flatnonzero(fg.any(axis=axis))
        box += (slice(max(idx[0] - _CROP_MARGIN, 0), idx[-1] + _CROP_MARGIN + 1),)
    return box


def elastic_deform(
    labels: Labels, rng: Gen, max_displacement: float | None = None, strength: float = 1.0
) -> Labels:
    """Warp the map by a smooth random in-plane field (nearest-neighbour labels).

    ``max_displacement``: the largest displacement in px (default uniform in [1, 4]), times
    ``strength``; the field is Gaussian noise smoothed with a sigma of 6-12 px."""
    labels = _check(labels)
    mag = rng.uniform(1, 4) if max_displacement is None else max_displacement
    smooth = rng.uniform(6, 12)
    field = np.stack([_smooth_noise(rng, labels.shape, smooth) for _ in range(2)])
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

    Defaults: a random class, radius 1 or 2, grow or shrink at random, a region of 25-75 % of
    the volume; ``strength`` scales radius and region. Lost voxels take the nearest other label."""
    labels = _check(labels)
    value = _pick_class(labels, rng, cls)
    r = int(rng.integers(1, 3)) if radius is None else radius
    up = bool(rng.random() < 0.5) if grow is None else grow
    fraction = min(rng.uniform(0.25, 0.75) * strength, 1.0)
    field = _smooth_noise(rng, labels.shape, 8.0)
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

    Defaults: a random class, ``level`` uniform in [0.3, 0.7] (below 0.5 the class grows); the
    blur's sigma is 0.7-1.3 px times ``strength``. Lost voxels take the nearest other label."""
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
    candidates = [v for v in _classes(labels) if cls in (None, v) and (flat == v).any(1).sum() > 1]
    out = labels.copy()
    if not candidates:
        return out
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
    cls: int | None = None,
    strength: float = 1.0,
) -> Labels:
    """Take the labels of one region from ``other`` (e.g. a model's segmentation).

    ``region``: ``"class"`` (the neighbourhood, 2 px in-plane, of ``cls`` or a random class) or
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
        value = _pick_class(labels, rng, cls)
        if value is None:
            return out
        near = ndimage.binary_dilation((labels == value) | (src == value), _IN_PLANE, 2)
        out[near] = src[near]
    else:
        split = int(rng.integers(1, max(labels.shape[0], 2)))
        part = slice(0, split) if rng.random() < 0.5 else slice(split, None)
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
    focus: int | None = None,
) -> Labels:
    """Apply ``n_ops[0]``-``n_ops[1]`` distinct random operations of this module in turn.

    ``other`` (a second segmentation of the same image) feeds :func:`mix_regions`; the one-class
    operations act on ``focus`` (default: a random class each)."""
    out = _check(labels).copy()
    n = int(rng.integers(n_ops[0], n_ops[1] + 1))
    chosen = rng.choice(len(_OPS), size=min(n, len(_OPS)), replace=False, p=_OP_WEIGHTS)
    for op in (_OPS[int(i)] for i in chosen):
        extra: dict[str, object] = {} if op is elastic_deform else {"cls": focus}
        if op is mix_regions:
            extra["other"] = other
        out = op(out, rng, strength=strength, **extra)
    return out


def near_expert_in_band(
    labels: Labels,
    rng: Gen,
    band: tuple[float, float],
    n_ops: tuple[int, int] = (1, 3),
    other: Labels | None = None,
    target_class: int | None = None,
    max_evals: int = 24,
) -> tuple[Labels, float]:
    """A :func:`near_expert` map whose 3D DSC falls in ``band`` = [lo, hi).

    The DSC is that of ``target_class`` (the one-class operations then act on it, and every
    other class must keep a DSC of at least ``lo``), or else the lowest over the classes. For a
    random recipe (operations and random fields fixed by a drawn seed) the strength is searched,
    doubling then bisecting, until the DSC falls in the band (``hi`` included when 1); a recipe
    that cannot reach it is replaced. Returns the map and its DSC: of at most ``max_evals``
    maps, the first in the band, or else the closest."""
    labels, (lo, hi) = _check(labels), band
    box, values = _crop_box(labels, other), _classes(labels)
    crop, crop_other = labels[box], None if other is None else np.asarray(other)[box]
    best: tuple[float, Labels, float] = (np.inf, crop, 1.0)
    s, steps = np.inf, 0
    for _ in range(max_evals if values else 0):
        if s > 6.0 or steps == 6:  # a new recipe
            seed, s_lo, s_hi, s, steps = int(rng.integers(2**63 - 1)), 0.0, np.inf, 1.0, 0
        steps += 1
        out = near_expert(crop, np.random.default_rng(seed), n_ops, s, crop_other, target_class)
        dsc = dict(zip(values, metrics.volume_scores(crop, out, values, 1.0).dsc, strict=True))
        floor = min(dsc.values())
        score = floor if target_class is None else dsc.get(target_class, 1.0)
        miss = max(lo - score, score - hi, lo - floor, 1e-9 if score == hi < 1 else 0.0)
        if miss < best[0]:
            best = (miss, out, score)
        if miss == 0.0:
            break
        if score > hi:  # too close to the input: stronger
            s_lo, s = s, (2 * s if s_hi == np.inf else (s + s_hi) / 2)
        else:
            s_hi, s = s, (s_lo + s) / 2
    full = labels.copy()
    full[box] = best[1]
    return full, best[2]
