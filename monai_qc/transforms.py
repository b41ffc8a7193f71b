"""Build the QC network input from a whole subject (image + segmentation), MONAI style.

All slices of a subject share one square crop box around the union of the segmentation
foreground (:class:`ForegroundSquareCrop`), so slice predictions stay comparable. Then
:class:`Clahe` (percentile normalisation + CLAHE), resizing (each slice to 128 x 128, or the
whole stack to 128 x 128 x 8 for the 3D-direct baseline) and the one-hot segmentation
(background included) concatenated after the image: :class:`QCSliceInputs`,
:class:`QCVolumeInput`. Volumes are (S, H, W); segmentations hold class indices 0..K-1.
Networks with context read each slice with its neighbours: :func:`with_context_slices`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.networks.utils import one_hot
from monai.transforms import MapTransform, Resize, ScaleIntensityRangePercentiles, Transform
from monai.transforms.utils import (
    generate_spatial_bounding_box,
    get_largest_connected_component_mask,
)
from monai.utils import convert_to_numpy, convert_to_tensor
from skimage.exposure import equalize_adapthist

from monai_qc.errors import QCInputError

__all__ = [
    "Clahe",
    "Clahed",
    "CropBox",
    "ForegroundSquareCrop",
    "ForegroundSquareCropd",
    "QCSliceInputs",
    "QCSliceInputsd",
    "QCVolumeInput",
    "QCVolumeInputd",
    "crop_to_box",
    "foreground_square_box",
    "image_and_onehot",
    "resize_slices",
    "stack_context",
    "validate_subject",
    "with_context_slices",
]

logger = logging.getLogger(__name__)


class CropBox(NamedTuple):
    """Half-open in-plane box ``[y0, y1) x [x0, x1)`` in pixels of the original slices.

    It may extend beyond the image (that part is padded). A pixel (r, c) of an output grid of
    side ``n`` maps back to ``y = y0 + (r + 0.5) * side / n - 0.5`` (same for x).
    """

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def side(self) -> int:
        """Side length of the (square) box in pixels."""
        return self.y1 - self.y0


def _as_array(volume: Any, name: str) -> np.ndarray:
    arr = np.asarray(convert_to_numpy(volume))
    if arr.ndim != 3 or arr.size == 0:
        raise QCInputError(None, f"{name} must be a non-empty 3D array (S, H, W), got {arr.shape}")
    return arr


def _pair(image: Any, seg: Any) -> tuple[np.ndarray, np.ndarray]:
    img, lab = _as_array(image, "image"), _as_array(seg, "segmentation")
    if img.shape != lab.shape:
        raise QCInputError(None, f"image shape {img.shape} != segmentation shape {lab.shape}")
    return img, lab


def validate_subject(image: Any, seg: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check an image/segmentation pair; return them as arrays (float32, int64).

    Raises:
        QCInputError: (a ValueError) naming the problem (shape, NaN, labels out of range).
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (background included), got {n_classes}")
    img, lab = _pair(image, seg)
    if not np.isfinite(img).all():
        raise QCInputError(None, "image contains NaN or infinite values")
    if not np.issubdtype(lab.dtype, np.integer) and not np.array_equal(lab, np.round(lab)):
        raise QCInputError(None, "segmentation contains non-integer labels")
    lab = lab.astype(np.int64)
    if lab.min() < 0 or lab.max() >= n_classes:
        found = f"{int(lab.min())}..{int(lab.max())}"
        raise QCInputError(None, f"segmentation labels {found} outside 0..{n_classes - 1}")
    return img.astype(np.float32), lab


def foreground_square_box(
    seg: Any, margin: float = 0.25, min_margin: int = 4, largest_component: bool = True
) -> CropBox:
    """Square box around the in-plane foreground of all slices of ``seg`` (S, H, W).

    The bounding box of ``seg > 0`` projected over all slices (with ``largest_component``, only
    its largest connected part, so that stray false positives far from the heart do not widen
    the crop; what then lies outside the box is never rated, and
    :func:`monai_qc.findings.outside_rated_region` reports it) is enlarged on each side by
    ``max(min_margin, ceil(margin * longest_side))`` pixels and made square around its
    centre. An empty segmentation gives the central square of side ``min(H, W)``.
    """
    if margin < 0 or min_margin < 0:
        raise ValueError(f"margin and min_margin must be >= 0, got {margin}, {min_margin}")
    lab = _as_array(seg, "segmentation")
    _, h, w = lab.shape
    if not (lab > 0).any():
        logger.debug("empty segmentation: central square crop")
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        return CropBox(y0, x0, y0 + side, x0 + side)
    projection = np.any(lab > 0, axis=0, keepdims=True)  # (1, H, W) channel-first for MONAI
    if largest_component:
        projection = get_largest_connected_component_mask(projection, connectivity=2)
    start, end = generate_spatial_bounding_box(projection)
    longest = max(end[0] - start[0], end[1] - start[1])
    side = longest + 2 * max(min_margin, math.ceil(margin * longest))
    y0 = (start[0] + end[0] - side) // 2
    x0 = (start[1] + end[1] - side) // 2
    return CropBox(int(y0), int(x0), int(y0 + side), int(x0 + side))


def crop_to_box(volume: np.ndarray, box: CropBox, pad_value: float = 0) -> np.ndarray:
    """Crop every slice of ``volume`` (S, H, W) to ``box``, padding outside with ``pad_value``."""
    s, h, w = volume.shape
    out = np.full((s, box.y1 - box.y0, box.x1 - box.x0), pad_value, dtype=volume.dtype)
    ys, ye = max(box.y0, 0), min(box.y1, h)
    xs, xe = max(box.x0, 0), min(box.x1, w)
    if ys < ye and xs < xe:
        out[:, ys - box.y0 : ye - box.y0, xs - box.x0 : xe - box.x0] = volume[:, ys:ye, xs:xe]
    return out


class ForegroundSquareCrop:
    """Crop image and segmentation (S, H, W) to one square box around the foreground union.

    Args:
        margin: margin on each side as a fraction of the box's longest side.
        min_margin: minimum margin on each side, in pixels.
        largest_component: box only the largest connected part of the projected foreground.

    The box used by the latest call is kept in ``last_box``.
    """

    def __init__(
        self, margin: float = 0.25, min_margin: int = 4, largest_component: bool = True
    ) -> None:
        self.margin = margin
        self.min_margin = min_margin
        self.largest_component = largest_component
        self.last_box: CropBox | None = None

    def __call__(self, image: Any, seg: Any) -> tuple[np.ndarray, np.ndarray]:
        img, lab = _pair(image, seg)
        box = self.last_box = foreground_square_box(
            lab, self.margin, self.min_margin, self.largest_component
        )
        return crop_to_box(img, box, img.min()), crop_to_box(lab, box, 0)


class ForegroundSquareCropd(MapTransform):
    """Dictionary version of :class:`ForegroundSquareCrop` (``margin``, ``min_margin`` kwargs).

    Crops ``image_key`` and ``seg_key`` in place and stores the box under ``box_key``.
    """

    def __init__(
        self,
        image_key: Hashable = "image",
        seg_key: Hashable = "seg",
        box_key: Hashable = "crop_box",
        **kwargs: Any,
    ) -> None:
        super().__init__([image_key, seg_key])
        self.image_key, self.seg_key, self.box_key = image_key, seg_key, box_key
        self.cropper = ForegroundSquareCrop(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.image_key], d[self.seg_key] = self.cropper(d[self.image_key], d[self.seg_key])
        d[self.box_key] = self.cropper.last_box
        return d


class Clahe(Transform):
    """Percentile normalisation to [0, 1] over the whole subject, then CLAHE on each slice.

    Args:
        lower: lower intensity percentile mapped to 0 (values below are clipped).
        upper: upper intensity percentile mapped to 1 (values above are clipped).
        clip_limit: CLAHE clip limit (skimage ``equalize_adapthist``).
        kernel_size: CLAHE contextual region; None = 1/8 of the slice size.
    """

    def __init__(
        self,
        lower: float = 1.0,
        upper: float = 99.0,
        clip_limit: float = 0.01,
        kernel_size: int | None = None,
    ) -> None:
        self.scaler = ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=True)
        self.clip_limit = clip_limit
        self.kernel_size = kernel_size

    def __call__(self, data: Any) -> np.ndarray:
        img = _as_array(data, "image").astype(np.float32)
        if not np.isfinite(img).all():
            raise QCInputError(None, "image contains NaN or infinite values")
        with warnings.catch_warnings():  # a constant image scales to 0 (MONAI warns)
            warnings.filterwarnings("ignore", message="Divide by zero")
            scaled = np.clip(convert_to_numpy(self.scaler(img)), 0.0, 1.0)
        kw = {"kernel_size": self.kernel_size, "clip_limit": self.clip_limit}
        out = [equalize_adapthist(sl, **kw) for sl in scaled.astype(np.float64)]
        return np.stack(out).astype(np.float32)


class Clahed(MapTransform):
    """Dictionary version of :class:`Clahe`."""

    def __init__(self, keys: Hashable | Sequence[Hashable] = "image", **kwargs: Any) -> None:
        super().__init__(keys)
        self.clahe = Clahe(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.clahe(d[key])
        return d


def resize_slices(volume: np.ndarray, spatial_size: Sequence[int], labels: bool) -> torch.Tensor:
    """Resize each slice of (S, H, W): image bilinear + anti-aliasing, labels nearest."""
    if labels:
        resize = Resize(spatial_size, mode="nearest-exact", anti_aliasing=False)
    else:
        resize = Resize(spatial_size, mode="bilinear", align_corners=False, anti_aliasing=True)
    out = resize(torch.as_tensor(volume, dtype=torch.float32))
    return convert_to_tensor(out, track_meta=False)


def image_and_onehot(image: torch.Tensor, seg: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Image (N, ...) and one-hot class indices (N, ...) -> (N, 1 + n_classes, ...) float32."""
    onehot = one_hot(seg.round().long().unsqueeze(1), n_classes, dtype=torch.float32, dim=1)
    return torch.cat([image.float().unsqueeze(1), onehot], dim=1)


def stack_context(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inputs (B, 1+K, H, W) of slices -c..+c -> one input (B, (2c+1)(1+K), H, W).

    Channel order: the 2c+1 images, then the 2c+1 one-hot segmentations (slice order both);
    so the first 2c+1 channels are images (for intensity transforms).
    """
    return torch.cat([p[:, :1] for p in parts] + [p[:, 1:] for p in parts], dim=1)


def with_context_slices(stack: torch.Tensor, context: int) -> torch.Tensor:
    """Slice inputs of a whole stack (S, 1+K, H, W) with ``context`` neighbours on each side.

    Returns (S, (2c+1)(1+K), H, W) in :func:`stack_context`'s order; a neighbour beyond the
    first or last slice is all zeros (one-hot background too), so the network sees the stack end.
    """
    if context == 0:
        return stack
    padded = torch.nn.functional.pad(stack, (0, 0, 0, 0, 0, 0, context, context))
    n = stack.shape[0]
    return stack_context([padded[offset : offset + n] for offset in range(2 * context + 1)])


class _SubjectInputs:
    """Crop + CLAHE shared by :class:`QCSliceInputs` and :class:`QCVolumeInput`."""

    default_spatial_size: tuple[int, ...] = ()

    def __init__(
        self,
        n_classes: int,
        spatial_size: Sequence[int] | None = None,
        margin: float = 0.25,
        min_margin: int = 4,
        clahe_clip_limit: float = 0.01,
        largest_component: bool = True,
    ) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (background included), got {n_classes}")
        size = self.default_spatial_size if spatial_size is None else tuple(spatial_size)
        if len(size) != len(self.default_spatial_size) or min(size) < 1:
            raise ValueError(
                f"spatial_size must be {len(self.default_spatial_size)} positive sizes, got {size}"
            )
        self.n_classes = n_classes
        self.spatial_size = size
        self.cropper = ForegroundSquareCrop(margin, min_margin, largest_component)
        self.clahe = Clahe(clip_limit=clahe_clip_limit)

    @property
    def last_box(self) -> CropBox | None:
        """Crop box of the latest call."""
        return self.cropper.last_box

    def __call__(self, image: Any, seg: Any) -> torch.Tensor:
        raise NotImplementedError

    def _crop_clahe(self, image: Any, seg: Any) -> tuple[np.ndarray, np.ndarray]:
        img, lab = validate_subject(image, seg, self.n_classes)
        img, lab = self.cropper(img, lab)
        return self.clahe(img), lab


class QCSliceInputs(_SubjectInputs):
    """Subject (S, H, W) image + class-index segmentation -> QC 2D input (S, 1+K, H', W').

    Each slice is resized in plane: image bilinear (anti-aliased), labels nearest.

    Args:
        n_classes: K, number of classes including background.
        spatial_size: (H', W'); None = (128, 128).
        margin: crop margin as a fraction of the foreground box's longest side.
        min_margin: minimum crop margin in pixels.
        clahe_clip_limit: CLAHE clip limit.
        largest_component: crop around the largest connected part of the foreground only.
        context_slices: neighbouring slices on each side in each input
            (:func:`with_context_slices`; 0: the slice only).

    The crop box of the latest call is ``last_box``.
    """

    default_spatial_size = (128, 128)

    def __init__(self, n_classes: int, *args: Any, context_slices: int = 0, **kwargs: Any):
        super().__init__(n_classes, *args, **kwargs)
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        self.context_slices = context_slices

    def prepare(self, image: Any, seg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Cropped, CLAHE'd and resized image (S, H', W') and class indices (S, H', W').

        The compact form stored in QC data sets; ``image_and_onehot`` turns it into the input.
        """
        img, lab = self._crop_clahe(image, seg)
        img_t = resize_slices(img, self.spatial_size, labels=False)
        lab_t = resize_slices(lab.astype(np.float32), self.spatial_size, labels=True)
        return img_t, lab_t

    def __call__(self, image: Any, seg: Any) -> torch.Tensor:
        stack = image_and_onehot(*self.prepare(image, seg), self.n_classes)
        return with_context_slices(stack, self.context_slices)


class QCVolumeInput(_SubjectInputs):
    """Subject (S, H, W) -> 3D-direct QC input (1+K, H', W', D'), D' along the slices.

    The whole cropped stack is resized with nearest neighbour (image and labels). Arguments
    as :class:`QCSliceInputs`, with ``spatial_size`` (H', W', D'); None = (128, 128, 8).
    """

    default_spatial_size = (128, 128, 8)

    def __call__(self, image: Any, seg: Any) -> torch.Tensor:
        img, lab = self._crop_clahe(image, seg)
        stacked = np.stack([img, lab.astype(np.float32)])  # (2, S, H, W)
        hwd = torch.as_tensor(stacked).permute(0, 2, 3, 1)  # (2, H, W, S)
        resize = Resize(self.spatial_size, mode="nearest-exact", anti_aliasing=False)
        out = convert_to_tensor(resize(hwd), track_meta=False)
        return image_and_onehot(out[:1], out[1:], self.n_classes)[0]


class _InputsDict(MapTransform):
    """Dictionary wrapper of a subject-input transform; also stores the crop box."""

    transform_class: type[_SubjectInputs] = _SubjectInputs

    def __init__(
        self,
        n_classes: int,
        image_key: Hashable = "image",
        seg_key: Hashable = "seg",
        output_key: Hashable = "qc_input",
        box_key: Hashable = "crop_box",
        **kwargs: Any,
    ) -> None:
        super().__init__([image_key, seg_key])
        self.transform = self.transform_class(n_classes, **kwargs)
        self.image_key, self.seg_key = image_key, seg_key
        self.output_key, self.box_key = output_key, box_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.output_key] = self.transform(d[self.image_key], d[self.seg_key])
        d[self.box_key] = self.transform.last_box
        return d


class QCSliceInputsd(_InputsDict):
    """Dictionary version of :class:`QCSliceInputs`; extra kwargs go to it."""

    transform_class = QCSliceInputs


class QCVolumeInputd(_InputsDict):
    """Dictionary version of :class:`QCVolumeInput`; extra kwargs go to it."""

    transform_class = QCVolumeInput
