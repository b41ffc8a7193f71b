"""``monai-qc bundle-info`` prints the identity that --bundle-sha256 pins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from monai_qc.bundle import resolve_bundle
from monai_qc.run_manifest import bundle_identity


def _info(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "monai_qc", "bundle-info", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_bundle_info_prints_the_pinned_identity(untrained_bundle: Path) -> None:
    shipped = _info()
    assert shipped.returncode == 0, shipped.stderr
    expected = bundle_identity(resolve_bundle(None))["sha256"]
    assert f"sha256: {expected}" in shipped.stdout.splitlines()
    own = _info("--bundle", str(untrained_bundle))
    assert f"sha256: {bundle_identity(untrained_bundle)['sha256']}" in own.stdout
    assert f"name: {untrained_bundle.name}" in own.stdout
    assert expected not in own.stdout
    missing = _info("--bundle", "no_such_bundle")
    assert missing.returncode == 2 and "no_such_bundle" in missing.stderr
