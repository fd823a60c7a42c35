"""Per-image descriptions from a file: ``remove --prompts FILE``.

CSV with a header row, or JSON lines, each entry naming an image and its descriptions:

    name,t_info,t_mask
    street/0001,a street with parked cars,a red car

    {"name": "street/0001", "t_info": "a street with parked cars", "t_mask": "a red car"}

``name`` is the image's path relative to the ``--image`` folder, with or without its
extension (a single image: its file name). A missing or empty column leaves that description
to ``--t-info`` / ``--t-mask`` or the describer. Nothing in the file is run or evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path, PurePosixPath

from dcgd.errors import DataError

COLUMNS = ("name", "t_info", "t_mask")
MAX_BYTES = 64 * 2**20  # a description file, not a dataset: refuse what cannot be one


def prompt_key(name: str) -> str:
    """The key an image is matched by: its relative path without the extension."""
    path = PurePosixPath(name.replace("\\", "/"))
    return str(path.with_suffix("")) if path.suffix else str(path)


def read_prompt_file(path: Path) -> dict[str, dict[str, str]]:
    """``{image key: {"t_info": ..., "t_mask": ...}}`` (only the descriptions given)."""
    if not path.is_file():
        raise DataError(f"--prompts {path} does not exist; give a CSV or JSON-lines file")
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"--prompts {path} is over {MAX_BYTES >> 20} MiB; is it the right file?")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"--prompts {path} is not UTF-8 text; save it as UTF-8") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    rows = _json_lines(path, text) if first.lstrip().startswith("{") else _csv_rows(path, text)
    prompts: dict[str, dict[str, str]] = {}
    for where, row in rows:
        name = row.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"--prompts {path}, {where}: no image name in the 'name' column")
        given = {}
        for column in ("t_info", "t_mask"):
            value = row.get(column)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise DataError(
                    f"--prompts {path}, {where}: {column} must be text, got {type(value).__name__}"
                )
            given[column] = " ".join(value.split())
        key = prompt_key(name.strip())
        if key in prompts:
            raise DataError(f"--prompts {path}, {where}: {name!r} is described twice; keep one")
        prompts[key] = given
    return prompts


def _csv_rows(path: Path, text: str):
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted cells may hold newlines
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in COLUMNS]
    if "name" not in header or unknown:
        raise DataError(
            f"--prompts {path}: the CSV header must name the columns {', '.join(COLUMNS)} "
            f"(found {', '.join(map(repr, header)) or 'none'})"
        )
    for row in reader:
        number = reader.line_num
        if None in row:  # more cells than the header has columns
            raise DataError(f"--prompts {path}, line {number}: more cells than columns; quote "
                            "descriptions that contain commas")  # fmt: skip
        yield f"line {number}", row


def _json_lines(path: Path, text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"--prompts {path}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"--prompts {path}, line {number}: expected an object {{...}}")
        unknown = [k for k in row if k not in COLUMNS]
        if unknown:
            raise DataError(
                f"--prompts {path}, line {number}: unknown field(s) {', '.join(unknown)}; "
                f"use {', '.join(COLUMNS)}"
            )
        yield f"line {number}", row
