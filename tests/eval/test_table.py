"""The Table-1 layout: rows metric x bucket, a column per method, the best marked, and CSV
that reads back to the same numbers."""

from __future__ import annotations

import csv
import io
import math

from dcgd.eval.table import rows_to_csv, to_csv, to_markdown

RESULTS = {
    "dcgd_dual": {
        "psnr": {"0.01-0.1": 30.0, "all": 25.0},
        "mae": {"0.01-0.1": 0.02, "all": 0.05},
        "clip@1": {"0.01-0.1": 0.5, "all": math.nan},
    },
    "opencv_telea": {
        "psnr": {"0.01-0.1": 31.5, "all": 24.0},
        "mae": {"0.01-0.1": 0.02, "all": 0.04},
        "clip@1": {"0.01-0.1": 0.75, "all": math.nan},
    },
}
COUNTS = {"psnr": {"0.01-0.1": 3, "all": 9}, "mae": {"0.01-0.1": 3, "all": 9},
          "clip@1": {"0.01-0.1": 2, "all": 0}}  # fmt: skip


def test_markdown_marks_the_best_per_row_in_its_direction():
    lines = to_markdown(RESULTS, counts=COUNTS).splitlines()
    assert lines[0] == "| metric | bucket | n | dcgd_dual | opencv_telea |"
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines[2:]}
    assert rows[("psnr ↑", "0.01-0.1")].endswith("| 3 | 30.00 | **31.50** |")
    assert rows[("psnr ↑", "all")].endswith("| 9 | **25.00** | 24.00 |")
    assert rows[("mae ↓", "0.01-0.1")].endswith("| **0.0200** | **0.0200** |")  # a tie
    assert rows[("mae ↓", "all")].endswith("| 0.0500 | **0.0400** |")
    assert rows[("clip@1 ↑", "0.01-0.1")].endswith("| 2 | 0.5000 | **0.7500** |")
    assert ("clip@1 ↑", "all") not in rows  # no finite value: no row


def test_csv_reads_back_to_the_same_numbers():
    table = list(csv.DictReader(io.StringIO(to_csv(RESULTS, counts=COUNTS))))
    assert len(table) == 5
    for row in table:
        for method in RESULTS:
            assert float(row[method]) == RESULTS[method][row["metric"]][row["bucket"]]
    psnr_small = next(r for r in table if (r["metric"], r["bucket"]) == ("psnr", "0.01-0.1"))
    assert psnr_small["direction"] == "higher" and psnr_small["best"] == "opencv_telea"
    assert psnr_small["n"] == "3"
    tie = next(r for r in table if (r["metric"], r["bucket"]) == ("mae", "0.01-0.1"))
    assert tie["best"] == "dcgd_dual;opencv_telea"


def test_unknown_metrics_get_no_arrow_and_no_best():
    text = to_markdown({"a": {"my_score": {"all": 1.0}}, "b": {"my_score": {"all": 2.0}}})
    assert "| my_score | all | 1.0000 | 2.0000 |" in text


def test_per_image_rows_keep_every_column():
    rows = [
        {"method": "a", "id": "x", "psnr": 20.0},
        {"method": "b", "id": "x", "psnr": 21.0, "residue": 0.3},
    ]
    back = list(csv.DictReader(io.StringIO(rows_to_csv(rows))))
    assert back[0]["residue"] == "" and back[1]["residue"] == "0.3"
    assert [r["psnr"] for r in back] == ["20.0", "21.0"]
