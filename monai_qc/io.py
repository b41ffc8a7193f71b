"""Reading, validating and pairing image / segmentation files.

Every input problem raises :class:`~monai_qc.errors.QCInputError` naming the file. A volume is
the ``(S, H, W)`` array SimpleITK returns; ``spacing`` is ``(sz, sy, sx)`` in mm.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from monai_qc.errors import QCInputError
from monai_qc.file_integrity import verify_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "CaseInputs",
    "CasePair",
    "dataset_file_ending",
    "label_map_from_dataset_json",
    "labelled_case_ids",
    "load_case",
    "pair_cases",
    "patient_of",
    "read_volume",
    "split_image_name",
]

logger = logging.getLogger(__name__)

#: File name endings recognised as images (compound ``.nii.gz`` first).
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_SPACING_RTOL = 1e-3

Spacing = tuple[float, float, float]


def _sitk_message(error: RuntimeError) -> str:
    """Return the useful last part of a SimpleITK error message."""
    text = str(error).strip()
    if "sitk::ERROR:" in text:
        text = text.rsplit("sitk::ERROR:", 1)[1]
    return " ".join(text.split())


def read_volume(path: str | Path) -> tuple[np.ndarray, Spacing, sitk.Image]:
    """Read a 3D image (any format SimpleITK reads); a 4D image of 4th size 1 is squeezed.

    Returns:
        The ``(S, H, W)`` array (file's own dtype), the spacing ``(sz, sy, sx)`` in mm and the
        (3D) SimpleITK image carrying origin and direction.

    Before ITK reads it, the file's integrity is verified (:mod:`monai_qc.file_integrity`):
    complete, checksum-valid compressed data, exactly the voxel data the header implies, no
    NaN/inf in NIfTI voxels (ITK's NIfTI reader reads both a truncated file and NaN as 0).

    Raises:
        QCInputError: the file is missing, unreadable, truncated or corrupt, holds NaN/inf
            NIfTI voxels, is not 3D, or is not a scalar image.
    """
    path = Path(path)
    if not path.is_file():
        raise QCInputError(path, "cannot be read: no such file")
    try:
        verify_file(path)
    except OSError as error:
        raise QCInputError(path, f"cannot be read: {error.strerror or error}") from error
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise QCInputError(path, f"cannot be read: {_sitk_message(error)}") from error
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    elif image.GetDimension() != 3:
        dim = image.GetDimension()
        raise QCInputError(path, f"is a {dim}D image of size {size}; a 3D volume is expected")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise QCInputError(
            path,
            f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a scalar (single-channel) image is expected",
        )
    array = sitk.GetArrayFromImage(image)
    sx, sy, sz = (float(s) for s in image.GetSpacing())
    return array, (sz, sy, sx), image


@dataclass
class CaseInputs:
    """A validated image / segmentation pair.

    ``image``: (S, H, W) float32, all finite; ``segmentation``: (S, H, W) int32 label values
    (0 = background); ``spacing``: ``(sz, sy, sx)`` in mm; ``warnings``: problems that do not
    stop the check (origin or direction differing between image and segmentation).
    """

    case_id: str
    image: np.ndarray
    segmentation: np.ndarray
    spacing: Spacing
    image_path: Path
    seg_path: Path
    warnings: list[str] = field(default_factory=list)


def _fmt_spacing(spacing: Spacing) -> str:
    return "(" + ", ".join(f"{s:.6g}" for s in spacing) + ") mm"


def _geometry_warnings(image: sitk.Image, seg: sitk.Image) -> list[str]:
    """Differences of origin or direction between image and segmentation, in words."""
    warnings = []
    tol = 0.01 * min(image.GetSpacing())
    if not np.allclose(image.GetOrigin(), seg.GetOrigin(), rtol=0.0, atol=tol):
        seg_origin = tuple(round(v, 4) for v in seg.GetOrigin())
        image_origin = tuple(round(v, 4) for v in image.GetOrigin())
        warnings.append(
            f"segmentation origin {seg_origin} differs from the image's {image_origin} "
            f"(by more than {tol:.3g} mm); voxels are compared by index"
        )
    if not np.allclose(image.GetDirection(), seg.GetDirection(), rtol=0.0, atol=1e-4):
        seg_dir = tuple(round(v, 4) for v in seg.GetDirection())
        image_dir = tuple(round(v, 4) for v in image.GetDirection())
        warnings.append(
            f"segmentation direction {seg_dir} differs from the image's {image_dir}; "
            "voxels are compared by index"
        )
    return warnings


def _segmentation_values(seg: np.ndarray, seg_path: Path, label_values: Collection[int]) -> None:
    """Check that ``seg`` holds only integer, known, not-all-background label values."""
    values = np.unique(seg)
    if np.issubdtype(values.dtype, np.floating):
        bad = values[~np.isfinite(values) | (values != np.round(values))]
        if bad.size:
            shown = ", ".join(f"{v:g}" for v in bad[:5])
            raise QCInputError(
                seg_path, f"segmentation has non-integer values ({shown}); a label map is expected"
            )
    known = sorted({int(v) for v in label_values} - {0})
    unknown = sorted({int(v) for v in values} - set(known) - {0})
    if unknown:
        raise QCInputError(
            seg_path,
            f"segmentation contains label values {unknown} that are not in the label map "
            f"(known: 0 = background, {', '.join(map(str, known)) or 'none'})",
        )
    if not np.any(values != 0):
        raise QCInputError(seg_path, "segmentation is empty (every voxel is background 0)")


def load_case(
    case_id: str,
    image_path: str | Path,
    seg_path: str | Path,
    label_values: Collection[int],
    strict: bool = False,
) -> CaseInputs:
    """Read and validate one image / segmentation pair.

    ``label_values`` are the label map's foreground values (0, background, may be included).
    An origin or direction differing between the two files is returned in
    ``CaseInputs.warnings`` (and logged), or raised with ``strict=True``.

    Raises:
        QCInputError: naming the offending file, when either file is unreadable, truncated or
            corrupt, the image has NaN/inf values, shapes or spacings differ, the segmentation
            has non-integer, unknown or only background values, or (``strict``) origin or
            direction differ.
    """
    image_path, seg_path = Path(image_path), Path(seg_path)
    image_arr, image_spacing, image = read_volume(image_path)
    seg_arr, seg_spacing, seg = read_volume(seg_path)

    image_f32 = image_arr.astype(np.float32, copy=False)
    n_bad = image_f32.size - int(np.count_nonzero(np.isfinite(image_f32)))
    if n_bad:
        raise QCInputError(image_path, f"image contains {n_bad} non-finite values (NaN or inf)")
    if seg_arr.shape != image_arr.shape:
        raise QCInputError(
            seg_path,
            f"segmentation shape {seg_arr.shape} (S, H, W) does not match "
            f"image shape {image_arr.shape}",
        )
    if not all(
        math.isclose(a, b, rel_tol=_SPACING_RTOL)
        for a, b in zip(seg_spacing, image_spacing, strict=True)
    ):
        raise QCInputError(
            seg_path,
            f"segmentation spacing {_fmt_spacing(seg_spacing)} does not match "
            f"image spacing {_fmt_spacing(image_spacing)} (sz, sy, sx)",
        )
    _segmentation_values(seg_arr, seg_path, label_values)
    warnings = _geometry_warnings(image, seg)
    if strict and warnings:
        raise QCInputError(seg_path, "; ".join(warnings))
    for warning in warnings:
        logger.warning("%s: %s", seg_path, warning)
    return CaseInputs(
        case_id=case_id,
        image=image_f32,
        segmentation=seg_arr.astype(np.int32, copy=False),
        spacing=image_spacing,
        image_path=image_path,
        seg_path=seg_path,
        warnings=warnings,
    )


@dataclass
class CasePair:
    """An image file and the segmentation file of the same case."""

    case_id: str
    image_path: Path
    seg_path: Path


def split_image_name(name: str) -> tuple[str, str] | None:
    """Split a file name into ``(stem, extension)``, or ``None`` when it is not an image.

    Example: ``"la_003_0000.nii.gz"`` -> ``("la_003_0000", ".nii.gz")``.
    """
    lower = name.lower()
    if name.startswith("."):
        return None
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    return None


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """Map stem -> image files in ``folder`` (not recursive)."""
    if not folder.is_dir():
        raise QCInputError(folder, "is not a directory")
    files: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        split = split_image_name(path.name)
        if split is not None and path.is_file():
            files[split[0]].append(path)
    return files


def pair_cases(
    images_dir: str | Path, segs_dir: str | Path
) -> tuple[list[CasePair], list[tuple[str, str]]]:
    """Pair images with segmentations.

    A segmentation ``<case>.<ext>`` pairs with the image ``<case>_0000.<ext>`` (nnU-Net
    naming; other channels ``_0001``... are ignored, QC uses channel 0) or else with the image
    of the same name. Extensions may differ between the two. Non-image files are ignored.
    When both folders are the same, files named ``*_NNNN`` are the images.

    Returns:
        The pairs and the problems ``(case id, reason)`` of files that could not be paired,
        both sorted by case id.

    Raises:
        QCInputError: a folder does not exist.
    """
    images_dir, segs_dir = Path(images_dir), Path(segs_dir)
    images = _image_files(images_dir)
    segs = _image_files(segs_dir)
    if images_dir.resolve() == segs_dir.resolve():
        images = {s: p for s, p in images.items() if _CHANNEL_RE.match(s)}
        segs = {s: p for s, p in segs.items() if not _CHANNEL_RE.match(s)}

    pairs: list[CasePair] = []
    problems: list[tuple[str, str]] = []
    used: set[str] = set()
    for case, seg_files in segs.items():
        case_stems = {
            s for s in images if s == case or ((m := _CHANNEL_RE.match(s)) and m["case"] == case)
        }
        used.update(case_stems)
        candidates = [s for s in (f"{case}_0000", case) if s in images]
        found = [p for s in candidates for p in images[s]]
        if len(seg_files) > 1:
            names = ", ".join(p.name for p in seg_files)
            problems.append((case, f"several segmentation files for one case: {names}"))
        elif not found:
            expected = f"{case}_0000.<ext> or {case}.<ext> in {images_dir}"
            problems.append((case, f"no image for segmentation {seg_files[0].name} ({expected})"))
        elif len(found) > 1:
            names = ", ".join(p.name for p in found)
            problems.append((case, f"several images match segmentation {case}: {names}"))
        else:
            pairs.append(CasePair(case, found[0], seg_files[0]))

    unpaired: dict[str, list[str]] = defaultdict(list)
    for stem in sorted(set(images) - used):
        match = _CHANNEL_RE.match(stem)
        unpaired[match["case"] if match else stem] += [p.name for p in images[stem]]
    for case, image_names in unpaired.items():
        names = ", ".join(image_names)
        problems.append((case, f"no segmentation for image {names} (expected {case}.<ext>)"))
    pairs.sort(key=lambda p: p.case_id)
    problems.sort()
    return pairs, problems


def _read_dataset_json(path: Path) -> dict:
    """The parsed ``dataset.json`` at ``path`` (a JSON object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise QCInputError(path, f"cannot be read: {error.strerror or error}") from error
    except json.JSONDecodeError as error:
        raise QCInputError(path, f"is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise QCInputError(path, "is not a JSON object")
    return data


def dataset_file_ending(dataset: str | Path) -> str:
    """The ``file_ending`` (e.g. ``.nii.gz``) of the nnU-Net raw data set folder ``dataset``.

    Raises:
        QCInputError: its ``dataset.json`` is unreadable or names no ``file_ending``.
    """
    path = Path(dataset) / "dataset.json"
    ending = _read_dataset_json(path).get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise QCInputError(path, f'has no "file_ending" such as ".nii.gz" (found {ending!r})')
    return ending


def labelled_case_ids(dataset: str | Path) -> list[str]:
    """Sorted identifiers of the cases in ``labelsTr`` of the nnU-Net raw data set ``dataset``."""
    ending = dataset_file_ending(dataset)
    labels = Path(dataset) / "labelsTr"
    return sorted(p.name[: -len(ending)] for p in labels.glob(f"*{ending}"))


def label_map_from_dataset_json(path: str | Path) -> dict[str, int]:
    """Read the foreground label map of an nnU-Net ``dataset.json``.

    Accepts nnU-Net v2 ``"labels": {"background": 0, "RV": 1, ...}`` and the v1 form
    ``{"0": "background", "1": "RV"}``. Region-based labels (list values) are refused.

    Returns:
        Foreground names -> values, sorted by value (background 0 left out).

    Raises:
        QCInputError: the file is unreadable, is not JSON or has no usable ``labels``.
    """
    path = Path(path)
    labels = _read_dataset_json(path).get("labels")
    if not isinstance(labels, dict) or not labels:
        raise QCInputError(path, 'has no "labels" mapping of class names to values')
    if all(isinstance(v, str) for v in labels.values()) and all(str(k).isdigit() for k in labels):
        labels = {name: int(value) for value, name in labels.items()}
    result: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise QCInputError(
                path,
                f'label "{name}" is region-based ({value}); region-based labels are not '
                "supported, give each class one integer value",
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise QCInputError(path, f'label "{name}" has value {value!r}; expected an int >= 0')
        if value != 0:
            result[str(name)] = value
    values = list(result.values())
    if len(set(values)) != len(values):
        raise QCInputError(path, f"labels share values: {result}")
    if not result:
        raise QCInputError(path, "has no foreground labels")
    return dict(sorted(result.items(), key=lambda item: item[1]))


def patient_of(case_id: str) -> str:
    """Patient of a case id: the id without a trailing ED/ES phase (``acdc_001_ED``)."""
    head, _, tail = case_id.rpartition("_")
    return head if head and tail.upper() in {"ED", "ES"} else case_id
