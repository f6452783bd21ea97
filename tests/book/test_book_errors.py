"""`clmini run` and `clmini book` refuse what does not fit before anything runs (issue 12): one
message, exit status 2, no Python stack, nothing written."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def clmini(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clmini", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def refused(done: subprocess.CompletedProcess, message: str) -> bool:
    return done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def chapter(tmp_path) -> Path:
    """A copy of the fixture chapter and its profiles, in a directory of their own."""
    shutil.copy(FIXTURES / "00_fixture_chapter.md", tmp_path)
    shutil.copy(FIXTURES / "profiles.yaml", tmp_path)
    return tmp_path / "00_fixture_chapter.md"


@pytest.mark.parametrize("value, message", [
    ("[]", "parameter 'temperatures' needs at least one value (default: [0.1, 0.5, 1.0]), got []"),
    ("[.nan]", "parameter 'temperatures' expects a list of floats"),
    ("[0.1, .inf]", "parameter 'temperatures' expects a list of floats"),
])
def test_empty_and_non_finite_values_are_refused(chapter, value, message):
    out = chapter.parent / "out.ipynb"
    assert refused(clmini("run", str(chapter), "-p", "temperatures", value, "-o", str(out)), message)
    assert not out.exists()


def test_the_output_may_not_be_the_source_or_under_a_file(chapter):
    before = chapter.read_text()
    assert refused(clmini("run", str(chapter), "-o", str(chapter)), "that is the chapter source")
    assert chapter.read_text() == before
    a_file = chapter.parent / "a_file"
    a_file.write_text("")
    assert refused(clmini("run", str(chapter), "-o", str(a_file / "out.ipynb")), "is a file, not a directory")


def test_a_notebook_that_is_not_json_is_refused(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ this is not json")
    assert refused(clmini("run", str(broken)), f"{broken}: not a readable notebook")


def test_an_invalid_profiles_file_is_refused(chapter):
    (chapter.parent / "profiles.yaml").write_text("00_fixture_chapter: [unclosed\n")
    assert refused(clmini("run", str(chapter), "--profile", "smoke"), "profiles.yaml: not valid YAML")


def test_a_book_root_without_or_with_an_invalid_toc_is_refused(tmp_path):
    assert refused(clmini("book", "--root", str(tmp_path)), "_toc.yml: no such file")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: [unclosed\n")
    assert refused(clmini("book", "--root", str(tmp_path)), "_toc.yml: not valid YAML")
    (tmp_path / "_toc.yml").write_text("- just a list\n")
    assert refused(clmini("book", "--root", str(tmp_path)), "_toc.yml: expected a mapping")
