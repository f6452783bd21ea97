"""Helpers for tests that execute chapters: what an executed notebook glued."""
from __future__ import annotations

from pathlib import Path

import nbformat


def glued(notebook: Path, name: str) -> str:
    """The text/plain value the executed ``notebook`` glued under ``name`` (myst_nb.glue)."""
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            scrapbook = output.get("metadata", {}).get("scrapbook", {})
            if scrapbook.get("name") == name:
                return output["data"][scrapbook.get("mime_prefix", "") + "text/plain"]
    raise AssertionError(f"{notebook}: nothing glued as {name!r}")


def run_on_tiny_cifar10(chapter: Path, tmp_path: Path, monkeypatch, per_file: int, overrides: dict) -> tuple[Path, Path]:
    """Run ``chapter`` under ``smoke`` on tiny CIFAR-10 files (``per_file`` images per batch file) read
    from a ``data_root`` of its own, with an isolated run cache; returns (executed notebook, run cache)."""
    from clmini.book.runner import run_notebook
    from engine_helpers import write_cifar

    data_root = tmp_path / "data"
    write_cifar(data_root, per_file=per_file)
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("CLMINI_RUNS", str(runs_dir))   # the kernel inherits it: an isolated run cache
    output = run_notebook(chapter, "smoke", output=tmp_path / "out" / f"{chapter.stem}.ipynb",
                          overrides={"dataset": "cifar10", "data_root": str(data_root), **overrides}, progress=False)
    return output, runs_dir
