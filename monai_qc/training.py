"""Fitting QC networks on a QC data set (see :mod:`monai_qc.qc_dataset`).

2D networks learn per-slice DSC and MVSF of every class (2K outputs); 3D-direct networks learn
the K volume DSCs from the whole stack resized to 128 x 128 x 8. Loss MSE (MVSF terms weighted,
see :func:`output_weights`), Adam. The best
epoch on the validation split is kept; ``last.pt`` lets an interrupted run resume.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from tqdm import tqdm

from monai_qc.augmentation import augment_inputs, augment_with_expert_labels
from monai_qc.bundle import read_checkpoint, read_state_dict
from monai_qc.networks import build_qc_network
from monai_qc.report import atomic_write_text
from monai_qc.slice_damage import damage_batch, slice_scores
from monai_qc.transforms import stack_context

__all__ = [
    "QCSamples",
    "TrainConfig",
    "fit",
    "fit_slices",
    "initial_state",
    "load_samples",
    "samples_from_arrays",
    "save_atomic",
    "volume_inputs",
]

logger = logging.getLogger(__name__)


@dataclass
class QCSamples:
    """One split of a QC data set, as tensors (inputs are built batch by batch)."""

    image: torch.Tensor  # (N, H, W) float16
    seg: torch.Tensor  # (N, H, W) uint8 class indices
    dsc: torch.Tensor  # (N, K)
    mvsf: torch.Tensor  # (N, K)
    seg_area: np.ndarray  # (N, K)
    record: np.ndarray  # (N,)
    n_classes: int
    truth: torch.Tensor | None = None  # (N, H, W) uint8 expert labels, same crop as seg
    slice_index: np.ndarray | None = None  # (N,) slice of each sample within its record
    _eligible: torch.Tensor | None = field(default=None, repr=False)
    _rows: dict[tuple[int, int], int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def inputs(
        self, index: torch.Tensor, spatial_size: int | None = None, context: int = 0
    ) -> torch.Tensor:
        """Network inputs (B, 1+K, H, W) of the samples at ``index``.

        With ``context`` c > 0: (B, (2c+1)(1+K), H, W), each slice with its c neighbours on
        each side (:func:`monai_qc.transforms.with_context_slices`).
        """
        centre = self._inputs(self.image[index], self.seg[index], spatial_size)
        return self._with_context(index, centre, context, spatial_size)

    def neighbours(self, index: torch.Tensor, offset: int) -> torch.Tensor:
        """Row of the slice ``offset`` away from each sample in its record, or -1 (none)."""
        if self.slice_index is None:
            raise ValueError("no slice indices ('slice') in the data set; rebuild it")
        if self._rows is None:
            pairs = zip(self.record.tolist(), self.slice_index.tolist(), strict=True)
            self._rows = {pair: row for row, pair in enumerate(pairs)}
        record, slices = self.record[index.numpy()], self.slice_index[index.numpy()]
        found = [
            self._rows.get((int(r), int(z) + offset), -1)
            for r, z in zip(record, slices, strict=True)
        ]
        return torch.tensor(found, dtype=torch.long)

    def _with_context(
        self, index: torch.Tensor, centre: torch.Tensor, context: int, spatial_size: int | None
    ) -> torch.Tensor:
        if context == 0:
            return centre
        parts = []
        for offset in range(-context, context + 1):
            if offset == 0:
                parts.append(centre)
                continue
            rows = self.neighbours(index, offset)
            part = torch.zeros_like(centre)
            ok = rows >= 0
            if ok.any():
                part[ok] = self._inputs(self.image[rows[ok]], self.seg[rows[ok]], spatial_size)
            parts.append(part)
        return stack_context(parts)

    def _inputs(
        self, image: torch.Tensor, seg: torch.Tensor, spatial_size: int | None = None
    ) -> torch.Tensor:
        onehot = F.one_hot(seg.long(), self.n_classes).permute(0, 3, 1, 2).float()
        x = torch.cat([image.float().unsqueeze(1), onehot], dim=1)
        if spatial_size and spatial_size != x.shape[-1]:
            x = F.interpolate(x, size=(spatial_size, spatial_size), mode="area")
        return x

    def damage_eligible(self, tolerance: float = 0.05) -> torch.Tensor:
        """(N,) bool: slices whose crop scores match their stored true DSCs within ``tolerance``.

        Only these are damaged: their crop stands for the whole slice.
        """
        if self._eligible is None:
            if self.truth is None:
                raise ValueError("no expert labels ('truth') in the data set")
            dsc, _ = slice_scores(self.seg, self.truth, self.n_classes)
            self._eligible = (dsc - self.dsc).abs().amax(1) <= tolerance
        return self._eligible

    def damaged_batch(
        self,
        index: torch.Tensor,
        probability: float,
        generator: torch.Generator,
        context: int = 0,
        from_expert: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of ``index``, a ``probability`` share synthetically damaged.

        Damaged samples are scored against ``truth`` (see :mod:`monai_qc.slice_damage`, also
        for ``from_expert``); only the centre slice is damaged, its ``context`` neighbours keep
        their segmentation.
        """
        eligible = self.damage_eligible()[index]  # raises without expert labels
        assert self.truth is not None
        truth = self.truth[index]
        seg, damaged = damage_batch(
            self.seg[index], truth, probability, generator, eligible, from_expert
        )
        targets = self.targets(index)
        if damaged.any():
            dsc, mvsf = slice_scores(seg[damaged], truth[damaged], self.n_classes)
            targets[damaged] = torch.cat([dsc, mvsf], dim=1)
        centre = self._inputs(self.image[index], seg)
        return self._with_context(index, centre, context, None), targets

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """Targets (B, 2K): DSCs then MVSFs."""
        return torch.cat([self.dsc[index], self.mvsf[index]], dim=1)


def load_samples(path: Path) -> QCSamples:
    """Read one split (``train.npz``, ``val.npz`` or ``test.npz``)."""
    with np.load(path) as data:
        return samples_from_arrays({key: data[key] for key in data.files})


def samples_from_arrays(data: Mapping[str, np.ndarray]) -> QCSamples:
    """QC samples from the arrays of a split file (or a selection of its rows)."""
    return QCSamples(
        torch.from_numpy(data["image"]),
        torch.from_numpy(data["seg"]),
        torch.from_numpy(data["dsc"]).float(),
        torch.from_numpy(data["mvsf"]).float(),
        data["seg_area"],
        data["record"],
        int(data["dsc"].shape[1]),
        torch.from_numpy(data["truth"]) if "truth" in data else None,
        data.get("slice"),
    )


def volume_inputs(samples: QCSamples, depth: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """3D-direct inputs (R, 1+K, H, W, depth) per record (slices resized by nearest neighbour)."""
    records = np.unique(samples.record)
    volumes = []
    for r in records:
        index = torch.from_numpy(np.flatnonzero(samples.record == r))
        stack = samples.inputs(index)  # (S, C, H, W)
        pick = np.floor((np.arange(depth) + 0.5) * len(index) / depth).astype(int)
        volumes.append(stack[pick].permute(1, 2, 3, 0))
    return torch.stack(volumes), records


def record_targets(records_csv: Path, classes: list[str]) -> dict[int, np.ndarray]:
    """True volume DSC per record id (K values, background first; absent from both: 1)."""
    with open(records_csv) as f:
        return {
            int(row["record"]): np.nan_to_num(
                np.array([float(row[f"dsc_{c}"]) for c in classes]), nan=1.0
            )
            for row in csv.DictReader(f)
        }


SELECTION_CRITERIA = {"val_dsc_mae": "validation DSC MAE", "val_loss": "validation loss"}
"""History keys a run can keep its best epoch by (the lowest value), with their names."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run."""

    network: str = "resnet2d"
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    spatial_size: int = 128
    augment: bool = True
    mvsf_weight: float = 0.1
    damage_probability: float = 0.0
    select_by: str = "val_dsc_mae"
    init_weights: str | None = None  # state dict (.pt) or QC bundle folder to start from
    expert_map_weight: float = 0.1  # Dice + cross-entropy of an expert-label map, if predicted
    damage_from_expert: float = 0.0  # share of damaged slices damaged from the expert labels

    def __post_init__(self) -> None:
        if self.select_by not in SELECTION_CRITERIA:
            raise ValueError(
                f"select_by {self.select_by!r}; known: {', '.join(SELECTION_CRITERIA)}"
            )
        if not 0.0 <= self.damage_from_expert <= 1.0:
            raise ValueError(f"damage_from_expert must be in [0, 1], got {self.damage_from_expert}")


def initial_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict to start fitting from: a ``.pt`` file or a QC bundle's ``models/model.pt``.

    Raises:
        FileNotFoundError: neither exists.
        ValueError: the file is not a readable state dict.
    """
    path = Path(path)
    file = path / "models" / "model.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no initial weights (a .pt file or a QC bundle folder)")
    return read_state_dict(file)


def output_weights(config: TrainConfig, n_outputs: int, n_classes: int) -> torch.Tensor:
    """Loss weight of each output: 1 for DSCs, ``config.mvsf_weight`` for MVSFs.

    MVSF spans [-2, 2] and its variance on a QC data set is about ten times that of DSC, so
    unweighted MSE spends the network on MVSF; the default 0.1 gives both similar shares.
    """
    weights = torch.ones(n_outputs)
    if n_outputs == 2 * n_classes:
        weights[n_classes:] = config.mvsf_weight
    return weights


def fit(
    config: TrainConfig,
    train_x: Any,
    train_y: torch.Tensor,
    val_x: Any,
    val_y: torch.Tensor,
    n_classes: int,
    out_dir: Path,
    train_batch: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    | None = None,
    expert_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.nn.Module:
    """Fit a QC network; ``*_x`` are callables index -> inputs, or input tensors.

    ``train_batch`` (index, generator) -> (inputs, targets), when given, makes the training
    batches instead of ``train_x`` / ``train_y`` (synthetic damage changes both).
    ``expert_labels`` index -> (B, H, W) expert class indices: required by networks that map
    them (``maps_expert_labels``), whose loss adds ``config.expert_map_weight`` times the Dice +
    cross-entropy of that map; they are augmented with the inputs. Each epoch's ``train_loss``
    is the score loss alone, comparable between networks; the map's loss is ``train_map_loss``.

    The network starts from ``config.init_weights`` when given (fine-tuning), unless
    ``last.pt`` resumes the run. Writes ``best.pt`` (state dict of the best validation epoch by
    ``config.select_by``), ``best.json`` (that epoch's history entry, the criterion and any
    ``init_weights``), ``last.pt`` (resumable checkpoint) and ``history.json`` to ``out_dir``;
    returns the network with the best weights. ``last.pt`` is read as data only
    (``weights_only``): one that names code is refused, not run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = build_qc_network(config.network, n_classes)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history: list[dict[str, float]] = []
    best, start = float("inf"), 0
    last = out_dir / "last.pt"
    if last.is_file():
        state = read_checkpoint(last)  # data only: a checkpoint naming code is refused
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history, best, start = state["history"], state["best"], state["epoch"]
        logger.info("resuming %s at epoch %d", config.network, start)
    elif config.init_weights:
        try:
            network.load_state_dict(initial_state(config.init_weights))
        except RuntimeError as error:  # other network or class count
            raise ValueError(
                f"{config.init_weights}: these weights do not fit a {config.network} network "
                f"with {n_classes} classes"
            ) from error
        logger.info("%s starts from the weights in %s", config.network, config.init_weights)
    get_train = train_x if callable(train_x) else train_x.__getitem__
    get_val = val_x if callable(val_x) else val_x.__getitem__
    n_train, n_val = len(train_y), len(val_y)
    weights = output_weights(config, train_y.shape[1], n_classes)
    if network.maps_expert_labels and expert_labels is None:
        raise ValueError(f"{config.network} learns from expert labels; none were given")
    map_loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def weighted_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((prediction - target) ** 2 * weights).mean()

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        network.train()
        order = torch.randperm(n_train, generator=generator)
        losses, map_losses = [], []
        batches = order.split(config.batch_size)
        for index in tqdm(batches, desc=f"{config.network} epoch {epoch + 1}", leave=False):
            if train_batch is None:
                x, y = get_train(index), train_y[index]
            else:
                x, y = train_batch(index, generator)
            truth = expert_labels(index) if network.maps_expert_labels else None
            if config.augment and x.dim() == 4:
                if truth is None:
                    x = augment_inputs(x, generator, 2 * network.context_slices + 1)
                else:
                    x, truth = augment_with_expert_labels(x, truth, generator)
            if truth is None:
                loss = score_loss = weighted_mse(network(x), y)
            else:
                scores, logits = network.forward_with_map(x)
                score_loss = weighted_mse(scores, y)
                expert_map_loss = map_loss(logits, truth[:, None].long())
                loss = score_loss + config.expert_map_weight * expert_map_loss
                map_losses.append(expert_map_loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(score_loss.item())
        scheduler.step()
        network.eval()
        with torch.inference_mode():
            val_pred = torch.cat(
                [network(get_val(i)) for i in torch.arange(n_val).split(config.batch_size)]
            )
        val_loss = float(weighted_mse(val_pred, val_y))
        k = n_classes
        val_mae = float((val_pred[:, :k] - val_y[:, :k]).abs().mean())
        # train_loss is the score loss of every network; an expert-label map's own loss apart
        history.append(
            {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
             "val_dsc_mae": val_mae, "seconds": time.perf_counter() - t0}
        )  # fmt: skip
        if map_losses:
            history[-1]["train_map_loss"] = float(np.mean(map_losses))
        if (score := history[-1][config.select_by]) < best:
            best = score
            save_atomic(network.state_dict(), out_dir / "best.pt")
            kept = {**history[-1], "select_by": config.select_by}
            if config.init_weights:
                kept["init_weights"] = str(config.init_weights)
            atomic_write_text(out_dir / "best.json", json.dumps(kept, indent=1))
        save_atomic(
            {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
             "history": history, "best": best, "epoch": epoch + 1},
            last,
        )  # fmt: skip
        atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
        logger.info("%s epoch %d: %s", config.network, epoch + 1, history[-1])
    network.load_state_dict(torch.load(out_dir / "best.pt", map_location="cpu", weights_only=True))
    return network.eval()


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, so an interrupted run keeps the last whole one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def fit_slices(data: Path, out_dir: Path, config: TrainConfig) -> torch.nn.Module:
    """Fit a 2D QC network on a QC data set folder (``train.npz`` / ``val.npz``).

    This is what ``monai-qc train`` runs for 2D networks and what the bundles'
    ``configs/train.json`` calls; outputs as :func:`fit` (``best.pt`` holds the weights that
    go to a bundle's ``models/model.pt``).
    """
    data, out_dir = Path(data), Path(out_dir)
    classes = json.loads((data / "manifest.json").read_text())["classes"]
    train_set, val_set = load_samples(data / "train.npz"), load_samples(data / "val.npz")
    probe = build_qc_network(config.network, len(classes))
    context, maps_expert_labels = probe.context_slices, probe.maps_expert_labels
    if (config.damage_probability > 0 or maps_expert_labels) and train_set.truth is None:
        raise ValueError(
            f"{data / 'train.npz'}: no expert labels ('truth') for synthetic damage or an "
            "expert-label map; rebuild the data set with this version, or set "
            "damage_probability to 0 and train another network"
        )
    train_batch = None
    if config.damage_probability > 0:

        def train_batch(
            index: torch.Tensor, generator: torch.Generator
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return train_set.damaged_batch(
                index, config.damage_probability, generator, context, config.damage_from_expert
            )

    return fit(
        config,
        lambda index: train_set.inputs(index, context=context),
        train_set.targets(torch.arange(len(train_set))),
        lambda index: val_set.inputs(index, context=context),
        val_set.targets(torch.arange(len(val_set))),
        len(classes),
        out_dir,
        train_batch,
        (lambda index: train_set.truth[index]) if maps_expert_labels else None,
    )
