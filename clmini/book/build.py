"""Build the HTML book from the executed chapters in ``book/chapters/``; Sphinx never executes anything.

The build is ``jupyter-book build . -W -n --keep-going``: every warning fails it. Each chapter page
is rendered from its executed ``.ipynb``, which the build also copies to ``_sources/`` and the page's
download menu offers (see ``_config.yml``).
"""
from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import nbformat

from clmini.book.errors import NotebookError
from clmini.book.parameters import DEFAULT_PROFILE
from clmini.book.publish import ledger_summary, published_results, read_ledger, results_store, this_build
from clmini.book.runner import run_chapters
from clmini.book.toc import CHAPTERS_DIR, toc_chapters

MATHJAX_SCRIPT = Path("node_modules") / "mathjax" / "es5" / "tex-mml-chtml.js"
#: Where the runs of the last ``python -m clmini book`` came from, one MyST paragraph that the front
#: page (book/intro.md) includes; generated beside the executed chapters, never committed.
PROVENANCE = CHAPTERS_DIR / "provenance.txt"
UNRECORDED = ("**This build**: its chapters were executed outside `python -m clmini book`, so where "
              "their runs came from (published results, the run cache, or trained here) was not recorded.")


def write_provenance(root: Path | str, profile: str, entries: list[dict], today: datetime.date | None = None) -> Path:
    """Write :data:`PROVENANCE`: :func:`this_build` of ``entries``."""
    path = Path(root) / PROVENANCE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(this_build(entries, profile, today) + "\n")
    return path


def ensure_provenance(root: Path | str) -> Path:
    """:data:`PROVENANCE` as it is, else written as :data:`UNRECORDED` (chapters executed some other
    way, e.g. one by one with ``python -m clmini run``, then built with ``--skip-run``)."""
    path = Path(root) / PROVENANCE
    if not path.is_file():
        path.write_text(UNRECORDED + "\n")
    return path


def stored_errors(notebook: Path | str) -> list[str]:
    """Error outputs kept in an executed notebook (a book must never show one)."""
    nb = nbformat.read(notebook, as_version=4)
    return [f"{out.get('ename')}: {out.get('evalue')}" for cell in nb.cells
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def _check_inputs(root: Path) -> None:
    """NotebookError unless MathJax is installed and every chapter is executed, without errors.

    Jupyter Book would build a page from a stale or failed chapter without a word; this refuses.
    """
    if not (root / MATHJAX_SCRIPT).is_file():
        raise NotebookError(f"MathJax is missing ({root / MATHJAX_SCRIPT}); install it with "
                            "`npm ci` in the repository root (`make book` does it)")
    for stem in toc_chapters(root):
        chapter = root / CHAPTERS_DIR / f"{stem}.ipynb"
        if not chapter.is_file():
            raise NotebookError(f"{chapter} has not been executed yet (run `python -m clmini book`)")
        errors = stored_errors(chapter)
        if errors:
            raise NotebookError(f"{chapter} holds error outputs: {'; '.join(errors)}")


def build_html(root: Path | str, path_output: Path | str | None = None) -> Path:
    """``jupyter-book build <root> -W -n --keep-going``; returns ``_build/html/index.html``."""
    root = Path(root).resolve()
    _check_inputs(root)
    ensure_provenance(root)
    out = Path(path_output).resolve() if path_output else root
    command = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
               "build", str(root), "-W", "-n", "--keep-going", "--path-output", str(out)]
    print("building:", "jupyter-book", " ".join(command[3:]), flush=True)
    if subprocess.run(command, cwd=root, check=False).returncode != 0:
        raise NotebookError("jupyter-book build failed (see the warnings above)")
    index = out / "_build" / "html" / "index.html"
    if not index.is_file():
        raise NotebookError(f"the build finished without {index}")
    return index


def build_book(root: Path | str, profile: str = DEFAULT_PROFILE, skip_run: bool = False,
               path_output: Path | str | None = None) -> Path:
    """Run every chapter (unless ``skip_run``), reading the profile's published results first
    (``results/<profile>/``), say where every run came from, then build the HTML; returns its
    ``index.html``."""
    if not skip_run:
        with published_results(root, profile) as ledger:
            run_chapters(root, profile)
            entries = read_ledger(ledger)
            print(ledger_summary(entries, results_store(root, profile)), flush=True)
        write_provenance(root, profile, entries)
    return build_html(root, path_output)
