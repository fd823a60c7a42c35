"""One module per ``python -m dcgd <command>`` that is not a Lightning subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""
