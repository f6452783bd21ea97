"""The command line the seed-paired benchmarks share (``precision.py``, ``recipe.py``).

Each trains a set of configs for some seeds through the run cache (``--runs-dir``: an interrupted
benchmark resumes, a finished one is re-tabled in seconds) and prints a markdown table, written to
``--markdown`` too when given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clmini.engine import resolve_device  # noqa: E402


def main(doc: str, train: Callable, markdown: Callable, argv=None,
         check_device: Callable[[torch.device], None] | None = None, default_seeds=(0, 1, 2)) -> int:
    """``train(seeds, runs_dir, device) -> table``; ``markdown(table, seeds, device_name) -> str``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(default_seeds))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if check_device is not None:
        check_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    text = markdown(train(args.seeds, args.runs_dir, device), args.seeds, name)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0
