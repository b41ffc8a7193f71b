"""``nnUNetv2_predict_qc``, ``QCnnUNetPredictor`` and ``monai-qc nnunet-qc``."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nnunet_fixtures
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from click.testing import CliRunner
from nnunet_fixtures import TinyNnunetModel

from monai_qc.cli import main as monai_qc
from monai_qc.phantom import PHANTOM_SPACING, make_phantom, write_volume
from monai_qc.run_manifest import (
    RUN_MANIFEST_NAME,
    CaseIdentity,
    bundle_identity,
    case_key,
    file_sha256,
    read_run_manifest,
)
from nnunet_hooks.default_plugin import QCSettings
from nnunet_hooks.environment import external_trainer_folder
from nnunet_hooks.hookspecs import SegmentedCase, hookimpl
from nnunet_hooks.manager import get_plugin_manager
from nnunet_hooks.predict_cli import build_parser, main, predict_with_qc
from nnunet_hooks.predictor import QCnnUNetPredictor

nnunet_output_folder = nnunet_fixtures.nnunet_output_folder
tiny_nnunet_model = nnunet_fixtures.tiny_nnunet_model

REPORT_KEYS = {"case", "labels", "slices", "volume", "verdict"}
SLICE_KEYS = {"index", "dsc", "mvsf", "flagged"}


def test_parser_takes_every_nnunet_predict_argument() -> None:
    from nnunetv2.inference import predict_from_raw_data

    source = inspect.getsource(predict_from_raw_data.predict_entry_point)
    nnunet_options = set(re.findall(r"add_argument\('(-[-\w]+)'", source))
    parser = build_parser()
    assert len(nnunet_options) > 20 and nnunet_options <= set(parser._option_string_actions)
    args = parser.parse_args(
        ["-i", "in", "-o", "out", "-d", "27", "-c", "2d", "-f", "0", "1", "-npp", "1"]
        + ["--qc-min-dsc", "LV=0.8", "--qc-min-dsc", "*=0.5", "--qc-block-plugin", "x"]
        + ["--correct-volumes", "--no-qc", "--qc-bundle", "b", "--qc-bundle-sha256", "ab12"]
    )
    assert (args.f, args.npp, args.tr, args.p, args.chk) == (
        ["0", "1"],
        1,
        "nnUNetTrainer",
        "nnUNetPlans",
        "checkpoint_final.pth",
    )
    assert args.qc_min_dsc == ["LV=0.8", "*=0.5"] and args.qc_min_slice_dsc == []
    assert args.correct_volumes and args.no_qc and args.qc_block_plugin == ["x"]
    assert args.qc_bundle == "b" and args.qc_bundle_sha256 == "ab12"


def test_bad_qc_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["-i", "in", "-o", "out", "-d", "27", "-c", "2d"]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--qc-min-dsc", "LV=2"])
    assert exit_info.value.code == 2 and "outside [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "-device", "tpu"])
    assert "-device must be" in capsys.readouterr().err


def test_nnunet_qc_command_checks_an_output_folder(
    nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path
) -> None:
    images, predictions = nnunet_output_folder
    args = ["nnunet-qc", "--images", str(images), "--predictions", str(predictions)]
    args += ["--bundle", str(untrained_bundle), "--min-dsc", "*=0", "--min-slice-dsc", "*=0"]
    qc = predictions / "qc"
    qc.mkdir(exist_ok=True)
    old = {"case": "old_run_case", "verdict": "error", "error": "left by an earlier run"}
    (qc / "old_run_case.json").write_text(json.dumps(old))
    result = CliRunner().invoke(monai_qc, [*args, "--correct-volumes"])
    assert result.exit_code == 1, result.output
    assert "2 pass, 0 fail, 2 error" in result.output
    summarised = (qc / "summary.csv").read_text()
    assert "ph_0" in summarised and "old_run_case" not in summarised  # this run's cases only
    assert "correction" in json.loads((qc / "ph_0.json").read_text())
    assert json.loads((qc / "lonely.json").read_text())["verdict"] == "error"

    blocked = CliRunner().invoke(monai_qc, [*args, "--block-plugin", "qc"])
    assert blocked.exit_code == 0 and "blocked" in blocked.output
    (predictions / "dataset.json").unlink()
    missing = CliRunner().invoke(monai_qc, args)
    assert missing.exit_code == 2 and "dataset.json" in missing.output


@pytest.fixture(scope="module")
def prediction_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two new phantoms and a blank image, named as nnU-Net expects."""
    folder = tmp_path_factory.mktemp("inputs")
    for seed in (100, 101):
        write_volume(make_phantom(seed, 6, (64, 64))[0], folder / f"new_{seed}_0000.nii.gz")
    write_volume(np.zeros((6, 64, 64), np.float32), folder / "blank_0000.nii.gz")
    return folder


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tests predict in this process; one thread is much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _predict_in_process(
    model: TinyNnunetModel, inputs: Path, out: Path, predictor: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(external_trainer_folder()))
    predictor.initialize_from_trained_model_folder(
        str(model.model_folder), (model.spec.fold,), "checkpoint_final.pth"
    )
    out.mkdir()  # nnU-Net's sequential mode expects the folder to exist
    predictor.predict_from_files_sequential(str(inputs), str(out), save_probabilities=True)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def run_started(self, config: dict[str, Any], output_folder: str | None) -> None:
        self.calls.append(("run_started", (config, output_folder)))

    @hookimpl
    def case_segmented(self, case: SegmentedCase) -> None:
        assert case.output_file is not None and Path(case.output_file).is_file()
        self.calls.append(("case_segmented", case))

    @hookimpl
    def run_finished(self, summary: dict[str, Any]) -> None:
        self.calls.append(("run_finished", summary))


def _gate(qc: Path) -> subprocess.CompletedProcess[str]:
    """``python -m monai_qc gate <qc>``."""
    command = [sys.executable, "-m", "monai_qc", "gate", str(qc)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _read(path: Path) -> tuple[np.ndarray, tuple]:
    image = sitk.ReadImage(str(path))
    geometry = (image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return sitk.GetArrayFromImage(image), geometry


@pytest.mark.slow
def test_predictor_writes_what_nnunet_writes_and_fires_hooks(
    tiny_nnunet_model: TinyNnunetModel,
    prediction_inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    options = {"device": torch.device("cpu"), "use_mirroring": False, "allow_tqdm": False}
    stock = nnUNetPredictor(**options)
    _predict_in_process(
        tiny_nnunet_model, prediction_inputs, tmp_path / "stock", stock, monkeypatch
    )
    recorder = _Recorder()
    manager = get_plugin_manager([recorder], load_entry_points=False)
    ours = QCnnUNetPredictor(manager, {"qc": {"note": 1}}, **options)
    _predict_in_process(tiny_nnunet_model, prediction_inputs, tmp_path / "ours", ours, monkeypatch)

    names = sorted(p.name for p in (tmp_path / "stock").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ours").iterdir())
    cases = ["blank", "new_100", "new_101"]
    for case in cases:
        expected, geometry = _read(tmp_path / "stock" / f"{case}.nii.gz")
        segmentation, our_geometry = _read(tmp_path / "ours" / f"{case}.nii.gz")
        np.testing.assert_array_equal(segmentation, expected)
        assert our_geometry == geometry
        probabilities = np.load(tmp_path / "ours" / f"{case}.npz")["probabilities"]
        np.testing.assert_array_equal(
            probabilities, np.load(tmp_path / "stock" / f"{case}.npz")["probabilities"]
        )

    assert [c[0] for c in recorder.calls] == ["run_started"] + 3 * ["case_segmented"] + [
        "run_finished"
    ]
    config, output_folder = recorder.calls[0][1]
    assert output_folder == str(tmp_path / "ours") and config["qc"] == {"note": 1}
    assert config["labels"] == {"RV": 1, "MYO": 2, "LV": 3}
    assert config["model"]["trainer"] == "nnUNetTrainerQCVariant"
    assert config["cases"] == {
        case: {"image": str(prediction_inputs / f"{case}_0000.nii.gz"), "remake": True}
        for case in ["blank", "new_100", "new_101"]
    }
    segmented = {c[1].case_id: c[1] for c in recorder.calls if c[0] == "case_segmented"}
    assert sorted(segmented) == cases
    case = segmented["new_100"]
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_inputs / "new_100_0000.nii.gz")))
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.segmentation, _read(Path(case.output_file))[0])
    assert case.spacing == pytest.approx(PHANTOM_SPACING)
    assert case.probabilities is not None and case.probabilities.shape == (4, *image.shape)
    assert recorder.calls[-1][1]["cases"] == cases


@pytest.mark.slow
def test_nnunetv2_predict_qc_end_to_end(
    tiny_nnunet_model: TinyNnunetModel,
    prediction_inputs: Path,
    untrained_bundle: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    command = [str(Path(sys.executable).with_name("nnUNetv2_predict_qc"))]
    command += ["-i", str(prediction_inputs), "-o", str(out), *tiny_nnunet_model.predict_args()]
    command += ["-npp", "1", "-nps", "1", "--disable_tta", "--qc-bundle", str(untrained_bundle)]
    command += ["--qc-min-dsc", "*=0", "--qc-min-slice-dsc", "*=0", "--correct-volumes"]
    env = {**tiny_nnunet_model.env, "OMP_NUM_THREADS": "1"}
    sha = bundle_identity(untrained_bundle)["sha256"]
    wrong = [*command, "--qc-bundle-sha256", "12" * 32]
    refused = subprocess.run(wrong, env=env, capture_output=True, text=True, timeout=400)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"nnUNetv2_predict_qc: error: {untrained_bundle}: bundle SHA-256 is {sha}" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr and not out.exists()  # stopped before nnU-Net

    run = subprocess.run(
        [*command, "--qc-bundle-sha256", sha], env=env, capture_output=True, text=True, timeout=400
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    printed = re.search(r"QC: (\d+) pass, (\d+) fail, (\d+) error", run.stdout)
    assert printed is not None, run.stdout

    cases = ["blank", "new_100", "new_101"]
    written = {"dataset.json", "plans.json", "predict_from_raw_data_args.json", "qc"}
    assert {p.name for p in out.iterdir()} == written | {f"{c}.nii.gz" for c in cases}
    for case in cases:
        segmentation, geometry = _read(out / f"{case}.nii.gz")
        image, image_geometry = _read(prediction_inputs / f"{case}_0000.nii.gz")
        assert segmentation.shape == image.shape and geometry == image_geometry
        assert set(np.unique(segmentation)) <= {0, 1, 2, 3}

    qc = out / "qc"
    assert (qc / "summary.csv").is_file() and (qc / "report.html").is_file()
    manifest = read_run_manifest(qc)
    assert manifest is not None and manifest.command == "nnUNetv2_predict_qc"
    assert f"sha256 {sha}; run {manifest.run_id}: 3 cases" in run.stderr
    assert manifest.bundle == bundle_identity(untrained_bundle)
    assert manifest.thresholds["min_dsc"] == {"RV": 0.0, "MYO": 0.0, "LV": 0.0}
    assert manifest.settings["correct_volumes"] is True
    model = manifest.settings["model"]
    assert model["model_folder"] == str(tiny_nnunet_model.model_folder)
    assert (model["folds"], model["checkpoint"]) == ([5], "checkpoint_final.pth")
    assert sorted(manifest.cases) == cases
    for case in cases:
        image = prediction_inputs / f"{case}_0000.nii.gz"
        expected = CaseIdentity(str(image), file_sha256(image), None, None)
        assert manifest.cases[case] == expected  # the segmentation did not exist yet
    reports = {c: json.loads((qc / f"{c}.json").read_text()) for c in cases}
    for case, report in reports.items():
        assert report["run_id"] == manifest.run_id and report["bundle"] == manifest.bundle
        segmentation = out / f"{case}.nii.gz"
        assert report["inputs"] == {
            **manifest.cases[case].to_dict(),
            "segmentation": str(segmentation),
            "segmentation_sha256": file_sha256(segmentation),
        }
        assert report["qc_key"] == case_key(
            file_sha256(prediction_inputs / f"{case}_0000.nii.gz"),
            file_sha256(segmentation),
            sha,
            manifest.thresholds,
            manifest.settings,
        )
    verdicts = [r["verdict"] for r in reports.values()]
    assert printed.groups() == tuple(str(verdicts.count(v)) for v in ("pass", "fail", "error"))
    for case in ("new_100", "new_101"):
        report = reports[case]
        # thresholds 0: a case fails only for a class the tiny model segmented nowhere
        missing = {name for name, value in report["volume"]["dsc"].items() if value is None}
        assert set(report) >= REPORT_KEYS and set(report["failed_classes"]) == missing
        assert report["verdict"] == ("fail" if missing else "pass"), report["reasons"]
        assert [s["index"] for s in report["slices"]] == list(range(6))
        assert all(set(s) >= SLICE_KEYS for s in report["slices"])
        assert set(report["volume"]["dsc"]) == {"RV", "MYO", "LV"}
        assert "corrected_ml" in report["correction"]
        assert report["segmentation"] == str(out / f"{case}.nii.gz")
    assert reports["blank"]["verdict"] == "error" and "blank" in reports["blank"]["error"]

    gate = _gate(qc)
    assert gate.returncode == 1 and "FAIL blank: error:" in gate.stdout, gate.stdout
    for case in ("new_100", "new_101"):  # the gate fails exactly the reports that failed
        assert (f"FAIL {case}:" in gate.stdout) == (reports[case]["verdict"] != "pass")
    (qc / "blank.json").unlink()  # no report: the case was never checked, it must still fail
    gate = _gate(qc)
    assert gate.returncode == 1 and "blank" in gate.stdout + gate.stderr, gate.stdout
    for case in ("new_100", "new_101"):
        assert (f"FAIL {case}:" in gate.stdout) == (reports[case]["verdict"] != "pass")


class _CrashOnFirstCase:
    """Stops the run after nnU-Net wrote a case's segmentation, before its QC report."""

    @hookimpl(tryfirst=True)
    def case_segmented(self, case: SegmentedCase) -> None:
        raise RuntimeError(f"killed after segmenting {case.case_id}")


@pytest.mark.slow
def test_parts_share_one_manifest_and_a_stopped_run_leaves_no_stale_report(
    tiny_nnunet_model: TinyNnunetModel,
    prediction_inputs: Path,
    untrained_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(external_trainer_folder()))
    out, qc = tmp_path / "out", tmp_path / "out" / "qc"
    settings = QCSettings(bundle=str(untrained_bundle), min_dsc={"*": 0}, min_slice_dsc={"*": 0})

    def predict_part(part_id: int, plugins: tuple[object, ...] = ()) -> dict[str, Any]:
        return predict_with_qc(
            prediction_inputs,
            out,
            tiny_nnunet_model.model_folder,
            [5],
            qc=settings,
            plugins=plugins,
            device="cpu",
            num_processes_preprocessing=0,
            num_processes_segmentation_export=0,
            use_mirroring=False,
            allow_tqdm=False,
            num_parts=2,
            part_id=part_id,
        )

    first = predict_part(0)
    assert first["cases"] == ["blank", "new_101"]
    manifest = read_run_manifest(qc)
    assert manifest is not None and first["run_id"] == manifest.run_id
    assert sorted(manifest.cases) == ["blank", "new_100", "new_101"]  # every part's cases
    manifest_text = (qc / RUN_MANIFEST_NAME).read_text()
    gate = _gate(qc)
    assert gate.returncode == 1 and "new_100" in gate.stdout + gate.stderr, gate.stdout

    second = predict_part(1)
    assert second["cases"] == ["new_100"] and second["run_id"] == manifest.run_id
    assert (qc / RUN_MANIFEST_NAME).read_text() == manifest_text  # both parts: one run
    run_ids = {json.loads((qc / f"{c}.json").read_text())["run_id"] for c in manifest.cases}
    assert run_ids == {manifest.run_id}

    with pytest.raises(RuntimeError, match="killed after segmenting new_100"):
        predict_part(1, plugins=(_CrashOnFirstCase(),))
    assert (out / "new_100.nii.gz").is_file()  # segmented again, never checked
    assert not (qc / "new_100.json").exists()  # so its earlier report is gone
    assert (qc / "blank.json").is_file() and (qc / "new_101.json").is_file()


def test_nnunet_path_writes_the_report_and_figures_check_writes(
    nnunet_output_folder: tuple[Path, Path], untrained_bundle: Path, tmp_path: Path
) -> None:
    """One pipeline: nnunet-qc and check give a case the same ratings, verdict and figures."""
    images, predictions = nnunet_output_folder
    common = ["--bundle", str(untrained_bundle)]
    nnunet = CliRunner().invoke(
        monai_qc,
        ["nnunet-qc", "--images", str(images), "--predictions", str(predictions),
         "--correct-volumes", "--figures", "all", *common],
    )  # fmt: skip
    assert nnunet.exit_code == 1, nnunet.output  # the empty and the lonely case are errors
    out = tmp_path / "check"
    check = CliRunner().invoke(
        monai_qc,
        ["check", "--images", str(images), "--segs", str(predictions), "--out", str(out),
         "--no-fail", "--figures", "all", *common],
    )  # fmt: skip
    assert check.exit_code == 0, check.output
    shared = ("labels", "slices", "volume", "thresholds", "failed_classes", "flagged_slices",
              "findings", "correction", "bundle", "verdict")  # fmt: skip
    for case in ("ph_0", "ph_1"):
        from_nnunet = json.loads((predictions / "qc" / f"{case}.json").read_text())
        from_check = json.loads((out / f"{case}.json").read_text())
        assert {k: from_nnunet[k] for k in shared} == {k: from_check[k] for k in shared}
        strips = [folder / "figures" / f"{case}_slices.png" for folder in (predictions / "qc", out)]
        assert all(p.is_file() for p in strips)
        assert strips[0].read_bytes() == strips[1].read_bytes()
        assert f"figures/{case}_slices.png" in (predictions / "qc" / "report.html").read_text()
