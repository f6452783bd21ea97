"""The chapter runner: parameter checks before execution, failures that stop, text sources, smoke runs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
import yaml

from clmini import book as nbr

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_CHAPTER = FIXTURES / "00_fixture_chapter.md"
RAISES = FIXTURES / "raises.md"
SOURCES = sorted((REPO / nbr.SOURCES_DIR).glob("*.md"))
CHAPTERS = nbr.toc_chapters(REPO)


def clmini(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m clmini ARGS`` from the repository root, as a user types it."""
    return subprocess.run([sys.executable, "-m", "clmini", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


# --- reading the parameters cell ------------------------------------------------------------

CELL = '''
import math                       # not a parameter
profile = "quick"
temperatures = [0.1, 0.5]         # a list of floats
mixed = [1, 0.5]                  # ints and floats: floats
steps = 200
lr = 1e-3
use_hard = False
device = "auto"
data_root = None                  # any value
max_steps: int | None = None      # the annotation refines None
sizes: list[int] = []
derived = 2 * math.pi             # not a literal: a parameter of unknown type
a = b = 3
'''


def test_parse_parameters_names_defaults_and_types():
    params = nbr.parse_parameters(CELL)
    assert list(params) == ["profile", "temperatures", "mixed", "steps", "lr", "use_hard", "device",
                            "data_root", "max_steps", "sizes", "derived", "a", "b"]
    assert params["temperatures"].default == [0.1, 0.5]
    assert nbr.describe(params["temperatures"].spec) == "a list of floats"
    assert nbr.describe(params["mixed"].spec) == "a list of floats"
    assert nbr.describe(params["steps"].spec) == "an int"
    assert nbr.describe(params["lr"].spec) == "a float"
    assert nbr.describe(params["use_hard"].spec) == "a bool (True/False)"
    assert nbr.describe(params["data_root"].spec) == "any value"
    assert nbr.describe(params["max_steps"].spec) == "an int or None"
    assert nbr.describe(params["sizes"].spec) == "a list of ints"
    assert params["derived"].spec == nbr.ANY and params["derived"].source == "2 * math.pi"
    assert params["a"].default == params["b"].default == 3


@pytest.mark.parametrize("name, value, expected", [
    ("temperatures", [1, 0.5], [1.0, 0.5]),      # an int is a valid float, converted
    ("temperatures", (0.2,), [0.2]),
    ("lr", 1, 1.0),
    ("steps", 10, 10),
    ("max_steps", None, None),
    ("max_steps", 7, 7),
    ("data_root", "/data", "/data"),
    ("derived", "anything", "anything"),
])
def test_check_accepts_and_converts(name, value, expected):
    got = nbr.parse_parameters(CELL)[name].check(value, "test")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name, value", [
    ("temperatures", "hello"),        # a string for a list of floats
    ("temperatures", [0.1, "x"]),
    ("temperatures", 0.1),
    ("steps", 2.5),                   # a float is not an int
    ("steps", True),                  # nor is a bool
    ("use_hard", 1),
    ("device", 0),
    ("max_steps", 1.5),
    ("sizes", [1.0]),
])
def test_check_rejects_wrong_types(name, value):
    param = nbr.parse_parameters(CELL)[name]
    with pytest.raises(nbr.ParameterError, match=f"parameter '{name}' expects"):
        param.check(value, "test")


@pytest.mark.parametrize("text, value", [
    ("[0.1, 0.5]", [0.1, 0.5]), ("1e-3", 0.001), ("3", 3), ("True", True), ("true", True),
    ("None", None), ("null", None), ("cuda", "cuda"), ("'quoted'", "quoted"), ("{a: 1}", {"a": 1}),
    ("hello world", "hello world"),
])
def test_parse_value_like_papermill(text, value):
    assert nbr.parse_value(text) == value


def write_source(nb: nbformat.NotebookNode, path: Path) -> Path:
    """``nb`` as a chapter source: MyST Markdown for ``.md``, else a notebook file."""
    jupytext.write(nb, path, fmt="md:myst" if path.suffix == ".md" else "ipynb")
    return path


@pytest.mark.parametrize("suffix", [".md", ".ipynb"])
def test_parameters_cell_must_be_tagged_and_first(tmp_path, suffix):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    path = write_source(nb, tmp_path / f"untagged{suffix}")
    with pytest.raises(nbr.ParameterError, match="tagged 'parameters'"):
        nbr.read_parameters(path)
    second = nbformat.v4.new_code_cell("y = 2", metadata={"tags": ["parameters"]})
    nb.cells.append(second)
    write_source(nb, path)
    with pytest.raises(nbr.ParameterError, match="must be the first code cell"):
        nbr.read_parameters(path)
    nb.cells[0].metadata["tags"] = ["parameters"]
    write_source(nb, path)
    with pytest.raises(nbr.ParameterError, match="2 code cells are tagged 'parameters'; tag only the first"):
        nbr.read_parameters(path)


# --- profiles and overrides -----------------------------------------------------------------


def test_resolve_profile_then_overrides_and_profile_name_injected():
    values = nbr.resolve_parameters(FIXTURE_CHAPTER, "smoke", [("n_points", "20")])
    assert values == {"temperatures": [0.2, 1.0], "n_points": 20, "profile": "smoke"}
    assert nbr.resolve_parameters(FIXTURE_CHAPTER, "quick") == {"profile": "quick"}


def test_unknown_parameter_is_an_error_with_a_suggestion_and_the_valid_names():
    with pytest.raises(nbr.ParameterError) as err:
        nbr.resolve_parameters(FIXTURE_CHAPTER, "quick", {"temperature": "[0.1]"})
    message = str(err.value)
    assert "unknown parameter 'temperature'" in message
    assert "Did you mean 'temperatures'?" in message
    assert "n_points, profile, seed, temperatures" in message


def test_unknown_profile_lists_the_defined_ones():
    with pytest.raises(nbr.ParameterError, match="defined: full, quick, smoke"):
        nbr.resolve_parameters(FIXTURE_CHAPTER, "ful")


def test_profile_values_are_checked_too(tmp_path):
    source = shutil.copy(FIXTURE_CHAPTER, tmp_path)
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump(
        {"00_fixture_chapter": {"smoke": {"n_points": "many"}, "full": {"npoints": 3}}}))
    with pytest.raises(nbr.ParameterError, match=r"\[00_fixture_chapter.smoke\].*'n_points' expects an int"):
        nbr.resolve_parameters(source, "smoke")
    with pytest.raises(nbr.ParameterError, match="Did you mean 'n_points'"):
        nbr.resolve_parameters(source, "full")


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    (["-p", "temperature", "[0.1, 0.5]"],
     ["unknown parameter 'temperature'. Did you mean 'temperatures'?",
      "Valid parameters: n_points, profile, seed, temperatures"]),
    (["-p", "temperatures", "hello"],
     ["parameter 'temperatures' expects a list of floats (default: [0.1, 0.5, 1.0]), got 'hello' (str)"]),
])
def test_run_rejects_bad_parameters_before_executing(tmp_path, override, expected):
    out = tmp_path / "out.ipynb"
    done = clmini("run", str(FIXTURE_CHAPTER), "--profile", "smoke", *override, "-o", str(out))
    assert done.returncode == 2, done.stderr
    for message in expected:
        assert message in done.stderr
    assert "running" not in done.stdout and not out.exists(), "nothing may run when a parameter is wrong"


def test_run_refuses_a_source_without_a_parameters_cell_before_executing(tmp_path):
    source = write_source(jupytext.read(FIXTURE_CHAPTER), tmp_path / FIXTURE_CHAPTER.name)
    source.write_text(source.read_text().replace(":tags: [parameters]\n", ""))
    out = tmp_path / "out.ipynb"
    done = clmini("run", str(source), "-o", str(out))
    assert done.returncode == 2, done.stderr
    assert "no code cell is tagged 'parameters'" in done.stderr
    assert "running" not in done.stdout and not out.exists()


@pytest.mark.parametrize("name, message", [
    ("00_fixture_chapter.ipynb", ("no such notebook: {dir}/00_fixture_chapter.ipynb "
                                  "(the chapter source is {dir}/00_fixture_chapter.md)")),
    ("profiles.yaml", "profiles.yaml: a chapter source is a MyST Markdown notebook (.md) or a .ipynb"),
])
def test_run_refuses_what_is_not_a_chapter_source(name, message):
    done = clmini("run", str(FIXTURES / name))
    assert done.returncode == 2
    assert message.format(dir=FIXTURES) in done.stderr


@pytest.fixture(params=[".md", ".ipynb"])
def fixture_source(request, tmp_path) -> Path:
    """The fixture chapter as its MyST source, or converted to .ipynb (beside a copy of its profiles)."""
    if request.param == ".md":
        return FIXTURE_CHAPTER
    (tmp_path / "src").mkdir()
    shutil.copy(FIXTURES / nbr.PROFILES_FILE, tmp_path / "src")
    return write_source(jupytext.read(FIXTURE_CHAPTER), tmp_path / "src" / "00_fixture_chapter.ipynb")


def test_run_executes_with_profile_and_overrides(tmp_path, fixture_source):
    """A .md source and a converted .ipynb both run; the conversion leaves no file behind."""
    out, tmp = tmp_path / "out.ipynb", tmp_path / "tmp"
    tmp.mkdir()
    fixtures_before = sorted(FIXTURES.iterdir())
    done = clmini("run", str(fixture_source), "--profile", "smoke", "-p", "temperatures", "[1, 2]",
                  "-o", str(out), env={"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert sorted(FIXTURES.iterdir()) == fixtures_before and not list(tmp.glob("clmini-run-*"))
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.input_path == str(fixture_source)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "hide-input" in injected[0].metadata.tags, "the page shows the source's parameters cell, not both"
    assert "temperatures = [1.0, 2.0]" in injected[0].source and 'profile = "smoke"' in injected[0].source
    assert nb.metadata.papermill.parameters["n_points"] == 50
    assert not nbr.stored_errors(out)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))


def test_a_cell_that_raises_makes_run_fail_and_shows_the_error(tmp_path):
    out = tmp_path / "raised.ipynb"
    done = clmini("run", str(RAISES), "-o", str(out))
    assert done.returncode == 1
    assert "ZeroDivisionError: fixture failure: the divisor is zero" in done.stderr
    assert 'raise ZeroDivisionError("fixture failure' in done.stderr  # the failing cell's source
    assert out.exists() and nbr.stored_errors(out)  # kept for inspection


def test_list_shows_parameters_and_profile_values():
    done = clmini("run", str(FIXTURE_CHAPTER), "--profile", "smoke", "--list")
    assert done.returncode == 0, done.stderr
    assert "temperatures" in done.stdout and "[0.2, 1.0] *" in done.stdout and "a list of floats" in done.stdout


# --- the chapter sources --------------------------------------------------------------------


def _sources_or_skip():
    return SOURCES or [pytest.param(None, marks=pytest.mark.skip(reason="no chapter notebooks yet"))]


@pytest.mark.parametrize("source", _sources_or_skip(), ids=lambda p: getattr(p, "stem", "none"))
def test_chapter_sources_are_clean_and_parametrised(source):
    nb = jupytext.read(source)
    assert nb.metadata.get("jupytext", {}).get("text_representation", {}).get("format_name") == "myst", \
        f"{source.name}: not a MyST Markdown notebook (convert it with `jupytext --to myst`)"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{source.name}: cells {dirty} carry outputs or execution counts; clear them"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{source.name}: {len(tagged)} cells are tagged `parameters`, not one"
    params = nbr.read_parameters(source)  # raises unless the first code cell is tagged `parameters`
    assert params, f"{source.name}: the parameters cell declares nothing"


@pytest.mark.parametrize("source", _sources_or_skip(), ids=lambda p: getattr(p, "stem", "none"))
def test_glue_calls_stay_off_the_page(source):
    """A reader sees the sentence a glued value fills, not the plumbing: every cell that calls
    ``glue(...)`` is tagged ``remove-cell`` (it still runs; the page drops it)."""
    nb = jupytext.read(source)
    shown = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and re.search(r"(^|\W)glue\(", c.source)
             and "remove-cell" not in c.metadata.get("tags", [])]
    assert not shown, f"{source.name}: cells {shown} call glue() but are not tagged remove-cell"


def test_no_notebook_file_is_committed_among_the_sources():
    """Sources are text: a committed .ipynb would carry outputs and drift from its .md."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "--", f"{nbr.SOURCES_DIR.as_posix()}/*.ipynb"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert not tracked, f"committed notebooks: {tracked}; keep the MyST .md source only"


def test_profiles_file_names_existing_notebooks_and_valid_parameters():
    profiles_path = REPO / "notebooks" / nbr.PROFILES_FILE
    table = nbr.load_profiles(profiles_path)
    for stem, profiles in table.items():
        source = nbr.chapter_source(REPO, stem)
        assert source.is_file(), f"{profiles_path} has an entry for {stem}, which has no notebook"
        for profile in profiles:
            nbr.resolve_parameters(source, profile)  # every value of every profile type-checks


def _chapters_or_skip():
    from clmini.book.toc import runs_after_chapters

    params = []
    for stem in CHAPTERS:
        source = nbr.chapter_source(REPO, stem)
        marks = () if source.is_file() else pytest.mark.skip(reason=f"{source.name} not written yet")
        if source.is_file() and runs_after_chapters(source):  # it reads the chapters' records
            marks = pytest.mark.skip(reason=f"{source.name} runs after the chapters, from their records: "
                                            "tests/book/test_book.py runs it in the fixture book")
        params.append(pytest.param(stem, marks=marks, id=stem))
    return params or [pytest.param(None, marks=pytest.mark.skip(reason="no chapters in _toc.yml"))]


@pytest.mark.parametrize("stem", _chapters_or_skip())
def test_every_chapter_runs_under_smoke(stem, tmp_path, smoke_runs):
    """The same runner as `make book`, with this test session's own run cache (conftest.smoke_runs), so
    a stale one cannot hide a bug; shared by the chapters as in a book build."""
    out = tmp_path / f"{stem}.ipynb"
    done = clmini("run", str(nbr.chapter_source(".", stem)), "--profile", "smoke", "-o", str(out),
                  env={"CLMINI_RUNS": str(smoke_runs)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not nbr.stored_errors(out)
    assert not _cut_table_cells(out), f"{stem}: table cells cut to '...': {_cut_table_cells(out)[:3]}"


def _cut_table_cells(notebook: Path) -> list[str]:
    """Table cells of a notebook's HTML outputs that pandas cut short ("...": its max_colwidth)."""
    cells = json.loads(notebook.read_text())["cells"]
    html = ["".join(o["data"]["text/html"]) for c in cells for o in c.get("outputs", ())
            if "text/html" in o.get("data", {})]
    return [cut for page in html for cut in re.findall(r"<td>([^<]*\.\.\.)</td>", page)]


def test_book_style_never_cuts_a_table_cell(tmp_path):
    from clmini.study import plots

    long_text = "DCL − InfoNCE = -0.002 (95 % CI -0.013 to +0.010, 3 paired seeds)"
    with pd.option_context("display.max_colwidth", 50):
        assert "...</td>" in pd.DataFrame({"a": [long_text]})._repr_html_()  # pandas' default cuts it
        plots.use_book_style()
        assert long_text in pd.DataFrame({"a": [long_text]})._repr_html_()


def test_kernel_runs_this_interpreter():
    name = nbr.ensure_kernel()
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    assert spec.argv[0] == sys.executable
