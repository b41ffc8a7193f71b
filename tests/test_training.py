"""QC data set -> training -> evaluation -> bundle, on phantoms with damaged segmentations."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import qc_data_fixtures
from click.testing import CliRunner

from monai_qc import QCPredictor
from monai_qc.cli import main
from monai_qc.networks import build_qc_network
from monai_qc.phantom import PHANTOM_LABELS, make_phantom

qc_data = qc_data_fixtures.qc_data


def test_train_evaluate_and_bundle(qc_data: dict[str, Path]) -> None:
    root, data = qc_data["root"], qc_data["data"]
    runner = CliRunner()
    run = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(data),
            "--run",
            str(root / "run"),
            "--networks",
            "resnet2d,resnet3d",
            "--epochs",
            "2",
            "--epochs-3d",
            "2",
            "--batch-size",
            "16",
            "--bundle-out",
            str(root / "bundle"),
        ],
    )
    assert run.exit_code == 0, run.output
    history = json.loads((root / "run" / "resnet2d" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["val_loss"]) for h in history)
    kept = min(history, key=lambda h: h["val_dsc_mae"])  # the default criterion
    record = json.loads((root / "run" / "resnet2d" / "best.json").read_text())
    assert record == {**kept, "select_by": "val_dsc_mae"}
    assert f"resnet2d: kept epoch {kept['epoch']} (lowest val_dsc_mae)," in run.output
    inference = json.loads((root / "bundle" / "configs" / "inference.json").read_text())
    assert inference["network_def"]["test_time_views"] == 4

    # resuming a finished run trains nothing more and keeps the history
    again = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(data),
            "--run",
            str(root / "run"),
            "--networks",
            "resnet2d",
            "--epochs",
            "2",
        ],
    )
    assert again.exit_code == 0, again.output
    assert json.loads((root / "run" / "resnet2d" / "history.json").read_text()) == history

    evaluation = runner.invoke(
        main,
        [
            "evaluate",
            "--data",
            str(data),
            "--run",
            str(root / "run"),
            "--out",
            str(root / "eval"),
            "--collected",
            str(qc_data["collected"]),
            "--bundle",
            str(root / "bundle"),
        ],
    )
    assert evaluation.exit_code == 0, evaluation.output
    results = json.loads((root / "eval" / "evaluation.json").read_text())
    assert results["test_time_views"] == 4  # the bundle's own count
    split = json.loads((root / "bundle" / "docs" / "data_split.json").read_text())
    with open(data / "records.csv") as f:
        records = list(csv.DictReader(f))
    assert split["test"] == sorted({r["patient"] for r in records if r["split"] == "test"})
    readme = (root / "bundle" / "docs" / "README.md").read_text()
    held_out = ", ".join(split["test"])
    assert f"test patients (never seen in training or model selection): {held_out}." in readme
    clash = runner.invoke(
        main,
        ["evaluate", "--data", str(data), "--run", str(root / "run"), "--out", str(root / "e2")]
        + ["--bundle", str(root / "bundle"), "--test-time-views", "2"],
    )
    assert clash.exit_code == 2 and "differs from the 4 of" in clash.output
    not_a_bundle = runner.invoke(
        main,
        ["evaluate", "--data", str(data), "--run", str(root / "run"), "--out", str(root / "e2")]
        + ["--bundle", str(root / "run")],
    )
    assert not_a_bundle.exit_code == 2
    assert "not a QC bundle (no configs/inference.json)" in not_a_bundle.output
    patient = next(r["patient"] for r in records if r["split"] == "train")
    own = [r for r in records if r["patient"] == patient]
    chosen = runner.invoke(
        main,
        ["evaluate", "--data", str(data), "--run", str(root / "run"), "--out", str(root / "e3")]
        + ["--patients", patient, "--test-time-views", "1"],
    )
    assert chosen.exit_code == 0, chosen.output
    by_patient = json.loads((root / "e3" / "evaluation.json").read_text())
    assert by_patient["patients"] == [patient] and by_patient["n_subjects"] == len(own)
    assert by_patient["n_slices"] == sum(int(r["n_slices"]) for r in own)
    assert f"subjects of patients {patient} from every split" in chosen.output
    unknown = runner.invoke(
        main,
        ["evaluate", "--data", str(data), "--run", str(root / "run"), "--out", str(root / "e4")]
        + ["--patients", "nobody"],
    )
    assert unknown.exit_code == 1 and "no records of patients nobody" in unknown.output
    for name in ("resnet2d", "resnet3d"):
        for cls in ("RV", "MYO", "LV"):
            cell = results["networks"][name]["3d"][cls]
            assert 0.0 <= cell["mae"] <= 1.0 and 0.0 <= cell["accuracy"] <= 1.0
    assert set(results["networks"]["resnet2d"]) >= {"2d", "3d", "3d_by_group", "spearman_3d"}
    training = results["networks"]["resnet2d"]["training"]
    assert training["epochs"] == 2 and training["best_epoch"] == kept["epoch"]
    assert (
        f"resnet2d 2 epochs (kept {kept['epoch']}, lowest val_dsc_mae;"
        in (root / "eval" / "evaluation.md").read_text()
    )
    assert "resnet2d_vs_resnet3d" in results["wilcoxon_2dr_vs_3d"]
    assert set(results["baselines_spearman_3d"]) == {"variant_agreement", "negative_entropy"}
    assert (root / "eval" / "resnet2d_2d.png").is_file()
    readme = (root / "bundle/docs/README.md").read_text()
    assert "Quality on the held-out test patients" in readme
    assert "Fitted for 2 epochs (batch 16" in readme and "MVSF terms weighted 0.1" in readme
    assert "the epoch with the lowest validation DSC MAE kept" in readme
    assert results["test_time_views"] == 4
    assert "| resnet2d | 3D (2D_R) |" in readme and "| resnet3d |" not in readme
    meta = json.loads((root / "bundle/configs/metadata.json").read_text())["eval_metrics"]
    mae = results["networks"]["resnet2d"]["3d"]["LV"]["mae"]
    assert meta["volume_2d_r_mae"]["LV"] == pytest.approx(mae, abs=1e-4)

    predictor = QCPredictor.from_bundle(root / "bundle")
    image, labels = make_phantom(99, n_slices=6, size=(64, 64))
    report = predictor.predict(image, labels, (10.0, 1.5, 1.5), "p").to_dict()
    assert report["labels"] == PHANTOM_LABELS
    assert all(0 <= v <= 1 for s in report["slices"] for v in s["dsc"].values() if v is not None)


def _untrained_bundle(folder: Path) -> Path:
    """A QC bundle of a freshly initialised ResNet 2D for the 32-pixel phantom data set."""
    return qc_data_fixtures.write_phantom_bundle(
        folder, build_qc_network("resnet2d", 4), "resnet2d"
    )


def test_bundle_train_config_refits_the_network(qc_data: dict[str, Path], tmp_path: Path) -> None:
    """``monai.bundle run`` of configs/train.json trains weights that the bundle loads."""
    bundle = _untrained_bundle(tmp_path / "bundle")
    run = subprocess.run(
        [
            *(sys.executable, "-m", "monai.bundle", "run"),
            *("--config_file", str(bundle / "configs" / "train.json")),
            *("--dataset_dir", str(qc_data["data"]), "--output_dir", str(tmp_path / "fit")),
            *("--train_config#epochs", "1", "--train_config#batch_size", "16"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    history = json.loads((tmp_path / "fit" / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["val_loss"])
    (tmp_path / "fit" / "best.pt").replace(bundle / "models" / "model.pt")
    predictor = QCPredictor.from_bundle(bundle)
    image, labels = make_phantom(7, n_slices=6, size=(64, 64))
    report = predictor.predict(image, labels, (10.0, 1.5, 1.5), "p").to_dict()
    assert len(report["slices"]) == 6


def test_output_weights_scale_mvsf_terms_of_2d_networks_only() -> None:
    """2D outputs (K DSCs, K MVSFs) weigh MVSF by mvsf_weight; 3D outputs (K DSCs) all 1."""
    from monai_qc.training import TrainConfig, output_weights

    config = TrainConfig("resnet2d", mvsf_weight=0.25)
    assert output_weights(config, 8, 4).tolist() == [1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25]
    assert output_weights(config, 4, 4).tolist() == [1, 1, 1, 1]


def test_train_config_rejects_bad_settings() -> None:
    """An unknown selection criterion or a share outside [0, 1] fails at once, named."""
    from monai_qc.training import TrainConfig

    with pytest.raises(ValueError, match="val_dsc_mae, val_loss"):
        TrainConfig("resnet2d", select_by="val_accuracy")
    with pytest.raises(ValueError, match="damage_from_expert must be in"):
        TrainConfig("resnet2d", damage_from_expert=1.5)


def test_augmentation_keeps_one_hot_labels_and_image_range() -> None:
    """Augmented label channels stay one-hot; a zoom/turn moves area, not the class mix much."""
    import torch

    from monai_qc.augmentation import augment_inputs

    x, _ = qc_data_fixtures.phantom_inputs(3)
    y = augment_inputs(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert set(torch.unique(y[:, 1:]).tolist()) == {0.0, 1.0}
    assert torch.equal(y[:, 1:].sum(1), torch.ones(8, 64, 64))
    foreground_mix = [t[:, 2:].sum((0, 2, 3)) / t[:, 2:].sum() for t in (x, y)]
    assert torch.allclose(*foreground_mix, atol=0.05)
    assert float(y[:, 0].min()) > -0.3 and float(y[:, 0].max()) < 1.3


def test_data_set_stores_expert_labels_in_the_segmentation_crop(qc_data: dict[str, Path]) -> None:
    """Where the segmentation is the expert's (model m0), the stored truth crop equals it."""
    import csv

    with open(qc_data["data"] / "records.csv") as f:
        exact = {int(r["record"]) for r in csv.DictReader(f) if r["model"] == "m0"}
    with np.load(qc_data["data"] / "train.npz") as train:
        rows = np.isin(train["record"], list(exact))
        assert rows.any() and not rows.all()
        assert np.array_equal(train["truth"][rows], train["seg"][rows])
        assert not np.array_equal(train["truth"][~rows], train["seg"][~rows])
        assert np.allclose(train["dsc"][rows], 1.0)


def test_fit_slices_with_synthetic_damage(qc_data: dict[str, Path], tmp_path: Path) -> None:
    """Training with damaged batches runs, and damaged targets are scored against the truth."""
    import torch

    from monai_qc.slice_damage import slice_scores
    from monai_qc.training import TrainConfig, fit_slices, load_samples

    train = load_samples(qc_data["data"] / "train.npz")
    index = torch.arange(min(32, len(train)))
    x, y = train.damaged_batch(index, 1.0, torch.Generator().manual_seed(0))
    seg = x[:, 1:].argmax(1)
    dsc, mvsf = slice_scores(seg, train.truth[index], train.n_classes)
    eligible = train.damage_eligible()[index]
    assert eligible.any()
    assert torch.allclose(y[eligible], torch.cat([dsc, mvsf], 1)[eligible])
    assert torch.equal(y[~eligible], train.targets(index)[~eligible])
    assert torch.equal(seg[~eligible], train.seg[index][~eligible].long())
    assert not torch.equal(seg[eligible], train.seg[index][eligible].long())

    config = TrainConfig("resnet2d", 1, 16, spatial_size=32, damage_probability=0.5)
    fit_slices(qc_data["data"], tmp_path / "fit", config)
    history = json.loads((tmp_path / "fit" / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["val_loss"])


def test_training_sentence_leaves_out_networks_without_a_run_record() -> None:
    from monai_qc.evaluate_run import _training_sentence

    record = {"epochs": 3, "best_epoch": 2, "select_by": "val_dsc_mae", "seconds_per_epoch": 4.0}
    bare = {"networks": {"resnet2d": {}}, "test_time_views": 1}
    assert _training_sentence(bare) == ""
    assert _training_sentence({**bare, "test_time_views": 4}) == (
        "2D networks: each slice's prediction averaged over 4 mirrored / turned copies of it"
    )
    trained = {"networks": {"resnet2d": {"training": record}, "unet2d": {}}, "test_time_views": 1}
    assert _training_sentence(trained) == (
        "Training: resnet2d 3 epochs (kept 2, lowest val_dsc_mae; median 4 s per epoch)"
    )
    tuned = {"networks": {"resnet2d": {"training": {**record, "init_weights": "a/best.pt"}}}}
    assert _training_sentence(tuned) == (
        "Training: resnet2d 3 epochs from earlier weights (kept 2, lowest val_dsc_mae; "
        "median 4 s per epoch)"
    )


def test_fine_tuning_starts_from_a_bundle(qc_data: dict[str, Path], tmp_path: Path) -> None:
    """``train --init-weights BUNDLE`` starts from the bundle's weights; its bundle says so."""
    import torch
    from monai.bundle import ConfigParser

    from monai_qc.bundle_writer import training_summary
    from monai_qc.training import initial_state

    start = _untrained_bundle(tmp_path / "start")
    args = ["train", "--data", str(qc_data["data"]), "--networks", "resnet2d", "--epochs", "1"]
    args += ["--batch-size", "16", "--damage-probability", "0.5", "--damage-from-expert", "0.5"]
    args += ["--init-weights", str(start)]
    # learning rate 0: the fitted weights are the initial ones (batch statistics aside)
    run = CliRunner().invoke(
        main,
        [*args, "--run", str(tmp_path / "run"), "--learning-rate", "0", "--bundle-out"]
        + [str(tmp_path / "tuned")],
    )
    assert run.exit_code == 0, run.output
    fitted = torch.load(tmp_path / "run" / "resnet2d" / "best.pt", weights_only=True)
    initial = initial_state(start)
    names = [n for n, _ in build_qc_network("resnet2d", 4).named_parameters()]
    assert names and all(torch.equal(fitted[n], initial[n]) for n in names)
    kept = json.loads((tmp_path / "run" / "resnet2d" / "best.json").read_text())
    assert kept["init_weights"] == str(start)

    parser = ConfigParser()
    parser.read_config(tmp_path / "tuned" / "configs" / "train.json")
    parser["bundle_root"] = str(tmp_path / "tuned")
    config = parser.get_parsed_content("train_config")
    assert Path(config.init_weights) == tmp_path / "tuned" / "models" / "model.pt"
    tuned = initial_state(config.init_weights)
    assert all(torch.equal(tuned[n], fitted[n]) for n in names)
    summary = training_summary(parser["train_config"])
    assert summary.startswith(
        "Fitted for 1 epochs starting from the weights of an earlier fit of the same network"
    )
    assert config.damage_from_expert == 0.5
    assert "50% of the damage applied to the expert labels themselves" in summary

    not_a_bundle = CliRunner().invoke(
        main, [*args[:-1], str(tmp_path / "run"), "--run", str(tmp_path / "r2")]
    )
    assert not_a_bundle.exit_code == 1
    assert "no initial weights (a .pt file or a QC bundle folder)" in not_a_bundle.output
    other = tmp_path / "three_classes.pt"
    torch.save(build_qc_network("resnet2d", 3).state_dict(), other)
    mismatch = CliRunner().invoke(main, [*args[:-1], str(other), "--run", str(tmp_path / "r3")])
    assert mismatch.exit_code == 1
    assert "do not fit a resnet2d network with 4 classes" in mismatch.output


def test_bundle_readme_heading_names_the_evaluated_patients() -> None:
    """A bundle README evaluated on ``--patients`` does not call them held-out test patients."""
    from monai_qc.bundle_writer import _quality_heading

    size = {"n_subjects": 3, "n_slices": 30}
    assert _quality_heading({**size, "patients": None}) == (
        "## Quality on the held-out test patients (3 volumes, 30 slices)"
    )
    assert _quality_heading({**size, "patients": ["acdc_001", "acdc_007"]}) == (
        "## Quality on the volumes of patients acdc_001, acdc_007 (3 volumes, 30 slices)"
    )


def test_initial_weights_that_are_not_a_state_dict_are_named(tmp_path: Path) -> None:
    import torch

    from monai_qc.training import initial_state

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: not a readable PyTorch state dict"):
        initial_state(garbage)
    listed = tmp_path / "listed.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ValueError, match="listed.pt: not a state dict"):
        initial_state(listed)
    with pytest.raises(FileNotFoundError, match="no initial weights"):
        initial_state(tmp_path)
