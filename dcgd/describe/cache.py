"""Descriptions on disk, so training never recomputes them and DDP ranks never race.

Layout: ``<cache_dir>/<settings hash>/settings.json`` plus ``shard-*.jsonl`` files, one JSON
line per sample: ``{"key", "t_info", "t_mask", "scores"}``. The settings hash covers
everything that changes a description (model weights, vocabularies, templates, top-k,
phrasing), so changing the describer starts a fresh folder instead of serving stale text.
A sample's key is the hash of its content: ``source`` (quantised to 8 bits) and ``mask``.

Writes are whole shard files written under a temporary name and renamed into place
(atomic on POSIX), each with a name unique to its writer: a reader never sees half a file,
two writers never touch the same file, and a killed run loses at most the shard it had not
yet written. A rerun reads the shards and computes only what is missing (resume).

In memory a cache holds only the two texts per key (a Places365-sized cache stays a few
hundred MB per rank); the scores stay in the shard files for inspection, so a description
read from the cache has empty ``scores``.

Who writes: ``python -m dcgd describe`` (one process) fills the cache; in training,
:class:`CachedDescriber` writes from global rank 0 only (``write="rank0"``) or not at all
(``write="never"``), the other ranks read. Training describes in its DataLoader workers,
processes that ``torch.distributed`` may not know (a spawned worker has no process group):
the data module runs each describe call under :func:`acting_rank` with the rank it captured
when it built the loader, and each worker (rank 0's, when several) writes shards of its own,
flushed when the worker exits.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from multiprocessing import util as mp_util
from pathlib import Path
from typing import Any, Literal

import torch

from dcgd.describe.base import Describer, Description
from dcgd.errors import ConfigError

WriteMode = Literal["always", "rank0", "never"]


def settings_hash(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_folder(cache_dir: str | Path, settings: dict[str, Any]) -> Path:
    """The folder holding the descriptions of one describer setting."""
    return Path(cache_dir) / settings_hash(settings)


def sample_keys(batch: dict[str, Any]) -> list[str]:
    """One content key per sample: hash of ``source`` (8-bit) and ``mask`` (binary)."""
    source = (
        ((batch["source"].detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    )
    mask = (batch["mask"].detach() > 0.5).to(torch.uint8).cpu()
    keys = []
    for s, m in zip(source, mask, strict=True):
        digest = hashlib.sha256()
        digest.update(str(tuple(s.shape)).encode())
        digest.update(s.contiguous().numpy().tobytes())
        digest.update(m.contiguous().numpy().tobytes())
        keys.append(digest.hexdigest()[:32])
    return keys


def select(batch: dict[str, Any], indices: list[int]) -> dict[str, Any]:
    """The sub-batch of the given samples: tensors and lists indexed along the first axis."""
    size = len(batch["source"])
    out: dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and len(value) == size:
            out[name] = value[torch.as_tensor(indices, device=value.device, dtype=torch.long)]
        elif isinstance(value, (list, tuple)) and len(value) == size:
            out[name] = [value[i] for i in indices]
        else:
            out[name] = value
    return out


# The rank a caller vouches for (see acting_rank); None: ask torch.distributed / the env.
_ACTING_RANK: ContextVar[int | None] = ContextVar("dcgd_acting_rank", default=None)


@contextmanager
def acting_rank(rank: int) -> Iterator[None]:
    """Describe as global rank ``rank`` inside the block.

    For a DataLoader worker: a process of its own, with no process group when spawned and no
    ``RANK`` in its environment under Lightning's launchers, so it cannot tell its rank itself.
    """
    token = _ACTING_RANK.set(int(rank))
    try:
        yield
    finally:
        _ACTING_RANK.reset(token)


def global_rank() -> int:
    acting = _ACTING_RANK.get()
    if acting is not None:
        return acting
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


class DescriptionCache:
    """The shard folder of one describer setting: read all shards, append new ones."""

    def __init__(
        self, cache_dir: str | Path, settings: dict[str, Any], shard_size: int = 1024
    ) -> None:
        self.root = cache_folder(cache_dir, settings)
        self.settings = settings
        self.shard_size = shard_size
        self.entries: dict[str, tuple[str, str]] = {}  # key -> (t_info, t_mask)
        self.pending: dict[str, Description] = {}
        self._read_files: set[str] = set()
        self._shards_written = 0
        self.refresh()

    def refresh(self) -> int:
        """Read shards not read yet (another writer may have added some); returns how many."""
        if not self.root.is_dir():
            return 0
        new = sorted(p for p in self.root.glob("shard-*.jsonl") if p.name not in self._read_files)
        for path in new:
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                self.entries[row["key"]] = (row["t_info"], row["t_mask"])
            self._read_files.add(path.name)
        return len(new)

    def __len__(self) -> int:
        return len(self.entries) + len(self.pending)

    def get(self, key: str) -> Description | None:
        if key in self.pending:
            return self.pending[key]
        texts = self.entries.get(key)
        return Description(*texts) if texts is not None else None

    def put(self, key: str, description: Description) -> None:
        self.pending[key] = description
        if len(self.pending) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Write pending descriptions as one new shard (temp file + atomic rename)."""
        if not self.pending:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        settings_file = self.root / "settings.json"
        if not settings_file.exists():
            self._atomic_write(
                settings_file, json.dumps(self.settings, indent=2, sort_keys=True, default=str)
            )
        name = f"shard-{time.time_ns()}-{socket.gethostname()}-{os.getpid()}-{self._shards_written}.jsonl"
        lines = [
            json.dumps({"key": k, "t_info": d.t_info, "t_mask": d.t_mask, "scores": d.scores})
            for k, d in self.pending.items()
        ]
        path = self._atomic_write(self.root / name, "\n".join(lines) + "\n")
        self._shards_written += 1
        self._read_files.add(name)
        self.entries.update((k, (d.t_info, d.t_mask)) for k, d in self.pending.items())
        self.pending = {}
        return path

    @staticmethod
    def _atomic_write(path: Path, text: str) -> Path:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path


class CachedDescriber(Describer):
    """Any describer behind a disk cache: hits are read, misses computed (and stored).

    ``write``: ``"always"`` (the describe command, a single process), ``"rank0"`` (training:
    only global rank 0 stores its misses), ``"never"`` (read-only). Settings are the wrapped
    describer's, so a cached and an uncached describer give the same cache key and text.
    """

    def __init__(
        self,
        describer: Describer,
        cache_dir: str,
        write: WriteMode = "rank0",
        shard_size: int = 1024,
        rescan_seconds: float = 60.0,
    ) -> None:
        if write not in ("always", "rank0", "never"):
            raise ConfigError(f"write must be 'always', 'rank0' or 'never'; got {write!r}.")
        self.describer = describer
        self.cache_dir = cache_dir
        self.write = write
        self.shard_size = shard_size
        self.rescan_seconds = rescan_seconds
        self.hits = 0
        self.computed = 0
        self._cache: DescriptionCache | None = None
        self._last_scan = 0.0
        self._flush_pid: int | None = None  # the process whose exit flushes the pending

    @property
    def cache(self) -> DescriptionCache:
        if self._cache is None:
            self._cache = DescriptionCache(
                self.cache_dir, self.describer.settings(), self.shard_size
            )
            self._last_scan = time.monotonic()
        if self.write != "never" and self._flush_pid != os.getpid():
            # First use in this process (the main one, or a DataLoader worker that got a copy).
            if self._flush_pid is not None:
                # A copy's pending descriptions are the parent's, which writes them itself.
                self._cache.pending = {}
            self._flush_pid = os.getpid()
            # A multiprocessing finalizer, not atexit: a forked worker leaves by os._exit,
            # which skips atexit but runs these (the main process runs them at exit too).
            mp_util.Finalize(self, self.flush, exitpriority=10)
        return self._cache

    @property
    def writes(self) -> bool:
        return self.write == "always" or (self.write == "rank0" and global_rank() == 0)

    def settings(self) -> dict[str, Any]:
        return self.describer.settings()

    def describe(self, batch: dict[str, Any]) -> list[Description]:
        cache = self.cache
        keys = sample_keys(batch)
        found = [cache.get(k) for k in keys]
        if (
            any(d is None for d in found)
            and time.monotonic() - self._last_scan > self.rescan_seconds
        ):
            cache.refresh()
            self._last_scan = time.monotonic()
            found = [cache.get(k) for k in keys]
        missing = [i for i, d in enumerate(found) if d is None]
        self.hits += len(keys) - len(missing)
        if missing:
            computed = self.describer.describe(select(batch, missing))
            self.computed += len(missing)
            writes = self.writes
            for i, description in zip(missing, computed, strict=True):
                found[i] = description
                if writes:
                    cache.put(keys[i], description)
        return found  # type: ignore[return-value]

    def flush(self) -> None:
        # Only a writer puts pending descriptions: no rank check here, which at a worker's
        # exit (outside acting_rank) could not tell the rank anyway.
        if self._cache is not None:
            self._cache.flush()
