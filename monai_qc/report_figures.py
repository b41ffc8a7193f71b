"""Figures of a case report: a strip of all slices framed by predicted DSC, flagged slices.

A slice's frame has the colour of its worst class against the report's own thresholds
(:mod:`monai_qc.report_levels`): red exactly where the slice is flagged, amber where a class
is doubtful, green otherwise, grey without any value or threshold.

Figures are PNG files in ``<out_dir>/figures/`` (see :func:`monai_qc.report.figure_paths`),
beside the HTML page that links them. Matplotlib is used through its object interface with
the Agg canvas, so no global backend is set.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from monai_qc.report import atomic_write_bytes, figure_paths
from monai_qc.report_levels import MARGIN, slice_levels, worst_level

__all__ = ["CLASS_COLOURS", "LEVEL_COLOURS", "write_case_figures"]

logger = logging.getLogger(__name__)

#: Contour colours of the foreground classes, in label-value order.
CLASS_COLOURS = ("#ffd400", "#ff2bd6", "#00e5ff", "#7cff4f", "#ff8c1a", "#b388ff")
#: Frame colours of a slice by the level of its worst class.
LEVEL_COLOURS = {"good": "#2e7d32", "warn": "#f9a825", "bad": "#c62828", "none": "#9e9e9e"}


def _classes(report: Mapping[str, Any]) -> list[tuple[str, int]]:
    labels = report.get("labels") or {}
    return sorted(((str(k), int(v)) for k, v in labels.items()), key=lambda kv: (kv[1], kv[0]))


def _dsc_matrix(report: Mapping[str, Any], names: list[str]) -> np.ndarray:
    """(S, C) predicted DSC per slice and foreground class, NaN where null."""
    rows = []
    for sl in report.get("slices") or []:
        dsc = sl.get("dsc") or {}
        values = (dsc.get(n) for n in names)
        rows.append([float(v) if isinstance(v, (int, float)) else math.nan for v in values])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))


def _colour(k: int) -> str:
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def _crop_box(segmentation: np.ndarray) -> tuple[slice, slice]:
    """In-plane box around all the foreground, padded; the whole slice without foreground."""
    height, width = segmentation.shape[1:]
    rows = np.flatnonzero(segmentation.any(axis=(0, 2)))
    cols = np.flatnonzero(segmentation.any(axis=(0, 1)))
    if not rows.size:
        return slice(0, height), slice(0, width)
    half = max(rows[-1] - rows[0], cols[-1] - cols[0]) * 0.8 + 8
    cy, cx = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    y0, x0 = max(int(cy - half), 0), max(int(cx - half), 0)
    return slice(y0, min(int(cy + half) + 1, height)), slice(x0, min(int(cx + half) + 1, width))


def _show(
    ax: Any,
    image: np.ndarray,
    seg: np.ndarray | None,
    classes: list[tuple[str, int]],
    window: tuple[float, float],
) -> None:
    """Grey image with one contour per class present."""
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    if seg is not None:
        for k, (_, value) in enumerate(classes):
            mask = seg == value
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[_colour(k)], linewidths=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig: Figure, classes: list[tuple[str, int]]) -> None:
    handles = [
        Line2D([], [], color=_colour(k), lw=2, label=name) for k, (name, _) in enumerate(classes)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, facecolor="white")
    return atomic_write_bytes(path, buffer.getvalue())


def _strip(
    report: Mapping[str, Any],
    image: np.ndarray,
    seg: np.ndarray,
    box: tuple[slice, slice],
    window: tuple[float, float],
    margin: float,
    max_slices: int,
) -> Figure:
    """Every slice (or ``max_slices`` of them, flagged ones kept) framed by its worst class."""
    classes = _classes(report)
    names = [n for n, _ in classes]
    dsc = _dsc_matrix(report, names)
    levels = slice_levels(report, margin)
    slices = report.get("slices") or []
    flagged = {i for i, s in enumerate(slices) if s.get("flagged")}
    shown = list(range(len(slices)))
    if len(shown) > max_slices:
        picks = set(np.linspace(0, len(shown) - 1, max_slices).round().astype(int).tolist())
        shown = sorted(picks | flagged)
    ncols = min(len(shown), 12)
    nrows = math.ceil(len(shown) / ncols)
    fig = Figure(figsize=(max(1.35 * ncols, 5.0), 1.6 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.set_visible(False)
    for ax, i in zip(axes.ravel(), shown, strict=False):
        _show(ax, image[i][box], seg[i][box], classes, window)
        row = dsc[i]
        lowest = float(np.nanmin(row)) if np.isfinite(row).any() else math.nan
        worst = "bad" if i in flagged else worst_level([levels[n][i] for n in names])
        colour = LEVEL_COLOURS[worst]
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(5 if i in flagged else 3)
        text = "–" if math.isnan(lowest) else f"{lowest:.2f}"
        ax.set_title(
            f"{'FLAGGED ' if i in flagged else ''}slice {slices[i].get('index', i)}\nDSC {text}",
            fontsize=8,
            color=LEVEL_COLOURS["bad"] if i in flagged else "black",
            fontweight="bold" if i in flagged else "normal",
        )
    _legend(fig, classes)
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.3 / height, top=1 - 0.32 / height, wspace=0.08, hspace=0.45
    )
    return fig


def _flagged(
    report: Mapping[str, Any],
    image: np.ndarray,
    seg: np.ndarray,
    box: tuple[slice, slice],
    window: tuple[float, float],
    chosen: list[int],
) -> Figure:
    """Each chosen slice twice: the image alone and with the segmentation contours."""
    classes = _classes(report)
    names = [n for n, _ in classes]
    dsc = _dsc_matrix(report, names)
    slices = report.get("slices") or []
    pairs_per_row = min(len(chosen), 3)
    nrows = math.ceil(len(chosen) / pairs_per_row)
    fig = Figure(figsize=(4.2 * pairs_per_row, 2.45 * nrows + 0.45))
    axes = fig.subplots(nrows, 2 * pairs_per_row, squeeze=False).ravel()
    for ax in axes[2 * len(chosen) :]:
        ax.set_visible(False)
    for k, i in enumerate(chosen):
        bare, drawn = axes[2 * k], axes[2 * k + 1]
        _show(bare, image[i][box], None, classes, window)
        _show(drawn, image[i][box], seg[i][box], classes, window)
        values = [
            f"{n} {'–' if math.isnan(v) else f'{v:.2f}'}"
            for n, v in zip(names, dsc[i], strict=True)
        ]
        lines = [", ".join(values[j : j + 3]) for j in range(0, len(values), 3)]
        bare.set_title(f"slice {slices[i].get('index', i)}", fontsize=9, fontweight="bold")
        drawn.set_title("DSC " + "\n".join(lines), fontsize=7.5)
    _legend(fig, classes)
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.3 / height, top=1 - 0.3 / height, wspace=0.05, hspace=0.3
    )
    return fig


def write_case_figures(
    report: Mapping[str, Any],
    image: np.ndarray,
    segmentation: np.ndarray,
    out_dir: str | Path,
    margin: float = MARGIN,
    max_slices: int = 48,
    max_flagged: int = 8,
) -> list[Path]:
    """Write the PNG figures of one case into ``<out_dir>/figures/``.

    ``<case>_slices.png``: every slice (image and segmentation contours) framed in green,
    amber or red by its worst class against the report's thresholds (red: below a slice
    threshold); flagged slices are titled FLAGGED.
    ``<case>_flagged.png`` (only when slices are flagged; a stale one is removed): each
    flagged slice at a larger size, without and with the contours.

    Args:
        report: the case report (``labels`` and ``slices`` with ``dsc`` and ``flagged``).
        image: the image (S, H, W) checked.
        segmentation: its segmentation (S, H, W), label values.
        out_dir: the folder of the HTML report.
        margin: width of the amber band (:func:`monai_qc.report_levels.colour_limits`).
        max_slices: most slices in the strip.
        max_flagged: most flagged slices drawn large.

    Returns:
        The files written (none for an error report).

    Raises:
        ValueError: the arrays are not 3D, differ in shape or do not match the report.
    """
    paths = figure_paths(str(report.get("case", "")), out_dir)
    if report.get("verdict") == "error" or not report.get("slices"):
        return []
    image = np.asarray(image, dtype=np.float32)
    seg = np.asarray(segmentation)
    n_slices = len(report["slices"])
    if image.ndim != 3 or image.shape != seg.shape or image.shape[0] != n_slices:
        raise ValueError(
            f"image {image.shape} and segmentation {seg.shape} must be (S, H, W) with the "
            f"report's {n_slices} slices"
        )
    box = _crop_box(seg > 0)
    low, high = np.percentile(image[:, box[0], box[1]], [1, 99])
    window = (float(low), float(max(high, low + 1e-6)))
    written = [_save(_strip(report, image, seg, box, window, margin, max_slices), paths["slices"])]
    chosen = [i for i, s in enumerate(report["slices"]) if s.get("flagged")][:max_flagged]
    if chosen:
        written.append(_save(_flagged(report, image, seg, box, window, chosen), paths["flagged"]))
    else:
        paths["flagged"].unlink(missing_ok=True)
    logger.debug("%s: wrote %s", report.get("case"), [p.name for p in written])
    return written
