"""One job at a time on the model, first come first served, with each job's progress.

The model (its U-Net, its buffers, the GPU's memory) is shared by every request, so jobs run
strictly one after another; waiting clients get their turn in arrival order (a plain lock
lets late comers overtake). Progress is counted by a forward hook on the U-Net: the sampler
calls it once per step (both guidance branches go through one batched forward).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class QueueFull(Exception):
    """Too many jobs are already waiting; the client should come back later."""


class ModelQueue:
    """Run jobs one at a time on ``unet``'s model; at most ``max_waiting`` wait behind it."""

    def __init__(self, unet: torch.nn.Module, max_waiting: int = 32) -> None:
        self.max_waiting = max_waiting
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0  # the ticket whose job runs (or may run) now
        self._waiting: dict[int, str] = {}  # ticket -> job id, in arrival order
        self._running: str | None = None
        self._step = 0
        self._steps = 0
        self._started = 0.0
        unet.register_forward_hook(self._count_step)

    def _count_step(self, *_: Any) -> None:
        self._step += 1

    def run(self, job: str, steps: int, work: Callable[[], T]) -> T:
        """Wait for ``job``'s turn, then return ``work()``; ``steps`` is its length for progress."""
        with self._turn:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"the queue is full: {len(self._waiting)} waiting")
            ticket = self._next_ticket
            self._next_ticket += 1
            self._waiting[ticket] = job
            while self._serving != ticket:
                self._turn.wait()
            del self._waiting[ticket]
            self._running, self._step, self._steps = job, 0, steps
            self._started = time.monotonic()
        try:
            return work()
        finally:
            with self._turn:  # always hand the turn on, or every later job waits forever
                self._running = None
                self._serving += 1
                self._turn.notify_all()

    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def progress(self, job: str) -> dict[str, Any]:
        """Where ``job`` is: waiting (how many jobs run or wait before it), running (step of
        steps, seconds since it started) or unknown (finished, or never sent)."""
        with self._turn:
            if self._running == job:
                return {
                    "state": "running",
                    "step": min(self._step, self._steps),
                    "steps": self._steps,
                    "elapsed": round(time.monotonic() - self._started, 2),
                }
            for ticket, waiting in self._waiting.items():
                if waiting == job:
                    ahead = sum(1 for t in self._waiting if t < ticket)
                    return {"state": "waiting", "ahead": ahead + int(self._running is not None)}
        return {"state": "unknown"}
