"""Where a book keeps things: its root, its reading order (``_toc.yml``), its executed chapters,
and the order in which ``python -m clmini book`` executes them.

The execution order is the reading order, except for a page that reads what the chapters record
(the "Results at a glance" page): its source says so in its notebook metadata (the jupytext header),

.. code-block:: yaml

    clmini:
      run_after_chapters: true
    jupytext:
      notebook_metadata_filter: clmini   # keeps the key when jupytext rewrites the header

and it is executed after every other chapter, wherever it stands in ``_toc.yml``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clmini.book.errors import ParameterError
from clmini.book.sources import chapter_source, read_source

CHAPTERS_DIR = Path("book") / "chapters"  # executed chapters, the pages Jupyter Book renders
METADATA_KEY = "clmini"                   # the book's own notebook metadata, in a source's header
RUN_AFTER_CHAPTERS = "run_after_chapters"  # under METADATA_KEY: true for a page that reads the chapters' records


def book_root(start: Path | str) -> Path:
    """The nearest directory at or above ``start`` holding ``_toc.yml``, else the working directory."""
    start = Path(start).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "_toc.yml").is_file():
            return candidate
    return Path.cwd().resolve()


def toc_files(root: Path | str) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (root first), in reading order."""
    path = Path(root) / "_toc.yml"
    if not path.is_file():
        raise ParameterError(f"{path}: no such file; a book root holds _toc.yml (give it with --root)")
    try:
        toc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(toc, dict):
        raise ParameterError(f"{path}: expected a mapping with 'root' and 'parts' or 'chapters'")
    files: list[str] = [str(toc["root"])] if toc.get("root") else []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key, []))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return files


def toc_chapters(root: Path | str) -> list[str]:
    """The stems of the generated chapters listed in ``_toc.yml`` (``book/chapters/<stem>``), in order."""
    prefix = CHAPTERS_DIR.as_posix() + "/"
    stems = []
    for entry in toc_files(root):
        entry = entry.removesuffix(".ipynb")
        if entry.startswith(prefix):
            stems.append(entry[len(prefix):])
    return stems


def runs_after_chapters(source: Path | str) -> bool:
    """Whether the chapter source asks to be executed after every other chapter (see the module).

    ParameterError for a flag that is not a bool: a typo must not silently run the page first.
    """
    metadata = read_source(source).metadata.get(METADATA_KEY, {})
    if not isinstance(metadata, dict):
        raise ParameterError(f"{source}: the {METADATA_KEY!r} metadata of its header must be a mapping, "
                             f"got {metadata!r}")
    flag = metadata.get(RUN_AFTER_CHAPTERS, False)
    if not isinstance(flag, bool):
        raise ParameterError(f"{source}: {METADATA_KEY}.{RUN_AFTER_CHAPTERS} must be true or false, got {flag!r}")
    return flag


def execution_order(root: Path | str) -> list[str]:
    """The chapter stems of ``_toc.yml`` in the order ``python -m clmini book`` executes them: the
    reading order, with the pages that run after the chapters moved to the end (in their own order)."""
    stems = toc_chapters(root)
    last = {stem for stem in stems if runs_after_chapters(chapter_source(root, stem))}
    return [s for s in stems if s not in last] + [s for s in stems if s in last]


def recorded_chapters(root: Path | str) -> list[str]:
    """The chapters whose records a results page reads: those of ``_toc.yml`` that do not themselves
    run after the chapters, in reading order."""
    return [stem for stem in toc_chapters(root) if not runs_after_chapters(chapter_source(root, stem))]
