"""QC time per 10-slice subject on the CPU: model forward (both backbones) and a whole check.

Usage: python benchmarks/qc_speed.py [--threads 2] [--repeats 20] [--bundle NAME_OR_PATH]
Writes benchmarks/results/qc_speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monai_qc.check import check_folder
from monai_qc.inference import QCPredictor, class_indices
from monai_qc.networks import build_qc_network, count_parameters
from monai_qc.phantom import PHANTOM_SPACING, make_phantom, write_volume

OUT = Path(__file__).parent / "results" / "qc_speed.md"


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bundle", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    predictor = QCPredictor.from_bundle(args.bundle)
    height, width = predictor.preprocessing.spatial_size
    # the unbundled networks at the bundle's input size: image + K one-hot channels
    x = torch.rand(10, 1 + predictor.n_classes, height, width)
    for name in ("resnet2d", "expert_map_resnet2d", "unet2d"):
        net = build_qc_network(name, predictor.n_classes).eval()
        with torch.inference_mode():
            median, best = _time(lambda net=net: net(x), args.repeats)
        size = f"10 slices of {height} x {width}"
        rows.append((f"{name} forward, {size}", count_parameters(net), median, best))
    image, labels = make_phantom(0, n_slices=10, size=(256, 216))
    # the bundle's own preprocessing of a subject: whatever channels its network reads
    shipped = torch.as_tensor(
        predictor.preprocessing(image.astype(np.float32), class_indices(labels, predictor.labels))
    )
    with torch.inference_mode():
        median, best = _time(lambda: predictor.network(shipped), args.repeats)
    views = getattr(predictor.network, "test_time_views", 1)
    flip = f", averaged over {views} mirrored / turned copies" if views > 1 else ""
    rows.append(
        (
            f"bundled network forward, 10 slices of {height} x {width}{flip}",
            count_parameters(predictor.network),
            median,
            best,
        )
    )
    median, best = _time(lambda: predictor.predict(image, labels, PHANTOM_SPACING), args.repeats)
    rows.append(("QCPredictor.predict (crop, CLAHE, forward, 2D_R)", None, median, best))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "img").mkdir()
        (folder / "seg").mkdir()
        write_volume(image, folder / "img" / "c_0000.nii.gz")
        write_volume(labels, folder / "seg" / "c.nii.gz")
        median, best = _time(
            lambda: check_folder(
                predictor, folder / "img", folder / "seg", folder / "qc", overwrite=True
            ),
            max(3, args.repeats // 4),
        )
        rows.append(("monai-qc check of one case (I/O, QC, figures, reports)", None, median, best))
    lines = [
        f"# QC speed, 10-slice subject, CPU, {args.threads} threads ({torch.__version__})",
        "",
        "| what | parameters | median ms | best ms |",
        "|---|---|---|---|",
    ]
    lines += [f"| {w} | {p or ''} | {m:.0f} | {b:.0f} |" for w, p, m, b in rows]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
