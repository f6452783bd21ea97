"""Execute chapters with papermill, their parameters checked first, in this interpreter's kernel.

Papermill reads ``.ipynb`` only: a chapter source is converted exactly as ``jupytext --to ipynb``
converts it (the documented way to run a chapter with plain papermill), into a temporary directory
that is gone when the run ends, so that nothing but the executed notebook is left behind.

Papermill reads the names a parameters cell declares with a regular expression that misses an
annotated name (``n_train: int | None = 6400``) and any line with a second ``=`` (in a comment, say),
and warns "Passed unknown parameter" for each valid value it then injects. Our kernel's translator
(:func:`checked_translator`, registered with papermill for the kernel ``clmini``) inspects the
cell with the same parser that checks the values (:func:`clmini.book.parameters.parse_parameters`),
so papermill knows every declared name; an unknown name never reaches papermill: it is refused
before anything runs.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jupytext
import nbformat

from clmini.book.errors import NotebookError, ParameterError
from clmini.book.parameters import DEFAULT_PROFILE, parse_parameters, resolve_parameters
from clmini.book.sources import chapter_source, read_source
from clmini.book.toc import CHAPTERS_DIR, book_root, execution_order, toc_chapters
from clmini.book.typespec import describe

KERNEL_NAME = "clmini"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def ensure_kernel() -> str:
    """A kernelspec named ``clmini`` that starts *this* interpreter (written into ``sys.prefix``).

    Notebooks name ``python3`` in their metadata, which may resolve to another Python (a user-level
    kernelspec wins over the virtual environment's); executing with this kernel keeps the chapter
    in the environment that has ``clmini`` and its pinned requirements. The kernel logs errors
    only: its start-up warnings (e.g. about unencrypted local TCP) are not the reader's concern.
    """
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python 3 (clmini)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    spec_file = Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    try:
        if json.loads(spec_file.read_text())["argv"] == spec["argv"]:
            return KERNEL_NAME
    except (OSError, ValueError, KeyError):
        pass
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    partial = spec_file.with_name(f"kernel.json.{os.getpid()}")
    partial.write_text(json.dumps(spec, indent=1))
    partial.replace(spec_file)  # atomic: a concurrent run reads the old or the new file, whole
    return KERNEL_NAME


def execute(
    source: Path | str,
    output: Path | str,
    parameters: Mapping[str, Any],
    cwd: Path | str,
    progress: bool | None = None,
) -> Path:
    """Execute the chapter ``source`` with papermill into ``output``; NotebookError shows the failing cell."""
    source, output = Path(source), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clmini-run-") as tmp:
        converted = Path(tmp) / f"{source.stem}.ipynb"
        jupytext.write(read_source(source), converted)
        try:
            _papermill(source, converted, output, parameters, cwd,
                       sys.stderr.isatty() if progress is None else progress)
        finally:
            _record_source(output, source)
    return output


@functools.cache
def checked_translator() -> type:
    """Papermill's Python translator with :func:`~clmini.book.parameters.parse_parameters` as its
    ``inspect`` (registered for the kernel ``clmini`` by :func:`register_translator`)."""
    from papermill.models import Parameter as PapermillParameter
    from papermill.translators import PythonTranslator

    class CheckedPythonTranslator(PythonTranslator):
        """Writes the injected cell as papermill does; reads the parameters cell as clmini does."""

        @classmethod
        def inspect(cls, parameters_cell):
            try:
                declared = parse_parameters(parameters_cell["source"])
            except ParameterError:
                return []  # papermill's contract: inspection errors are ignored (ours were raised before)
            return [PapermillParameter(name=p.name, inferred_type_name=describe(p.spec), default=p.source, help="")
                    for p in declared.values()]

    return CheckedPythonTranslator


def register_translator() -> None:
    """Make papermill use :func:`checked_translator` for notebooks run with this book's kernel."""
    from papermill.translators import papermill_translators

    papermill_translators.register(KERNEL_NAME, checked_translator())


def _papermill(source: Path, converted: Path, output: Path, parameters: Mapping[str, Any],
               cwd: Path | str, progress: bool) -> None:
    """Papermill on the converted notebook, its failures told in terms of the chapter ``source``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    register_translator()
    try:
        papermill.execute_notebook(
            str(converted), str(output), parameters=dict(parameters), kernel_name=ensure_kernel(),
            cwd=str(cwd), progress_bar=progress, request_save_on_cell_execute=True,
        )
    except PapermillExecutionError as exc:
        trace = _ANSI.sub("", "\n".join(exc.traceback)).rstrip()
        code = "\n".join("    " + line for line in exc.source.splitlines())
        raise NotebookError(
            f"{source}: cell {exc.cell_index} (In [{exc.exec_count}]) raised "
            f"{exc.ename}: {exc.evalue}\n--- cell source ---\n{code}\n--- traceback ---\n{trace}\n"
            f"The partly executed notebook is {output}"
        ) from exc
    except Exception as exc:  # a dead kernel, a timeout, an unreadable notebook...
        raise NotebookError(f"{source}: execution failed: {type(exc).__name__}: {exc}") from exc


# The cell papermill injects repeats the parameters cell with this run's values: the page shows the
# source's cell (names, defaults and their meaning) and keeps the injected values behind a toggle.
INJECTED_TAG, INJECTED_DISPLAY = "injected-parameters", "hide-input"


def _record_source(output: Path, source: Path) -> None:
    """Name the chapter source, not the temporary conversion, as the executed notebook's input, and
    collapse papermill's injected parameters cell on the page (tag ``hide-input``)."""
    if not output.is_file():
        return
    nb = nbformat.read(output, as_version=4)
    if "papermill" in nb.metadata:
        nb.metadata.papermill.input_path = str(source)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG in tags and INJECTED_DISPLAY not in tags:
            cell.metadata["tags"] = [*tags, INJECTED_DISPLAY]
    nbformat.write(nb, output)


def run_notebook(
    source: Path | str,
    profile: str = DEFAULT_PROFILE,
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    output: Path | str | None = None,
    profiles_path: Path | str | None = None,
    progress: bool | None = None,
) -> Path:
    """Check the parameters, then execute ``source`` (cwd: the book root) into ``output``.

    The default output is ``book/chapters/<stem>.ipynb`` under the book root, where the book build
    picks it up.
    """
    source = Path(source)
    parameters = resolve_parameters(source, profile, overrides, profiles_path)
    root = book_root(source.parent)
    output = Path(output) if output else root / CHAPTERS_DIR / f"{source.stem}.ipynb"
    _check_output(source, output)
    shown = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "defaults"
    print(f"running {source} [profile {profile}: {shown}] -> {output}", flush=True)
    start = time.perf_counter()
    execute(source, output, parameters, cwd=root, progress=progress)
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return output


def _check_output(source: Path, output: Path) -> None:
    """ParameterError (nothing has run) for an output that would overwrite the source or cannot be made."""
    if output.resolve() == source.resolve():
        raise ParameterError(f"-o {output}: that is the chapter source; the executed notebook goes elsewhere")
    if output.suffix != ".ipynb":
        raise ParameterError(f"-o {output}: the executed notebook is a .ipynb file")
    blocking = next((p for p in output.resolve().parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ParameterError(f"-o {output}: {blocking} is a file, not a directory")
    if output.is_dir():
        raise ParameterError(f"-o {output}: that is a directory; give the notebook's file name")


def run_chapters(root: Path | str, profile: str = DEFAULT_PROFILE) -> list[Path]:
    """Execute every chapter of ``_toc.yml`` from ``notebooks/<stem>.md``; stop at the first failure.

    The order is :func:`clmini.book.toc.execution_order`: the reading order, except that a page
    flagged ``run_after_chapters`` (the results page, which reads what the chapters record) runs
    after every other chapter.
    """
    sources = [chapter_source(root, stem) for stem in toc_chapters(root)]
    missing = [s for s in sources if not s.is_file()]
    if missing:
        raise NotebookError("chapters in _toc.yml without a source notebook: "
                            + ", ".join(str(s.relative_to(root)) for s in missing))
    sources = [chapter_source(root, stem) for stem in execution_order(root)]
    # Check every chapter's parameters first: a typo in the last chapter's profile should not
    # surface after the first chapters have run for half an hour.
    for source in sources:
        resolve_parameters(source, profile)
    return [run_notebook(source, profile) for source in sources]
