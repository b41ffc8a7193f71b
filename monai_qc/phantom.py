"""Synthetic short-axis cardiac phantoms: small image + label volumes for demos and tests.

Each slice holds an LV cavity (label 3) inside a myocardial ring (label 2) and a crescent-shaped
RV cavity (label 1), shrinking towards the apex, on a textured background. Everything is drawn
from a seed, so a phantom can be made again exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["PHANTOM_LABELS", "make_phantom", "write_nnunet_dataset", "write_volume"]

PHANTOM_LABELS = {"RV": 1, "MYO": 2, "LV": 3}
PHANTOM_SPACING = (10.0, 1.5, 1.5)  # (sz, sy, sx) mm


def make_phantom(
    seed: int, n_slices: int = 8, size: tuple[int, int] = (96, 96)
) -> tuple[np.ndarray, np.ndarray]:
    """A phantom image (float32 in [0, 1]) and its labels (uint8), both (S, H, W)."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = np.array([height, width], dtype=np.float32) / 2 + rng.uniform(-6, 6, 2)
    lv_radius = rng.uniform(0.12, 0.17) * min(size)
    wall = rng.uniform(0.05, 0.08) * min(size)
    labels = np.zeros((n_slices, height, width), dtype=np.uint8)
    for i in range(n_slices):
        shrink = 1.0 - 0.6 * (i / max(n_slices - 1, 1)) ** 2  # base (i=0) to apex
        cy, cx = centre + rng.normal(0, 0.7, 2)
        r = np.hypot(yy - cy, xx - cx)
        r_lv, r_myo = lv_radius * shrink, (lv_radius + wall) * shrink
        rv_centre_x = cx - 1.4 * r_myo
        r_rv = np.hypot((yy - cy) / 1.25, xx - rv_centre_x)
        rv = (r_rv < 1.05 * r_myo) & (r > r_myo + 1)
        if i < n_slices - 1:  # no RV at the apex
            labels[i][rv] = 1
        labels[i][(r >= r_lv) & (r < r_myo)] = 2
        labels[i][r < r_lv] = 3
    intensity = np.array([0.25, 0.75, 0.35, 0.85], dtype=np.float32)[labels]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, labels.shape), sigma=(0, 3, 3))
    image = intensity + 0.08 * texture.astype(np.float32) / (texture.std() + 1e-6)
    image = ndimage.gaussian_filter(image, sigma=(0, 1.0, 1.0))
    image += rng.normal(0, 0.02, image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)
    return image, labels


def write_volume(
    array: np.ndarray, path: Path, spacing: tuple[float, float, float] = PHANTOM_SPACING
) -> None:
    """Write an (S, H, W) array with spacing (sz, sy, sx) in mm, compressed."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing)))
    sitk.WriteImage(image, str(path), useCompression=True)


def write_nnunet_dataset(
    folder: Path,
    n_cases: int,
    seed: int = 0,
    n_slices: int = 8,
    size: tuple[int, int] = (96, 96),
) -> Path:
    """Write an nnU-Net raw data set of phantoms (two phases, ED/ES, per patient).

    Args:
        folder: the data set folder to create, named ``DatasetXXX_Name``.
        n_cases: number of cases (an even number gives whole patients).
        seed: seed of the first phantom.
        n_slices: slices per volume.
        size: in-plane size.
    """
    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        case = f"phantom_{i // 2 + 1:03d}_{'ED' if i % 2 == 0 else 'ES'}"
        image, labels = make_phantom(seed + i, n_slices, size)
        write_volume(image, folder / "imagesTr" / f"{case}_0000.nii.gz", PHANTOM_SPACING)
        write_volume(labels, folder / "labelsTr" / f"{case}.nii.gz", PHANTOM_SPACING)
    dataset = {
        "channel_names": {"0": "cineMRI"},
        "labels": {"background": 0, **PHANTOM_LABELS},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": folder.name,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return folder
