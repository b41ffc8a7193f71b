"""Writing QC bundles: configs, metadata (MONAI's schema), weights, docs and licence."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from monai_qc.evaluate_run import score_table
from monai_qc.networks import build_qc_network
from monai_qc.report import atomic_write_text, jsonable
from monai_qc.training import SELECTION_CRITERIA, TrainConfig, save_atomic

__all__ = ["inference_config", "metadata", "training_config", "write_bundle"]

SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20240725.json"
)


def inference_config(
    network_name: str,
    labels: Mapping[str, int],
    thresholds: Mapping[str, Any],
    spatial_size: tuple[int, int] = (128, 128),
    network_kwargs: Mapping[str, Any] | None = None,
    context_slices: int = 0,
    contiguous_classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``configs/inference.json``: QC of a folder with ``python -m monai.bundle run``.

    ``context_slices``: neighbours on each side in the network's input (its preprocessing
    stacks them; ``QCNet.context_slices``). ``contiguous_classes``: classes that must be
    present on every slice between their first and last slice (a gap fails the case);
    None or empty writes no such setting.
    """
    context = {"context_slices": context_slices} if context_slices else {}
    contiguous = {"contiguous_classes": list(contiguous_classes)} if contiguous_classes else {}
    return {
        "imports": [
            "$import pathlib",
            "$from monai_qc.check import check_folder",
            "$from monai_qc.inference import QCPredictor",
        ],
        "bundle_root": ".",
        "device": "cpu",
        "labels": dict(labels),
        "n_classes": 1 + len(labels),
        "spatial_size": list(spatial_size),
        "network_def": {
            "_target_": "monai_qc.networks.build_qc_network",
            "name": network_name,
            "n_classes": "@n_classes",
            **dict(network_kwargs or {}),
        },
        "preprocessing": {
            "_target_": "monai_qc.transforms.QCSliceInputs",
            "n_classes": "@n_classes",
            "spatial_size": "@spatial_size",
            **context,
        },
        "thresholds": dict(thresholds),
        **contiguous,
        "images_dir": "images",
        "segs_dir": "segs",
        "output_dir": "qc",
        "predictor": "$QCPredictor.from_bundle(@bundle_root, device=@device)",
        "run": [
            "$check_folder(@predictor, pathlib.Path(@images_dir), "
            "pathlib.Path(@segs_dir), pathlib.Path(@output_dir))"
        ],
    }


def training_config(settings: TrainConfig, n_classes: int) -> dict[str, Any]:
    """``configs/train.json``: refit the bundle's network on a QC data set folder.

    ``python -m monai.bundle run --config_file configs/train.json --dataset_dir DATA
    --output_dir RUN`` writes ``best.pt`` (copy it to ``models/model.pt``), ``last.pt``
    (resumable) and ``history.json``. A network that was fine-tuned (``init_weights``) is
    refitted the same way, from the bundle's own weights.
    """
    fields = asdict(settings)
    if fields.get("init_weights"):
        fields["init_weights"] = "$@bundle_root + '/models/model.pt'"
    return {
        "imports": ["$import pathlib", "$from monai_qc.training import fit_slices"],
        "bundle_root": ".",
        "n_classes": n_classes,
        "dataset_dir": "qc_data",
        "output_dir": "qc_train",
        "train_config": {"_target_": "monai_qc.training.TrainConfig", **fields},
        "run": [
            "$fit_slices(pathlib.Path(@dataset_dir), pathlib.Path(@output_dir), @train_config)"
        ],
    }


def metadata(
    labels: Mapping[str, int],
    n_classes: int,
    spatial_size: tuple[int, int],
    version: str,
    description: str,
    eval_metrics: Mapping[str, Any] | None = None,
    context_slices: int = 0,
) -> dict[str, Any]:
    """``configs/metadata.json`` following MONAI's bundle metadata schema."""
    names = ["background", *sorted(labels, key=labels.__getitem__)]
    channels = _channel_names(names, context_slices)
    outputs = {str(i): f"DSC {n}" for i, n in enumerate(names)}
    outputs.update({str(n_classes + i): f"MVSF {n}" for i, n in enumerate(names)})
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: "trained QC model"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"monai-qc": _package_version()},
        "task": "Segmentation quality control without ground truth (per-slice DSC and MVSF)",
        "description": description,
        "authors": "monai-qc contributors",
        "copyright": "Copyright (c) monai-qc contributors",
        "data_source": "ACDC (Bernard et al., IEEE TMI 2018), segmented by nnU-Net variants",
        "data_type": "nifti",
        "image_classes": "one channel cine MRI short-axis slice, intensity normalised + CLAHE",
        "label_classes": json.dumps(dict(labels)),
        "pred_classes": "per class DSC in [0, 1] then per class MVSF in [-2, 2], background first",
        "eval_metrics": dict(eval_metrics or {}),
        "intended_use": "Research: flag segmentations likely to be poor; not for clinical use",
        "references": [
            "Fournel et al., Medical image segmentation automatic quality control: a "
            "multi-dimensional approach, Medical Image Analysis 74, 2021"
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": len(channels),
                    "spatial_shape": list(spatial_size),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": channels,
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "regression",
                    "num_channels": 2 * n_classes,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [-2, 2],
                    "is_patch_data": False,
                    "channel_def": outputs,
                }
            },
        },
    }


def _channel_names(names: list[str], context_slices: int) -> dict[str, str]:
    """Input channel descriptions: images, then one-hot maps, of slices -c..+c."""
    if not context_slices:
        return {"0": "image (CLAHE)", **{str(i + 1): f"one-hot {n}" for i, n in enumerate(names)}}
    span = range(-context_slices, context_slices + 1)
    offsets = [f"slice {o:+d}" if o else "slice" for o in span]
    described = [f"image (CLAHE), {o}" for o in offsets]
    described += [f"one-hot {n}, {o}" for o in offsets for n in names]
    return {str(i): text for i, text in enumerate(described)}


def _package_version() -> str:
    from monai_qc import __version__

    return __version__


def write_bundle(
    folder: Path,
    network: torch.nn.Module,
    network_name: str,
    labels: Mapping[str, int],
    thresholds: Mapping[str, Any],
    version: str = "0.1.0",
    description: str = "QC network predicting per-slice DSC and MVSF of a segmentation",
    spatial_size: tuple[int, int] = (128, 128),
    network_kwargs: Mapping[str, Any] | None = None,
    eval_metrics: Mapping[str, Any] | None = None,
    readme: str | None = None,
    train_config: TrainConfig | None = None,
    contiguous_classes: Sequence[str] | None = None,
) -> Path:
    """Write a complete QC bundle folder; return it.

    ``contiguous_classes``: classes that must have no gap along the slices (see
    :func:`inference_config`); each must be one of ``labels``.
    """
    folder = Path(folder)
    unknown = sorted(set(contiguous_classes or ()) - set(labels))
    if unknown:
        raise ValueError(f"contiguous_classes names unknown class(es): {', '.join(unknown)}")
    (folder / "models").mkdir(parents=True, exist_ok=True)
    n_classes = 1 + len(labels)
    context = int(getattr(network, "context_slices", 0))
    config = inference_config(
        network_name, labels, thresholds, spatial_size, network_kwargs, context, contiguous_classes
    )
    meta = metadata(labels, n_classes, spatial_size, version, description, eval_metrics, context)
    atomic_write_text(folder / "configs" / "inference.json", json.dumps(config, indent=2))
    atomic_write_text(folder / "configs" / "metadata.json", json.dumps(meta, indent=2))
    settings = train_config or TrainConfig(network_name, spatial_size=int(spatial_size[0]))
    atomic_write_text(
        folder / "configs" / "train.json",
        json.dumps(training_config(settings, n_classes), indent=2),
    )
    save_atomic(network.state_dict(), folder / "models" / "model.pt")
    atomic_write_text(
        folder / "docs" / "README.md", readme or f"# {folder.name}\n\n{description}\n"
    )
    licence = folder / "LICENSE"
    if not licence.exists():
        atomic_write_text(
            licence, "Apache License 2.0 - see https://www.apache.org/licenses/LICENSE-2.0\n"
        )
    return folder


def evaluation_metrics(evaluation: Mapping[str, Any], network: str) -> dict[str, Any]:
    """``eval_metrics`` of ``metadata.json``: test-split scores of ``network`` per class."""
    scores = evaluation["networks"][network]
    out: dict[str, Any] = {"threshold": evaluation["threshold"]}
    for level, key in (("2d", "slice"), ("3d", "volume_2d_r")):
        for metric in ("mae", "pearson_r", "accuracy"):
            out[f"{key}_{metric}"] = {
                cls: round(float(cell[metric]), 4) for cls, cell in scores[level].items()
            }
    return jsonable(out)  # not finite -> None


def training_summary(settings: Mapping[str, Any]) -> str:
    """One paragraph on how the network was fitted, from ``configs/train.json``'s settings."""
    start = (
        " starting from the weights of an earlier fit of the same network"
        if settings.get("init_weights")
        else ""
    )
    text = (
        f"Fitted for {settings['epochs']} epochs{start} (batch {settings['batch_size']}, Adam, "
        f"learning rate {settings['learning_rate']}, cosine schedule, the epoch with the lowest "
        f"{SELECTION_CRITERIA[settings.get('select_by', 'val_loss')]} kept); MSE "
        f"loss with the MVSF terms weighted {settings.get('mvsf_weight', 1.0)}"
    )
    if settings.get("network") and build_qc_network(settings["network"], 2).maps_expert_labels:
        text += (
            f"; plus {settings.get('expert_map_weight', 0.1)} x Dice + cross-entropy of its "
            "expert-label map against the expert labels"
        )
    if settings.get("augment"):
        text += "; flips, turns, small zooms, gamma and noise on the inputs"
    damage = float(settings.get("damage_probability", 0.0))
    if damage > 0:
        text += (
            f"; {damage:.0%} of the training slices replaced by synthetically damaged labels "
            "(one structure dropped, eroded, dilated or shifted) or by the expert labels, "
            "scored against the expert labels"
        )
        from_expert = float(settings.get("damage_from_expert", 0.0))
        if from_expert > 0:
            text += f", {from_expert:.0%} of the damage applied to the expert labels themselves"
    return text + "."


def _context_phrase(settings: Mapping[str, Any] | None, n_classes: int) -> str:
    """How many neighbouring slices the bundled network reads with each slice, if any."""
    if not settings or not settings.get("network"):
        return ""
    context = build_qc_network(settings["network"], n_classes).context_slices
    if not context:
        return ""
    side = "slice" if context == 1 else f"{context} slices"
    return f", together with the same of the neighbouring {side} on each side"


def _split_sentence(split: Mapping[str, list[str]]) -> str:
    """Which patients the network never saw, so users do not measure it on the others."""
    return (
        "Held-out test patients (never seen in training or model selection): "
        f"{', '.join(split['test'])}. The patients of every split are in `docs/data_split.json`."
    )


def _quality_heading(evaluation: Mapping[str, Any]) -> str:
    """Heading of the score table: the test split, or the patients ``evaluate --patients`` named."""
    size = f"({evaluation['n_subjects']} volumes, {evaluation['n_slices']} slices)"
    if patients := evaluation.get("patients"):
        return f"## Quality on the volumes of patients {', '.join(patients)} {size}"
    return f"## Quality on the held-out test patients {size}"


def _bundled_only(
    evaluation: Mapping[str, Any], settings: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The evaluation restricted to the bundled network (all networks if it is unknown)."""
    name = settings.get("network") if settings else None
    if name not in evaluation["networks"]:
        return dict(evaluation)
    return {**evaluation, "networks": {name: evaluation["networks"][name]}}


def bundle_readme(
    name: str,
    manifest: dict[str, Any],
    evaluation: dict[str, Any],
    settings: Mapping[str, Any] | None = None,
    split: Mapping[str, list[str]] | None = None,
) -> str:
    """``docs/README.md`` of a bundle: intended use, training data, measured quality, limits.

    ``settings``: the ``train_config`` of the bundle's ``configs/train.json``, if known;
    ``split``: the patients of each split of its data set (``docs/data_split.json``).
    """
    classes = evaluation["classes"]
    lines = [
        f"# {name}: segmentation quality control for cardiac cine MRI",
        "",
        "Predicts, for every short-axis slice, the Dice (DSC) and volume similarity (MVSF) that a",
        f"segmentation of {', '.join(classes)} would score against an expert, and reconstructs the",
        "3D DSC of the volume from them (Fournel et al., Medical Image Analysis 74, 2021).",
        "",
        "## Intended use",
        "Research: flag or rank automatic segmentations of short-axis cine MRI (labels RV = 1,",
        "MYO = 2, LV = 3) for review before their measurements are used. Not a medical device.",
        "",
        "## Training data",
        f"Segmentations of the ACDC training set by {manifest['n_models']} nnU-Net checkpoint",
        f"variants ({manifest['n_records_collected']} volumes), balanced on the true 3D DSC of",
        f"{manifest['balance_class']} and split by patient: "
        + ", ".join(
            f"{s} {manifest['samples_3d'][s]} volumes / {manifest['samples_2d'][s]} slices"
            for s in ("train", "val", "test")
        )
        + ". Input: square image crop around the largest connected part of the segmentation, "
        f"CLAHE, {manifest['spatial_size'][0]} x {manifest['spatial_size'][1]} pixels, with the "
        f"one-hot segmentation{_context_phrase(settings, len(classes) + 1)}.",
        "",
        *([_split_sentence(split), ""] if split else []),
        *([training_summary(settings), ""] if settings else []),
        _quality_heading(evaluation),
        "",
        *score_table(_bundled_only(evaluation, settings)),
    ]
    lines += [
        "",
        "## Limits",
        "- Trained on ACDC only (one centre, 1.5 T / 3 T Siemens); other centres and vendors are",
        "  outside what it has seen. The ACDC copy used carries no voxel spacing (nominal",
        "  1.5 x 1.5 x 10 mm), so absolute volumes computed on it are nominal. monai-qc's",
        "  `benchmarks/qc_domain_shift.py` measures its error on test images altered like another",
        "  scanner's (contrast, coil shading, noise, blur, ringing); no other centre's images",
        "  were tested.",
        "- The segmentations it learnt from come from CPU-budget nnU-Net variants, most of the",
        "  usable ones from the snapshots of one reference run; very good myocardium",
        "  segmentations (3D DSC > 0.9) were rare in its training data.",
        "- A structure missed entirely on a slice is invisible to the 3D reconstruction (its",
        "  reconstructed area there is 0 whatever the network predicts). Between slices that",
        "  hold the structure, the `contiguous_classes` of `configs/inference.json` make such a",
        "  gap a `class_gap` finding that fails the case, whatever the network predicts; the",
        "  network rates an empty end slice (apex, base) as missed whether or not the expert",
        "  drew the structure there, so such slices are reported null and not flagged.",
        "- The network sees only the crop around the largest connected part of the",
        "  segmentation: foreground outside it is not rated, and is reported as an",
        "  `outside_rated_region` finding that fails the case.",
        "",
    ]
    return "\n".join(lines)
