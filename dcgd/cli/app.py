"""``python -m dcgd app``: a page to remove objects by painting over them, and an HTTP API.

Loads the model once, then serves :func:`dcgd.app.server.create_app` with uvicorn. See
:mod:`dcgd.app` for what the page does and why it is FastAPI and not Gradio.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dcgd.cli.options import add_device_argument
from dcgd.errors import ConfigError

if TYPE_CHECKING:  # torch, FastAPI and the model load only when the server starts
    pass

HELP = "a page to remove objects by painting over them, and an HTTP API (one server)"

EPILOG = """\
The page: open or drop an image, paint over what to remove, run, compare, download.
The API (what the page uses; documented at /docs, schema at /openapi.json):
  curl -F image=@photo.png -F mask=@mask.png -F steps=25 \\
       http://127.0.0.1:7860/api/remove -o result.png
  GET /api/model (settings and defaults), GET /api/health.

--host: the default 127.0.0.1 serves this machine only. --host 0.0.0.0 serves every network
  this machine is on: anyone who can reach the port can upload images and run the model on
  your hardware, with no password and no encryption (HTTP). Use it only on a network you
  trust, or put an authenticating HTTPS proxy in front."""


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be a whole number from 1 to 65535; got {text!r}")
    return port


def positive(option: str, kind: type = int) -> Callable[[str], float]:
    """An argparse ``type``: a number of ``kind`` above 0, or one ``error:`` line."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise ConfigError(f"{option} must be a number above 0; got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a .ckpt written by 'python -m dcgd fit' or a directory written by 'dcgd export'",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes "
        "the model and the upload to every network this machine is on, see below)",
    )
    parser.add_argument("--port", type=port_number, default=7860, help="default 7860")
    add_device_argument(parser)
    parser.add_argument(
        "--no-ema", action="store_true", help="a .ckpt's raw weights instead of its EMA"
    )
    parser.add_argument(
        "--describer",
        help="open_clip model name or directory that describes the image when T_info / "
        "T_mask are left empty (default: empty prompts)",
    )
    parser.add_argument(
        "--describer-pretrained", help="pretrained tag or checkpoint file of --describer"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=positive("--max-upload-mb", float),
        default=32.0,
        help="largest request body (image + mask) in MB (default 32)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=positive("--max-megapixels", float),
        default=40.0,
        help="largest image, in millions of pixels (default 40)",
    )
    parser.add_argument(
        "--max-waiting",
        type=positive("--max-waiting"),
        default=32,
        help="requests that may wait for the model; more are told to come back (default 32)",
    )


def check_free(host: str, port: int) -> None:
    """Refuse a taken port now, before the model loads for nothing."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(f"--host {host}: not an address of this machine ({err})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port"
            ) from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from dcgd.app.server import Limits, create_app
    from dcgd.cli.remove import build_describer, require_checkpoint  # the same options
    from dcgd.devices import resolve_device
    from dcgd.sampling.pipeline import load_pipeline

    require_checkpoint(args.checkpoint)
    check_free(args.host, args.port)
    device = resolve_device(args.device)
    pipeline = load_pipeline(args.checkpoint, use_ema=not args.no_ema).to(device)
    limits = Limits(
        max_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_megapixels * 1e6),
        max_waiting=args.max_waiting,
    )
    app = create_app(
        pipeline,
        model_name=args.checkpoint.name if args.checkpoint.is_dir() else str(args.checkpoint),
        describer=build_describer(args),
        limits=limits,
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"dcgd app: http://{shown}:{args.port}/  (API: /docs; stop with Ctrl+C)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}: anyone who can reach this port can use the "
            "model and upload images (no password, no HTTPS)",
            flush=True,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
