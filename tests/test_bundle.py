"""The shipped QC bundle: MONAI's checks, download from a release-like URL, and real QC."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from monai_qc import QCPredictor
from monai_qc.bundle import DEFAULT_BUNDLE, resolve_bundle
from monai_qc.demo import damage
from monai_qc.metrics import volume_scores

SCHEMA = Path(__file__).resolve().parents[1] / "monai_qc" / "schemas" / "meta_schema_20240725.json"


@pytest.fixture(scope="module")
def bundle() -> Path:
    return resolve_bundle(DEFAULT_BUNDLE)


def _monai_bundle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, timeout=300
    )


def test_shipped_bundle_files(bundle: Path) -> None:
    for name in (
        "configs/metadata.json",
        "configs/inference.json",
        "configs/train.json",
        "models/model.pt",
        "docs/README.md",
        "docs/data_split.json",
        "LICENSE",
    ):
        assert (bundle / name).is_file(), name
    assert (bundle / "models" / "model.pt").stat().st_size < 20e6


def test_verify_metadata_offline(bundle: Path) -> None:
    run = _monai_bundle(
        "verify_metadata",
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--filepath",
        str(SCHEMA),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "metadata is verified with no error" in (run.stdout + run.stderr)


def test_verify_net_in_out(bundle: Path) -> None:
    run = _monai_bundle(
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--config_file",
        str(bundle / "configs" / "inference.json"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "data shape of network is verified with no error" in (run.stdout + run.stderr)


@pytest.fixture
def served_zip(bundle: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The bundle zipped as a release asset, served on 127.0.0.1."""
    assets = tmp_path / "releases" / "download" / "v1"
    assets.mkdir(parents=True)
    archive = shutil.make_archive(str(assets / bundle.name), "zip", bundle.parent, bundle.name)
    digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/releases/download/v1/{bundle.name}.zip"
        yield url, digest
    finally:
        server.shutdown()


def test_download_then_predict(served_zip: tuple[str, str], tmp_path: Path) -> None:
    from monai.bundle import download

    url, digest = served_zip
    download(name=DEFAULT_BUNDLE, url=url, bundle_dir=str(tmp_path / "downloaded"))
    from monai.apps.utils import check_hash

    assert check_hash(str(tmp_path / "downloaded" / f"{DEFAULT_BUNDLE}.zip"), digest, "sha256")
    predictor = QCPredictor.from_bundle(tmp_path / "downloaded" / DEFAULT_BUNDLE)
    from monai_qc.phantom import make_phantom

    image, labels = make_phantom(1, n_slices=8)
    report = predictor.predict(image, labels, (10.0, 1.5, 1.5), "phantom").to_dict()
    assert len(report["slices"]) == 8


def _truth_and_damaged(
    acdc: Path, case: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Image, expert labels, a damaged copy (myocardium eroded, LV blanked on one slice)."""
    image_file = acdc / "imagesTr" / f"{case}_0000.nii.gz"
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file))).astype(np.float32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(acdc / "labelsTr" / f"{case}.nii.gz")))
    damaged = damage(truth, "eroded", np.random.default_rng(0))  # myocardium thinned
    filled = [i for i in range(len(truth)) if (truth[i] > 0).sum() > 500]
    blank, keep = filled[len(filled) // 2], filled[len(filled) // 2 - 1]
    damaged[blank][damaged[blank] == 3] = 0  # LV missed on one slice
    return image, truth, damaged, blank, keep


def _cases(bundle: Path, split: str, count: int) -> tuple[str, ...]:
    """``count`` cases of patients spread over one split of the bundle's data set, ED and ES
    alternating (``docs/data_split.json``: the patients the network did or did not see)."""
    patients = json.loads((bundle / "docs" / "data_split.json").read_text())[split]
    chosen = patients[:: max(1, len(patients) // count)][:count]
    return tuple(f"{p}_{('ED', 'ES')[i % 2]}" for i, p in enumerate(chosen))


def _rate_truth_and_damaged(
    bundle: Path, acdc: Path, cases: tuple[str, ...]
) -> list[tuple[str, Any, Any, float, int, int]]:
    """Per case: QC of the expert labels, of the damaged copy, its true MYO volume DSC."""
    predictor = QCPredictor.from_bundle(bundle)
    outcomes = []
    for case in cases:
        image, truth, damaged, blank, keep = _truth_and_damaged(acdc, case)
        good = predictor.predict(image, truth, (10.0, 1.5, 1.5), "truth")
        bad = predictor.predict(image, damaged, (10.0, 1.5, 1.5), "damaged")
        true_myo = float(volume_scores(truth, damaged, [0, 1, 2, 3]).dsc[2])
        outcomes.append((case, good, bad, true_myo, blank, keep))
    return outcomes


def _assert_damage_is_rated(bundle: Path, acdc: Path, cases: tuple[str, ...]) -> None:
    """Expert labels get a high predicted DSC; an eroded, partly blanked copy lower ones.

    Per case: LV and MYO volume DSC of the expert labels rated above 0.85 and 0.75, the eroded
    myocardium rated at least 0.2 lower, and the slice whose LV alone was removed below a slice
    whose LV was kept. Over the cases: the predicted MYO volume DSC of the eroded copies is
    within 0.1 of the true one on average, and the blanked slices drop clearly. A copy whose
    myocardium the erosion removed entirely is left out of the MYO volume checks: a structure
    missing from the segmentation has no reconstructed 3D DSC (the bundle README's limits).
    """
    lv, myo = 3, 2
    drops, errors = [], []
    for case, good, bad, true_myo, blank, keep in _rate_truth_and_damaged(bundle, acdc, cases):
        assert good.volume_dsc[lv] > 0.85 and good.volume_dsc[myo] > 0.75, case
        if true_myo > 0:
            assert bad.volume_dsc[myo] < good.volume_dsc[myo] - 0.2, case
            errors.append(abs(bad.volume_dsc[myo] - true_myo))
        assert bad.slice_dsc[blank, lv] < bad.slice_dsc[keep, lv], case
        drops.append(good.slice_dsc[blank, lv] - bad.slice_dsc[blank, lv])
    assert len(errors) >= len(cases) - 2
    assert float(np.mean(errors)) < 0.1 and max(errors) < 0.35
    assert min(drops) > 0.2 and float(np.mean(drops)) > 0.5


@pytest.mark.slow
def test_qc_of_damaged_cases_of_training_patients(bundle: Path, acdc: Path) -> None:
    """Damaged copies of patients of the QC model's training split (the copies are new)."""
    _assert_damage_is_rated(bundle, acdc, _cases(bundle, "train", 8))


@pytest.mark.slow
def test_qc_of_damaged_cases_of_unseen_patients(bundle: Path, acdc: Path) -> None:
    """The same damage on every patient of the QC model's test split, which it never saw."""
    cases = _cases(bundle, "test", 8)
    assert len(cases) == 8
    _assert_damage_is_rated(bundle, acdc, cases)


def test_monai_bundle_run_checks_a_folder(bundle: Path, tmp_path: Path) -> None:
    """``python -m monai.bundle run`` with the bundle's inference config QCs a folder."""
    from monai_qc.phantom import write_nnunet_dataset

    data = write_nnunet_dataset(tmp_path / "Dataset903_Phantom", 2, seed=4, n_slices=6)
    out = tmp_path / "qc"
    run = _monai_bundle(
        "run",
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--bundle_root",
        str(bundle),
        "--images_dir",
        str(data / "imagesTr"),
        "--segs_dir",
        str(data / "labelsTr"),
        "--output_dir",
        str(out),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    reports = sorted(p.name for p in out.glob("*.json"))
    assert reports == ["phantom_001_ED.json", "phantom_001_ES.json", "run_manifest.json"]
    assert (out / "summary.csv").is_file() and (out / "report.html").is_file()
    gate = subprocess.run(
        [sys.executable, "-m", "monai_qc", "gate", str(out)], capture_output=True, text=True
    )
    assert gate.returncode in (0, 1) and "of 2 cases passed" in gate.stdout, gate.stderr
