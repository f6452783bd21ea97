"""``python -m clmini run`` (one chapter), ``book`` (every chapter, then the HTML), ``publish`` and
``verify`` (the published results of a profile)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clmini.cli.errors import add_debug_flag, run_command
from clmini.book import (DEFAULT_PROFILE, build_book, describe, publish, published_results, read_parameters,
                         resolve_parameters, run_notebook, verify)
from clmini.book.toc import book_root



def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="execute one chapter notebook with checked parameters (wraps papermill)",
        description="Execute a chapter notebook with papermill after checking every parameter "
                    "against its `parameters` cell. Example: python -m clmini run "
                    "notebooks/01_infonce_temperature.md --profile quick -p temperatures \"[0.1, 0.5]\"",
    )
    run.add_argument("notebook", type=Path, help="the chapter source, a MyST Markdown notebook such as "
                                                  "notebooks/01_....md (a .ipynb works too)")
    _add_profile(run)
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter; VALUE is read as a Python literal or YAML, "
                          "else as a string (repeatable)")
    run.add_argument("-o", "--output", type=Path, default=None,
                     help="where the executed notebook goes (default: book/chapters/<name>.ipynb)")
    run.add_argument("--profiles", type=Path, default=None,
                     help="the profiles file (default: profiles.yaml beside the notebook)")
    run.add_argument("-l", "--list", action="store_true",
                     help="list the notebook's parameters and the profile's values, run nothing")
    run.set_defaults(func=cmd_run)

    book = subparsers.add_parser(
        "book", help="run every chapter of _toc.yml, then build the HTML book",
        description="Execute every chapter listed in _toc.yml into book/chapters/ and build "
                    "the book with `jupyter-book build . -W -n --keep-going`.",
    )
    _add_profile(book)
    book.add_argument("--skip-run", action="store_true",
                      help="build from the chapters already executed in book/chapters/")
    book.add_argument("--root", type=Path, default=Path("."), help="the book root (default: .)")
    book.add_argument("--path-output", type=Path, default=None,
                      help="build into DIR/_build instead of ROOT/_build")
    book.set_defaults(func=cmd_book)

    pub = subparsers.add_parser(
        "publish", help="run a profile's chapters and publish the records of their runs into results/<profile>/",
        description="Run every chapter of a profile (training what the run cache lacks; a killed publish "
                    "resumes from the cache) and write one compact record per run it used (config, metrics, "
                    "history, provenance; no weights) into results/<profile>/. Refuses a working tree with "
                    "uncommitted changes to the code or the chapters.",
    )
    _add_profile(pub)
    pub.add_argument("--root", type=Path, default=Path("."), help="the book root (default: .)")
    pub.set_defaults(func=cmd_publish)

    ver = subparsers.add_parser(
        "verify", help="retrain a random sample of published records and compare their numbers",
        description="Retrain a random sample of the records in results/<profile>/ (into a temporary run "
                    "cache) and compare their metrics with the published ones: equal on the same device, "
                    "precision and torch; within a tolerance elsewhere. Exit 1 on any mismatch.",
    )
    _add_profile(ver)
    ver.add_argument("--root", type=Path, default=Path("."), help="the book root (default: .)")
    ver.add_argument("--sample", type=int, default=3, help="how many records to retrain (default: 3)")
    ver.add_argument("--seed", type=int, default=None, help="seed of the random draw (default: a new draw)")
    ver.set_defaults(func=cmd_verify)


def _add_profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help="smoke (seconds), quick (default; a laptop CPU) or full (a GPU)")


def cmd_run(args: argparse.Namespace) -> int:
    """Bad input raises ParameterError (exit 2), a failing cell NotebookError (exit 1):
    :func:`clmini.cli.errors.run_command` reports either."""
    if args.list:
        return _list(args)
    with published_results(book_root(args.notebook.resolve().parent), args.profile):
        run_notebook(args.notebook, args.profile, args.parameter, args.output, args.profiles)
    return 0


def _list(args: argparse.Namespace) -> int:
    declared = read_parameters(args.notebook)
    values = resolve_parameters(args.notebook, args.profile, args.parameter, args.profiles)
    width = max((len(name) for name in declared), default=0)
    print(f"{args.notebook} — parameters (profile {args.profile!r} values marked *):")
    for name, param in declared.items():
        shown = f"{values[name]!r} *" if name in values else param.source
        print(f"  {name:<{width}}  {shown:<30}  {describe(param.spec)}")
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    index = build_book(args.root, args.profile, args.skip_run, args.path_output)
    print(f"The book is at {index}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    publish(args.root, args.profile)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    problems = verify(args.root, args.profile, args.sample, args.seed)
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    print("verified: every sampled record reproduces" if not problems else f"{len(problems)} mismatch(es)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """These two commands alone (``python -m clmini.cli.book``), e.g. while the rest is being built."""
    parser = argparse.ArgumentParser(prog="python -m clmini.cli.book")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for command in parser._subparsers._group_actions[0].choices.values():
        add_debug_flag(command)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
