"""Every command an exercise (or its solution) suggests runs, smoke-sized, so that none can break again.

The commands are read from the chapter sources, never typed here: inside an ``{exercise}`` or
``{solution}`` block, an inline code span holding ``-p NAME VALUE`` pairs, either a whole
``python -m clmini run notebooks/<chapter>.md ...`` command or the pairs alone (then for the chapter
the block belongs to). Each one runs under the ``smoke`` profile with the exercise's values on top.
Two adjustments keep it smoke-sized and offline, and nothing else is changed:

* a dict-valued parameter (``simclr``) is merged over the smoke profile's dict, so the exercise's
  changes (``{"epochs": 5}``) apply to the smoke-sized run rather than to the full-sized base;
* a ``data_root`` (a placeholder path in the text) points at tiny CIFAR-10 files this test writes.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from clmini.book.parameters import parse_value, profile_values, resolve_parameters
from clmini.book.runner import run_notebook
from engine_helpers import write_cifar

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
BLOCK = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?:exercise|solution)\}[^\n]*\n(?P<body>.*?)^(?P=fence)\s*$",
                   re.M | re.S)
CODE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def exercise_commands(source: Path) -> list[tuple[Path, list[tuple[str, str]], str]]:
    """(chapter, [(name, value), ...], the text as written) for each command an exercise block of
    ``source`` suggests."""
    found = []
    for block in BLOCK.finditer(source.read_text()):
        for span in CODE_SPAN.findall(block.group("body")):
            text = " ".join(span.split())
            if not re.search(r"(^|\s)-p\s", text):
                continue
            tokens = shlex.split(text)
            chapter = source
            if tokens[:4] == ["python", "-m", "clmini", "run"]:
                chapter = REPO / tokens[4]
                tokens = tokens[5:]
            pairs, i = [], 0
            while i < len(tokens):
                if tokens[i] == "-p":
                    pairs.append((tokens[i + 1], tokens[i + 2]))
                    i += 3
                elif tokens[i] in ("--profile", "-o", "--output"):
                    i += 2
                else:
                    raise AssertionError(f"{source.name}: cannot read {tokens[i]!r} in the exercise command {text!r}")
            found.append((chapter, pairs, text))
    return found


COMMANDS = [command for source in sorted(NOTEBOOKS.glob("*.md")) for command in exercise_commands(source)]


def test_the_exercises_suggest_commands():
    """The test below would pass vacuously if the reader missed the commands: it finds the ones the
    chapters are known to suggest (chapter 1's rerun, chapter 3's ranges)."""
    chapters = {chapter.stem for chapter, _, _ in COMMANDS}
    assert {"01_infonce_temperature", "03_dystress"} <= chapters, COMMANDS
    assert all(pairs for _, pairs, _ in COMMANDS)


def smoke_sized(chapter: Path, pairs: list[tuple[str, str]], data_root: Path) -> dict:
    """The exercise's values, dicts merged over the smoke profile's, data_root replaced."""
    smoke = profile_values(chapter.stem, "smoke", chapter.parent / "profiles.yaml")
    overrides = {}
    for name, text in pairs:
        value = parse_value(text)
        if name == "data_root":
            value = str(data_root)
        elif isinstance(value, dict) and isinstance(smoke.get(name), dict):
            value = {**smoke[name], **value}
        overrides[name] = value
    return overrides


@pytest.mark.parametrize("chapter,pairs,text", COMMANDS, ids=[f"{c.stem}:{t[:60]}" for c, _, t in COMMANDS])
def test_every_exercise_command_runs(chapter, pairs, text, tmp_path, monkeypatch, smoke_runs):
    assert chapter.is_file(), f"the exercise names {chapter}, which does not exist"
    resolve_parameters(chapter, "quick", pairs)  # the values as written are valid for the chapter
    data_root = tmp_path / "data"
    if any(name == "data_root" for name, _ in pairs):
        write_cifar(data_root, per_file=220)  # 1,100 training images: the smoke run's subset of 512 fits
    monkeypatch.setenv("CLMINI_RUNS", str(smoke_runs))  # the session's smoke cache: the chapter's own runs are reused
    output = run_notebook(chapter, "smoke", overrides=smoke_sized(chapter, pairs, data_root),
                          output=tmp_path / f"{chapter.stem}.ipynb", progress=False)
    assert output.is_file()
