"""Tests of report writing (atomic JSON / CSV / HTML) and reading back."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monai_qc.errors import QCInputError
from monai_qc.report import (
    SUMMARY_COLUMNS,
    atomic_write_text,
    jsonable,
    read_case_report,
    read_reports,
    write_case_report,
    write_html_report,
    write_summary_csv,
)


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


def test_write_summary_csv(tmp_path: Path) -> None:
    path = write_summary_csv([make_report("a"), error_report("b")], tmp_path / "summary.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    assert [(r["case"], r["class"], r["label"]) for r in rows] == [
        ("a", "RV", "1"),
        ("a", "MYO", "2"),
        ("a", "LV", "3"),
        ("b", "", ""),
    ]
    rv, myo = rows[0], rows[1]
    assert float(rv["volume_dsc"]) == pytest.approx(0.91)
    assert float(rv["min_slice_dsc"]) == pytest.approx(0.93)  # the NaN slice is skipped
    assert float(myo["min_slice_dsc"]) == pytest.approx(0.41)
    assert (rv["n_slices"], rv["n_flagged"], rv["verdict"], rv["error"]) == ("2", "1", "fail", "")
    assert rows[3]["verdict"] == "error" and "segmentation is empty" in rows[3]["error"]
    assert no_temp_files(tmp_path)


def test_write_html_report_escapes(tmp_path: Path) -> None:
    reports = [
        make_report("<script>alert(1)</script>"),
        {**error_report("a&b"), "error": "<bad> & worse"},
    ]
    path = write_html_report(reports, tmp_path / "report.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "&lt;bad&gt; &amp; worse" in page
    assert 'class="flagged"' in page
    assert 'class="good">0.910<' in page and 'class="warn">0.750<' in page
    assert 'class="bad">0.410<' in page
    assert "http://" not in page and "https://" not in page
    assert no_temp_files(tmp_path)
