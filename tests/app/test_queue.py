"""The model queue: one job at a time, first come first served, progress per job."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from dcgd.app.queue import ModelQueue, QueueFull


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _blocked_first_job(queue: ModelQueue, release: threading.Event, work=None):
    """Start job "first" in a thread and wait until it runs; it ends when ``release`` is set."""

    def first():
        if work:
            work()
        release.wait(10)

    thread = threading.Thread(target=queue.run, args=("first", 5, first))
    thread.start()
    _wait_for(lambda: queue.busy)
    return thread


def test_jobs_run_one_at_a_time_in_arrival_order():
    queue = ModelQueue(torch.nn.Linear(1, 1))
    release = threading.Event()
    lock, running, most, order = threading.Lock(), [0], [0], []

    def job(name):
        def work():
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                order.append(name)
            time.sleep(0.01)  # long enough for an overlapping job to show up in `running`
            with lock:
                running[0] -= 1

        return work

    first = _blocked_first_job(queue, release)
    threads = []
    for i in range(8):  # each waits in turn before the next arrives: a known arrival order
        thread = threading.Thread(target=queue.run, args=(f"job{i}", 1, job(i)))
        thread.start()
        threads.append(thread)
        _wait_for(lambda i=i: queue.waiting == i + 1)
    release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert order == list(range(8))  # first come, first served (a plain Lock would not say)
    assert most[0] == 1
    assert not queue.busy and queue.waiting == 0


def test_progress_counts_unet_forwards_and_places_in_the_queue():
    unet = torch.nn.Linear(1, 1)
    queue = ModelQueue(unet)
    release = threading.Event()
    first = _blocked_first_job(queue, release, work=lambda: [unet(torch.ones(1)) for _ in range(3)])
    _wait_for(lambda: queue.progress("first").get("step") == 3)
    assert queue.progress("first")["state"] == "running"
    assert queue.progress("first")["steps"] == 5
    second = threading.Thread(target=queue.run, args=("second", 2, lambda: None))
    second.start()
    _wait_for(lambda: queue.waiting == 1)
    assert queue.progress("second") == {"state": "waiting", "ahead": 1}
    assert queue.progress("never sent") == {"state": "unknown"}
    release.set()
    first.join(10)
    second.join(10)
    assert queue.progress("first") == {"state": "unknown"}  # done


def test_a_failing_job_hands_the_turn_on():
    queue = ModelQueue(torch.nn.Linear(1, 1))

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        queue.run("a", 1, broken)
    assert queue.run("b", 1, lambda: 42) == 42


def test_a_full_queue_refuses_more():
    queue = ModelQueue(torch.nn.Linear(1, 1), max_waiting=1)
    release = threading.Event()
    first = _blocked_first_job(queue, release)
    second = threading.Thread(target=queue.run, args=("second", 1, lambda: None))
    second.start()
    _wait_for(lambda: queue.waiting == 1)
    with pytest.raises(QueueFull, match="the queue is full: 1 waiting"):
        queue.run("third", 1, lambda: None)
    release.set()
    first.join(10)
    second.join(10)
