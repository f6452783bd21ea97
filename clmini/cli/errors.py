"""How every command ends a failure: one message naming the problem, and a non-zero exit status.

``2`` for input that does not fit (a value, a file, a path: nothing was run), ``1`` for a run or a
build that failed, ``130`` when interrupted. The Python stack is for those who ask for it:
``--debug`` on any command, or ``CLMINI_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Failures that mean "what you gave does not fit": a value, a missing file, a path of the wrong kind.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="on failure, show the Python stack (also: CLMINI_DEBUG=1)")


def debugging(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("CLMINI_DEBUG", "") not in ("", "0")


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, any exception turned into its message and an exit status."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the one place every failure is reported
        if debugging(args):
            raise
        print(f"error: {describe(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(err, BAD_INPUT) else EXIT_FAILED


def describe(err: BaseException) -> str:
    """The message, prefixed with the exception's name where the message alone would not say what
    kind of failure it was (an unexpected one), then where to find more."""
    message = str(err) or type(err).__name__
    expected = isinstance(err, (ValueError, OSError, ArithmeticError)) or type(err).__module__.startswith("clmini")
    if expected:
        return message
    return f"{type(err).__name__}: {message} (an unexpected failure: rerun with --debug or CLMINI_DEBUG=1 " \
           f"to see where, and report it)"
