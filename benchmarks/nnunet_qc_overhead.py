"""How much QC adds to nnU-Net's own prediction time per ACDC case (no TTA, CPU).

Runs ``predict_with_qc`` twice over the same cases with a trained nnU-Net model: once with the
QC plugin blocked (plain nnU-Net prediction through the same predictor) and once with QC and
volume correction; the difference per case is the QC overhead.

Usage: python benchmarks/nnunet_qc_overhead.py --model MODEL_FOLDER --fold 5 \
    --checkpoint checkpoint_epoch0200.pth --images ../shared/data/Dataset027_ACDC/imagesTr \
    [--cases 10] [--threads 2]
Writes benchmarks/results/nnunet_qc_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from nnunet_hooks.default_plugin import QCSettings
from nnunet_hooks.environment import external_trainer_folder
from nnunet_hooks.predict_cli import predict_with_qc

OUT = Path(__file__).parent / "results" / "nnunet_qc_overhead.md"


def _run(images: Path, out: Path, args: argparse.Namespace, qc: bool) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    predict_with_qc(
        images,
        out,
        args.model,
        folds=(args.fold,),
        checkpoint_name=args.checkpoint,
        qc=QCSettings(bundle=args.bundle, correct_volumes=True),
        blocked=() if qc else ("qc",),
        device="cpu",
        num_processes_preprocessing=1,
        num_processes_segmentation_export=1,
        use_mirroring=False,
        allow_tqdm=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--fold", default="5")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["nnUNet_extTrainer"] = str(external_trainer_folder())  # noqa: SIM112 (nnU-Net's name)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for path in sorted(args.images.glob("*_0000.nii.gz"))[: args.cases]:
            os.symlink(path, images / path.name)
        _run(images, Path(tmp) / "warmup", args, qc=True)
        plain = _run(images, Path(tmp) / "plain", args, qc=False)
        with_qc = _run(images, Path(tmp) / "qc", args, qc=True)
    n = args.cases
    lines = [
        f"# QC overhead on nnU-Net prediction ({n} ACDC cases, CPU, {args.threads} threads, "
        "no TTA)",
        "",
        "| run | total s | s per case |",
        "|---|---|---|",
        f"| nnU-Net prediction (QC plugin blocked) | {plain:.1f} | {plain / n:.2f} |",
        f"| nnU-Net prediction + QC + volume correction | {with_qc:.1f} | {with_qc / n:.2f} |",
        "",
        f"QC adds {100 * (with_qc - plain) / plain:.1f} % to nnU-Net's prediction time "
        f"({(with_qc - plain) / n:.2f} s per case). Model: `{args.model.name}` fold {args.fold}, "
        f"`{args.checkpoint}`.",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
