"""Evaluate trained QC networks on the test split of a QC data set; write markdown + JSON + PNG."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_qc.evaluation import agreement, compare_errors, group_mae, rank_correlation
from monai_qc.networks import QC_NETWORKS, build_qc_network
from monai_qc.qc_dataset import SPLITS
from monai_qc.reconstruction import reconstruct_volume_dsc
from monai_qc.report import atomic_write_text, jsonable
from monai_qc.training import QCSamples, samples_from_arrays, volume_inputs

__all__ = ["evaluate_run", "predict_2d", "reconstruct_by_record", "variant_agreement"]

logger = logging.getLogger(__name__)


def _load(run: Path, name: str, n_classes: int, views: int) -> torch.nn.Module | None:
    weights = run / name / "best.pt"
    if not weights.is_file():
        return None
    network = build_qc_network(name, n_classes, views if name.endswith("2d") else 1)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.eval()


def predict_2d(network: torch.nn.Module, samples: QCSamples, batch_size: int = 128) -> np.ndarray:
    """(N, 2K) predictions for every slice of a split (with the network's context slices)."""
    context = getattr(network, "context_slices", 0)
    with torch.inference_mode():
        chunks = torch.arange(len(samples)).split(batch_size)
        return torch.cat([network(samples.inputs(i, context=context)) for i in chunks]).numpy()


def reconstruct_by_record(
    samples: QCSamples, dsc: np.ndarray, mvsf: np.ndarray, record_ids: np.ndarray
) -> np.ndarray:
    """(R, K) 3D (2D_R) DSC of each record from per-slice DSC and MVSF (N, K) of ``samples``."""
    return np.stack(
        [
            reconstruct_volume_dsc(
                dsc[samples.record == r],
                mvsf[samples.record == r],
                samples.seg_area[samples.record == r],
            )
            for r in record_ids
        ]
    )


def variant_agreement(
    collected: Path, rows: Sequence[dict[str, str]], class_values: list[int]
) -> np.ndarray:
    """Mean Dice of each record's segmentation with every other model's one of the same case."""
    models = sorted(p.stem for p in collected.glob("*.npz"))
    archives = {m: np.load(collected / f"{m}.npz") for m in models}
    out = np.full((len(rows), len(class_values)), np.nan)
    for i, row in enumerate(rows):
        own = archives[row["model"]][row["case"]]
        others = [
            archives[m][row["case"]]
            for m in models
            if m != row["model"] and row["case"] in archives[m].files
        ]
        for j, v in enumerate(class_values):
            a = own == v
            dices = [
                2 * (a & (o == v)).sum() / (a.sum() + (o == v).sum())
                for o in others
                if a.sum() + (o == v).sum() > 0
            ]
            out[i, j] = np.mean(dices) if dices else np.nan
    return out


def _entropy(collected: Path, rows: Sequence[dict[str, str]], k: int) -> np.ndarray:
    cache: dict[str, dict[str, Any]] = {}
    out = np.full((len(rows), k), np.nan)
    for i, row in enumerate(rows):
        if row["model"] not in cache:
            doc = json.loads((collected / f"{row['model']}.json").read_text())
            cache[row["model"]] = {c["case"]: c.get("entropy") for c in doc["cases"]}
        values = cache[row["model"]].get(row["case"])
        if values:
            out[i] = [np.nan if v is None else v for v in values]
    return out


def _scatter(
    true: np.ndarray, pred: np.ndarray, classes: list[str], title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 3.6))
    for j, (ax, cls) in enumerate(zip(np.atleast_1d(axes), classes, strict=True)):
        keep = np.isfinite(true[:, j]) & np.isfinite(pred[:, j])
        ax.scatter(true[keep, j], pred[keep, j], s=4, alpha=0.4, color="#4477aa")
        ax.plot([0, 1], [0, 1], color="#aa3377", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true DSC", ylabel="predicted DSC", title=cls)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _training_record(folder: Path) -> dict[str, Any]:
    """Epochs run, the kept epoch and its criterion, median seconds per epoch, initial weights.

    Read from the ``history.json`` and ``best.json`` that :func:`monai_qc.training.fit` writes.
    """
    history_file, kept_file = folder / "history.json", folder / "best.json"
    if not (history_file.is_file() and kept_file.is_file()):
        return {}
    history = json.loads(history_file.read_text())
    kept = json.loads(kept_file.read_text())
    return {
        "epochs": len(history),
        "best_epoch": kept["epoch"],
        "select_by": kept["select_by"],
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
        "init_weights": kept.get("init_weights"),
    }


def _evaluation_arrays(data: Path, patients: Sequence[str] | None) -> dict[str, np.ndarray]:
    """The test split's arrays or, given ``patients``, their samples from every split."""
    if patients is None:
        with np.load(data / "test.npz") as split:
            return {key: split[key] for key in split.files}
    wanted = set(patients)
    with open(data / "records.csv") as f:
        ids = [int(r["record"]) for r in csv.DictReader(f) if r["patient"] in wanted]
    if not ids:
        raise ValueError(f"{data / 'records.csv'}: no records of patients {', '.join(patients)}")
    parts: dict[str, list[np.ndarray]] = {}
    for name in SPLITS:
        with np.load(data / f"{name}.npz") as split:
            keep = np.isin(split["record"], ids)
            for key in split.files:
                parts.setdefault(key, []).append(split[key][keep])
    return {key: np.concatenate(values) for key, values in parts.items()}


def evaluate_run(
    data: Path,
    run: Path,
    out_dir: Path,
    threshold: float = 0.7,
    collected: Path | None = None,
    test_time_views: int = 1,
    patients: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate the networks in ``run`` on the test split of ``data``; write the tables.

    ``test_time_views``: 2D networks average each slice's prediction over that many mirrored /
    turned copies (:func:`monai_qc.networks.symmetric_views`), as a bundle can.
    ``patients``: evaluate the samples of these patients from every split instead (e.g. a
    model's own test patients in a rebuilt data set, whose split differs).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((data / "manifest.json").read_text())
    classes: list[str] = manifest["classes"]
    k, fg = len(classes), list(range(1, len(classes)))
    arrays = _evaluation_arrays(data, patients)
    test = samples_from_arrays(arrays)
    with open(data / "records.csv") as f:
        by_id = {int(r["record"]): r for r in csv.DictReader(f)}
    record_ids = np.unique(test.record)
    rows = [by_id[int(r)] for r in record_ids]
    true_3d = np.array([[float(r[f"dsc_{c}"]) for c in classes] for r in rows])
    present = (arrays["truth_area"] > 0) | (test.seg_area > 0)
    true_2d = np.where(present, test.dsc.numpy(), np.nan)
    results: dict[str, Any] = {
        "classes": classes[1:],
        "threshold": threshold,
        "test_time_views": test_time_views,
        "patients": sorted(patients) if patients else None,
        "n_slices": len(test),
        "n_subjects": len(rows),
        "networks": {},
    }
    errors_3d: dict[str, np.ndarray] = {}
    for name in QC_NETWORKS:  # registry order is the table order
        network = _load(run, name, k, test_time_views)
        if network is None:
            continue
        entry: dict[str, Any] = {"training": _training_record(run / name)}
        if name.endswith("2d"):
            pred = predict_2d(network, test)
            pred_2d = np.where(present, pred[:, :k], np.nan)
            entry["2d"] = {
                classes[j]: agreement(pred_2d[:, j], true_2d[:, j], threshold).to_dict() for j in fg
            }
            pred_3d = reconstruct_by_record(test, pred[:, :k], pred[:, k:], record_ids)
            _scatter(
                true_2d[:, fg],
                pred_2d[:, fg],
                classes[1:],
                f"{name}: slices",
                out_dir / f"{name}_2d.png",
            )
        else:
            inputs, _ = volume_inputs(test)
            with torch.inference_mode():
                pred_3d = network(inputs).numpy()
        entry["3d"] = {
            classes[j]: agreement(pred_3d[:, j], true_3d[:, j], threshold).to_dict() for j in fg
        }
        groups = [r["group"] for r in rows]
        entry["3d_by_group"] = {
            classes[j]: group_mae(pred_3d[:, j], true_3d[:, j], groups) for j in fg
        }
        entry["spearman_3d"] = {
            classes[j]: rank_correlation(pred_3d[:, j], true_3d[:, j]) for j in fg
        }
        _scatter(
            true_3d[:, fg],
            pred_3d[:, fg],
            classes[1:],
            f"{name}: subjects",
            out_dir / f"{name}_3d.png",
        )
        errors_3d[name] = np.abs(pred_3d - true_3d)
        results["networks"][name] = entry
    results["wilcoxon_2dr_vs_3d"] = {
        f"{a}_vs_{b}": {
            classes[j]: compare_errors(errors_3d[a][:, j], errors_3d[b][:, j]) for j in fg
        }
        for a, b in (
            ("resnet2d", "resnet3d"),
            ("context_resnet2d", "resnet3d"),
            ("expert_map_resnet2d", "resnet3d"),
            ("unet2d", "unet3d"),
        )
        if a in errors_3d and b in errors_3d
    }
    if collected is not None:
        agree = variant_agreement(collected, rows, manifest["class_values"])
        entropy = _entropy(collected, rows, k)
        results["baselines_spearman_3d"] = {
            "variant_agreement": {
                classes[j]: rank_correlation(agree[:, j], true_3d[:, j]) for j in fg
            },
            "negative_entropy": {
                classes[j]: rank_correlation(-entropy[:, j], true_3d[:, j]) for j in fg
            },
        }
    atomic_write_text(out_dir / "evaluation.json", json.dumps(jsonable(results), indent=1))
    atomic_write_text(out_dir / "evaluation.md", _markdown(results))
    return results


def score_table(results: dict[str, Any]) -> list[str]:
    """Markdown rows: MAE ± sd, Pearson r and accuracy per network, level and class."""
    classes = results["classes"]
    rows = [
        "| network | level | metric | " + " | ".join(classes) + " |",
        "|---" * (3 + len(classes)) + "|",
    ]
    formats = {
        "MAE ± sd": lambda cell: f"{cell['mae']:.3f} ± {cell['mae_sd']:.3f}",
        "Pearson r": lambda cell: f"{cell['pearson_r']:.3f}",
        "accuracy": lambda cell: f"{100 * cell['accuracy']:.1f} %",
    }
    for name, entry in results["networks"].items():
        for level in ("2d", "3d"):
            if level not in entry:
                continue
            label = "3D (2D_R)" if level == "3d" and name.endswith("2d") else level.upper()
            for metric, show in formats.items():
                cells = " | ".join(show(entry[level][c]) for c in classes)
                rows.append(f"| {name} | {label} | {metric} | {cells} |")
    return rows


def _training_sentence(results: dict[str, Any]) -> str:
    """How each network was trained (where its run folder says) and the test-time views."""
    trained = "; ".join(
        f"{name} {t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}"
        f"{' from earlier weights' if t.get('init_weights') else ''} "
        f"(kept {t['best_epoch']}, lowest {t['select_by']}; "
        f"median {t['seconds_per_epoch']:.0f} s per epoch)"
        for name, entry in results["networks"].items()
        if (t := entry.get("training"))
    )
    sentences = [f"Training: {trained}"] if trained else []
    if (views := results.get("test_time_views", 1)) > 1:
        sentences.append(
            f"2D networks: each slice's prediction averaged over {views} mirrored / turned "
            "copies of it"
        )
    return ". ".join(sentences)


def _markdown(results: dict[str, Any]) -> str:
    classes = results["classes"]
    lines = [
        f"# QC evaluation ({results['n_slices']} slices, {results['n_subjects']} subjects of "
        + (
            f"patients {', '.join(results['patients'])} from every split"
            if results.get("patients")
            else "the test split"
        )
        + f", good/bad threshold {results['threshold']})",
        "",
        *score_table(results),
        "",
        _training_sentence(results),
    ]
    for pair, values in results.get("wilcoxon_2dr_vs_3d", {}).items():
        lines += [
            "",
            f"Wilcoxon p (|error| {pair.replace('_vs_', ' 2D_R vs ')} 3D-direct): "
            + ", ".join(f"{c} {values[c]:.2g}" for c in classes),
        ]
    lines += [
        "",
        "Spearman rank correlation with the true 3D DSC:",
        "",
        "| method | " + " | ".join(classes) + " |",
        "|---" * (1 + len(classes)) + "|",
    ]
    for name, entry in results["networks"].items():
        lines.append(
            f"| {name} | " + " | ".join(f"{entry['spearman_3d'][c]:.3f}" for c in classes) + " |"
        )
    for name, values in results.get("baselines_spearman_3d", {}).items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.3f}" for c in classes) + " |")
    lines += ["", "3D MAE per pathology group:", ""]
    for name, entry in results["networks"].items():
        for c in classes:
            groups = entry["3d_by_group"][c]
            lines.append(
                f"- {name} {c}: "
                + ", ".join(f"{g} {v['mae']:.3f} (n={v['n']})" for g, v in groups.items())
            )
    return "\n".join(lines) + "\n"
