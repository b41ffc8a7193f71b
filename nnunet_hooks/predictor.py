"""``QCnnUNetPredictor``: nnU-Net's predictor, firing the monai-qc hooks as cases are segmented.

nnU-Net resamples and writes every segmentation in a pool of worker processes. This subclass
hands those workers :func:`export_segmentation`, which writes exactly what nnU-Net writes and
also sends the segmentation back; the main process polls the workers and, as soon as a case is
written, reads channel 0 of its input image and fires ``case_segmented`` (in the main process,
so plugins need not be picklable). ``run_started`` and ``run_finished`` enclose the run.

``run_started`` receives the run's cases in ``config["cases"]`` (see :class:`QCnnUNetPredictor`),
so a plugin can record what the run is expected to deliver before the first case.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from multiprocessing.pool import AsyncResult
from typing import Any

import numpy as np
import pluggy
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import save_pickle
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.export_prediction import (
    convert_predicted_logits_to_segmentation_with_correct_shape,
)
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.utilities.helpers import empty_cache
from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

from monai_qc.run_manifest import array_sha256
from nnunet_hooks.hookspecs import SegmentedCase

__all__ = ["QCnnUNetPredictor", "export_segmentation"]

logger = logging.getLogger(__name__)

#: Key added to nnU-Net's iterator items: the case's input files (or input array).
SOURCE_KEY = "qc_source"
#: Cases waiting for export beyond the number of workers, as in nnU-Net.
_QUEUED = 2
_Done = dict[int, tuple[str, Any]]  # case index -> (case id, what nnU-Net returns for it)
_Pending = list[tuple[int, dict, AsyncResult]]  # case index, iterator item, export job


def export_segmentation(
    logits: np.ndarray,
    properties: dict,
    configuration_manager: Any,
    plans_manager: Any,
    dataset_json: dict,
    ofile: str | None,
    save_probabilities: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """nnU-Net's export of one case (``export_prediction_from_logits``) that also returns it.

    Returns:
        The segmentation in the geometry of the input image, the probabilities (when
        ``save_probabilities``) and what nnU-Net's predictor returns for the case (None when
        written to ``ofile``).
    """
    label_manager = plans_manager.get_label_manager(dataset_json)
    converted = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits,
        plans_manager,
        configuration_manager,
        label_manager,
        properties,
        return_probabilities=save_probabilities,
    )
    segmentation, probabilities = converted if save_probabilities else (converted, None)
    if ofile is None:
        return segmentation, probabilities, converted
    if probabilities is not None:
        np.savez_compressed(ofile + ".npz", probabilities=probabilities)
        save_pickle(properties, ofile + ".pkl")
    writer = plans_manager.image_reader_writer_class()
    writer.write_seg(segmentation, ofile + dataset_json["file_ending"], properties)
    return segmentation, probabilities, None


def _with_sources(
    iterator: Iterable[dict], sources: Sequence[Any], ofiles: Sequence[str] | None
) -> Iterator[dict]:
    """nnU-Net's preprocessed items, each with its input under :data:`SOURCE_KEY`."""
    by_ofile = dict(zip(ofiles, sources, strict=False)) if ofiles else {}
    for index, item in enumerate(iterator):
        fallback = sources[index] if index < len(sources) else None
        item[SOURCE_KEY] = by_ofile.get(item.get("ofile"), fallback)  # type: ignore[arg-type]
        yield item


def _case_id(ofiles: Sequence[str | None] | None, index: int) -> str:
    """The id of the run's ``index``-th case: its output file's name, else ``case_<index>``."""
    ofile = ofiles[index] if ofiles else None
    return os.path.basename(ofile) if ofile else f"case_{index:04d}"


class QCnnUNetPredictor(nnUNetPredictor):
    """nnUNetPredictor that fires ``run_started``, ``case_segmented`` and ``run_finished``.

    Outputs are those of ``nnUNetPredictor``: same files, same return values.

    Args:
        hook: the plugin manager, or its hook relay (``manager.hook``).
        config: settings for the plugins (e.g. ``{"qc": {...}}``); ``run_started`` receives
            it with ``model`` (what segments, merged with ``config["model"]``), ``labels``
            (the data set's foreground labels) and ``cases`` added.
        **kwargs: arguments of ``nnUNetPredictor``.

    ``config["cases"]`` maps every case id to ``{"image": channel-0 file or None, "remake":
    bool}`` (an array input has ``"image_sha256"``, the SHA-256 of its channel 0 as float32,
    instead of a file). It lists every case of the input, also those of other ``part_id``s and
    those ``overwrite=False`` skips, so every part of a run describes the same cases; ``remake``
    is True for the cases this process segments (again). It is absent when the cases are not
    known (a data iterator given directly).
    """

    def __init__(
        self,
        hook: pluggy.HookRelay | pluggy.PluginManager,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook = hook.hook if isinstance(hook, pluggy.PluginManager) else hook
        self.config = dict(config or {})
        self.summary: dict[str, Any] = {}
        self._output_folder: str | None = None
        self._expected: dict[str, dict[str, Any]] | None = None
        self._cases: dict[str, dict[str, Any]] | None = None

    def run_config(self) -> dict[str, Any]:
        """The configuration handed to ``run_started``."""
        model = {
            "trainer": self.trainer_name,
            "dataset": self.plans_manager.dataset_name,
            "plans": self.plans_manager.plans_name,
            **self.config.get("model", {}),
        }
        labels = {str(k): v for k, v in self.dataset_json["labels"].items() if v != 0}
        config = {**self.config, "model": model, "labels": labels}
        if self._cases is not None:
            config["cases"] = {**(self._expected or {}), **self._cases}
        return config

    def _manage_input_and_output_lists(
        self,
        list_of_lists_or_source_folder: str | list[list[str]],
        output_folder_or_list_of_truncated_output_files: str | list[str] | None,
        folder_with_segs_from_prev_stage: str | None = None,
        overwrite: bool = True,
        part_id: int = 0,
        num_parts: int = 1,
        save_probabilities: bool = False,
    ) -> tuple[list[list[str]], list[str] | None, list[str | None]]:
        """nnU-Net's lists of this process's cases; every case of the input is remembered."""
        if isinstance(list_of_lists_or_source_folder, str):
            list_of_lists_or_source_folder = create_lists_from_splitted_dataset_folder(
                list_of_lists_or_source_folder, self.dataset_json["file_ending"]
            )
        outputs = output_folder_or_list_of_truncated_output_files
        if isinstance(outputs, str):
            cut = len(self.dataset_json["file_ending"]) + 5  # "_0000" and the file ending
            names = [os.path.basename(files[0])[:-cut] for files in list_of_lists_or_source_folder]
        else:
            names = [os.path.basename(o) for o in outputs] if outputs else []
        self._expected = {
            name: {"image": files[0], "remake": False}
            for name, files in zip(names, list_of_lists_or_source_folder, strict=False)
        }
        return super()._manage_input_and_output_lists(
            list_of_lists_or_source_folder,
            outputs,
            folder_with_segs_from_prev_stage,
            overwrite,
            part_id,
            num_parts,
            save_probabilities,
        )

    def _internal_get_data_iterator_from_lists_of_filenames(
        self,
        input_list_of_lists: list[list[str]],
        seg_from_prev_stage_files: list[str] | None,
        output_filenames_truncated: list[str] | None,
        num_processes: int,
    ) -> Iterator[dict]:
        if num_processes > 0:
            iterator = super()._internal_get_data_iterator_from_lists_of_filenames(
                input_list_of_lists,
                seg_from_prev_stage_files,
                output_filenames_truncated,
                num_processes,
            )
        else:
            iterator = self._preprocess_here(
                input_list_of_lists, seg_from_prev_stage_files, output_filenames_truncated
            )
        self._remember_output_folder(output_filenames_truncated)
        self._cases = {
            _case_id(output_filenames_truncated, i): {"image": files[0], "remake": True}
            for i, files in enumerate(input_list_of_lists)
        }
        return _with_sources(iterator, input_list_of_lists, output_filenames_truncated)

    def get_data_iterator_from_raw_npy_data(
        self,
        image_or_list_of_images: np.ndarray | list[np.ndarray],
        segs_from_prev_stage_or_list_of_segs_from_prev_stage: Any,
        properties_or_list_of_properties: dict | list[dict],
        truncated_ofname: str | list[str] | None,
        num_processes: int = 3,
    ) -> Iterator[dict]:
        iterator = super().get_data_iterator_from_raw_npy_data(
            image_or_list_of_images,
            segs_from_prev_stage_or_list_of_segs_from_prev_stage,
            properties_or_list_of_properties,
            truncated_ofname,
            num_processes,
        )
        images = image_or_list_of_images
        images = images if isinstance(images, list) else [images]
        ofiles = [truncated_ofname] if isinstance(truncated_ofname, str) else truncated_ofname
        self._remember_output_folder(ofiles)
        self._expected = None
        self._cases = {
            _case_id(ofiles, i): {"image": None, "image_sha256": sha, "remake": True}
            for i, sha in enumerate(array_sha256(np.asarray(a)[0]) for a in images)
        }
        return _with_sources(iterator, images, ofiles)

    def predict_from_files_sequential(
        self,
        list_of_lists_or_source_folder: str | list[list[str]],
        output_folder_or_list_of_truncated_output_files: str | list[str] | None,
        save_probabilities: bool = False,
        overwrite: bool = True,
        folder_with_segs_from_prev_stage: str | None = None,
    ) -> Any:
        """nnU-Net's prediction without worker processes."""
        return self.predict_from_files(
            list_of_lists_or_source_folder,
            output_folder_or_list_of_truncated_output_files,
            save_probabilities=save_probabilities,
            overwrite=overwrite,
            num_processes_preprocessing=0,
            num_processes_segmentation_export=0,
            folder_with_segs_from_prev_stage=folder_with_segs_from_prev_stage,
        )

    def predict_from_data_iterator(
        self,
        data_iterator: Iterable[dict],
        save_probabilities: bool = False,
        num_processes_segmentation_export: int = default_num_processes,
    ) -> list[Any]:
        """nnU-Net's prediction loop; ``case_segmented`` fires as soon as a case is exported.

        With ``num_processes_segmentation_export=0`` cases are exported in this process.
        """
        config = self.run_config()
        output_folder, self._output_folder = self._output_folder, None
        self._expected = self._cases = None
        self.hook.run_started(config=config, output_folder=output_folder)
        done: _Done = {}
        with ExitStack() as stack:
            pool = None
            if num_processes_segmentation_export > 0:
                context = multiprocessing.get_context("spawn")
                pool = stack.enter_context(context.Pool(num_processes_segmentation_export))
            workers = list(pool._pool) if pool is not None else []  # type: ignore[attr-defined]
            pending: _Pending = []
            for index, item in enumerate(data_iterator):
                data = item["data"]
                if isinstance(data, str):  # nnU-Net's convention: a temporary .npy file
                    path, data = data, torch.from_numpy(np.load(data))
                    os.remove(path)
                logits = self.predict_logits_from_preprocessed_data(data).cpu().detach().numpy()
                args = (
                    logits,
                    item["data_properties"],
                    self.configuration_manager,
                    self.plans_manager,
                    self.dataset_json,
                    item["ofile"],
                    save_probabilities,
                )
                if pool is None:
                    self._case_done(index, item, export_segmentation(*args), config, done)
                else:
                    pending.append((index, item, pool.apply_async(export_segmentation, args)))
                    self._collect(pending, workers, len(workers) + _QUEUED, config, done)
            self._collect(pending, workers, 0, config, done)
        if isinstance(data_iterator, MultiThreadedAugmenter):
            data_iterator._finish()
        compute_gaussian.cache_clear()
        empty_cache(self.device)
        cases = [done[i][0] for i in sorted(done)]
        self.summary = {
            "output_folder": output_folder,
            "n_cases": len(cases),
            "cases": cases,
            "model": config["model"],
        }
        self.hook.run_finished(summary=self.summary)
        return [done[i][1] for i in sorted(done)]

    def _collect(
        self,
        pending: _Pending,
        workers: list[Any],
        max_pending: int,
        config: Mapping[str, Any],
        done: _Done,
    ) -> None:
        """Fire the hook of every exported case; wait while more than ``max_pending`` remain."""
        while True:
            for entry in [e for e in pending if e[2].ready()]:
                pending.remove(entry)
                index, item, result = entry
                self._case_done(index, item, result.get(), config, done)
            if len(pending) <= max_pending:
                return
            if not all(worker.is_alive() for worker in workers):
                raise RuntimeError(
                    "Segmentation export worker died. It was likely killed by your OS because "
                    "of insufficient available CPU RAM."
                )
            time.sleep(0.1)

    def _case_done(
        self,
        index: int,
        item: dict,
        exported: tuple[np.ndarray, np.ndarray | None, Any],
        config: Mapping[str, Any],
        done: _Done,
    ) -> None:
        segmentation, probabilities, returned = exported
        ofile = item["ofile"]
        properties = item["data_properties"]
        case = SegmentedCase(
            case_id=os.path.basename(ofile) if ofile else f"case_{index:04d}",
            segmentation=np.asarray(segmentation),
            image=self._input_channel0(item.get(SOURCE_KEY)),
            spacing=tuple(float(s) for s in properties["spacing"]),  # type: ignore[arg-type]
            properties=properties,
            model=dict(config["model"]),
            output_file=ofile + self.dataset_json["file_ending"] if ofile else None,
            probabilities=probabilities,
        )
        self.hook.case_segmented(case=case)
        done[index] = (case.case_id, returned)

    def _input_channel0(self, source: Any) -> np.ndarray | None:
        """Channel 0 of a case's input: read with the plans' reader, or the given array."""
        if source is None:
            return None
        if isinstance(source, np.ndarray):
            data = source
        else:
            data, _ = self.plans_manager.image_reader_writer_class().read_images(source)
        return np.asarray(data[0], dtype=np.float32)

    def _remember_output_folder(self, ofiles: Sequence[str] | None) -> None:
        self._output_folder = (os.path.dirname(ofiles[0]) or os.curdir) if ofiles else None

    def _preprocess_here(
        self,
        input_list_of_lists: list[list[str]],
        seg_from_prev_stage_files: list[str] | None,
        output_filenames_truncated: list[str] | None,
    ) -> Iterator[dict]:
        """nnU-Net's preprocessing of each case, in this process (the sequential mode)."""
        preprocessor = self.configuration_manager.preprocessor_class(
            verbose=self.verbose_preprocessing
        )
        for i, files in enumerate(input_list_of_lists):
            previous = seg_from_prev_stage_files[i] if seg_from_prev_stage_files else None
            data, seg, properties = preprocessor.run_case(
                files, previous, self.plans_manager, self.configuration_manager, self.dataset_json
            )
            if previous is not None:
                labels = self.label_manager.foreground_labels
                data = np.vstack((data, convert_labelmap_to_one_hot(seg[0], labels, data.dtype)))
            yield {
                "data": torch.from_numpy(data).to(dtype=torch.float32),
                "data_properties": properties,
                "ofile": output_filenames_truncated[i] if output_filenames_truncated else None,
            }
