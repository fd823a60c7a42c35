"""Files a command writes: never over an earlier result unless told, never half-written.

:func:`check_new_file` / :func:`check_out_folder` refuse to replace results unless told
(``--overwrite``), checked before the work. :func:`save_atomic` / :func:`write_atomic` /
:func:`write_folder_atomic` write through a temporary file (or folder) in the destination
folder + ``os.replace``, so a killed run or a full disk leaves the old content or the new one,
never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcgd.errors import ConfigError, DataError, ModelLoadError, one_line


def check_new_file(path: Path, flag: str, overwrite: bool) -> None:
    """A result file a command is about to write: refuse an existing one unless ``overwrite``
    (checked before the work, so a refused run costs nothing)."""
    if path.is_dir():
        raise DataError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise DataError(
            f"{flag} {path} exists; choose a new name, or pass --overwrite to replace it"
        )


def check_out_folder(folder: Path, flag: str, overwrite: bool, what: str) -> None:
    """A folder a command writes ``what`` into: refuse a non-empty one unless ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{flag} {folder} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise DataError(
            f"{flag} {folder} exists and is not empty; choose a new folder, or pass "
            f"--overwrite to replace the {what} written there before"
        )


def _temporary_name(path: Path) -> Path:
    # Hidden, unique, in the destination folder (os.replace is atomic only within one file
    # system), ending in the real suffix: PIL and matplotlib read the format from it. Created
    # with mode 0o666 less the umask, as open() would: mkstemp's 0o600 would outlive the rename.
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def save_atomic(path: Path, save: Callable[[Path], object]) -> Path:
    """Run ``save(tmp)`` (any writer that takes a path), then rename ``tmp`` to ``path``.

    On any failure the temporary file is removed and ``path`` keeps what it held; an
    ``OSError`` (full disk, read-only folder) becomes a one-line DataError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_name(path)
    except OSError as err:
        raise DataError(f"could not write {path}: {err.strerror or err}") from None
    try:
        save(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"could not write {path}: {err.strerror or err}; check the folder is writable "
            "and has space"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all (see :func:`save_atomic`)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them

    return save_atomic(path, write)


def write_folder_atomic(folder: Path, fill: Callable[[Path], object]) -> Path:
    """Run ``fill(tmp)`` on a new temporary folder next to ``folder``, then put it in its place.

    An existing ``folder`` is moved aside, replaced, and only then deleted: whatever fails
    (a full disk halfway through ``fill``, a kill), ``folder`` holds the old content or the
    new, never a mix, and no file of the old content survives into the new. (A kill between
    the two renames leaves the old content next to it, as ``.NAME.old-*``.)
    """
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = _sibling(folder, "partial", make_dir=True)
    except OSError as err:
        raise DataError(f"could not create {folder}: {err.strerror or err}") from None
    try:
        fill(tmp)
        old = None
        if folder.exists():
            old = _sibling(folder, "old")
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old is not None:
                os.replace(old, folder)  # put the old one back
            raise
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"could not write {folder}: {err.strerror or err}; check the folder is writable "
            "and has space"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _sibling(folder: Path, what: str, make_dir: bool = False) -> Path:
    """A free hidden name next to ``folder`` (created as a folder with ``make_dir``, with the
    permissions mkdir gives, not mkdtemp's 0o700)."""
    for _ in range(100):
        path = folder.with_name(f".{folder.name}.{what}-{secrets.token_hex(4)}")
        if make_dir:
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        elif not path.exists():
            return path
    raise FileExistsError(f"no free temporary name next to {folder}")


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path`` (a config or spec the user named), or one line saying why
    it cannot be read: missing, not UTF-8 text, or not valid YAML. Safe loading: no tags that
    build Python objects."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; give the path of a YAML file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text; is it the right file?") from None
    except yaml.YAMLError as err:
        why = " ".join(str(err).split())[:200]
        raise ConfigError(f"{what} {path} is not valid YAML: {why}") from None


def read_model_json(path: Path, missing: str) -> dict[str, Any]:
    """The JSON settings file of a saved model (``dcgd_pipeline.json``, ``open_clip_config.json``),
    or one line: ``missing`` when it is not there, why when it is not JSON."""
    if not path.is_file():
        raise ModelLoadError(missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is not a JSON settings file ({one_line(err)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON settings file (not an object)")
    return data
