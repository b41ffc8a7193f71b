"""The wheel ships every bundle: pyproject.toml names each bundle's folders as packages."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_FOLDERS = {"configs": ["*.json", "*.conf"], "docs": ["*"], "models": ["*.pt"]}


def test_every_bundle_folder_is_a_package_with_its_data() -> None:
    """A bundle added under bundles/ without its pyproject entries would miss from the wheel."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, package_data = set(setuptools["packages"]), setuptools["package-data"]
    bundles = sorted(
        p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/metadata.json")
    )
    assert bundles, "no bundle found under bundles/"
    for name in bundles:
        package = f"monai_qc.bundles.{name}"
        assert package in packages and package_data[package] == ["LICENSE"], name
        for folder, patterns in BUNDLE_FOLDERS.items():
            assert f"{package}.{folder}" in packages, f"{package}.{folder}"
            assert package_data[f"{package}.{folder}"] == patterns, f"{package}.{folder}"
            for pattern in patterns:  # configs/*.conf: logging.conf, as monai.bundle run expects
                shipped = list((ROOT / "bundles" / name / folder).glob(pattern))
                assert shipped, f"bundles/{name}/{folder} holds no {pattern}"
