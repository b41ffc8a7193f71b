"""QC bundles: MONAI bundle folders carrying the QC network, its transforms and thresholds.

A bundle folder holds ``configs/inference.json`` (parsed with MONAI's ``ConfigParser``),
``configs/metadata.json`` and ``models/model.pt`` (the network's state dict). The inference
config defines at least ``labels`` (foreground class name -> label value), ``network_def``,
``preprocessing`` and ``thresholds``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_qc.errors import BundleError

__all__ = [
    "DEFAULT_BUNDLE",
    "load_bundle",
    "read_checkpoint",
    "read_state_dict",
    "resolve_bundle",
    "shipped_bundles",
]

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = "cmr_acdc_qc"


def shipped_bundles() -> dict[str, Path]:
    """Bundles installed with the package, by name."""
    found: dict[str, Path] = {}
    try:
        root = Path(str(resources.files("monai_qc.bundles")))
    except ModuleNotFoundError:
        return found
    for config in sorted(root.glob("*/configs/inference.json")):
        found[config.parent.parent.name] = config.parent.parent
    return found


def resolve_bundle(path_or_name: str | Path | None = None) -> Path:
    """The folder of a bundle given by path, by shipped name, or the default bundle."""
    if path_or_name is None:
        path_or_name = DEFAULT_BUNDLE
    path = Path(path_or_name)
    if path.is_dir():
        if not (path / "configs" / "inference.json").is_file():
            raise BundleError(f"{path}: not a QC bundle (no configs/inference.json)")
        return path
    shipped = shipped_bundles()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    known = ", ".join(shipped) or "none installed"
    raise BundleError(
        f"{path_or_name}: no such bundle folder, and no shipped bundle of that name "
        f"(shipped: {known}); pass --bundle PATH to a bundle folder"
    )


def load_bundle(path_or_name: str | Path | None = None) -> tuple[ConfigParser, Path]:
    """Parse a bundle's inference config; ``bundle_root`` is set to the bundle folder."""
    root = resolve_bundle(path_or_name).resolve()
    parser = ConfigParser()
    try:
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.read_meta(str(root / "configs" / "metadata.json"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{root}: unreadable bundle config: {error}") from error
    parser["bundle_root"] = str(root)
    for key in ("labels", "network_def", "preprocessing", "thresholds"):
        if key not in parser.get():
            raise BundleError(f"{root}/configs/inference.json: missing '{key}'")
    return parser, root


def _numpy_scalar_globals() -> list[Any]:
    """What ``torch.load(weights_only=True)`` needs to rebuild numpy scalars (data, no code)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
             np.uint64, np.float16, np.float32, np.float64)  # fmt: skip
    return [scalar, np.dtype, *(type(np.dtype(kind)) for kind in kinds)]


def read_checkpoint(path: str | Path, allow_code: bool = False) -> Any:
    """A PyTorch checkpoint read as data: ``weights_only=True``, numpy scalars allowed.

    Tensors, containers, numbers, strings, ``torch.device`` and numpy scalars (nnU-Net's
    training logs hold them) load without running code from the file. A checkpoint holding
    other objects is refused, unless ``allow_code``: it is then read with
    ``weights_only=False``, which runs whatever code the file's pickle names, so only for
    files the caller trusts (its own training runs); such a load is logged with the file.

    Raises:
        ValueError: the file cannot be read, or (without ``allow_code``) holds objects
            other than data.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign file: torch raises several kinds
        if not str(error).startswith("Weights only load failed"):
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error!r})") from error
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = found[1] if found else "objects"
        if not allow_code:
            raise ValueError(
                f"{path}: holds {what}, not only tensors and plain data; not loaded, "
                "since loading it would run code named by the file"
            ) from error
        logger.warning(
            "%s: holds %s, not only tensors and plain data; loading it as trusted code "
            "(torch.load weights_only=False)",
            path,
            what,
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error!r})") from error


def read_state_dict(weights_file: Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: a plain state dict or a checkpoint holding one.

    Raises:
        ValueError: the file is not readable by ``torch.load`` or holds no state dict.
    """
    try:
        state: Any = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign file: torch raises several kinds
        raise ValueError(f"{weights_file}: not a readable PyTorch state dict ({error})") from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not (isinstance(state, Mapping) and all(torch.is_tensor(v) for v in state.values())):
        raise ValueError(
            f"{weights_file}: not a state dict (a mapping of parameter names to tensors)"
        )
    return dict(state)


def load_weights(network: torch.nn.Module, weights_file: Path) -> None:
    """Load a state dict (or a checkpoint holding ``state_dict``) into ``network``."""
    if not weights_file.is_file():
        raise BundleError(f"{weights_file}: the bundle has no trained weights")
    try:
        state = read_state_dict(weights_file)
    except ValueError as error:
        raise BundleError(str(error)) from error
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise BundleError(f"{weights_file}: weights do not fit the network: {error}") from error
