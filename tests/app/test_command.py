"""``python -m dcgd app``: its help, its refusals, and a real start on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests

from dcgd.cli import main
from tests.cli.helpers import help_text


def test_help_says_what_listening_on_every_address_exposes(capsys):
    text = help_text(capsys, "app")
    assert "default 127.0.0.1" in text
    assert "--host 0.0.0.0 serves every network this machine is on" in text
    assert "anyone who can reach the port can upload images and run the model" in text
    assert "curl -F image=@photo.png -F mask=@mask.png" in text


def test_a_taken_port_or_a_missing_checkpoint_is_one_line_before_the_model_loads(
    app_checkpoint, capsys
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert main(["app", "--checkpoint", str(app_checkpoint), "--port", str(port)]) == 2
        assert time.monotonic() - started < 5  # refused before loading the model
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["app", "--checkpoint", "nowhere.ckpt"]) == 2
    assert "checkpoint nowhere.ckpt does not exist" in capsys.readouterr().err
    assert main(["app", "--checkpoint", str(app_checkpoint), "--port", "70000"]) == 2
    assert "--port must be a whole number from 1 to 65535" in capsys.readouterr().err


def test_the_command_serves_the_page_and_the_api_on_loopback(app_checkpoint, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "dcgd", "app", "--checkpoint", str(app_checkpoint)]
    log = (tmp_path / "app.log").open("w")
    server = subprocess.Popen([*argv, "--port", str(port)], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "app.log").read_text()
            assert time.monotonic() < deadline, "the app did not answer in 120 s"
            try:
                health = requests.get(f"{url}/api/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        assert health.json()["status"] == "ok"
        assert "<canvas" in requests.get(url, timeout=10).text
        assert requests.get(f"{url}/api/model", timeout=10).json()["model"] == str(app_checkpoint)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    assert f"dcgd app: http://127.0.0.1:{port}/" in (tmp_path / "app.log").read_text()
