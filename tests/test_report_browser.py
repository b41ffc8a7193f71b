"""The HTML report of a real ``check`` run, rendered by headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from monai_qc.check import check_folder
from monai_qc.inference import QCPredictor
from monai_qc.phantom import write_nnunet_dataset
from monai_qc.report_figures import LEVEL_COLOURS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1200,900",
)


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def screenshot(browser: str, page: Path, shot: Path, profile: Path) -> subprocess.CompletedProcess:
    command = [
        browser,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def frame_pixels(pixels: np.ndarray) -> int:
    """Pixels of the screenshot close to a frame colour of the slice strips."""
    count = 0
    for name in ("good", "warn", "bad"):
        rgb = np.array([int(LEVEL_COLOURS[name][k : k + 2], 16) for k in (1, 3, 5)])
        count += int((np.abs(pixels.astype(int) - rgb).sum(axis=-1) < 30).sum())
    return count


@pytest.mark.slow
def test_report_renders_in_chromium(untrained_bundle: Path, tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip(
            f"no Chromium binary on PATH (looked for {', '.join(BROWSERS)}); "
            "install it with: apt-get install -y chromium"
        )
    data = write_nnunet_dataset(tmp_path / "Dataset990_Phantom", 2, n_slices=8, size=(96, 96))
    predictor = QCPredictor.from_bundle(untrained_bundle)
    out = tmp_path / "qc"
    summary = check_folder(predictor, data / "imagesTr", data / "labelsTr", out, figures="all")
    assert summary.errors == 0 and summary.passed + summary.failed == 2
    strips = sorted((out / "figures").glob("*_slices.png"))
    assert [p.name for p in strips] == ["phantom_001_ED_slices.png", "phantom_001_ES_slices.png"]
    page = summary.html.read_text()
    assert all(f'src="figures/{p.name}"' in page for p in strips)
    assert page.count("segmented volume (mL)") == 2 and "myocardial mass (g)" in page

    shot = tmp_path / "report.png"
    run = screenshot(browser, summary.html, shot, tmp_path / "profile")
    assert shot.is_file(), f"no screenshot; chromium said:\n{run.stderr[-3000:]}"
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 20, "the page looks blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500, "too few colours for text + figures"
    assert frame_pixels(pixels) > 400, "the slice strip (coloured frames) is not visible"
