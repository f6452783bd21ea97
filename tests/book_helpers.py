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
