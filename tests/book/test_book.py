"""The book build, end to end: chapters run under `smoke`, `jupyter-book -W`, offline HTML.

The real pages and configuration are built into a temporary copy of the book whose table of
contents lists small fixture chapters in place of the chapters; every chapter that exists is run
under `smoke` by tests/book/test_notebooks.py. The real results page stays at its place: it runs after
the fixture chapters, from the claims one of them records. The copy goes through `python -m clmini
book`, the same command as `make book`, with a private run cache.
"""
from __future__ import annotations

import datetime
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from jupyter_book.config import get_final_config

from clmini import book as nbr
from clmini.book.toc import runs_after_chapters

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CDN = re.compile(r"cdn\.|jsdelivr|unpkg|cdnjs|googleapis|gstatic|mathjax@|binder|thebe", re.I)


def _load_check_book():
    spec = importlib.util.spec_from_file_location("check_book", REPO / "scripts" / "check_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_book = _load_check_book()


RESULTS_PAGES = [stem for stem in nbr.toc_chapters(REPO) if runs_after_chapters(nbr.chapter_source(REPO, stem))]


def with_chapters(toc: dict, stems: list[str], results: bool = False) -> dict:
    """``toc`` with its generated chapters replaced by ``stems`` (at the place of the first one);
    the pages that run after the chapters (the results page) stay where they are if ``results``,
    else they go too."""
    prefix = nbr.CHAPTERS_DIR.as_posix() + "/"
    keep = {prefix + stem for stem in RESULTS_PAGES} if results else set()
    placed = False

    def fix(node):
        nonlocal placed
        if isinstance(node, dict):
            return {k: fix(v) for k, v in node.items()}
        if not isinstance(node, list):
            return node
        out = []
        for item in node:
            if isinstance(item, dict) and str(item.get("file", "")).startswith(prefix) and item["file"] not in keep:
                if not placed:
                    out += [{"file": prefix + s} for s in stems]
                    placed = True
            else:
                out.append(fix(item))
        return out

    return fix(toc)


def make_book(dest: Path, stems: list[str], results: bool = False) -> Path:
    """A copy of the book at ``dest`` whose chapters are fixture notebooks ``stems``, with the real
    results page if ``results`` (then a fixture chapter must record claims)."""
    (dest / "book").mkdir(parents=True)
    (dest / "notebooks").mkdir()
    for stem in RESULTS_PAGES if results else ():
        shutil.copy(nbr.chapter_source(REPO, stem), dest / "notebooks")
    shutil.copy(REPO / "_config.yml", dest)
    for page in (REPO / "book").iterdir():
        if page.is_file() and page.suffix in (".md", ".bib"):
            shutil.copy(page, dest / "book")
    shutil.copytree(REPO / "book" / "_static", dest / "book" / "_static")  # the book's stylesheet
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    (dest / "_toc.yml").write_text(yaml.safe_dump(with_chapters(toc, stems, results), sort_keys=False))
    for stem in stems:
        shutil.copy(FIXTURES / f"{stem}.md", dest / "notebooks")
    shutil.copy(FIXTURES / "profiles.yaml", dest / "notebooks")
    # Everything else of the repository (node_modules, .venv, tests, caches, README.md...) is
    # linked in, so that a stray document there breaks this build as it would break the real one;
    # not results/: the fixture book's chapters are not the book's, and a publish must not write there.
    for entry in REPO.iterdir():
        if entry.name not in {"_config.yml", "_toc.yml", "book", "notebooks", "_build", ".git", "results"}:
            (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


def clmini_book(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m clmini book --root ROOT ARGS`` with a run cache of its own, ``ROOT/.runs``."""
    return subprocess.run([sys.executable, "-m", "clmini", "book", "--root", str(root), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CLMINI_RUNS": str(root / ".runs")})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The fixture book, run under `smoke` and built with -W; returns its _build/html."""
    if not (REPO / nbr.MATHJAX_SCRIPT).is_file():
        pytest.fail("MathJax is not installed: run `npm ci` (make test does it)")
    root = make_book(tmp_path_factory.mktemp("book"), ["00_fixture_chapter", "claims_chapter"], results=True)
    start = time.perf_counter()
    done = clmini_book(root, "--profile", "smoke")
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    index = root / "_build" / "html" / "index.html"
    assert f"The book is at {index}" in done.stdout
    print(f"fixture book: run + build in {elapsed:.1f} s")
    return index.parent


def test_real_toc_pages_exist():
    for entry in nbr.toc_files(REPO):
        if not entry.startswith(nbr.CHAPTERS_DIR.as_posix()):
            assert (REPO / f"{entry}.md").is_file(), f"_toc.yml lists {entry}, which has no page"


def test_chapter_sources_follow_the_toc():
    for stem in nbr.toc_chapters(REPO):
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", stem), f"chapter {stem} is not named NN_name"


def test_book_builds_every_page(built):
    pages = {p.relative_to(built).as_posix() for p in built.rglob("*.html")}
    for page in ("book/intro.html", "book/notation.html", "book/reproducing.html",
                 "book/bibliography.html", "book/chapters/00_fixture_chapter.html",
                 "book/chapters/claims_chapter.html", *(f"book/chapters/{stem}.html" for stem in RESULTS_PAGES)):
        assert page in pages


def test_front_page_says_where_this_build_s_runs_came_from(built):
    front = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (built / "book" / "intro.html").read_text()))
    assert re.search(r"This build \(profile smoke , run on \d{4}-\d\d-\d\d\): \d+ runs: .* trained on this machine",
                     front), "the front page names the profile and where the runs came from"


def test_provenance_of_chapters_executed_elsewhere_says_it_was_not_recorded(tmp_path):
    from clmini.book.build import PROVENANCE, UNRECORDED, ensure_provenance, write_provenance

    (tmp_path / PROVENANCE.parent).mkdir(parents=True)
    assert ensure_provenance(tmp_path).read_text().strip() == UNRECORDED
    write_provenance(tmp_path, "quick", [{"hash": "a", "source": "trained"}], today=datetime.date(2026, 12, 2))
    assert ensure_provenance(tmp_path).read_text().strip() == (
        "**This build** (profile `quick`, run on 2026-12-02): 1 run: 0 loaded from the local run cache, "
        "1 trained on this machine.")


def test_html_uses_the_local_mathjax_and_no_cdn(built):
    script = built / "_static" / "mathjax" / "es5" / "tex-mml-chtml.js"
    fonts = built / "_static" / "mathjax" / "es5" / "output" / "chtml" / "fonts" / "woff-v2"
    assert script.is_file() and any(fonts.glob("*.woff"))
    notation = (built / "book" / "notation.html").read_text()
    assert re.search(r'<script[^>]+src="\.\./_static/mathjax/es5/tex-mml-chtml\.js', notation)
    for page in built.rglob("*.html"):
        if "_static" in page.parts:
            continue
        text = page.read_text()
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), page
        assert not CDN.search(text), f"{page}: {CDN.search(text).group(0)}"


def test_chapter_page_has_figure_glue_citation_and_hidden_solution(built):
    html = (built / "book" / "chapters" / "00_fixture_chapter.html").read_text()
    assert re.search(r'<img[^>]+src="\.\./\.\./_images/[^"]+\.png"', html)
    assert "Under profile" in html and "smoke" in html  # the glued profile name
    peak = re.search(r"smallest\s+temperature is\s+(?:<[^>]+>)*\s*([0-9.]+)", html)
    assert peak and 0 < float(peak.group(1)) < 1
    assert "bibliography.html#id" in html or "bibliography.html#" in html  # the {cite} resolved
    assert "exercise" in html and re.search(r'class="[^"]*solution[^"]*dropdown', html)


def test_results_page_shows_each_recorded_claim_with_its_links(built):
    """The results page, read first and executed last, renders the claims the fixture chapter recorded:
    citations to the bibliography, links to the chapter's labelled section, computed counts."""
    html = (built / "book" / "chapters" / "00_results.html").read_text()
    table = re.search(r'<table class="[^"]*clmini-results.*?</table>', html, re.DOTALL)
    assert table, "the claims table is missing"
    rows = re.findall(r"<tr.*?</tr>", table.group(0), re.DOTALL)
    assert len(rows) == 1 + 4  # the header and the fixture chapter's four claims
    for row in rows[1:]:
        assert re.search(r'href="\.\./bibliography\.html#[^"]+"', row), row  # the {cite:t} resolved
        assert 'href="claims_chapter.html#fixture-claims"' in row, row  # the {ref} to the section ...
        assert 'href="claims_chapter.html"' in row, row  # ... and the {doc} to its chapter
    outcomes = [re.search(r"<strong>(agrees|disagrees|not resolved)</strong>", row).group(1) for row in rows[1:]]
    assert outcomes == ["agrees", "agrees", "disagrees", "not resolved"]
    text = re.sub(r"<[^>]+>", "", html)
    assert "the chapters test 4 claims of the papers: 2 agree with the paper, 1 disagrees with it, and 1 is not " \
           "resolved at this profile" in " ".join(text.split())
    assert 'href="#results-rule"' in html  # the rule's sentence links to its explanation
    assert "- 84.19 vs 82.21 | CIFAR-10" in text  # a cell that would have opened a list, kept as text


def test_bibliography_lists_the_cited_papers(built):
    html = (built / "book" / "bibliography.html").read_text().lower()  # titles in sentence case
    for words in ("Understanding the Behaviour of Contrastive Loss", "Temperature-Free Loss Function",
                  "Dynamically Scaled Temperature", "Supervised Information Noise-Contrastive",
                  "Simple Framework for Contrastive Learning", "Alignment and Uniformity",
                  "Supervised Contrastive Learning"):
        assert words.lower() in html, words


def test_config_offers_each_page_source_for_download():
    """The download menu links the page's source as copied to _sources/: a chapter's executed .ipynb.

    Jupyter Book 1 does not pass ``html.use_download_button`` on to the theme, so _config.yml sets the
    theme option through ``sphinx.config`` (merged with ``recursive_update``); the other theme options
    must survive that merge.
    """
    config, _ = get_final_config(user_yaml=REPO / "_config.yml", cli_config={"latex_individualpages": False},
                                 sourcedir=REPO)
    assert config["html_theme_options"]["use_download_button"] is True
    assert config["html_theme_options"]["launch_buttons"]["thebe"] is False
    assert config["html_copy_source"] is True and config["html_sourcelink_suffix"] == ""


def test_chapter_page_offers_its_executed_notebook_for_download(built):
    html = (built / "book" / "chapters" / "00_fixture_chapter.html").read_text()
    link = re.search(r'<a href="([^"]+)"[^>]*class="[^"]*btn-download-source-button[^"]*"[^>]*>\s*'
                     r'<span class="btn__icon-container">.*?</span>\s*<span class="btn__text-container">\.ipynb</span>',
                     html, re.DOTALL)
    assert link and link.group(1) == "../../_sources/book/chapters/00_fixture_chapter.ipynb"
    nb = nbformat.read(built / "_sources" / "book" / "chapters" / "00_fixture_chapter.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["profile"] == "smoke"
    assert nb.metadata.papermill.input_path.endswith("notebooks/00_fixture_chapter.md")
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))


def test_static_offline_checks_pass(built):
    problems, math_pages = check_book.static_checks(built)
    assert not problems
    assert {p.name for p in math_pages} >= {"notation.html", "00_fixture_chapter.html"}


@pytest.mark.skipif(check_book.find_chromium(None) is None, reason="chromium is not installed")
def test_pages_render_offline_in_chromium(built):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_book.py"), str(built)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "formulas typeset" in done.stdout
    assert "at 1280 px: 0 layout problem(s)" in done.stdout and "at 390 px: 0 layout problem(s)" in done.stdout


def test_a_chapter_that_raises_fails_the_book(tmp_path):
    root = make_book(tmp_path, ["00_fixture_chapter", "raises"])
    done = clmini_book(root, "--profile", "smoke")
    assert done.returncode == 1
    assert "ZeroDivisionError: fixture failure: the divisor is zero" in done.stderr
    assert not (root / "_build").exists(), "the build must not start after a chapter failed"


def test_a_typo_in_a_later_chapter_profile_stops_before_anything_runs(tmp_path):
    root = make_book(tmp_path, ["00_fixture_chapter", "raises"])
    (root / "notebooks" / "profiles.yaml").write_text(yaml.safe_dump(
        {"00_fixture_chapter": {"smoke": {}}, "raises": {"smoke": {"divisr": 1}}}))
    done = clmini_book(root, "--profile", "smoke")
    assert done.returncode == 2
    assert "unknown parameter 'divisr'. Did you mean 'divisor'?" in done.stderr
    assert not (root / "book" / "chapters").exists()


def test_a_build_warning_fails_the_book(built, tmp_path):
    """-W is on: a broken cross-reference in a page is an error, not a silent broken link."""
    root = make_book(tmp_path, ["00_fixture_chapter", "claims_chapter"], results=True)  # the pages of `built`
    shutil.copytree(built.parent.parent / "book" / "chapters", root / "book" / "chapters")
    with open(root / "book" / "notation.md", "a") as page:
        page.write("\nSee {doc}`no_such_page`.\n")
    done = clmini_book(root, "--skip-run")
    assert done.returncode == 1
    assert "no_such_page" in done.stdout + done.stderr
    assert "jupyter-book build failed" in done.stderr


def test_skip_run_refuses_a_chapter_with_stored_errors(tmp_path):
    root = make_book(tmp_path, ["00_fixture_chapter"])
    chapter = root / "book" / "chapters" / "00_fixture_chapter.ipynb"
    chapter.parent.mkdir(parents=True)
    nb = jupytext.read(FIXTURES / "00_fixture_chapter.md")
    nb.cells[2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    nbformat.write(nb, chapter)
    done = clmini_book(root, "--skip-run")
    assert done.returncode == 1
    assert "holds error outputs: ValueError: boom" in done.stderr


def test_a_chapter_without_a_source_names_the_missing_md(tmp_path):
    root = make_book(tmp_path, ["00_fixture_chapter"])
    (root / "notebooks" / "00_fixture_chapter.md").unlink()
    done = clmini_book(root, "--profile", "smoke")
    assert done.returncode == 1
    assert "chapters in _toc.yml without a source notebook: notebooks/00_fixture_chapter.md" in done.stderr


def test_skip_run_needs_executed_chapters(tmp_path):
    root = make_book(tmp_path, ["00_fixture_chapter"])
    done = clmini_book(root, "--skip-run")
    assert done.returncode == 1 and "has not been executed yet" in done.stderr


LAYOUT_PAGE = """<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width, initial-scale=1">
<style>article {{ max-width: 600px; margin: 0 auto; }}</style></head>
<body><main><article>{body}</article></main></body></html>"""


@pytest.mark.skipif(check_book.find_chromium(None) is None, reason="chromium is not installed")
def test_layout_check_finds_what_is_too_wide(tmp_path):
    """The layout check reports a page wider than the window, a box that clips its content and, at
    the desktop width only, a box that needs a scrollbar; a page that fits passes at both widths."""
    pages = {
        "fits.html": "<p>Short text.</p><pre style='white-space: pre-wrap'>" + "word " * 200 + "</pre>",
        "wide.html": "<table><tr>" + "<td>0.123456789</td>" * 60 + "</tr></table>",
        "clipped.html": "<div style='overflow: hidden; width: 300px'><pre>" + "x" * 300 + "</pre></div>",
        "scrolls.html": "<div style='overflow-x: auto'><pre>" + "y" * 150 + "</pre></div>",
    }
    for name, body in pages.items():
        (tmp_path / name).write_text(LAYOUT_PAGE.format(body=body))
    chromium = check_book.find_chromium(None)
    found = {name: check_book.layout_checks(tmp_path, [tmp_path / name], chromium, 5000) for name in pages}
    assert found["fits.html"] == []
    assert any("sticks out of the text column" in p or "scrolls sideways" in p for p in found["wide.html"])
    assert any("cut off on the right" in p and "at 1280 px" in p for p in found["clipped.html"])
    assert any("cut off on the right" in p and "at 390 px" in p for p in found["clipped.html"])
    scrolls = found["scrolls.html"]
    assert any("needs a horizontal scrollbar" in p and "at 1280 px" in p for p in scrolls)
    assert not any("at 390 px" in p for p in scrolls), "a box that scrolls is allowed on a phone"
