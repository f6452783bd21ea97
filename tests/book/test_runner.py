"""The runner: the order `python -m clmini book` executes the pages in, and a clean log.

The results page comes first in the reading order but runs after every chapter, because its source
says so (``clmini: {run_after_chapters: true}`` in its header), not because of its name. Papermill
must know every parameter a cell declares, annotated ones included, so that it warns about none of
the valid values it injects; an unknown name is refused by clmini before papermill runs.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat
import pytest
import yaml

from clmini import book as nbr
from clmini.book import runner, toc

REPO = Path(__file__).resolve().parents[2]

HEADER = """---
{extra}jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
    jupytext_version: 1.19.6
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def source(path: Path, cell: str, body: str = "", metadata: dict | None = None) -> Path:
    """A MyST chapter source at ``path``: its header (with ``metadata``), a parameters cell, ``body``."""
    extra = yaml.safe_dump(metadata, sort_keys=False) if metadata else ""
    path.write_text(HEADER.format(extra=extra) + f"\n# {path.stem}\n\n```{{code-cell}}\n:tags: [parameters]\n\n"
                    f"{cell}\n```\n{body}")
    return path


def make_book(root: Path, stems: list[str], last: set[str]) -> Path:
    """A book at ``root`` whose chapters are ``stems`` in that reading order; ``last`` run after them."""
    (root / "notebooks").mkdir(parents=True)
    (root / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": "book/intro",
         "parts": [{"caption": "All", "chapters": [{"file": f"book/chapters/{s}"} for s in stems]}]}))
    for stem in stems:
        flag = {"clmini": {"run_after_chapters": True}} if stem in last else None
        source(root / "notebooks" / f"{stem}.md", 'profile = "quick"', metadata=flag)
    return root


# --- the execution order ---------------------------------------------------------------------


def test_pages_flagged_run_after_chapters_run_last_in_their_own_order(tmp_path):
    root = make_book(tmp_path, ["00_results", "01_a", "05_summary", "02_b", "03_c"], last={"00_results", "05_summary"})
    assert toc.toc_chapters(root) == ["00_results", "01_a", "05_summary", "02_b", "03_c"]  # the reading order
    assert toc.execution_order(root) == ["01_a", "02_b", "03_c", "00_results", "05_summary"]
    assert toc.recorded_chapters(root) == ["01_a", "02_b", "03_c"]


def test_without_the_flag_the_reading_order_is_the_execution_order(tmp_path):
    """The rule is the flag, not a name: a page called 00_results without it runs first."""
    root = make_book(tmp_path, ["00_results", "01_a"], last=set())
    assert toc.execution_order(root) == ["00_results", "01_a"]


@pytest.mark.parametrize("metadata, message", [
    ({"clmini": {"run_after_chapters": "yes"}}, "run_after_chapters must be true or false, got 'yes'"),
    ({"clmini": ["run_after_chapters"]}, "metadata of its header must be a mapping"),
])
def test_a_malformed_flag_is_refused(tmp_path, metadata, message):
    page = source(tmp_path / "00_results.md", 'profile = "quick"', metadata=metadata)
    with pytest.raises(nbr.ParameterError, match=message):
        toc.runs_after_chapters(page)


def test_run_chapters_executes_in_the_execution_order(tmp_path, monkeypatch):
    root = make_book(tmp_path, ["00_results", "01_a", "02_b"], last={"00_results"})
    (root / "notebooks" / "profiles.yaml").write_text(yaml.safe_dump({s: {"smoke": {}} for s in ["00_results", "01_a", "02_b"]}))
    ran = []
    monkeypatch.setattr(runner, "run_notebook", lambda source, profile: ran.append((Path(source).stem, profile)))
    runner.run_chapters(root, "smoke")
    assert ran == [("01_a", "smoke"), ("02_b", "smoke"), ("00_results", "smoke")]


def test_the_book_shows_the_results_page_first_and_runs_it_last():
    chapters = toc.toc_chapters(REPO)
    assert toc.toc_files(REPO)[:2] == ["book/intro", "book/chapters/00_results"]  # what a reader opens first
    assert toc.runs_after_chapters(nbr.chapter_source(REPO, "00_results"))
    assert toc.execution_order(REPO)[-1] == "00_results"
    assert toc.recorded_chapters(REPO) == [s for s in chapters if s != "00_results"]
    assert len(toc.recorded_chapters(REPO)) >= 4


def test_the_flag_survives_a_jupytext_round_trip():
    """``notebook_metadata_filter: clmini`` in the header: jupytext keeps the key when it rewrites the source."""
    import jupytext

    page = nbr.chapter_source(REPO, "00_results")
    rewritten = jupytext.writes(jupytext.read(page), fmt="md:myst")
    assert rewritten == page.read_text()


def test_the_results_page_fails_without_the_chapters_records(tmp_path):
    """Executed alone, before any chapter recorded its claims: an error that says what to do."""
    root = make_book(tmp_path / "book", ["01_a"], last=set())
    (root / "notebooks" / "00_results.md").write_text(nbr.chapter_source(REPO, "00_results").read_text())
    (root / "notebooks" / "profiles.yaml").write_text(yaml.safe_dump({"00_results": {"smoke": {}}}))
    done = subprocess.run([sys.executable, "-m", "clmini", "run", str(root / "notebooks" / "00_results.md"),
                           "--profile", "smoke", "-o", str(tmp_path / "out.ipynb")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CLMINI_RUNS": str(tmp_path / "runs")})
    assert done.returncode == 1
    assert "no claims recorded for chapter '01_a' under profile 'smoke'" in done.stderr


# --- papermill knows every declared parameter -------------------------------------------------

CELL = '''profile = "quick"
n_train: int | None = 6400            # annotated: papermill's own pattern misses it
structure_ks: list[int] = [1, 10]     # k = 1 and k = 10: a comment with '=' in it
data_root: str | None = None
simclr: dict = {}
seeds = [0, 1,
         2]                           # over two lines
'''
BODY = '''
```{code-cell}
print(f"n_train={n_train} structure_ks={structure_ks} data_root={data_root} seeds={seeds}")
```
'''


def test_papermill_inspects_the_cell_as_clmini_does():
    names = [p.name for p in runner.checked_translator().inspect(nbformat.v4.new_code_cell(CELL))]
    assert names == list(nbr.parse_parameters(CELL)) == [
        "profile", "n_train", "structure_ks", "data_root", "simclr", "seeds"]


def test_annotated_parameters_run_without_a_warning(tmp_path, caplog):
    """Through :func:`clmini.book.runner.execute`, as `python -m clmini run` executes a chapter."""
    page = source(tmp_path / "tiny.md", CELL, BODY)
    values = nbr.resolve_parameters(page, "quick", {"n_train": 10, "structure_ks": [5], "data_root": "/data",
                                                    "seeds": [3]})
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = runner.execute(page, tmp_path / "tiny.ipynb", values, cwd=tmp_path, progress=False)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not logged, logged
    assert not [str(w.message) for w in caught if "parameter" in str(w.message).lower()]
    printed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert "n_train=10 structure_ks=[5] data_root=/data seeds=[3]" in printed


def test_a_user_sees_a_clean_log(tmp_path):
    """`python -m clmini run` with valid overrides writes nothing to stderr."""
    page = source(tmp_path / "tiny.md", CELL, BODY)
    done = subprocess.run([sys.executable, "-m", "clmini", "run", str(page), "-p", "n_train", "10",
                           "-p", "data_root", "/data", "-o", str(tmp_path / "tiny.ipynb")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "n_train=10" in done.stdout and "done in" in done.stdout


def test_an_unknown_parameter_is_still_refused_before_papermill(tmp_path):
    page = source(tmp_path / "tiny.md", CELL, BODY)
    with pytest.raises(nbr.ParameterError, match="unknown parameter 'n_trian'. Did you mean 'n_train'?"):
        nbr.resolve_parameters(page, "quick", {"n_trian": 10})
