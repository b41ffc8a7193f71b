"""Run manifests: which cases a QC run was asked to check, from which inputs, with which model.

A run writes ``run_manifest.json`` into its report folder *before* the first case is checked.
It lists every expected case with the content hashes of its files, the bundle's identity and
the thresholds. Its ``run_id`` is a hash of that content, so rerunning the same inputs with the
same bundle and thresholds gives the same ``run_id`` (reruns stay byte-identical), and any
change of inputs, bundle or thresholds gives another. Every case report carries the
``run_id`` of the run that wrote it; ``monai-qc gate`` fails a case of the manifest whose
report is missing or carries another ``run_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_qc.errors import QCInputError

__all__ = [
    "MANIFEST_KIND",
    "RUN_MANIFEST_NAME",
    "CaseIdentity",
    "RunManifest",
    "array_sha256",
    "bundle_identity",
    "case_key",
    "file_sha256",
    "read_run_manifest",
    "write_run_manifest",
]

#: File name of the manifest inside a report folder (a case of that name is refused).
RUN_MANIFEST_NAME = "run_manifest.json"
#: Value of the manifest's ``kind`` key.
MANIFEST_KIND = "monai-qc run manifest"
_FORMAT_VERSION = 1
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def array_sha256(array: Any) -> str:
    """Hex SHA-256 of an array's values as C-ordered float32 (an image given in memory)."""
    import numpy as np

    values = np.ascontiguousarray(np.asarray(array), dtype=np.float32)
    return hashlib.sha256(values.tobytes()).hexdigest()


def _canonical_sha256(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def bundle_identity(root: str | Path) -> dict[str, str]:
    """Name, version and SHA-256 of a bundle folder (its ``configs/`` and ``models/`` files).

    The hash covers each file's path relative to the bundle and its bytes, so a changed
    weight file or config gives another identity; ``docs/`` and the licence do not count.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for sub in ("configs", "models"):
        for path in sorted(p for p in (root / sub).rglob("*") if p.is_file()):
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(file_sha256(path).encode("ascii") + b"\0")
    version = ""
    try:
        meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
        version = str(meta.get("version", "")) if isinstance(meta, dict) else ""
    except (OSError, json.JSONDecodeError):
        pass
    return {"name": root.name, "version": version, "sha256": digest.hexdigest()}


def case_key(
    image_sha256: str,
    segmentation_sha256: str | None,
    bundle_sha256: str,
    thresholds: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
) -> str:
    """Hash of everything a case's verdict depends on: inputs, model, thresholds, settings.

    A report may be reused for a case only when its ``qc_key`` equals this.
    """
    return _canonical_sha256(
        {
            "image": image_sha256,
            "segmentation": segmentation_sha256,
            "bundle": bundle_sha256,
            "thresholds": thresholds,
            "settings": dict(settings or {}),
        }
    )


@dataclass(frozen=True)
class CaseIdentity:
    """The files of one expected case and their hashes (None: not known when the run began)."""

    image: str | None = None
    image_sha256: str | None = None
    segmentation: str | None = None
    segmentation_sha256: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "image": self.image,
            "image_sha256": self.image_sha256,
            "segmentation": self.segmentation,
            "segmentation_sha256": self.segmentation_sha256,
        }


@dataclass(frozen=True)
class RunManifest:
    """The cases a run will check, with the bundle, thresholds and settings it checks them by.

    ``run_id`` is derived from the content (paths left out), see :meth:`create`.
    """

    run_id: str
    command: str
    bundle: dict[str, str]
    thresholds: dict[str, Any]
    cases: dict[str, CaseIdentity]
    settings: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    @classmethod
    def create(
        cls,
        command: str,
        bundle: Mapping[str, str],
        thresholds: Mapping[str, Any],
        cases: Mapping[str, CaseIdentity],
        settings: Mapping[str, Any] | None = None,
    ) -> RunManifest:
        """A manifest whose ``run_id`` hashes command, bundle, thresholds, settings, case hashes."""
        from monai_qc import __version__

        content = {
            "command": command,
            "bundle_sha256": bundle.get("sha256"),
            "thresholds": thresholds,
            "settings": dict(settings or {}),
            "cases": {
                case: [ident.image_sha256, ident.segmentation_sha256]
                for case, ident in sorted(cases.items())
            },
        }
        return cls(
            run_id=_canonical_sha256(content)[:20],
            command=command,
            bundle=dict(bundle),
            thresholds=json.loads(json.dumps(thresholds)),
            cases=dict(sorted(cases.items())),
            settings=dict(settings or {}),
            version=__version__,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": MANIFEST_KIND,
            "format_version": _FORMAT_VERSION,
            "run_id": self.run_id,
            "command": self.command,
            "monai_qc_version": self.version,
            "bundle": dict(self.bundle),
            "thresholds": self.thresholds,
            "settings": self.settings,
            "cases": {case: ident.to_dict() for case, ident in self.cases.items()},
        }


def write_run_manifest(manifest: RunManifest, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/run_manifest.json`` atomically."""
    from monai_qc.report import atomic_write_text

    text = json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(out_dir) / RUN_MANIFEST_NAME, text)


def read_run_manifest(report_dir: str | Path) -> RunManifest | None:
    """The manifest in ``report_dir``, or None when the folder has none.

    Raises:
        QCInputError: the manifest exists (or is a dangling link) but is unreadable or malformed.
    """
    path = Path(report_dir) / RUN_MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise QCInputError(path, f"run manifest cannot be read: {error}") from error
    except json.JSONDecodeError as error:
        raise QCInputError(path, f"run manifest is not valid JSON: {error}") from error
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise QCInputError(path, f"is not a monai-qc run manifest (no kind {MANIFEST_KIND!r})")
    run_id, cases = data.get("run_id"), data.get("cases")
    if not isinstance(run_id, str) or not run_id or not isinstance(cases, dict):
        raise QCInputError(path, "run manifest lacks a run_id or its cases")
    try:
        identities = {str(c): CaseIdentity(**(v or {})) for c, v in cases.items()}
    except TypeError as error:
        raise QCInputError(path, f"run manifest has malformed cases: {error}") from error
    return RunManifest(
        run_id=run_id,
        command=str(data.get("command", "")),
        bundle=dict(data.get("bundle") or {}),
        thresholds=dict(data.get("thresholds") or {}),
        cases=identities,
        settings=dict(data.get("settings") or {}),
        version=str(data.get("monai_qc_version", "")),
    )
