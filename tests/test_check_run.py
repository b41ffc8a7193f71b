"""``monai-qc check`` runs end to end: the run manifest, which reports a rerun may reuse,
bad case names, run-level problems, the console, ``--strict``, ``--no-fail`` and the pin.

A report is reused only for the same image and segmentation bytes, the same bundle, the same
thresholds and settings: every other rerun checks the case again, whatever the files' times.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from monai_qc.bundle_writer import write_bundle
from monai_qc.networks import build_qc_network
from monai_qc.phantom import PHANTOM_LABELS, make_phantom, write_volume
from monai_qc.run_manifest import bundle_identity, file_sha256, read_run_manifest

CLI = [sys.executable, "-m", "monai_qc"]
PAST = 946684800  # 2000-01-01: older than any report


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [*CLI, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _check(images: Path, segs: Path, out: Path, bundle: Path, *extra: str):
    return _run(
        "check", "--images", images, "--segs", segs, "--out", out, "--bundle", bundle, *extra
    )


def _bundle(folder: Path, seed: int, min_dsc: float = 0.0) -> Path:
    """Untrained weights of ``seed``; LV must be contiguous; thresholds ``min_dsc`` and 0."""
    torch.manual_seed(seed)
    network = build_qc_network("resnet2d", 1 + len(PHANTOM_LABELS))
    thresholds = {"min_dsc": min_dsc, "min_slice_dsc": 0.0}
    return write_bundle(
        folder, network, "resnet2d", PHANTOM_LABELS, thresholds, contiguous_classes=["LV"]
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``lenient`` (every intact phantom passes), ``other_seed``, ``strict_copy``."""
    root = tmp_path_factory.mktemp("bundles")
    lenient = _bundle(root / "lenient", seed=0)
    strict_copy = root / "strict_copy"
    shutil.copytree(lenient, strict_copy)
    config_file = strict_copy / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["thresholds"]["min_dsc"] = 1.01  # no predicted 3D DSC reaches it
    config_file.write_text(json.dumps(config, indent=1))
    return {
        "lenient": lenient,
        "other_seed": _bundle(root / "other_seed", seed=1),
        "strict_copy": strict_copy,
    }


def _blanked(labels: np.ndarray) -> np.ndarray:
    """LV removed from the middle slice (a class gap: the case fails)."""
    damaged = labels.copy()
    mid = len(damaged) // 2
    damaged[mid][damaged[mid] == 3] = 2
    return damaged


@pytest.fixture
def cases(tmp_path: Path) -> tuple[Path, Path, Path]:
    """images/, segs/ (intact ph_0, ph_1) and blanked/ (ph_0 with a blanked LV slice)."""
    images, segs, blanked = tmp_path / "images", tmp_path / "segs", tmp_path / "blanked"
    for folder in (images, segs, blanked):
        folder.mkdir()
    for i in range(2):
        image, labels = make_phantom(i, n_slices=6, size=(80, 80))
        write_volume(image, images / f"ph_{i}_0000.nii.gz")
        write_volume(labels, segs / f"ph_{i}.nii.gz")
        if i == 0:
            write_volume(_blanked(labels), blanked / "ph_0.nii.gz")
    return images, segs, blanked


def _reports(out: Path) -> dict[str, dict]:
    return {
        p.stem: json.loads(p.read_text()) for p in out.glob("*.json") if p.stem != "run_manifest"
    }


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_manifest_stamps_and_byte_identical_rerun(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, _ = cases
    write_volume(make_phantom(9, n_slices=6, size=(80, 80))[0], images / "lonely_0000.nii.gz")
    out = tmp_path / "qc"
    run = _check(images, segs, out, bundles["lenient"])
    assert run.returncode == 1, run.stderr
    identity = bundle_identity(bundles["lenient"])
    assert f"QC bundle lenient version 0.1.0 sha256 {identity['sha256']}" in run.stderr
    manifest = read_run_manifest(out)
    assert manifest is not None and manifest.command == "check"
    assert manifest.bundle == identity
    assert sorted(manifest.cases) == ["lonely", "ph_0", "ph_1"]
    ph_0 = manifest.cases["ph_0"]
    assert ph_0.image_sha256 == file_sha256(images / "ph_0_0000.nii.gz")
    assert ph_0.segmentation_sha256 == file_sha256(segs / "ph_0.nii.gz")
    assert manifest.cases["lonely"].image_sha256 is None  # not paired: expected, no hashes
    reports = _reports(out)
    assert {r["verdict"] for r in reports.values()} == {"pass", "error"}
    assert all(r["run_id"] == manifest.run_id for r in reports.values())
    assert reports["ph_0"]["inputs"] == ph_0.to_dict()
    assert reports["ph_0"]["warnings"] == []
    assert len(reports["ph_0"]["qc_key"]) == 64 and reports["lonely"]["qc_key"] is None
    assert reports["lonely"]["bundle"] == identity
    assert f"run {manifest.run_id}" in run.stdout
    before = _files(out)

    again = _check(images, segs, out, bundles["lenient"])
    assert again.returncode == 1
    assert "2 passed, 0 failed, 1 errors (2 unchanged, not checked again)" in again.stdout
    assert _files(out) == before

    gate = _run("gate", out)
    assert gate.returncode == 1 and "lonely" in gate.stdout, gate.stdout + gate.stderr


def _rerun_checks(run: subprocess.CompletedProcess[str]) -> None:
    assert "unchanged" not in run.stdout, run.stdout
    assert run.returncode == 1, run.stdout + run.stderr


def test_other_segmentation_folder_with_older_files_is_checked_again(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, blanked = cases
    out = tmp_path / "qc"
    first = _check(images, segs, out, bundles["lenient"])
    assert first.returncode == 0 and "2 passed, 0 failed" in first.stdout, first.stderr
    os.utime(blanked / "ph_0.nii.gz", (PAST, PAST))
    rerun = _check(images, blanked, out, bundles["lenient"])
    _rerun_checks(rerun)
    assert "0 passed, 1 failed, 1 errors" in rerun.stdout  # ph_1 has no segmentation there
    report = json.loads((out / "ph_0.json").read_text())
    assert report["verdict"] == "fail"
    assert report["inputs"]["segmentation_sha256"] == file_sha256(blanked / "ph_0.nii.gz")
    assert report["findings"][0]["check"] == "class_gap"
    assert "FAIL ph_0: LV is missing on slice 3" in rerun.stdout


def test_file_replaced_in_place_by_an_older_one_is_checked_again(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, blanked = cases
    out = tmp_path / "qc"
    assert _check(images, segs, out, bundles["lenient"]).returncode == 0
    shutil.copyfile(blanked / "ph_0.nii.gz", segs / "ph_0.nii.gz")
    os.utime(segs / "ph_0.nii.gz", (PAST, PAST))
    old_key = json.loads((out / "ph_0.json").read_text())["qc_key"]
    rerun = _check(images, segs, out, bundles["lenient"])
    assert rerun.returncode == 1, rerun.stderr
    assert "1 passed, 1 failed, 0 errors (1 unchanged, not checked again)" in rerun.stdout
    report = json.loads((out / "ph_0.json").read_text())
    assert report["verdict"] == "fail" and report["qc_key"] != old_key


def test_other_bundle_or_thresholds_check_again(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, _ = cases
    out = tmp_path / "qc"
    first = _check(images, segs, out, bundles["lenient"])
    assert first.returncode == 0, first.stderr
    old = json.loads((out / "ph_0.json").read_text())

    other = _check(images, segs, out, bundles["other_seed"])
    assert "unchanged" not in other.stdout and other.returncode == 0, other.stdout
    new = json.loads((out / "ph_0.json").read_text())
    assert new["bundle"]["sha256"] == bundle_identity(bundles["other_seed"])["sha256"]
    assert new["qc_key"] != old["qc_key"] and new["run_id"] != old["run_id"]
    assert new["volume"]["dsc"] != old["volume"]["dsc"]  # other weights, other prediction

    _check(images, segs, out, bundles["lenient"])  # the lenient pass again
    strict = _check(images, segs, out, bundles["strict_copy"])
    _rerun_checks(strict)
    assert "0 passed, 2 failed, 0 errors" in strict.stdout
    report = json.loads((out / "ph_0.json").read_text())
    assert report["thresholds"]["min_dsc"]["LV"] == 1.01 and report["verdict"] == "fail"


def test_summary_counts_only_this_runs_cases(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, blanked = cases
    out = tmp_path / "qc"
    (segs / "ph_0.nii.gz").unlink()  # the first run checks ph_1 only
    (images / "ph_0_0000.nii.gz").rename(tmp_path / "ph_0_0000.nii.gz")
    assert _check(images, segs, out, bundles["lenient"]).returncode == 0
    only = tmp_path / "only"
    only.mkdir()
    shutil.move(tmp_path / "ph_0_0000.nii.gz", only)
    run = _check(only, blanked, out, bundles["lenient"])
    assert run.returncode == 1
    assert "0 passed, 1 failed, 0 errors" in run.stdout
    assert (out / "ph_1.json").is_file()  # left by the first run, not this run's
    rows = (out / "summary.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {"ph_0"}
    assert "ph_1" not in (out / "report.html").read_text()


def test_origin_mismatch_is_a_warning_or_with_strict_an_error(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, _ = cases
    seg = sitk.ReadImage(str(segs / "ph_1.nii.gz"))
    seg.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(seg, str(segs / "ph_1.nii.gz"), useCompression=True)
    out = tmp_path / "qc"
    run = _check(images, segs, out, bundles["lenient"])
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "ph_1.json").read_text())
    assert report["verdict"] == "pass"
    assert len(report["warnings"]) == 1 and "origin" in report["warnings"][0]

    strict = _check(images, segs, out, bundles["lenient"], "--strict")
    assert strict.returncode == 1
    assert "1 passed, 0 failed, 1 errors; run" in strict.stdout  # no case reused: other settings
    report = json.loads((out / "ph_1.json").read_text())
    assert report["verdict"] == "error" and "origin" in report["error"]
    assert read_run_manifest(out).settings["strict"] is True
    assert strict.stdout.splitlines()[0].startswith("ERROR ph_1: ")


def test_bad_case_names_become_error_reports(
    bundles: dict[str, Path], cases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, segs, _ = cases
    image, labels = make_phantom(3, n_slices=6, size=(80, 80))
    for name in ("a\\b", "run_manifest"):
        write_volume(image, images / f"{name}_0000.nii.gz")
        write_volume(labels, segs / f"{name}.nii.gz")
    raw = os.fsencode(segs) + b"/x\xff.nii.gz"  # not UTF-8
    write_volume(labels, segs / "tmp.nii.gz")
    os.rename(os.fsencode(segs / "tmp.nii.gz"), raw)
    out = tmp_path / "qc"
    run = _check(images, segs, out, bundles["lenient"])
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr
    assert "2 passed, 0 failed, 3 errors" in run.stdout
    manifest = read_run_manifest(out)  # not overwritten by the case named run_manifest
    assert sorted(manifest.cases) == ["a\\b", "ph_0", "ph_1", "run_manifest", "x\\xff"]
    by_case = {r["case"]: (name, r) for name, r in _reports(out).items()}
    assert sorted(by_case) == sorted(manifest.cases)
    for case in ("a\\b", "run_manifest"):
        name, report = by_case[case]
        assert name != case and report["verdict"] == "error"
        assert "rename its files" in report["error"] and report["run_id"] == manifest.run_id
    assert by_case["x\\xff"][1]["verdict"] == "error"
    assert by_case["ph_0"][1]["verdict"] == "pass"
    assert "ERROR a\\b: case name 'a\\b' holds a slash, backslash or NUL" in run.stdout


def _one_error_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, run.stderr
    return errors[0]


def test_out_below_a_file_exits_2(bundles: dict[str, Path], cases, tmp_path: Path) -> None:
    images, segs, _ = cases
    (tmp_path / "file").write_text("not a folder")
    line = _one_error_line(_check(images, segs, tmp_path / "file" / "qc", bundles["lenient"]))
    assert "lies below" in line and "not a folder" in line


def _in_tmpfs(tmp_path: Path, options: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a user and mount namespace with a tmpfs mounted on tmp_path/mnt."""
    if subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0:
        pytest.skip("no user namespaces here (unshare -rm): cannot mount a tmpfs without root")
    (tmp_path / "mnt").mkdir()
    mount = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(tmp_path / 'mnt'))} || exit 99"
    command = ["unshare", "-rm", "sh", "-c", f"{mount}\n{script}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _check_command(images: Path, segs: Path, out: Path, bundle: Path) -> str:
    args = ["check", "--images", images, "--segs", segs, "--out", out, "--bundle", bundle]
    return shlex.join([*CLI, *map(str, args)])


def test_unwritable_out_exits_2(bundles: dict[str, Path], cases, tmp_path: Path) -> None:
    images, segs, _ = cases
    if os.geteuid() != 0:  # root writes whatever the mode
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        line = _one_error_line(_check(images, segs, locked / "qc", bundles["lenient"]))
        assert "cannot be written" in line and "Permission denied" in line
    out = tmp_path / "mnt" / "qc"
    run = _in_tmpfs(tmp_path, "ro,size=1m", _check_command(images, segs, out, bundles["lenient"]))
    line = _one_error_line(run)
    assert "cannot be written" in line and "Read-only file system" in line


def test_disk_full_stops_the_run_with_exit_2(bundles: dict[str, Path], cases, tmp_path: Path):
    """A 64 kB tmpfs holds the manifest but not every report and figure; the gate fails."""
    images, segs, _ = cases
    out = tmp_path / "mnt" / "qc"
    check = _check_command(images, segs, out, bundles["lenient"]) + " --figures all"  # fills it
    gate = shlex.join([*CLI, "gate", str(out)])
    run = _in_tmpfs(tmp_path, "size=64k", f'{check}\necho "check $?"\n{gate}\necho "gate $?"')
    assert "Traceback" not in run.stderr, run.stderr
    assert "check 2" in run.stdout.splitlines(), run.stdout
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert "the run stopped: No space left on device: the disk is full (" in errors[0]
    assert str(out) in errors[0].rsplit("(", 1)[1]  # the file it could not write
    assert "gate 1" in run.stdout.splitlines(), run.stdout + run.stderr


def test_no_cases_exits_2_and_lists_ignored_files(bundles, tmp_path: Path) -> None:
    pngs, empty = tmp_path / "pngs", tmp_path / "empty"
    pngs.mkdir()
    empty.mkdir()
    for name in ("a.png", "b.png"):
        (pngs / name).write_bytes(b"\x89PNG\r\n")
    line = _one_error_line(_check(pngs, pngs, tmp_path / "qc", bundles["lenient"]))
    assert "no cases found" in line and f"{pngs / 'a.png'}, {pngs / 'b.png'}" in line
    line = _one_error_line(_check(empty, empty, tmp_path / "qc", bundles["lenient"]))
    assert "no cases found" in line and "the folders are empty" in line
    assert not (tmp_path / "qc" / "run_manifest.json").exists()


def test_bundle_pin_and_no_fail(bundles: dict[str, Path], cases, tmp_path: Path) -> None:
    images, segs, _ = cases
    out = tmp_path / "qc"
    sha = bundle_identity(bundles["strict_copy"])["sha256"]
    wrong = "0" * 64
    line = _one_error_line(
        _check(images, segs, out, bundles["strict_copy"], "--bundle-sha256", wrong)
    )
    assert f"bundle SHA-256 is {sha}, not the expected --bundle-sha256 {wrong}" in line
    assert not (out / "run_manifest.json").exists()
    assert _check(images, segs, out, bundles["lenient"], "--bundle-sha256", "abc").returncode == 2
    run = _check(images, segs, out, bundles["strict_copy"], "--bundle-sha256", sha.upper())
    assert run.returncode == 1 and "0 passed, 2 failed" in run.stdout
    reasons = [json.loads((out / f"ph_{i}.json").read_text())["reasons"] for i in range(2)]
    assert reasons[0][0].startswith("RV: predicted 3D DSC ") and len(reasons[0]) == 3
    expected = [f"FAIL ph_{i}: {r[0]} (and 2 more)" for i, r in enumerate(reasons)]
    assert run.stdout.splitlines()[:2] == expected
    no_fail = _check(images, segs, out, bundles["strict_copy"], "--no-fail")
    assert no_fail.returncode == 0 and "0 passed, 2 failed" in no_fail.stdout
    assert _check(images, segs, tmp_path / "qc" / "summary.csv" / "x", bundles["lenient"],
                  "--no-fail").returncode == 2  # fmt: skip
