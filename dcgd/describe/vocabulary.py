"""Plain-text vocabularies and prompt templates, replaceable by the user.

A vocabulary file holds one name per line (``#`` starts a comment). Places365's
``categories_places365.txt`` lines (``/a/arena/hockey 15``) are read as ``arena hockey``.
A template file holds one prompt per line with ``{}`` where the name goes.

A bare file name (``imagenet_classes.txt``) is looked up in the package's ``dcgd/assets``
when it is not a path on disk.
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from pathlib import Path

from dcgd.errors import ConfigError

_PLACES_LINE = re.compile(r"^/[a-z]/(\S+)\s+\d+$")


def asset_names() -> list[str]:
    """Vocabulary / template files shipped in ``dcgd/assets``."""
    folder = files("dcgd").joinpath("assets")
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".txt"))


def resolve_text_file(name_or_path: str | Path, what: str) -> Path:
    """A path on disk, or a bare name from ``dcgd/assets``; a clear error otherwise."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if len(path.parts) == 1:
        packaged = files("dcgd").joinpath("assets", path.name)
        if packaged.is_file():
            return Path(str(packaged))
    raise ConfigError(
        f"{what} file {str(name_or_path)!r} not found. Give a path to a text file with one "
        f"entry per line, or one of the files shipped in dcgd/assets: {asset_names()}."
    )


def _lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _clean_name(line: str) -> str:
    match = _PLACES_LINE.match(line)
    if match:  # Places365: /b/balcony/interior 33 -> balcony interior
        line = match.group(1).replace("/", " ")
    return line.replace("_", " ")


def read_vocabulary(name_or_path: str | Path, what: str = "vocabulary") -> list[str]:
    """Names, in file order, duplicates dropped."""
    path = resolve_text_file(name_or_path, what)
    names = list(dict.fromkeys(_clean_name(line) for line in _lines(path)))
    if not names:
        raise ConfigError(f"{what} file {str(path)!r} holds no names.")
    return names


def read_templates(name_or_path: str | Path) -> list[str]:
    """Prompt templates, each with exactly one ``{}``."""
    path = resolve_text_file(name_or_path, "prompt template")
    templates = _lines(path)
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ConfigError(
            f"prompt template file {str(path)!r} must hold lines with exactly one '{{}}' "
            f"(where the name goes); bad lines: {bad[:3] or 'the file is empty'}."
        )
    return templates


def text_digest(items: list[str]) -> str:
    """Short content hash: replacing a vocabulary file changes the describer's cache key."""
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
