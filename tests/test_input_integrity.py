"""Truncated, corrupt and NaN-holding files are errors, never a silently different volume.

ITK's NIfTI reader reads a truncated file with the missing voxels set to 0 and NaN/inf as 0;
these tests hold ``read_volume`` and ``monai-qc check`` to an error naming the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from monai_qc.errors import QCInputError
from monai_qc.file_integrity import verify_file
from monai_qc.io import read_volume
from monai_qc.phantom import make_phantom, write_volume

CLI = [sys.executable, "-m", "monai_qc"]


def _cut(path: Path, fraction: float) -> None:
    """Keep the first ``fraction`` of the file's bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(fraction * len(data))])


def _phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return make_phantom(seed, n_slices=6, size=(64, 64))


@pytest.mark.parametrize("fraction", [0.5, 0.75, 0.999])
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_nifti_is_an_error(tmp_path: Path, ext: str, fraction: float) -> None:
    _, labels = _phantom()
    path = tmp_path / f"seg{ext}"
    write_volume(labels, path)
    size = path.stat().st_size
    _cut(path, fraction)
    with pytest.raises(QCInputError, match="is truncated") as info:
        read_volume(path)
    assert info.value.path == str(path)
    if ext == ".nii":  # header 352 bytes + 6 * 64 * 64 uint8 voxels
        held = int(fraction * size) - 352
        assert info.value.problem == (
            f"is truncated: header implies 24576 bytes of voxel data, file holds {held}"
        )


def test_truncated_gzip_names_the_voxel_bytes_it_holds(tmp_path: Path) -> None:
    image, _ = _phantom()
    path = tmp_path / "image.nii.gz"
    write_volume(image, path)
    _cut(path, 0.5)
    with pytest.raises(QCInputError) as info:
        read_volume(path)
    problem = info.value.problem
    assert problem.startswith("is truncated: header implies 98304 bytes of voxel data, file holds ")
    assert problem.endswith(" before its gzip stream ends")
    assert 0 < int(problem.split("file holds ")[1].split()[0]) < 98304


def test_gzip_with_a_wrong_checksum_is_an_error(tmp_path: Path) -> None:
    _, labels = _phantom()
    path = tmp_path / "seg.nii.gz"
    write_volume(labels, path)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(QCInputError, match="corrupt gzip data.*incorrect data check"):
        read_volume(path)


def test_extra_bytes_after_nifti_data_are_an_error(tmp_path: Path) -> None:
    _, labels = _phantom()
    path = tmp_path / "seg.nii"
    write_volume(labels, path)
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    with pytest.raises(QCInputError, match="holds 24592 bytes of voxel data where its header"):
        read_volume(path)


def test_plain_nifti_named_nii_gz_is_read(tmp_path: Path) -> None:
    """ITK reads an uncompressed file named .nii.gz; so does the integrity check."""
    _, labels = _phantom()
    write_volume(labels, tmp_path / "seg.nii")
    path = tmp_path / "seg.nii.gz"
    shutil.copy(tmp_path / "seg.nii", path)
    np.testing.assert_array_equal(read_volume(path)[0], labels)


@pytest.mark.parametrize(
    ("ext", "data_ext"),
    [(".nhdr", ".raw"), (".nhdr", ".raw.gz"), (".mhd", ".raw"), (".mhd", ".zraw")],
)
def test_truncated_detached_data_file_is_an_error(tmp_path: Path, ext: str, data_ext: str) -> None:
    image, _ = _phantom()
    path = tmp_path / f"image{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(image), str(path), useCompression=data_ext != ".raw")
    data_file = tmp_path / f"image{data_ext}"
    np.testing.assert_array_equal(read_volume(path)[0], image)
    _cut(data_file, 0.6)
    with pytest.raises(QCInputError, match="is truncated: header implies") as info:
        read_volume(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_corrupt_compressed_data_is_an_error(tmp_path: Path, ext: str) -> None:
    """ITK's NRRD reader does not check the gzip CRC: a changed byte read as another volume."""
    _, labels = _phantom()
    path = tmp_path / f"seg{ext}"
    write_volume(labels, path)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x01  # inside the compressed stream's end (checksum or last block)
    path.write_bytes(bytes(data))
    with pytest.raises(QCInputError, match="corrupt (gzip|zlib) data") as info:
        read_volume(path)
    assert info.value.path == str(path)


def test_metaimage_header_with_an_unreadable_flag_is_an_error(tmp_path: Path) -> None:
    """MetaIO takes any value starting with 'T' as true: 'Talse' would swap the bytes."""
    image, _ = _phantom()
    path = tmp_path / "image.mha"
    write_volume(image, path)
    path.write_bytes(path.read_bytes().replace(b"MSB = False", b"MSB = Talse", 1))
    with pytest.raises(QCInputError, match="BinaryDataByteOrderMSB = 'Talse'"):
        read_volume(path)


# --- NIfTI-2, big-endian and extensions (written with nibabel, which nnU-Net installs) ------


def _nibabel_file(path: Path, array_xyz: np.ndarray, kind: str) -> None:
    nib = pytest.importorskip("nibabel")
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    if kind == "nifti2":
        image = nib.Nifti2Image(array_xyz, affine)
    elif kind == "big-endian":
        image = nib.Nifti1Image(array_xyz, affine, nib.Nifti1Header(endianness=">"))
    else:  # an extension between header and data: vox_offset > 352
        image = nib.Nifti1Image(array_xyz, affine)
        image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment" * 10))
    nib.save(image, str(path))


@pytest.mark.parametrize("kind", ["nifti2", "big-endian", "extension"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_other_nifti_layouts_read_checked_and_scanned(tmp_path: Path, kind: str, ext: str) -> None:
    image, _ = _phantom()
    xyz = np.ascontiguousarray(image.transpose(2, 1, 0))
    path = tmp_path / f"image{ext}"
    _nibabel_file(path, xyz, kind)
    verify_file(path)  # intact: no error
    if kind != "nifti2":  # ITK 5.4's NIfTI reader does not read NIfTI-2 (an error either way)
        np.testing.assert_array_equal(read_volume(path)[0], image)

    xyz[0, 0, 0], xyz[1, 2, 3] = np.nan, -np.inf
    _nibabel_file(path, xyz, kind)
    with pytest.raises(QCInputError, match="contains 2 non-finite voxel values"):
        read_volume(path)

    _nibabel_file(path, np.ascontiguousarray(image.transpose(2, 1, 0)), kind)
    _cut(path, 0.8)
    with pytest.raises(QCInputError, match="is truncated"):
        read_volume(path)


# --- end to end: monai-qc check ------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def _write_pair(images: Path, segs: Path, case: str, seed: int, ext: str = ".nii.gz") -> None:
    image, labels = _phantom(seed)
    write_volume(image, images / f"{case}_0000{ext}")
    write_volume(labels, segs / f"{case}{ext}")


def test_check_reports_damaged_inputs_as_errors(untrained_bundle: Path, tmp_path: Path) -> None:
    images, segs, out = tmp_path / "images", tmp_path / "segs", tmp_path / "qc"
    images.mkdir()
    segs.mkdir()
    for seed, case in enumerate(["intact_a", "intact_b", "seg_cut_50", "seg_cut_75"]):
        _write_pair(images, segs, case, seed)
    _write_pair(images, segs, "seg_nii_cut", 4, ".nii")
    _write_pair(images, segs, "image_cut", 5)
    _write_pair(images, segs, "image_nan", 6)
    _write_pair(images, segs, "image_inf", 7, ".nii")
    _cut(segs / "seg_cut_50.nii.gz", 0.5)
    _cut(segs / "seg_cut_75.nii.gz", 0.75)
    _cut(segs / "seg_nii_cut.nii", 0.9)
    _cut(images / "image_cut_0000.nii.gz", 0.9)
    for case, ext, value in (("image_nan", ".nii.gz", np.nan), ("image_inf", ".nii", np.inf)):
        image, _ = _phantom()
        image[2, 30, 30] = value
        write_volume(image, images / f"{case}_0000{ext}")

    run = _run(
        "check", "--images", str(images), "--segs", str(segs), "--out", str(out),
        "--bundle", str(untrained_bundle),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr

    expected = {
        "seg_cut_50": (segs / "seg_cut_50.nii.gz", "is truncated"),
        "seg_cut_75": (segs / "seg_cut_75.nii.gz", "is truncated"),
        "seg_nii_cut": (segs / "seg_nii_cut.nii", "is truncated: header implies 24576 bytes"),
        "image_cut": (images / "image_cut_0000.nii.gz", "is truncated"),
        "image_nan": (images / "image_nan_0000.nii.gz", "contains 1 non-finite voxel values"),
        "image_inf": (images / "image_inf_0000.nii", "contains 1 non-finite voxel values"),
    }
    for case, (path, problem) in expected.items():
        report = json.loads((out / f"{case}.json").read_text())
        assert report["verdict"] == "error", case
        assert str(path) in report["error"] and problem in report["error"], report["error"]
    for case in ("intact_a", "intact_b"):
        report = json.loads((out / f"{case}.json").read_text())
        assert report["verdict"] in ("pass", "fail")
        assert len(report["slices"]) == 6


@pytest.mark.slow
def test_check_on_cut_acdc_segmentations(
    untrained_bundle: Path, acdc: Path, tmp_path: Path
) -> None:
    """The reported case: a real ACDC label map cut to 50 % or 75 % of its bytes."""
    images, segs, out = tmp_path / "images", tmp_path / "segs", tmp_path / "qc"
    images.mkdir()
    segs.mkdir()
    for case in ("acdc_001_ED", "acdc_001_ES", "acdc_002_ED"):
        shutil.copy(acdc / "imagesTr" / f"{case}_0000.nii.gz", images)
        shutil.copy(acdc / "labelsTr" / f"{case}.nii.gz", segs)
    # what ITK alone makes of the cut file: no error, the lost voxels read as background
    cut = tmp_path / "cut.nii.gz"
    shutil.copy(segs / "acdc_001_ES.nii.gz", cut)
    _cut(cut, 0.5)
    intact = sitk.GetArrayFromImage(sitk.ReadImage(str(segs / "acdc_001_ES.nii.gz")))
    silently = sitk.GetArrayFromImage(sitk.ReadImage(str(cut)))
    assert silently.shape == intact.shape and np.count_nonzero(silently) < np.count_nonzero(intact)

    _cut(segs / "acdc_001_ES.nii.gz", 0.5)
    _cut(segs / "acdc_002_ED.nii.gz", 0.75)
    run = _run(
        "check", "--images", str(images), "--segs", str(segs), "--out", str(out),
        "--bundle", str(untrained_bundle),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    for case in ("acdc_001_ES", "acdc_002_ED"):
        report = json.loads((out / f"{case}.json").read_text())
        assert report["verdict"] == "error"
        assert f"{segs / case}.nii.gz: is truncated" in report["error"]
    assert json.loads((out / "acdc_001_ED.json").read_text())["verdict"] in ("pass", "fail")
