"""Where a book keeps things: its root, its reading order (``_toc.yml``), its executed chapters."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clmini.book.errors import ParameterError

CHAPTERS_DIR = Path("book") / "chapters"  # executed chapters, the pages Jupyter Book renders


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
