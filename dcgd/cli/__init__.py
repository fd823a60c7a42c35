"""``python -m dcgd``: Lightning subcommands plus the project's own tools.

``fit``/``validate``/``test``/``predict`` go to LightningCLI (jsonargparse: composable
``--config`` files, ``--print_config``). The other commands are small argparse programs, one
module each in this package (``dcgd.cli.<name>``: ``HELP``, ``add_arguments``, ``run``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dcgd.errors import DCGDError

LIGHTNING_COMMANDS = {
    "fit": "train a model (DCGD U-Net or CLIP text encoder) from --config files",
    "validate": "run the validation loop of a config / checkpoint",
    "test": "run the test loop: Table-1 metrics per mask-ratio bucket",
    "predict": "run the predict loop of a config / checkpoint",
}

# Reserved command surface, in the order --help shows it.
TOOL_COMMANDS = [
    "describe",
    "masks",
    "remove",
    "evaluate",
    "benchmark",
    "sweep",
    "compare",
    "bench",
    "export",
    "app",
]


def available_tools() -> dict[str, str]:
    """The tool commands mapped to their module path."""
    return {name: f"dcgd.cli.{name}" for name in TOOL_COMMANDS}


def _usage() -> str:
    lines = [
        "usage: python -m dcgd <command> [options]",
        "",
        "Dual-CLIP Guided Diffusion for object removal: train, ablate, sweep, compare.",
        "",
        "training (LightningCLI; compose configs with --config a.yaml --config b.yaml):",
    ]
    for name, text in LIGHTNING_COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    tools = available_tools()
    if tools:
        lines += ["", "tools:"]
        for name, module in tools.items():
            lines.append(f"  {name:<10} {importlib.import_module(module).HELP}")
    lines += ["", "Run 'python -m dcgd <command> --help' for the options of one command."]
    return "\n".join(lines)


def _run_tool(name: str, module_path: str, argv: list[str]) -> int:
    module = importlib.import_module(module_path)
    parser = argparse.ArgumentParser(prog=f"python -m dcgd {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command in LIGHTNING_COMMANDS:
            from dcgd.cli.lightning import run_lightning

            return run_lightning(command, rest)
        tools = available_tools()
        if command in tools:
            return _run_tool(command, tools[command], rest)
    except DCGDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"error: unknown command {command!r}.\n\n{_usage()}", file=sys.stderr)
    return 2
