"""Chapter sources: MyST Markdown notebooks, ``notebooks/<stem>.md``, read with jupytext.

The sources are text so that a diff shows what changed and no output or execution count can be
committed. A ``.ipynb`` (what ``jupytext --to ipynb`` makes of a source) is read as well, so that a
converted or hand-made notebook runs the same way.
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat

from clmini.book.errors import ParameterError

SOURCES_DIR = Path("notebooks")
SOURCE_SUFFIX = ".md"
SOURCE_SUFFIXES = (SOURCE_SUFFIX, ".ipynb")


def chapter_source(root: Path | str, stem: str) -> Path:
    """Where the source of chapter ``stem`` lives in the book at ``root``."""
    return Path(root) / SOURCES_DIR / f"{stem}{SOURCE_SUFFIX}"


def read_source(path: Path | str) -> nbformat.NotebookNode:
    """The notebook a chapter source holds; ParameterError (nothing has run) when there is none."""
    path = Path(path)
    if path.suffix not in SOURCE_SUFFIXES:
        raise ParameterError(f"{path}: a chapter source is a MyST Markdown notebook (.md) or a .ipynb")
    if not path.is_file():
        text = path.with_suffix(SOURCE_SUFFIX)
        hint = f" (the chapter source is {text})" if text.is_file() else ""
        raise ParameterError(f"no such notebook: {path}{hint}")
    try:
        return jupytext.read(path)
    except Exception as exc:  # jupytext and nbformat raise many kinds: all mean "not a notebook"
        raise ParameterError(f"{path}: not a readable notebook ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from exc
