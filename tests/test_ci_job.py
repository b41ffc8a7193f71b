"""The README's CI job, run as written: its shell steps in order, each in ``bash -e`` as
GitHub Actions runs a ``run:`` step, stopping at the first that fails.

``check --no-fail`` lets the gate step run (and write its JUnit file) when a case fails; the
gate's exit status fails the job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from monai_qc.phantom import make_phantom, write_volume

README = Path(__file__).resolve().parents[1] / "README.md"

#: The job of the README's "CI gate" section.
CI_JOB = """\
qc:
  runs-on: ubuntu-latest
  steps:
    - uses: actions/checkout@v4  # your repository: images and segmentations
    - uses: actions/checkout@v4  # monai-qc (not on PyPI), from where your copy of it lives
      with: {repository: YOUR-ORG/monai-qc, path: monai-qc}
    - uses: actions/setup-python@v5
      with: {python-version: "3.11"}
    - run: pip install ./monai-qc
    - run: monai-qc check --images data/images --segs predictions --out qc --no-fail
    - run: monai-qc gate qc --junit qc/junit.xml
    - uses: actions/upload-artifact@v4
      if: always()
      with: {name: qc-report, path: qc}
"""


def run_steps(job: str) -> list[str]:
    """The shell commands of a job's ``run:`` steps, in order."""
    return [m[1].strip() for m in re.finditer(r"^\s*- run: (.+)$", job, flags=re.MULTILINE)]


def _blanked(labels: np.ndarray) -> np.ndarray:
    damaged = labels.copy()
    damaged[len(labels) // 2] = 0  # every class missing on the middle slice
    return damaged


def test_ci_job_runs_the_gate_and_writes_junit(tmp_path: Path) -> None:
    steps = run_steps(CI_JOB)
    assert steps[0] == "pip install ./monai-qc"  # installed here already (editable)
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "predictions").mkdir()
    for case, seed, damage in (("good", 8, None), ("gap", 9, _blanked)):
        image, labels = make_phantom(seed, n_slices=9, size=(128, 128))
        write_volume(image, tmp_path / "data" / "images" / f"{case}_0000.nii.gz")
        seg = labels if damage is None else damage(labels)
        write_volume(seg, tmp_path / "predictions" / f"{case}.nii.gz")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    codes = []
    for step in steps[1:]:
        run = subprocess.run(
            ["bash", "-e", "-c", step],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        codes.append(run.returncode)
        if run.returncode != 0:
            break
    assert codes == [0, 1], run.stdout + run.stderr  # check lets the gate run; the gate fails
    assert "FAIL gap:" in run.stdout and "1 of 2 cases passed" in run.stdout, run.stdout
    suite = ET.parse(tmp_path / "qc" / "junit.xml").getroot()
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == {"gap"}
    assert (tmp_path / "qc" / "report.html").is_file()


def test_readme_ci_job_is_the_tested_one() -> None:
    if not README.is_file():
        pytest.skip(f"{README} not found (installed package without the repository)")
    assert run_steps(CI_JOB) == run_steps(README.read_text(encoding="utf-8"))
