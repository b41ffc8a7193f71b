"""``monai-qc train`` and ``monai-qc evaluate``: QC networks on a QC data set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["evaluate", "train"]

_data_option = click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="QC data set folder (from build-dataset).",
)
_run_option = click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder of the training run (one sub-folder per network; resumable).",
)


def _views_option(default: str | None, help: str) -> Callable[[Callable[..., Any]], Any]:
    """``--test-time-views``: 1, 2, 4 or 8 (``networks.TEST_TIME_VIEWS``, kept free of torch)."""
    return click.option(
        "--test-time-views",
        type=click.Choice(["1", "2", "4", "8"]),
        default=default,
        show_default=default is not None,
        help=help,
    )


@click.command()
@_data_option
@_run_option
@click.option(
    "--networks",
    default="resnet2d,resnet3d",
    show_default=True,
    help="Comma-separated: resnet2d, context_resnet2d (each slice with its neighbours), "
    "expert_map_resnet2d (also learns to map the expert labels), unet2d, resnet3d, unet3d.",
)
@click.option("--epochs", default=20, show_default=True, help="Epochs of the 2D networks.")
@click.option("--epochs-3d", default=40, show_default=True, help="Epochs of the 3D networks.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--learning-rate", default=1e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--init-weights",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Start the 2D networks from these weights (a .pt state dict or a QC bundle folder, "
    "e.g. to fine-tune the shipped bundle on your own QC data set).",
)
@click.option(
    "--mvsf-weight",
    default=0.1,
    show_default=True,
    help="Loss weight of the MVSF outputs of 2D networks (DSC outputs weigh 1).",
)
@click.option(
    "--damage-probability",
    default=0.0,
    show_default=True,
    help="Share of 2D training slices replaced by synthetically damaged (or expert) labels, "
    "scored against the expert labels the data set stores.",
)
@click.option(
    "--damage-from-expert",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of those damaged slices whose damage starts from the expert labels instead "
    "of the segmentation: expert-quality slices with one structure damaged.",
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Flips, turns, small zooms, gamma and noise on 2D inputs.",
)
@click.option(
    "--select-by",
    type=click.Choice(["val_dsc_mae", "val_loss"]),  # training.SELECTION_CRITERIA
    default="val_dsc_mae",
    show_default=True,
    help="Keep the epoch with the lowest validation DSC MAE or validation loss.",
)
@_views_option(
    "4", "Average each 2D prediction over this many mirrored / turned copies of the slice."
)
@click.option(
    "--bundle-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a QC bundle with the first 2D network here.",
)
def train(
    data: Path,
    run_dir: Path,
    networks: str,
    epochs: int,
    epochs_3d: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    init_weights: Path | None,
    mvsf_weight: float,
    damage_probability: float,
    damage_from_expert: float,
    augment: bool,
    select_by: str,
    test_time_views: str,
    bundle_out: Path | None,
) -> None:
    """Fit QC networks (MSE, Adam); keep the best validation epoch of each."""
    import numpy as np
    import torch

    from monai_qc.bundle_writer import write_bundle
    from monai_qc.training import (
        TrainConfig,
        fit,
        fit_slices,
        load_samples,
        record_targets,
        volume_inputs,
    )

    manifest = json.loads((data / "manifest.json").read_text())
    classes = manifest["classes"]
    train_set, val_set = load_samples(data / "train.npz"), load_samples(data / "val.npz")
    names = [n.strip() for n in networks.split(",") if n.strip()]
    trained_2d = []
    for name in names:
        is_2d = name.endswith("2d")
        config = TrainConfig(
            name,
            epochs if is_2d else epochs_3d,
            batch_size if is_2d else 16,
            learning_rate,
            seed,
            manifest["spatial_size"][0],
            augment and is_2d,
            mvsf_weight,
            damage_probability if is_2d else 0.0,
            select_by,
            str(init_weights) if init_weights and is_2d else None,
            damage_from_expert=damage_from_expert,
        )
        if is_2d:
            try:
                network = fit_slices(data, run_dir / name, config)
            except (FileNotFoundError, ValueError) as error:  # bad --init-weights or data set
                raise click.ClickException(str(error)) from error
            trained_2d.append((name, network, config))
        else:
            targets = record_targets(data / "records.csv", classes)
            tx, tr = volume_inputs(train_set)
            vx, vr = volume_inputs(val_set)
            ty = torch.tensor(np.stack([targets[int(r)] for r in tr]), dtype=torch.float32)
            vy = torch.tensor(np.stack([targets[int(r)] for r in vr]), dtype=torch.float32)
            fit(config, tx, ty, vx, vy, len(classes), run_dir / name)
        kept = json.loads((run_dir / name / "best.json").read_text())
        click.echo(
            f"{name}: kept epoch {kept['epoch']} (lowest {kept['select_by']}), "
            f"validation DSC MAE {kept['val_dsc_mae']:.4f}"
        )
    if bundle_out is not None and trained_2d:
        name, network, config = trained_2d[0]
        labels = dict(zip(classes[1:], manifest["class_values"][1:], strict=True))
        thresholds = {"min_dsc": 0.7, "min_slice_dsc": 0.3}
        write_bundle(
            bundle_out,
            network,
            name,
            labels,
            thresholds,
            spatial_size=tuple(manifest["spatial_size"]),
            network_kwargs={"test_time_views": int(test_time_views)},
            train_config=config,
        )
        click.echo(f"bundle written: {bundle_out}")


@click.command()
@_data_option
@_run_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for evaluation.md, evaluation.json and the scatter plots.",
)
@click.option("--threshold", default=0.7, show_default=True, help="Good/bad DSC threshold.")
@click.option(
    "--collected",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Collected segmentations (for the baselines).",
)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write this bundle's docs/README.md with the results.",
)
@_views_option(None, "As for train; by default the count in --bundle's network_def, else 4.")
@click.option(
    "--patients",
    default=None,
    help="Comma-separated patient IDs (records.csv): evaluate their samples from every split "
    "instead of the test split, e.g. a model's own test patients in a rebuilt data set.",
)
def evaluate(
    data: Path,
    run_dir: Path,
    out: Path,
    threshold: float,
    collected: Path | None,
    bundle_dir: Path | None,
    test_time_views: str | None,
    patients: str | None,
) -> None:
    """Tables of MAE, Pearson r and accuracy on the test split, 2D_R vs 3D-direct, baselines."""
    from monai_qc.bundle_writer import bundle_readme, evaluation_metrics
    from monai_qc.evaluate_run import evaluate_run
    from monai_qc.qc_dataset import split_patients
    from monai_qc.report import atomic_write_text

    views = _bundle_views(bundle_dir, test_time_views)
    chosen = [p.strip() for p in patients.split(",") if p.strip()] if patients else None
    try:
        results = evaluate_run(data, run_dir, out, threshold, collected, views, chosen)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if bundle_dir is not None:
        manifest = json.loads((data / "manifest.json").read_text())
        train_json = bundle_dir / "configs" / "train.json"
        settings = (
            json.loads(train_json.read_text()).get("train_config") if train_json.is_file() else None
        )
        split = split_patients(data)
        text = bundle_readme(bundle_dir.name, manifest, results, settings, split)
        atomic_write_text(bundle_dir / "docs" / "README.md", text)
        atomic_write_text(bundle_dir / "docs" / "data_split.json", json.dumps(split, indent=2))
        meta_file = bundle_dir / "configs" / "metadata.json"
        meta = json.loads(meta_file.read_text())
        name = settings["network"] if settings else next(iter(results["networks"]))
        if name in results["networks"]:
            meta["eval_metrics"] = evaluation_metrics(results, name)
            atomic_write_text(meta_file, json.dumps(meta, indent=2))
    click.echo((out / "evaluation.md").read_text())


def _bundle_views(bundle_dir: Path | None, requested: str | None) -> int:
    """The test-time view count to evaluate with: the bundle's own, unless one is requested.

    A requested count that differs from the bundle's is refused, since the bundle's README
    would then describe a network it does not ship.
    """
    if bundle_dir is None:
        return int(requested or 4)
    inference = bundle_dir / "configs" / "inference.json"
    if not inference.is_file():
        raise click.BadParameter(
            f"{bundle_dir}: not a QC bundle (no configs/inference.json)", param_hint="--bundle"
        )
    network_def = json.loads(inference.read_text())["network_def"]
    shipped = int(network_def.get("test_time_views", 1))
    if requested is not None and int(requested) != shipped:
        raise click.BadParameter(
            f"{requested} differs from the {shipped} of {bundle_dir}/configs/inference.json",
            param_hint="--test-time-views",
        )
    return shipped
