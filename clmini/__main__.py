"""``python -m clmini <command>``: one entry point, sub-commands registered by their modules."""
from __future__ import annotations

import argparse
import importlib
import sys

from clmini.cli.errors import add_debug_flag, run_command

# Each module exposes ``register(subparsers)`` adding its sub-commands; each sub-parser sets
# ``func`` (called with the parsed namespace, returns an exit code).
COMMAND_MODULES = ("clmini.cli.train", "clmini.cli.book")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clmini", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for command in subparsers.choices.values():
        add_debug_flag(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run the command, and end any failure with one message and an exit status
    (:mod:`clmini.cli.errors`)."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
