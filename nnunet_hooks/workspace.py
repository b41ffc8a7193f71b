"""Folder layout of a checkpoint-variant run, and nnU-Net planning inside it."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from monai_qc.io import labelled_case_ids
from nnunet_hooks.environment import nnunet_environment
from nnunet_hooks.variants import VariantSpec

__all__ = ["VariantWorkspace"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantWorkspace:
    """A run's working folder: nnU-Net's three folders, logs, variants and collected data.

    Attributes:
        root: the working folder.
        dataset: the nnU-Net raw data set (``DatasetXXX_Name`` with imagesTr/labelsTr); it is
            linked, never copied, into ``root/nnUNet_raw``.
    """

    root: Path
    dataset: Path

    @property
    def dataset_name(self) -> str:
        """nnU-Net data set name, e.g. ``Dataset027_ACDC``."""
        return self.dataset.name

    @property
    def dataset_id(self) -> int:
        """nnU-Net data set number."""
        return int(self.dataset_name[len("Dataset") : len("Dataset") + 3])

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    @property
    def preprocessed_dataset(self) -> Path:
        return self.preprocessed / self.dataset_name

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def variants_file(self) -> Path:
        return self.root / "variants.json"

    @property
    def collected(self) -> Path:
        """Segmentations and true scores of every checkpoint run."""
        return self.root / "collected"

    @classmethod
    def load(cls, root: Path) -> VariantWorkspace:
        """The workspace of an existing run (its data set is the linked raw data set)."""
        links = (
            sorted((root / "nnUNet_raw").glob("Dataset*")) if (root / "nnUNet_raw").is_dir() else []
        )
        if not links:
            raise FileNotFoundError(f"{root}: not a variant workspace (run 'variants train' first)")
        return cls(root, links[0].resolve())

    def environment(self) -> dict[str, str]:
        """Environment for nnU-Net subprocesses working in this folder."""
        return nnunet_environment(self.raw, self.preprocessed, self.results)

    def plan_and_preprocess(self, configuration: str = "2d") -> Path:
        """Run nnU-Net's planning and preprocessing once; return the plans file."""
        for folder in (self.raw, self.preprocessed, self.results, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        link = self.raw / self.dataset_name
        if not link.exists():
            link.symlink_to(self.dataset.resolve(), target_is_directory=True)
        plans = self.preprocessed_dataset / "nnUNetPlans.json"
        if not (self.preprocessed_dataset / f"nnUNetPlans_{configuration}").is_dir():
            cmd = [
                "nnUNetv2_plan_and_preprocess",
                "-d",
                str(self.dataset_id),
                "-c",
                configuration,
                "-np",
                "2",
                "-npfp",
                "2",
            ]
            logger.info("planning and preprocessing: %s", " ".join(cmd))
            with open(self.logs / "plan_and_preprocess.log", "a") as log:
                subprocess.run(
                    cmd, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, check=True
                )
        return plans

    def case_ids(self) -> list[str]:
        """Identifiers of the labelled cases (from labelsTr)."""
        return labelled_case_ids(self.dataset)

    def save_variants(self, variants: list[VariantSpec]) -> None:
        self.variants_file.write_text(json.dumps([asdict(v) for v in variants], indent=1))

    def load_variants(self) -> list[VariantSpec]:
        rows = json.loads(self.variants_file.read_text())
        return [VariantSpec(**{**r, "patch_size": tuple(r["patch_size"])}) for r in rows]
