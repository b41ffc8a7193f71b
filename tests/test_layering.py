"""Imports run one way: the core package never imports the nnU-Net adapter.

``monai_qc`` (reading, rating, reporting, gating, building QC models) is the core;
``nnunet_hooks`` is the nnU-Net adapter built on it. Only the command line
(``monai_qc/commands``, ``monai_qc/cli.py``), which offers the adapter's commands, may import it.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND_LINE = {"cli.py", "__main__.py"}


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_never_imports_the_nnunet_adapter() -> None:
    core = [
        p
        for p in sorted((ROOT / "monai_qc").rglob("*.py"))
        if "commands" not in p.relative_to(ROOT / "monai_qc").parts and p.name not in COMMAND_LINE
    ]
    assert len(core) > 20
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.startswith("nnunet"))
        for p in core
    }
    assert {p: m for p, m in offenders.items() if m} == {}


def test_moved_collector_keeps_its_old_name_with_a_warning() -> None:
    from nnunet_hooks.true_scores import TrueScoreCollector

    with pytest.warns(DeprecationWarning, match="nnunet_hooks.true_scores"):
        from monai_qc.qc_collect import TrueScoreCollector as old
    assert old is TrueScoreCollector
    with warnings.catch_warnings(), pytest.raises(AttributeError):
        import monai_qc.qc_collect as module

        _ = module.no_such_name
