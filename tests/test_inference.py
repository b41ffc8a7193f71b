"""QCPredictor on phantoms: shapes, reconstruction, null policy, verdicts and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from monai_qc import QCInputError, QCPredictor
from monai_qc.inference import QCResult, Thresholds, class_indices, slice_areas
from monai_qc.phantom import PHANTOM_LABELS, make_phantom
from monai_qc.reconstruction import reconstruct_volume_dsc


@pytest.fixture(scope="module")
def predictor(untrained_bundle) -> QCPredictor:
    return QCPredictor.from_bundle(untrained_bundle)


def test_predict_report_matches_interface(predictor: QCPredictor) -> None:
    image, labels = make_phantom(3, n_slices=7)
    result = predictor.predict(image, labels, spacing=(10.0, 1.5, 1.5), case="p3")
    report = result.to_dict()
    assert report["case"] == "p3"
    assert report["labels"] == PHANTOM_LABELS
    assert [s["index"] for s in report["slices"]] == list(range(7))
    assert report["verdict"] in {"pass", "fail"}
    for s in report["slices"]:
        assert set(s["dsc"]) == set(PHANTOM_LABELS) == set(s["mvsf"])
        for name, value in s["dsc"].items():
            assert value is None or 0.0 <= value <= 1.0
            area = int((labels[s["index"]] == PHANTOM_LABELS[name]).sum())
            assert s["area"][name] == area
    # the volume DSC is the 2D_R reconstruction of the slice predictions
    expected = reconstruct_volume_dsc(result.slice_dsc, result.slice_mvsf, result.seg_area)
    np.testing.assert_allclose(result.volume_dsc, expected)
    lv_ml = (labels == 3).sum() * 10.0 * 1.5 * 1.5 / 1000
    assert report["volume"]["segmented_ml"]["LV"] == pytest.approx(lv_ml, abs=1e-3)


def test_absent_class_reported_as_null_only_when_predicted_absent() -> None:
    k = 4
    dsc = np.array([[0.9, 0.8, 0.7, 0.9], [0.9, 0.95, 0.2, 0.9], [0.9, 0.95, 0.8, 0.9]])
    areas = np.array([[100, 0, 20, 30], [100, 0, 0, 30], [100, 0, 20, 30]])
    result = QCResult(
        "c",
        PHANTOM_LABELS,
        dsc,
        np.zeros((3, k)),
        areas,
        np.full(k, 0.8),
        (1.0, 1.0, 1.0),
        Thresholds({}, {"RV": 0.3, "MYO": 0.3, "LV": 0.3}),
    )
    slices = result.to_dict()["slices"]
    assert slices[0]["dsc"]["RV"] is None  # no RV segmented, predicted absent from truth too
    assert slices[1]["dsc"]["MYO"] == 0.2  # a gap in the MYO slices, predicted missed: reported
    assert [s["flagged"] for s in slices] == [False, True, False]
    assert result.verdict == "fail"


def test_empty_end_slices_of_a_class_are_not_flagged() -> None:
    """Past the last segmented slice of a class, a low rating is not a miss (apex, base)."""
    dsc = np.array([[0.9, 0.1, 0.1, 0.1], [0.9, 0.9, 0.8, 0.1], [0.9, 0.1, 0.8, 0.9]])
    areas = np.array([[100, 0, 0, 0], [100, 40, 20, 0], [100, 0, 20, 30]])
    thresholds = Thresholds({}, {"RV": 0.3, "MYO": 0.3, "LV": 0.3})
    result = QCResult(
        "c", PHANTOM_LABELS, dsc, np.zeros((3, 4)), areas, np.full(4, 0.8), (1.0,) * 3, thresholds
    )
    slices = result.to_dict()["slices"]
    assert [s["dsc"]["RV"] for s in slices] == [None, 0.9, None]
    assert [s["dsc"]["MYO"] for s in slices] == [None, 0.8, 0.8]
    assert [s["dsc"]["LV"] for s in slices] == [None, None, 0.9]
    assert not result.flagged.any() and result.verdict == "pass"
    # a class segmented nowhere keeps the network's rating: missed entirely, flagged
    no_lv = areas.copy()
    no_lv[:, 3] = 0
    missing = QCResult(
        "c", PHANTOM_LABELS, dsc, np.zeros((3, 4)), no_lv, np.full(4, 0.8), (1.0,) * 3, thresholds
    )
    assert [s["dsc"]["LV"] for s in missing.to_dict()["slices"]] == [0.1, 0.1, None]
    assert missing.flagged.tolist() == [True, True, False]


def test_case_threshold_fails_low_volume_dsc() -> None:
    result = QCResult(
        "c",
        PHANTOM_LABELS,
        np.full((1, 4), 0.9),
        np.zeros((1, 4)),
        np.full((1, 4), 10),
        np.array([1.0, 0.9, 0.5, 0.9]),
        (1.0, 1.0, 1.0),
        Thresholds({"MYO": 0.7}, {}),
    )
    assert result.failed_classes == ["MYO"]
    assert result.verdict == "fail"


def test_class_indices_and_areas() -> None:
    seg = np.array([[[0, 1], [2, 3]], [[3, 3], [0, 0]]])
    idx = class_indices(seg, {"A": 1, "B": 2, "C": 3})
    np.testing.assert_array_equal(idx, seg)
    np.testing.assert_array_equal(slice_areas(idx, 4), [[1, 1, 1, 1], [2, 0, 0, 2]])
    with pytest.raises(QCInputError, match=r"unknown label values \[5\]"):
        class_indices(np.array([[[5]]]), {"A": 1}, "x.nii.gz")


@pytest.mark.parametrize(
    ("image", "seg", "message"),
    [
        (np.zeros((4, 8, 8)), np.zeros((4, 8, 9), np.uint8), "differs"),
        (np.zeros((8, 8)), np.zeros((8, 8), np.uint8), "3D"),
        (np.full((2, 8, 8), np.nan), np.ones((2, 8, 8), np.uint8), "NaN"),
        (np.random.rand(2, 8, 8), np.zeros((2, 8, 8), np.uint8), "empty"),
        (np.random.rand(2, 8, 8), np.full((2, 8, 8), 7, np.uint8), "unknown label"),
        (np.ones((2, 8, 8)), np.ones((2, 8, 8), np.uint8), "blank"),
    ],
)
def test_bad_input_names_the_case(predictor: QCPredictor, image, seg, message: str) -> None:
    with pytest.raises(QCInputError, match=message) as info:
        predictor.predict(image, seg, case="bad_case")
    assert "bad_case" in str(info.value)


def test_network_and_preprocessing_must_agree_on_context_slices() -> None:
    """A context network with single-slice preprocessing is refused, naming both counts."""
    from monai_qc.networks import build_qc_network
    from monai_qc.transforms import QCSliceInputs

    network = build_qc_network("context_resnet2d", 4)
    with pytest.raises(ValueError, match="reads context_slices=1 .* stacks context_slices=0"):
        QCPredictor(network, QCSliceInputs(4), PHANTOM_LABELS)
    predictor = QCPredictor(network, QCSliceInputs(4, context_slices=1), PHANTOM_LABELS)
    image, labels = make_phantom(5, n_slices=5)
    assert predictor.predict(image, labels, (10.0, 1.5, 1.5)).slice_dsc.shape == (5, 4)


def test_bundle_weights_are_read_or_named(tmp_path) -> None:
    """A checkpoint holding ``state_dict`` loads; a broken or missing weights file names itself."""
    import torch

    from monai_qc.bundle import load_weights
    from monai_qc.errors import BundleError

    net, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": net.state_dict(), "epoch": 4}, checkpoint)
    load_weights(other, checkpoint)
    assert torch.equal(other.weight, net.weight) and torch.equal(other.bias, net.bias)
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"\x00" * 10)
    with pytest.raises(BundleError, match="model.pt: not a readable PyTorch state dict"):
        load_weights(other, broken)
    with pytest.raises(BundleError, match="missing.pt: the bundle has no trained weights"):
        load_weights(other, tmp_path / "missing.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), broken)
    with pytest.raises(BundleError, match="model.pt: weights do not fit the network"):
        load_weights(other, broken)


def _volume_result(volume_dsc: list[float], areas: np.ndarray, min_dsc: dict) -> QCResult:
    n = len(areas)
    return QCResult(
        "c",
        PHANTOM_LABELS,
        np.full((n, 4), 0.9),
        np.zeros((n, 4)),
        areas,
        np.array(volume_dsc),
        (1.0, 1.0, 1.0),
        Thresholds(min_dsc, {}),
    )


def test_class_with_threshold_and_no_finite_volume_dsc_fails() -> None:
    """A class segmented nowhere has no 3D DSC: with a case threshold it fails, and says why."""
    areas = np.array([[100, 10, 20, 0], [100, 10, 20, 0]])  # no LV on any slice
    result = _volume_result([1.0, 0.9, 0.9, np.nan], areas, {"RV": 0.7, "MYO": 0.7, "LV": 0.7})
    assert result.failed_classes == ["LV"]
    report = result.to_dict()
    assert report["verdict"] == "fail" and report["failed_classes"] == ["LV"]
    assert report["volume"]["dsc"]["LV"] is None
    assert report["reasons"] == ["LV: segmented on no slice, so no 3D DSC (threshold 0.700)"]
    assert report["findings"] == []
    # a NaN rating of a segmented class fails too; a class without a threshold does not
    areas[:, 3] = 5
    nan_rated = _volume_result([1.0, 0.9, 0.9, np.nan], areas, {"LV": 0.7})
    assert nan_rated.reasons() == ["LV: no finite predicted 3D DSC (threshold 0.700)"]
    unchecked = _volume_result([1.0, 0.9, 0.9, np.nan], areas, {"RV": 0.7})
    assert unchecked.failed_classes == [] and unchecked.verdict == "pass"
    assert unchecked.to_dict()["reasons"] == []


def test_a_finding_fails_a_case_whatever_its_ratings() -> None:
    from monai_qc.findings import CLASS_GAP, Finding

    areas = np.array([[100, 10, 20, 30], [100, 10, 20, 0], [100, 10, 20, 30]])
    result = _volume_result([1.0, 0.95, 0.95, 0.95], areas, {"LV": 0.7})
    assert result.verdict == "pass"
    result.findings.append(Finding(CLASS_GAP, "LV", (1,), "LV is missing on slice 1"))
    report = result.to_dict()
    assert report["verdict"] == "fail" and report["failed_classes"] == []
    assert report["findings"] == [
        {"check": "class_gap", "class": "LV", "slices": [1], "message": "LV is missing on slice 1"}
    ]
    assert report["reasons"] == ["LV is missing on slice 1"]


def _stray_and_gap(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A phantom in a wide field of view, an LV blob in a corner, LV missed on slice 3."""
    image, labels = make_phantom(seed, n_slices=7)
    image = np.pad(image, ((0, 0), (48, 48), (48, 48)), constant_values=0.25)
    seg = np.pad(labels, ((0, 0), (48, 48), (48, 48)))
    seg[1:3, 2:12, 2:12] = 3
    seg[3][seg[3] == 3] = 0
    return image, seg


def test_predictor_reports_findings(untrained_bundle, tmp_path) -> None:
    """Foreground outside the crop is always found; a gap only for the bundle's classes."""
    import torch

    from monai_qc.bundle_writer import write_bundle
    from monai_qc.networks import build_qc_network

    image, seg = _stray_and_gap(6)
    plain = QCPredictor.from_bundle(untrained_bundle)
    assert plain.contiguous_classes == ()
    report = plain.predict(image, seg, (10.0, 1.5, 1.5), "stray").to_dict()
    assert [(f["check"], f["class"], f["slices"]) for f in report["findings"]] == [
        ("outside_rated_region", "LV", [1, 2])
    ]
    assert "1 LV component outside the rated region, 4.5 mL" in report["findings"][0]["message"]
    assert report["verdict"] == "fail"

    torch.manual_seed(0)
    network = build_qc_network("resnet2d", 4)
    folder = write_bundle(
        tmp_path / "gap_qc", network, "resnet2d", PHANTOM_LABELS, {}, contiguous_classes=["LV"]
    )
    gaps = QCPredictor.from_bundle(folder)
    assert gaps.contiguous_classes == ("LV",)
    found = gaps.predict(image, seg, (10.0, 1.5, 1.5), "stray").findings
    assert [(f.check, f.class_name, f.slices) for f in found] == [
        ("outside_rated_region", "LV", (1, 2)),
        ("class_gap", "LV", (3,)),
    ]
    assert gaps.predict(*make_phantom(6, n_slices=7)).findings == []


def test_bundle_with_unknown_contiguous_class_is_refused(untrained_bundle, tmp_path) -> None:
    import json
    import shutil

    import torch

    from monai_qc.bundle_writer import inference_config, write_bundle
    from monai_qc.errors import BundleError

    folder = shutil.copytree(untrained_bundle, tmp_path / "bad_qc")
    config_file = folder / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["contiguous_classes"] = ["LV", "LA"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"inference.json: contiguous_classes: unknown.*LA"):
        QCPredictor.from_bundle(folder)
    with pytest.raises(ValueError, match="unknown class"):
        QCPredictor(torch.nn.Linear(1, 1), None, PHANTOM_LABELS, contiguous_classes=["LA"])
    with pytest.raises(ValueError, match="contiguous_classes names unknown class.*LA"):
        write_bundle(tmp_path / "x", torch.nn.Linear(1, 1), "resnet2d", PHANTOM_LABELS, {},
                     contiguous_classes=["LA"])  # fmt: skip
    assert "contiguous_classes" not in inference_config("resnet2d", PHANTOM_LABELS, {})


class _PerfectScores:
    """A network that rates every class of every slice DSC 1, MVSF 0 (for the sums alone)."""

    def __init__(self, n_classes: int) -> None:
        import torch

        self.module = torch.nn.Identity()
        self.n_classes = n_classes

    def __call__(self, inputs):
        import torch

        ones = torch.ones(inputs.shape[0], self.n_classes)
        return torch.cat([ones, torch.zeros_like(ones)], dim=1)

    def to(self, _device):
        return self

    def eval(self):
        return self


def test_gap_of_a_contiguous_class_lowers_the_reconstructed_3d_dsc() -> None:
    """Truth missed on a gap slice counts as interpolated truth with no overlap."""
    from monai_qc.transforms import QCSliceInputs

    image, seg = make_phantom(2, n_slices=7)
    lv = PHANTOM_LABELS["LV"]
    seg = seg.copy()
    seg[3][seg[3] == lv] = 0
    areas = (seg == lv).sum(axis=(1, 2)).astype(float)
    below, above = areas[2], areas[4]
    expected = 2 * areas.sum() / (2 * areas.sum() + (below + above) / 2)
    results = {}
    for contiguous in ((), ("LV",)):
        predictor = QCPredictor(
            _PerfectScores(4), QCSliceInputs(4), PHANTOM_LABELS, contiguous_classes=contiguous
        )
        results[contiguous] = predictor.predict(image, seg).to_dict()["volume"]["dsc"]
    assert results[()]["LV"] == pytest.approx(1.0)
    assert results[("LV",)]["LV"] == pytest.approx(expected, abs=1e-4)
    assert results[("LV",)]["RV"] == pytest.approx(1.0)


def test_low_dsc_on_a_tiny_slice_is_flagged_only_above_min_slice_error() -> None:
    """A low DSC on a few pixels is not a flag once min_slice_error asks for a real error."""
    dsc = np.array([[1.0, 0.9], [1.0, 0.2], [1.0, 0.2]])
    mvsf = np.zeros_like(dsc)
    areas = np.array([[900, 400], [990, 10], [700, 300]])
    flags = {}
    for error in (0.0, 0.03):
        thresholds = Thresholds({}, {"RV": 0.3}, error)
        result = QCResult("c", {"RV": 1}, dsc, mvsf, areas, np.array([1.0, 0.9]), (1, 1, 1),
                          thresholds)  # fmt: skip
        flags[error] = result.flagged.tolist()
        assert result.to_dict()["thresholds"]["min_slice_error"] == error
    # slice 1: 10 px at DSC 0.2 is 16 voxels of disagreement, 2 % of the class's 710
    assert flags[0.0] == [False, True, True]
    assert flags[0.03] == [False, False, True]
    with pytest.raises(ValueError, match="min_slice_error"):
        Thresholds.from_config({"min_slice_error": 2}, ["RV"])
