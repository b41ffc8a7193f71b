"""Tests of report writing (atomic JSON / CSV / HTML) and reading back."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage.io import imread

from monai_qc.errors import QCInputError
from monai_qc.phantom import PHANTOM_LABELS, make_phantom
from monai_qc.report import (
    SUMMARY_COLUMNS,
    atomic_write_bytes,
    atomic_write_text,
    csv_text,
    figure_paths,
    jsonable,
    read_case_report,
    read_reports,
    write_case_report,
    write_html_report,
    write_summary_csv,
    write_table_and_data,
)
from monai_qc.report_figures import LEVEL_COLOURS, write_case_figures


def make_report(case: str = "acdc_001_ED", **extra: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "case": case,
        "labels": {"RV": 1, "MYO": 2, "LV": 3},
        "slices": [
            {
                "index": 0,
                "dsc": {"RV": 0.93, "MYO": 0.88, "LV": 0.95},
                "mvsf": {"RV": 0.02, "MYO": -0.05, "LV": 0.01},
                "flagged": False,
            },
            {
                "index": 1,
                "dsc": {"RV": float("nan"), "MYO": 0.41, "LV": 0.9},
                "mvsf": {"RV": None, "MYO": 0.5, "LV": 0.0},
                "flagged": True,
            },
        ],
        "volume": {"dsc": {"RV": 0.91, "MYO": np.float32(0.75), "LV": 0.94}},
        "verdict": "fail",
    }
    report.update(extra)
    return report


def error_report(case: str = "bad") -> dict[str, Any]:
    return {"case": case, "verdict": "error", "error": "seg.nii.gz: segmentation is empty"}


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_atomic_write_text_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second\r\nline")
    assert path.read_bytes() == b"second\r\nline"
    assert no_temp_files(path.parent)


def test_atomic_write_text_cleans_up_on_error(tmp_path: Path) -> None:
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "x.txt", "\u20ac", encoding="ascii")
    assert list(tmp_path.iterdir()) == []


def test_jsonable() -> None:
    data = {1: (np.float64(np.inf), np.int64(3)), "a": np.array([0.5, np.nan]), "p": Path("x")}
    assert jsonable(data) == {"1": [None, 3], "a": [0.5, None], "p": "x"}


def test_write_table_and_data_writes_markdown_and_json_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "new" / "bench.md"
    data = {"mae": np.array([0.05, np.nan]), "n": np.int64(129)}
    assert write_table_and_data(out, "| a |\n", data) == out
    assert out.read_text() == "| a |\n"
    assert json.loads(out.with_suffix(".json").read_text()) == {"mae": [0.05, None], "n": 129}
    assert sorted(p.name for p in out.parent.iterdir()) == ["bench.json", "bench.md"]


def test_write_case_report_nan_becomes_null(tmp_path: Path) -> None:
    path = write_case_report(make_report(), tmp_path)
    assert path == tmp_path / "acdc_001_ED.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["slices"][1]["dsc"]["RV"] is None
    assert data["volume"]["dsc"]["MYO"] == pytest.approx(0.75)
    assert read_case_report(path) == data
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("case", ["", "../evil", "a/b", None])
def test_write_case_report_bad_case_name(tmp_path: Path, case: Any) -> None:
    with pytest.raises(ValueError, match="file name"):
        write_case_report(make_report(case), tmp_path)


def test_read_case_report_errors(tmp_path: Path) -> None:
    with pytest.raises(QCInputError, match="cannot be read"):
        read_case_report(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"case": "x", ')
    with pytest.raises(QCInputError, match="not valid JSON"):
        read_case_report(broken)
    partial = tmp_path / "partial.json"
    partial.write_text('{"case": "x", "verdict": "pass"}')
    with pytest.raises(QCInputError, match="labels, slices, volume"):
        read_case_report(partial)
    odd = tmp_path / "odd.json"
    odd.write_text('{"case": "x", "verdict": "maybe"}')
    with pytest.raises(QCInputError, match="verdict"):
        read_case_report(odd)


def test_read_case_report_accepts_bare_nan(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    report = jsonable(make_report("x"))
    report["volume"]["dsc"]["RV"] = math.nan
    path.write_text(json.dumps(report))  # json.dumps writes bare NaN
    assert read_case_report(path)["volume"]["dsc"]["RV"] is None


def test_read_reports_sorted_and_skips_other_json(tmp_path: Path) -> None:
    for case in ("c", "a"):
        write_case_report(make_report(case), tmp_path)
    write_case_report(error_report("b"), tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0}}')
    (tmp_path / "summary.csv").write_text("case\n")
    assert [r["case"] for r in read_reports(tmp_path)] == ["a", "b", "c"]
    (tmp_path / "z.json").write_text("[1, 2")
    with pytest.raises(QCInputError, match="z.json"):
        read_reports(tmp_path)
    with pytest.raises(QCInputError, match="not a directory"):
        read_reports(tmp_path / "missing")


THRESHOLDS = {"min_dsc": {"RV": 0.7, "MYO": 0.7, "LV": 0.7}, "min_slice_dsc": 0.3}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_write_summary_csv(tmp_path: Path) -> None:
    report = make_report("a", thresholds={"min_dsc": 0.7, "min_slice_dsc": {"MYO": 0.5}})
    path = write_summary_csv([report, error_report("b")], tmp_path / "summary.csv")
    rows = read_csv(path)
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    assert "min_slice_dsc" not in SUMMARY_COLUMNS  # a threshold's name, not a prediction's
    assert [(r["case"], r["class"], r["label"]) for r in rows] == [
        ("a", "RV", "1"),
        ("a", "MYO", "2"),
        ("a", "LV", "3"),
        ("b", "", ""),
    ]
    rv, myo, lv = rows[:3]
    assert float(rv["volume_dsc"]) == pytest.approx(0.91)
    assert float(rv["lowest_slice_dsc"]) == pytest.approx(0.93)  # the NaN slice is skipped
    assert float(myo["lowest_slice_dsc"]) == pytest.approx(0.41)
    # per class: MYO is below its slice threshold (0.5) on slice 1; RV and LV have none
    assert [(r["n_slices"], r["n_flagged"]) for r in rows[:3]] == [("2", ""), ("2", "1"), ("2", "")]
    assert (rv["verdict"], rv["error"], rv["findings"]) == ("fail", "", "")
    assert rows[3]["verdict"] == "error" and "segmentation is empty" in rows[3]["error"]
    assert no_temp_files(tmp_path)


def test_summary_csv_counts_flagged_slices_per_class_and_lists_findings(tmp_path: Path) -> None:
    report = make_report("a", thresholds=THRESHOLDS)
    report["slices"].append(
        {"index": 2, "dsc": {"RV": 0.1, "MYO": 0.2, "LV": None}, "flagged": True}
    )
    report["findings"] = [
        {"check": "class_gap", "class": "LV", "slices": [2], "message": "LV is missing"},
        {"check": "outside_rated_region", "class": None, "slices": [0], "message": "blob"},
    ]
    rows = read_csv(write_summary_csv([report], tmp_path / "summary.csv"))
    assert [(r["class"], r["n_slices"], r["n_flagged"]) for r in rows] == [
        ("RV", "3", "1"),  # 0.1; the null of slice 1 is not counted
        ("MYO", "3", "1"),  # 0.2 (0.41 is above 0.3)
        ("LV", "3", "0"),  # null on slice 2: absent, not below
    ]
    assert [r["findings"] for r in rows] == [
        "outside_rated_region",
        "outside_rated_region",
        "class_gap; outside_rated_region",
    ]


@pytest.mark.parametrize(
    "case", ['=HYPERLINK("http://x","y")', "+1+2", "-3", "@SUM(A1)", "\tx", "\rx"]
)
def test_summary_csv_cells_are_never_formulas(tmp_path: Path, case: str) -> None:
    report = make_report(case, thresholds=THRESHOLDS, labels={"=RV": 1, "MYO": -2, "LV": "-3"})
    errored = {**error_report("b"), "error": "=cmd|' /C calc'!A0"}
    rows = read_csv(write_summary_csv([report, errored], tmp_path / "summary.csv"))
    assert {r["case"] for r in rows[:3]} == {"'" + case}
    assert rows[3]["error"] == "'=cmd|' /C calc'!A0"
    assert [(r["class"], r["label"]) for r in rows[:3]] == [
        ("MYO", "-2"),  # a number stays a number, negative or not
        ("LV", "'-3"),  # text that looks like a number is text
        ("'=RV", "1"),
    ]
    assert rows[2]["volume_dsc"] == ""  # "=RV" has no volume DSC in this report
    assert float(rows[0]["lowest_slice_dsc"]) == pytest.approx(0.41)
    assert csv_text(-0.5) == -0.5 and csv_text("a=b") == "a=b" and csv_text("") == ""


def test_write_html_report_escapes(tmp_path: Path) -> None:
    reports = [
        make_report("<script>alert(1)</script>", thresholds=THRESHOLDS),
        {**error_report("a&b"), "error": "<bad> & worse"},
    ]
    path = write_html_report(reports, tmp_path / "report.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "&lt;bad&gt; &amp; worse" in page
    assert '<th class="flagged">1</th>' in page
    assert "slice 1 flagged" in page
    assert "http://" not in page and "https://" not in page
    assert "<img" not in page  # no figures were written
    assert no_temp_files(tmp_path)


def test_html_colours_follow_the_report_thresholds(tmp_path: Path) -> None:
    report = make_report("a", thresholds=THRESHOLDS, verdict="pass")
    report["slices"][1]["flagged"] = False
    report["slices"].append({"index": 2, "dsc": {"RV": 0.75, "MYO": 0.29, "LV": 0.62}})
    report["volume"]["dsc"]["LV"] = 0.65
    page = write_html_report([report], tmp_path / "report.html").read_text()
    # slices: red below 0.3 (the slice threshold), amber up to 0.7 (the case threshold)
    assert 'class="warn">0.41<' in page and 'class="warn">0.62<' in page
    assert 'class="bad">0.29<' in page and 'class="good">0.75<' in page
    assert 'class="bad">0.41<' not in page
    # 3D DSC: red below 0.7, amber up to 0.8
    assert 'class="good">0.910<' in page and 'class="warn">0.750<' in page
    assert 'class="bad">0.650<' in page
    assert "3D DSC 0.70 for every class; slice DSC 0.30 for every class" in page
    assert "beyond the first or last slice segmented with that class (apex or base)" in page
    assert "predicts it is absent from the truth too" in page
    bare = write_html_report([make_report("b")], tmp_path / "bare.html").read_text()
    assert "<td>0.41</td>" in bare and "<td>0.910</td>" in bare  # no thresholds: no colours
    assert 'class="bad"' not in bare.split("</style>")[1].split("<h2>Summary")[1]


def test_html_shows_findings_and_warnings_escaped(tmp_path: Path) -> None:
    report = make_report("a", thresholds=THRESHOLDS, verdict="fail")
    report["findings"] = [
        {"check": "class_gap", "class": "LV", "slices": [4, 5], "message": "LV <missing> & gone"}
    ]
    report["warnings"] = ["origin differs <by> 5 mm & more"]
    page = write_html_report([report], tmp_path / "report.html").read_text()
    assert "<h4>Findings</h4>" in page and "<h4>Warnings</h4>" in page
    assert "<strong>class_gap</strong> (LV, slices 4, 5): LV &lt;missing&gt; &amp; gone" in page
    assert '<li class="warning">origin differs &lt;by&gt; 5 mm &amp; more</li>' in page
    assert "1 finding(s), see below" in page
    assert "<th>findings</th>" in page and "<td>1</td></tr>" in page
    clean = write_html_report([make_report("b")], tmp_path / "clean.html").read_text()
    assert "<h4>Findings</h4>" not in clean and "<h4>Warnings</h4>" not in clean


def test_atomic_write_bytes(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "f" / "x.bin", b"\x00\x89PNG")
    assert path.read_bytes() == b"\x00\x89PNG"
    assert no_temp_files(path.parent)


def test_html_volume_table_with_correction(tmp_path: Path) -> None:
    correction = {
        "wrong_slices": [1, 2, 3],
        "volumes_ml": {"RV": 150.0, "MYO": 110.0, "LV": 160.0},
        "corrected_ml": {"RV": 150.0, "MYO": 100.0, "LV": None},
        "mass_g": 115.5,
        "corrected_mass_g": 105.0,
        "per_class": {
            "RV": {"corrected": False, "wrong_slices": [], "reason": "no slice rated wrong"},
            "MYO": {"corrected": True, "wrong_slices": [1], "reason": None},
            "LV": {"corrected": False, "wrong_slices": [1, 2, 3], "reason": "only <2> of 5"},
        },
        "thresholds": {"RV": 0.3, "MYO": 0.3, "LV": 0.3},
    }
    report = make_report("a", correction=correction, thresholds=THRESHOLDS)
    report["volume"]["segmented_ml"] = {"RV": 150.0, "MYO": 110.0, "LV": 160.0}
    page = write_html_report([report], tmp_path / "report.html").read_text()
    assert "corrected volume (mL)" in page
    assert '<td>LV</td><td class="good">0.940</td><td>160.0</td><td>&ndash;</td>' in page
    assert "<td>myocardial mass (g)</td><td></td><td>115.5</td><td>105.0</td>" in page
    assert "MYO: slice(s) 1 rated wrong (predicted MYO DSC below 0.30 or a gap)" in page
    assert "LV: <strong>not corrected</strong>, slice(s) 1, 2, 3 rated wrong" in page
    assert "but only &lt;2&gt; of 5." in page
    assert "RV: no slice rated wrong, corrected = segmented." in page
    plain = write_html_report([make_report("b")], tmp_path / "plain.html").read_text()
    assert "corrected volume" not in plain and "myocardial mass" not in plain
    old = {**correction, "threshold": 0.3, "classes": ["background", "MYO", "LV"]}
    del old["per_class"], old["thresholds"]  # a report written by an earlier version
    page = write_html_report([make_report("c", correction=old)], tmp_path / "old.html")
    assert "Corrected slice(s): 1, 2, 3." in page.read_text()


def phantom_report(case: str, flagged: tuple[int, ...] = (3,)) -> dict[str, Any]:
    """A report of an 8-slice phantom with made-up DSCs; ``flagged`` slices are poor."""
    slices = []
    for i in range(8):
        low = i in flagged
        dsc = {"RV": None if i == 7 else 0.85, "MYO": 0.2 if low else 0.9, "LV": 0.65}
        slices.append({"index": i, "dsc": dsc, "mvsf": {}, "flagged": low})
    return {
        "case": case,
        "labels": dict(PHANTOM_LABELS),
        "slices": slices,
        "volume": {"dsc": {"RV": 0.85, "MYO": 0.8, "LV": 0.65}},
        "verdict": "fail" if flagged else "pass",
    }


def test_figure_paths_are_safe_and_distinct(tmp_path: Path) -> None:
    plain = figure_paths("acdc_001_ED", tmp_path)
    assert plain["slices"] == tmp_path / "figures" / "acdc_001_ED_slices.png"
    odd, other = figure_paths("a b&c", tmp_path), figure_paths("a_b_c", tmp_path)
    assert odd["slices"].parent == tmp_path / "figures"
    assert odd["slices"].name.startswith("a_b_c-") and odd["slices"] != other["slices"]
    assert figure_paths("..", tmp_path)["flagged"].parent == tmp_path / "figures"


def test_write_case_figures(tmp_path: Path) -> None:
    image, labels = make_phantom(1, n_slices=8, size=(64, 64))
    written = write_case_figures(phantom_report("p1"), image, labels, tmp_path)
    paths = figure_paths("p1", tmp_path)
    assert written == [paths["slices"], paths["flagged"]]
    for path in written:
        pixels = imread(path)[..., :3].astype(float)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300
        assert pixels.std() > 20  # not blank
    strip = imread(paths["slices"])[..., :3].astype(int)
    red = (strip[..., 0] > 150) & (strip[..., 1] < 80) & (strip[..., 2] < 80)
    assert red.sum() > 300  # the flagged slice's red frame
    assert no_temp_files(tmp_path / "figures")
    again = write_case_figures(phantom_report("p1", flagged=()), image, labels, tmp_path)
    assert again == [paths["slices"]] and not paths["flagged"].exists()
    assert write_case_figures(error_report("p1"), image, labels, tmp_path) == []
    with pytest.raises(ValueError, match="8 slices"):
        write_case_figures(phantom_report("p1"), image[:5], labels[:5], tmp_path)


def test_html_links_figures_that_exist(tmp_path: Path) -> None:
    image, labels = make_phantom(2, n_slices=8, size=(64, 64))
    reports = [phantom_report("a b&c"), phantom_report("plain", flagged=())]
    path = write_html_report(reports, tmp_path / "report.html", images={"a b&c": (image, labels)})
    page = path.read_text()
    odd = figure_paths("a b&c", tmp_path)
    assert odd["slices"].is_file() and odd["flagged"].is_file()
    assert f'src="figures/{odd["slices"].name}"' in page
    assert f'src="figures/{odd["flagged"].name}"' in page
    assert "plain_slices.png" not in page  # no arrays given for it
    assert "<h3>a b&amp;c &mdash;" in page
    write_case_figures(reports[1], image, labels, tmp_path)
    assert 'src="figures/plain_slices.png"' in write_html_report(reports, path).read_text()


def colour_pixels(path: Path, colour: str) -> int:
    """Pixels of a PNG within a small distance of a frame colour of LEVEL_COLOURS."""
    rgb = np.array([int(LEVEL_COLOURS[colour][k : k + 2], 16) for k in (1, 3, 5)])
    pixels = imread(path)[..., :3].astype(int)
    return int((np.abs(pixels - rgb).sum(axis=-1) < 30).sum())


def test_strip_frames_follow_the_report_thresholds(tmp_path: Path) -> None:
    """A slice rated 0.45 (above the 0.3 slice threshold) is amber, not red, and not flagged."""
    image, labels = make_phantom(1, n_slices=8, size=(64, 64))
    report = phantom_report("p", flagged=())
    report["thresholds"] = {"min_dsc": 0.6, "min_slice_dsc": 0.3}
    report["slices"][3]["dsc"]["MYO"] = 0.45
    for sl in report["slices"]:
        sl["dsc"]["LV"] = 0.9
    strip = write_case_figures(report, image, labels, tmp_path)[0]
    assert colour_pixels(strip, "bad") < 20
    assert colour_pixels(strip, "warn") > 100 and colour_pixels(strip, "good") > 700
    report["slices"][3]["dsc"]["MYO"] = 0.29  # below the slice threshold: red
    strip = write_case_figures(report, image, labels, tmp_path)[0]
    assert colour_pixels(strip, "bad") > 100 and colour_pixels(strip, "warn") < 20
    del report["thresholds"]  # no threshold: grey frames only
    strip = write_case_figures(report, image, labels, tmp_path)[0]
    assert colour_pixels(strip, "bad") < 20 and colour_pixels(strip, "good") < 20
    assert colour_pixels(strip, "none") > 700


def test_small_disagreements_below_the_slice_threshold_are_amber_not_flagged(
    tmp_path: Path,
) -> None:
    """With min_slice_error, a low DSC on a few pixels is not a flag: amber, n_flagged 0."""
    report = make_report("a", verdict="pass")
    report["thresholds"] = {**THRESHOLDS, "min_slice_error": 0.05}
    areas = [{"RV": 500, "MYO": 300, "LV": 800}, {"RV": 0, "MYO": 6, "LV": 700}]
    for sl, area in zip(report["slices"], areas, strict=True):
        sl["area"] = area
        sl["flagged"] = False
    # MYO 0.2 on 6 pixels, truth 6 (2 + 0.5) / (2 - 0.5) = 10 pixels (MVSF): a disagreement of
    # (1 - 0.2)(10 + 6) = 12.8 pixels, 0.042 of the 306 MYO pixels
    report["slices"][1]["dsc"]["MYO"] = 0.2
    report["slices"][1]["mvsf"]["MYO"] = 0.5
    page = write_html_report([report], tmp_path / "report.html").read_text()
    assert 'class="warn">0.20<' in page and 'class="bad">0.20<' not in page
    assert "flagged only where the predicted disagreement reaches 5% of the class" in page
    rows = read_csv(write_summary_csv([report], tmp_path / "summary.csv"))
    assert [r["n_flagged"] for r in rows] == ["0", "0", "0"]
    report["thresholds"]["min_slice_error"] = 0.04
    assert 'class="bad">0.20<' in write_html_report([report], tmp_path / "r.html").read_text()
    rows = read_csv(write_summary_csv([report], tmp_path / "summary.csv"))
    assert [r["n_flagged"] for r in rows] == ["0", "1", "0"]


def test_per_class_flag_counts_match_the_predictor_on_a_real_case(
    acdc: Path, tmp_path: Path
) -> None:
    """summary.csv's n_flagged and the red cells are the predictor's own per-class flags."""
    from monai_qc.inference import QCPredictor
    from monai_qc.io import read_volume

    image, spacing, _ = read_volume(acdc / "imagesTr" / "acdc_002_ED_0000.nii.gz")
    seg, _, _ = read_volume(acdc / "labelsTr" / "acdc_002_ED.nii.gz")
    seg[4][seg[4] == 2] = 1  # MYO of a middle slice labelled RV
    result = QCPredictor.from_bundle().predict(image, seg, spacing, "acdc_002_ED")
    report = jsonable(result.to_dict())
    expected = result.low_slices[:, 1:].sum(axis=0).tolist()
    assert sum(expected) > 0
    rows = read_csv(write_summary_csv([report], tmp_path / "summary.csv"))
    assert [int(r["n_flagged"]) for r in rows] == expected
    page = write_html_report([report], tmp_path / "report.html").read_text()
    table = page.split("Predicted DSC per slice")[1].split("Volumes")[0]
    assert table.count('class="bad"') == sum(expected)
