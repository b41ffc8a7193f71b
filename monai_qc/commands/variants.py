"""``monai-qc variants``: segmentation-model variants of varying quality, with nnU-Net."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

__all__ = ["build_dataset", "variants"]


def _csv_numbers(kind: type) -> click.ParamType:
    class _Numbers(click.ParamType):
        name = f"comma-separated {kind.__name__}s"

        def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
            if isinstance(value, tuple):
                return value
            try:
                return tuple(kind(v) for v in str(value).split(","))
            except ValueError:
                self.fail(
                    f"{value!r} is not a comma-separated list of {kind.__name__}s", param, ctx
                )

    return _Numbers()


_dataset_option = click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="nnU-Net raw data set folder (DatasetXXX_Name with imagesTr, labelsTr, dataset.json).",
)
_work_option = click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Working folder (nnU-Net folders, checkpoints, predictions); resumable.",
)


@click.group()
def variants() -> None:
    """Train and run nnU-Net checkpoint variants of varying quality."""


@variants.command("train")
@_dataset_option
@_work_option
@click.option("-n", "--n-variants", default=12, show_default=True, help="Number of variants.")
@click.option("--seed", default=2026, show_default=True, help="Seed drawing the variants.")
@click.option("--width-divisors", type=_csv_numbers(int), default="4,8", show_default=True)
@click.option(
    "--fractions",
    type=_csv_numbers(float),
    default="0.1,0.25,0.5,1.0",
    show_default=True,
    help="Fractions of the training patients to draw from.",
)
@click.option(
    "--epochs",
    type=(int, int),
    default=(2, 48),
    show_default=True,
    help="Range of epochs (log-uniform).",
)
@click.option(
    "--reference-epochs",
    type=int,
    default=None,
    help="Epochs of the reference variant v00 (default: the top of --epochs). A long reference "
    "run gives the well-segmented end of the DSC range; its snapshots give intermediate quality.",
)
@click.option("--iterations-per-epoch", default=25, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--patch-size", type=(int, int), default=(128, 128), show_default=True)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
def train_command(
    dataset: Path,
    work: Path,
    n_variants: int,
    seed: int,
    width_divisors: tuple[int, ...],
    fractions: tuple[float, ...],
    epochs: tuple[int, int],
    reference_epochs: int | None,
    iterations_per_epoch: int,
    batch_size: int,
    patch_size: tuple[int, int],
    device: str,
) -> None:
    """Plan, preprocess and train the variants with nnU-Net (skips finished ones)."""
    from dataclasses import replace

    from tqdm import tqdm

    from nnunet_hooks.variants import (
        add_variant_configurations,
        sample_variants,
        train_variant,
        write_variant_splits,
    )
    from nnunet_hooks.workspace import VariantWorkspace

    ws = VariantWorkspace(work.resolve(), dataset.resolve())
    started = time.perf_counter()
    plans = ws.plan_and_preprocess()
    specs = [
        replace(v, patch_size=patch_size)
        for v in sample_variants(
            n_variants,
            seed,
            width_divisors,
            fractions,
            epochs,
            iterations_per_epoch,
            batch_size,
            reference_epochs=reference_epochs,
        )
    ]
    ws.save_variants(specs)
    write_variant_splits(ws.preprocessed_dataset, ws.case_ids(), specs, seed)
    add_variant_configurations(plans, specs)
    click.echo(f"planned in {time.perf_counter() - started:.0f} s; training {len(specs)} variants")
    for spec in tqdm(specs, desc="variants", unit="variant"):
        t0 = time.perf_counter()
        snapshots = train_variant(
            ws.dataset_id,
            spec,
            ws.preprocessed,
            ws.results,
            ws.logs / f"train_{spec.name}.log",
            device,
        )
        tqdm.write(
            f"{spec.name}: width/{spec.width_divisor} fraction {spec.data_fraction} "
            f"{spec.num_epochs} epochs -> {len(snapshots)} snapshots "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    seconds = time.perf_counter() - started
    _add_stage_seconds(ws.logs, "train", seconds)
    click.echo(f"variants trained in {seconds:.0f} s")


@variants.command("predict")
@_work_option
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option(
    "--case-fraction",
    default=1.0,
    show_default=True,
    help="Fraction of the patients each checkpoint segments (seeded per checkpoint).",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--min-epoch",
    default=1,
    show_default=True,
    help="Skip snapshots taken before this epoch (e.g. when they are known to segment nothing).",
)
@click.option(
    "--max-epoch",
    default=None,
    type=int,
    help="Skip snapshots taken after this epoch.",
)
@click.option(
    "--whole-slice",
    is_flag=True,
    help="Faster whole-slice inference instead of nnU-Net's sliding window (lower quality; "
    "its segmentations are named <model>_ws).",
)
def predict_command(
    work: Path,
    device: str,
    case_fraction: float,
    seed: int,
    min_epoch: int,
    max_epoch: int | None,
    whole_slice: bool,
) -> None:
    """Segment every case with every kept checkpoint; record true scores (resumable)."""
    from monai_qc.io import dataset_file_ending, label_map_from_dataset_json
    from nnunet_hooks.checkpoint_runs import (
        list_checkpoints,
        patient_subset,
        preprocess_cases,
        run_checkpoints,
    )
    from nnunet_hooks.manager import get_plugin_manager
    from nnunet_hooks.true_scores import TrueScoreCollector
    from nnunet_hooks.workspace import VariantWorkspace

    ws = VariantWorkspace.load(work.resolve())
    started = time.perf_counter()
    dataset_json = ws.dataset / "dataset.json"
    labels = label_map_from_dataset_json(dataset_json)
    ending = dataset_file_ending(ws.dataset)
    collector = TrueScoreCollector(
        ws.dataset / "labelsTr", ending, [0, *labels.values()], ws.collected
    )
    checkpoints = [
        c
        for c in list_checkpoints(ws)
        if c.epoch >= min_epoch and (max_epoch is None or c.epoch <= max_epoch)
    ]
    todo = [c for c in checkpoints if not collector.is_complete(c.model_name(whole_slice))]
    click.echo(f"{len(checkpoints)} checkpoints, {len(todo)} to run")
    if not todo:
        return
    cases = list(preprocess_cases(ws, ws.case_ids()))
    click.echo(f"{len(cases)} cases preprocessed in {time.perf_counter() - started:.0f} s")
    splits = json.loads((ws.preprocessed_dataset / "splits_final.json").read_text())
    manager = get_plugin_manager([collector], load_entry_points=False)
    select = None if case_fraction >= 1 else patient_subset(case_fraction, seed)
    run_checkpoints(
        ws,
        manager.hook,
        cases,
        todo,
        lambda spec: splits[spec.fold]["train"],
        device=device,
        select=select,
        whole_slice=whole_slice,
    )
    seconds = time.perf_counter() - started
    _add_stage_seconds(ws.logs, "predict", seconds)
    click.echo(f"predicted in {seconds:.0f} s")


@click.command("build-dataset")
@_work_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the QC data set.",
)
@click.option(
    "--balance-class",
    default=None,
    help="Class whose true 3D DSC is balanced (default: the lowest median DSC).",
)
@click.option(
    "--bins",
    type=_csv_numbers(float),
    default="0,0.2,0.3,0.4,0.5,0.6,0.7,1",
    show_default=True,
    help="DSC bin edges for balancing and stratification.",
)
@click.option(
    "--fractions",
    type=(float, float, float),
    default=(0.8, 0.1, 0.1),
    show_default=True,
    help="Train / validation / test fractions of the patients.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--spatial-size",
    type=(int, int),
    default=(128, 128),
    show_default=True,
    help="In-plane size of the stored QC inputs.",
)
@click.option(
    "--per-bin",
    type=int,
    default=None,
    help="Volumes per DSC bin (default: the smallest bin's count).",
)
def build_dataset(
    work: Path,
    out: Path,
    balance_class: str | None,
    bins: tuple[float, ...],
    fractions: tuple[float, float, float],
    seed: int,
    spatial_size: tuple[int, int],
    per_bin: int | None,
) -> None:
    """Balance and split the collected segmentations into a QC data set."""
    import numpy as np

    from monai_qc.dataset_summary import summarize_qc_dataset
    from monai_qc.io import label_map_from_dataset_json
    from monai_qc.qc_dataset import build_qc_dataset, load_records
    from nnunet_hooks.workspace import VariantWorkspace

    ws = VariantWorkspace.load(work.resolve())
    started = time.perf_counter()
    labels = label_map_from_dataset_json(ws.dataset / "dataset.json")
    names = ["background", *labels]
    if balance_class is None:
        records, _ = load_records(ws.collected)
        medians = np.nanmedian([r.volume_dsc[1:] for r in records], axis=0)
        balance_class = list(labels)[int(np.argmin(medians))]
        click.echo(f"balancing on {balance_class} (lowest median true DSC)")
    manifest = build_qc_dataset(
        ws.collected,
        ws.dataset,
        out,
        names,
        balance_class,
        bins,
        fractions,
        seed,
        spatial_size,
        per_bin,
    )
    seconds = time.perf_counter() - started
    timings = _stage_timings(ws.logs)
    timings["build-dataset"] = seconds
    summarize_qc_dataset(out, timings)
    click.echo(f"QC data set: 2D {manifest['samples_2d']}, 3D {manifest['samples_3d']} -> {out}")


def _add_stage_seconds(logs: Path, stage: str, seconds: float) -> None:
    """Add a call's wall time to its stage (a stage run in several calls sums them)."""
    path = logs / f"{stage}.seconds"
    previous = float(path.read_text()) if path.is_file() and path.read_text().strip() else 0.0
    path.write_text(f"{previous + seconds:.1f}")


def _stage_timings(logs: Path) -> dict[str, float]:
    """Wall times recorded by earlier stages (``<stage>.seconds`` files in the log folder)."""
    return {
        p.stem: float(p.read_text())
        for p in sorted(logs.glob("*.seconds"))
        if p.read_text().strip()
    }
