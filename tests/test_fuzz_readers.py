"""Fuzz test of the readers: a damaged file is an error or reads as the intact file, never as a
silently different volume.

Real files written with SimpleITK (the phantom's writer) are truncated at random byte positions,
have random bytes replaced, or are replaced by random bytes; ``load_case`` must then raise
``QCInputError`` or return exactly the intact image and segmentation arrays.

Replaced bytes are tested where a file can detect them: anywhere in compressed files (the gzip
CRC-32 or zlib checksum covers the data; NIfTI's binary header is inside the gzip stream) and in
the text headers of uncompressed NRRD and MetaImage files. An uncompressed file has no checksum:
a changed voxel, or a NIfTI header value that stays valid (``scl_slope``, float32 -> int32
``datatype``), is a different valid file that no reader can tell from the original.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_qc.errors import QCInputError
from monai_qc.io import load_case
from monai_qc.phantom import PHANTOM_LABELS, make_phantom, write_volume

LABELS = list(PHANTOM_LABELS.values())
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@dataclass(frozen=True)
class Variant:
    """One way of writing the phantom: file ending and whether its data are compressed."""

    ext: str
    compressed: bool

    @property
    def name(self) -> str:
        return f"{self.ext} ({'compressed' if self.compressed else 'raw'})"


VARIANTS = [
    Variant(".nii.gz", True),
    Variant(".nii", False),
    Variant(".nrrd", True),
    Variant(".mha", True),
    Variant(".nrrd", False),
    Variant(".mha", False),
]


def _write(array: np.ndarray, path: Path, variant: Variant) -> None:
    if variant.compressed or variant.ext == ".nii":
        write_volume(array, path)  # the phantom's writer: compressed where the format allows
    else:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.5, 1.5, 10.0))
        sitk.WriteImage(image, str(path), useCompression=False)


@functools.cache
def intact() -> dict[Variant, dict[str, bytes]]:
    """The bytes of an intact image and segmentation per variant (written once)."""
    image, labels = make_phantom(3, n_slices=5, size=(48, 48))
    files: dict[Variant, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, variant in enumerate(VARIANTS):
            paths = {
                "image": Path(tmp) / f"i{i}{variant.ext}",
                "seg": Path(tmp) / f"s{i}{variant.ext}",
            }
            _write(image, paths["image"], variant)
            _write(labels, paths["seg"], variant)
            files[variant] = {role: path.read_bytes() for role, path in paths.items()}
    return files


@functools.cache
def expected() -> tuple[np.ndarray, np.ndarray]:
    """The image and segmentation arrays of the intact files."""
    image, labels = make_phantom(3, n_slices=5, size=(48, 48))
    return image, labels.astype(np.int32)


def _header_length(data: bytes, variant: Variant) -> int:
    """Bytes of a text header (up to the data) of an NRRD or MetaImage file."""
    if variant.ext == ".nrrd":
        return data.index(b"\n\n") + 2
    return data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")


def _load_damaged(
    files: dict[str, bytes], damaged_role: str, damaged: bytes, ext: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """``load_case`` on the pair with one file replaced by ``damaged``; None for an error."""
    with tempfile.TemporaryDirectory() as folder:
        paths = {role: Path(folder) / f"{role}{ext}" for role in files}
        for role, path in paths.items():
            path.write_bytes(damaged if role == damaged_role else files[role])
        try:
            case = load_case("fuzz", paths["image"], paths["seg"], LABELS)
        except QCInputError as error:  # the damaged file, or a mismatch named by the segmentation
            assert error.path in (str(paths[damaged_role]), str(paths["seg"])), error
            return None
    return case.image, case.segmentation


def _assert_error_or_intact(loaded: tuple[np.ndarray, np.ndarray] | None) -> None:
    if loaded is not None:
        np.testing.assert_array_equal(loaded[0], expected()[0])
        np.testing.assert_array_equal(loaded[1], expected()[1])


@FUZZ
@given(
    variant=st.sampled_from(VARIANTS),
    role=st.sampled_from(["image", "seg"]),
    fraction=st.floats(0.0, 1.0, exclude_max=True),
)
def test_truncated_file_is_error(
    variant: Variant,
    role: str,
    fraction: float,
) -> None:
    data = intact()[variant][role]
    cut = data[: int(fraction * len(data))]
    loaded = _load_damaged(intact()[variant], role, cut, variant.ext)
    assert loaded is None, f"{variant.name} {role} cut to {len(cut)} of {len(data)} bytes was read"


@FUZZ
@given(
    variant=st.sampled_from(VARIANTS),
    role=st.sampled_from(["image", "seg"]),
    position=st.floats(0.0, 1.0, exclude_max=True),
    value=st.integers(1, 255),
)
def test_replaced_byte_is_error_or_intact(
    variant: Variant,
    role: str,
    position: float,
    value: int,
) -> None:
    data = bytearray(intact()[variant][role])
    if variant.compressed:
        span = len(data)
    elif variant.ext in (".nrrd", ".mha"):
        span = _header_length(bytes(data), variant)
    else:
        return  # raw NIfTI: no checksum and a binary header (see the module docstring)
    index = int(position * span)
    data[index] ^= value  # a different byte
    _assert_error_or_intact(_load_damaged(intact()[variant], role, bytes(data), variant.ext))


@FUZZ
@given(
    variant=st.sampled_from(VARIANTS),
    role=st.sampled_from(["image", "seg"]),
    keep=st.floats(0.0, 1.0),
    noise=st.binary(min_size=0, max_size=600),
)
def test_random_bytes_are_error_or_intact(
    variant: Variant,
    role: str,
    keep: float,
    noise: bytes,
) -> None:
    """A file that is random bytes, or a prefix of the file followed by random bytes."""
    data = intact()[variant][role]
    damaged = data[: int(keep * len(data))] + noise
    if damaged == data or (not variant.compressed and len(damaged) == len(data)):
        return  # uncompressed data replaced by data of the same size: a valid other file
    _assert_error_or_intact(_load_damaged(intact()[variant], role, damaged, variant.ext))
