"""What ``monai-qc check`` finds before it checks a case: the report folder, names, files.

Problems of the whole run (a report folder that cannot be written, no case to check) raise
:class:`CheckRunError`, before any case is checked. A case whose name cannot be a report file
name gets a safe file name (see :func:`report_file_name`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from monai_qc.io import split_image_name
from monai_qc.run_manifest import RUN_MANIFEST_NAME

__all__ = [
    "CheckRunError",
    "describe",
    "ignored_files",
    "prepare_report_folder",
    "printable",
    "report_file_name",
    "shown",
    "unusable_case_name",
]

_MANIFEST_STEM = RUN_MANIFEST_NAME.removesuffix(".json")
_MAX_NAME_BYTES = 200
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_SHOWN = 10


class CheckRunError(Exception):
    """A problem of the whole run, not of one case: nothing (more) can be checked."""


def printable(text: str) -> str:
    """``text`` with undecodable file name bytes written as ``\\xNN`` (valid UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unusable_case_name(case: str) -> str | None:
    """Why ``case`` cannot name its report file ``<case>.json`` (None when it can)."""
    if case in ("", ".", ".."):
        return "is empty or a folder name"
    if any(c in case for c in "/\\\0"):
        return "holds a slash, backslash or NUL"
    if any(unicodedata.category(c) == "Cc" for c in case):
        return "holds a control character"
    if case.startswith("."):
        return "starts with a dot (hidden file)"
    if case.casefold() == _MANIFEST_STEM:
        return f"is the name of the run manifest ({RUN_MANIFEST_NAME})"
    if len(case.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        return f"is longer than {_MAX_NAME_BYTES} bytes"
    return None


def report_file_name(case: str) -> str:
    """``<case>.json``, or for a name :func:`unusable_case_name` refuses a safe derived name.

    The derived name keeps the name's letters, digits, ``.``, ``_`` and ``-`` (others become
    ``_``) and adds a hash of the full name, e.g. ``a\\b`` -> ``a_b~8e5f...json``.
    """
    if unusable_case_name(case) is None:
        return f"{case}.json"
    digest = hashlib.sha256(case.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = _UNSAFE_CHARS.sub("_", case).lstrip(".")[:80] or "case"
    return f"{stem}~{digest}.json"


def ignored_files(*folders: Path) -> list[str]:
    """Entries of ``folders`` that are not image files (``folder/name``, sorted, unique)."""
    found: set[str] = set()
    for folder in dict.fromkeys(folders):
        for path in folder.iterdir():
            if split_image_name(path.name) is None or not path.is_file():
                found.add(printable(str(path)))
    return sorted(found)


def shown(names: Iterable[str]) -> str:
    """The first names of a list, comma separated, with a count of the rest."""
    names = list(names)
    rest = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {rest} more" if rest > 0 else "")


def prepare_report_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and check that a file can be written there.

    Raises:
        CheckRunError: ``out_dir`` or a folder above it is a file, or the folder cannot be
            created or written (permissions, read-only or full file system).
    """
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                what = "is" if folder == out_dir else f"lies below {folder}, which is"
                raise CheckRunError(f"--out {out_dir}: {what} not a folder")
            break
    probe = out_dir / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "xb") as handle:
            handle.write(b"monai-qc")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise CheckRunError(f"--out {out_dir}: cannot be written: {describe(error)}") from error
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def describe(error: OSError) -> str:
    """An OS error in words, naming the full-disk case."""
    text = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        text += ": the disk is full"
    return f"{text} ({error.filename})" if error.filename else text
