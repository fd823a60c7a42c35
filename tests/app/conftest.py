"""A real uvicorn server on loopback, serving the app over a tiny trained checkpoint."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image

from dcgd.app.server import Limits, create_app
from dcgd.describe.base import Describer, Description
from dcgd.sampling.pipeline import load_pipeline
from tests.training.tiny import fit_tiny_checkpoint

# Small enough that the tests can go over them cheaply.
LIMITS = Limits(max_bytes=2 * 2**20, max_pixels=1_000_000, max_waiting=32)


@pytest.fixture(scope="session")
def app_checkpoint(tmp_path_factory):
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("app-ckpt"))


@pytest.fixture(scope="session")
def pipeline(app_checkpoint):
    return load_pipeline(app_checkpoint)


def serve(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Start ``app`` under uvicorn in a thread on a free loopback port; its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


@pytest.fixture(scope="session")
def server(pipeline):
    url, running, thread = serve(create_app(pipeline, model_name="tiny", limits=LIMITS))
    yield url
    running.should_exit = True
    thread.join(timeout=10)


def photo(width: int = 80, height: int = 60, shift: int = 0) -> np.ndarray:
    """Tiled colour ramps: a fill the model makes up cannot match them by chance."""
    y, x = np.mgrid[0:height, 0:width]
    return (np.stack([x * 3 + shift, y * 4, (x + y) * 2 + 40], -1) % 256).astype(np.uint8)


def box_mask(height: int = 60, width: int = 80, top: int = 20, left: int = 30) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + 15, left : left + 20] = 255
    return mask


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def read_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image).copy()


class CountingDescriber(Describer):
    """A describer for the tests: ``describe_window`` says what one window is (its source
    ``[3,S,S]`` and mask ``[1,S,S]``), and ``calls`` counts the batches it was asked about."""

    def __init__(self) -> None:
        self.calls = 0

    def settings(self) -> dict:
        return {"kind": type(self).__name__}

    def describe(self, batch: dict) -> list[Description]:
        self.calls += 1
        return [
            self.describe_window(source, mask)
            for source, mask in zip(batch["source"], batch["mask"], strict=True)
        ]

    def describe_window(self, source, mask) -> Description:
        raise NotImplementedError
