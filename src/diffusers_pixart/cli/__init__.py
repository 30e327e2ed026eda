"""The ``pixart`` command: ``pixart generate``, ``pixart convert``, ``pixart eval``.

Each sub-command lives in its own module of this package with a ``register(subparsers)`` function that adds its parser
and sets ``func``, the callable that runs it with the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules of this package, one per sub-command.
COMMANDS = ("generate", "convert", "eval")


def build_parser() -> argparse.ArgumentParser:
    """The ``pixart`` argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="pixart", description="PixArt-alpha: generate, convert, evaluate.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pixart`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"pixart {args.command}: error: {error}", file=sys.stderr)
        return 2
