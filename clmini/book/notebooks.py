"""Run chapter notebooks with papermill, their parameters checked first, and build the book.

A chapter source ``notebooks/NN_name.ipynb`` declares every tunable in its first code cell, tagged
``parameters``: plain assignments such as ``temperatures = [0.1, 0.5]`` (an annotation, e.g.
``max_steps: int | None = None``, refines the type when the default alone does not say it).
A *profile* (``smoke``, ``quick``, ``full``) is a named set of values for them, kept as data in
``notebooks/profiles.yaml``; ``-p name value`` overrides come last. Every value is checked against
the cell *before* a kernel starts: plain papermill only warns about a typo'd name and never checks a
type, so a mistake would surface minutes later, or never.

The book is built from the executed chapters in ``book/chapters/`` with
``jupyter-book build . -W -n --keep-going``; Sphinx never executes anything.
"""
from __future__ import annotations

import ast
import difflib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import nbformat
import yaml

DEFAULT_PROFILE = "quick"
KERNEL_NAME = "clmini"
PROFILES_FILE = "profiles.yaml"
CHAPTERS_DIR = Path("book") / "chapters"
SOURCES_DIR = Path("notebooks")
MATHJAX_SCRIPT = Path("node_modules") / "mathjax" / "es5" / "tex-mml-chtml.js"


class ParameterError(ValueError):
    """A parameter name, value or profile that does not fit the notebook's parameters cell."""


class NotebookError(RuntimeError):
    """A notebook that could not be executed, or a book that could not be built."""


# --------------------------------------------------------------------------------------------
# Types of parameters: a tiny language, enough for what a parameters cell holds.
# A spec is a tuple: ("any",), ("none",), ("bool",), ("int",), ("float",), ("str",), ("dict",),
# ("list", item_spec), ("union", spec, spec, ...). Tuples are treated as lists.

ANY = ("any",)
_SCALARS = {bool: ("bool",), int: ("int",), float: ("float",), str: ("str",)}
_NAMED = {"bool": ("bool",), "int": ("int",), "float": ("float",), "str": ("str",),
          "dict": ("dict",), "Any": ANY, "object": ANY, "None": ("none",)}


def _union(specs: Iterable[tuple]) -> tuple:
    unique: list[tuple] = []
    for spec in specs:
        for part in (spec[1:] if spec[0] == "union" else (spec,)):
            if part not in unique:
                unique.append(part)
    if ANY in unique:
        return ANY
    if ("float",) in unique and ("int",) in unique:  # [1, 0.5] is a list of floats
        unique.remove(("int",))
    return unique[0] if len(unique) == 1 else ("union", *unique)


def spec_of_value(value: Any) -> tuple:
    """The type a default value implies; ``None`` and the unknown imply nothing."""
    if value is None:
        return ANY
    for kind, spec in _SCALARS.items():
        if type(value) is kind:
            return spec
    if isinstance(value, (list, tuple)):
        return ("list", _union(spec_of_value(v) for v in value) if value else ANY)
    if isinstance(value, dict):
        return ("dict",)
    return ANY


def spec_of_annotation(node: ast.expr) -> tuple:
    """The type an annotation names (``int``, ``list[float]``, ``float | None``, ``Optional[int]``...)."""
    if isinstance(node, ast.Constant) and node.value is None:
        return ("none",)
    if isinstance(node, ast.Name):
        if node.id in ("list", "tuple", "List", "Tuple"):
            return ("list", ANY)
        return _NAMED.get(node.id, ANY)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([spec_of_annotation(node.left), spec_of_annotation(node.right)])
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        outer = node.value.id
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer in ("list", "List", "tuple", "Tuple", "Sequence"):
            items = [a for a in args if not (isinstance(a, ast.Constant) and a.value is Ellipsis)]
            return ("list", _union(spec_of_annotation(a) for a in items) if items else ANY)
        if outer == "Optional":
            return _union([spec_of_annotation(args[0]), ("none",)])
        if outer == "Union":
            return _union(spec_of_annotation(a) for a in args)
        if outer in ("dict", "Dict", "Mapping"):
            return ("dict",)
    return ANY


def describe(spec: tuple) -> str:
    """Words for a spec, as they appear in error messages."""
    kind = spec[0]
    if kind == "list":
        inner = spec[1]
        if inner == ANY:
            return "a list"
        if inner[0] == "union":
            return "a list of " + " or ".join(_plural(s) for s in inner[1:])
        return "a list of " + _plural(inner)
    if kind == "union":
        return " or ".join(describe(s) for s in spec[1:])
    return {"any": "any value", "none": "None", "bool": "a bool (True/False)", "int": "an int",
            "float": "a float", "str": "a string", "dict": "a dict"}[kind]


def _plural(spec: tuple) -> str:
    if spec[0] in ("list", "union"):
        return f"({describe(spec)})"
    return {"bool": "bools", "int": "ints", "float": "floats", "str": "strings", "dict": "dicts",
            "none": "Nones", "any": "values"}[spec[0]]


_MISMATCH = object()


def conform(value: Any, spec: tuple) -> Any:
    """``value`` converted to ``spec`` (an int is a valid float), or ``_MISMATCH``."""
    kind = spec[0]
    if kind == "any":
        return value
    if kind == "none":
        return value if value is None else _MISMATCH
    if kind == "bool":
        return value if isinstance(value, bool) else _MISMATCH
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISMATCH
    if kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _MISMATCH
    if kind == "str":
        return value if isinstance(value, str) else _MISMATCH
    if kind == "dict":
        return value if isinstance(value, dict) else _MISMATCH
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return _MISMATCH
        items = [conform(v, spec[1]) for v in value]
        return _MISMATCH if any(v is _MISMATCH for v in items) else items
    if kind == "union":
        for option in spec[1:]:
            converted = conform(value, option)
            if converted is not _MISMATCH:
                return converted
        return _MISMATCH
    raise AssertionError(f"unknown type spec {spec!r}")


# --------------------------------------------------------------------------------------------
# The parameters cell


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any  # the literal default; None when the right-hand side is not a literal
    source: str   # the right-hand side as written, for messages
    spec: tuple

    def check(self, value: Any, origin: str) -> Any:
        """``value`` converted to this parameter's type; ParameterError if it does not fit."""
        converted = conform(value, self.spec)
        if converted is _MISMATCH:
            raise ParameterError(
                f"{origin}: parameter {self.name!r} expects {describe(self.spec)} "
                f"(default: {self.source}), got {value!r} ({type(value).__name__})"
            )
        return converted


def parameters_cell(nb: nbformat.NotebookNode, path: Path | str = "notebook") -> nbformat.NotebookNode:
    """The code cell tagged ``parameters``; it must exist (and be the first code cell)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ParameterError(f"{path}: no code cell is tagged 'parameters' (tag the first code cell)")
    if tagged[0] is not code[0]:
        raise ParameterError(f"{path}: the cell tagged 'parameters' must be the first code cell")
    return tagged[0]


def parse_parameters(source: str, path: Path | str = "notebook") -> dict[str, Parameter]:
    """Names, defaults and types of the plain assignments in a parameters cell's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"{path}: the parameters cell is not valid Python: {exc}") from exc
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value, annotation = stmt.targets, stmt.value, None
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value, annotation = [stmt.target], stmt.value, stmt.annotation
        else:
            continue  # imports and the like may sit in the cell; only assignments are parameters
        try:
            default = ast.literal_eval(value)
        except ValueError:
            default = None  # an expression: its name is still a parameter, of unknown type
            spec = ANY
        else:
            spec = spec_of_value(default)
        if annotation is not None:
            spec = spec_of_annotation(annotation)
        for target in targets:
            if isinstance(target, ast.Name):
                params[target.id] = Parameter(target.id, default, ast.get_source_segment(source, value), spec)
    return params


def read_parameters(notebook: Path | str) -> dict[str, Parameter]:
    """The parameters a notebook declares in its first code cell (tagged ``parameters``)."""
    path = Path(notebook)
    if not path.is_file():
        raise ParameterError(f"no such notebook: {path}")
    nb = nbformat.read(path, as_version=4)
    return parse_parameters(parameters_cell(nb, path).source, path)


# --------------------------------------------------------------------------------------------
# Values: profiles and -p overrides


def parse_value(text: str) -> Any:
    """A command-line value, read like papermill's ``-p``/``-y``: a Python literal, else YAML, else text.

    ``"[0.1, 0.5]"`` is a list of floats, ``1e-3`` a float, ``true``/``True`` a bool,
    ``None``/``null`` None, ``cuda`` the string ``"cuda"``.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_profiles(path: Path | str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{notebook stem: {profile: {parameter: value}}}`` from a profiles file (missing file: empty)."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping 'notebook stem -> profile -> parameters'")
    for stem, profiles in data.items():
        profiles = profiles or {}
        if not isinstance(profiles, dict):
            raise ParameterError(f"{path}: {stem!r} should map profile names to parameter values")
        for name, values in profiles.items():
            if values is not None and not isinstance(values, dict):
                raise ParameterError(f"{path}: {stem}.{name} should map parameter names to values")
        data[stem] = {name: dict(values or {}) for name, values in profiles.items()}
    return data


def profile_values(stem: str, profile: str, profiles_path: Path | str) -> dict[str, Any]:
    """The values a profile sets for one notebook; ``quick`` may be absent (then: the defaults)."""
    table = load_profiles(profiles_path).get(stem, {})
    if profile in table:
        return table[profile]
    if profile == DEFAULT_PROFILE:
        return {}
    known = sorted(set(table) | {DEFAULT_PROFILE})
    raise ParameterError(
        f"profile {profile!r} is not defined for {stem} in {profiles_path}; "
        f"defined: {', '.join(known)}"
    )


def unknown_name_message(name: str, valid: Iterable[str], origin: str) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"{origin}: unknown parameter {name!r}.{hint} "
            f"Valid parameters: {', '.join(valid) or '(none)'}")


def resolve_parameters(
    notebook: Path | str,
    profile: str = DEFAULT_PROFILE,
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    profiles_path: Path | str | None = None,
) -> dict[str, Any]:
    """The checked values to inject: profile values, the profile's name, then ``overrides``.

    Override values given as strings are parsed with :func:`parse_value` (as from ``-p``).
    Raises ParameterError, naming the valid parameters, before anything runs.
    """
    notebook = Path(notebook)
    declared = read_parameters(notebook)
    profiles_path = Path(profiles_path) if profiles_path else notebook.parent / PROFILES_FILE

    def check(name: str, value: Any, origin: str) -> Any:
        if name not in declared:
            raise ParameterError(unknown_name_message(name, declared, origin))
        return declared[name].check(value, origin)

    values: dict[str, Any] = {}
    origin = f"{profiles_path} [{notebook.stem}.{profile}]"
    for name, value in profile_values(notebook.stem, profile, profiles_path).items():
        values[name] = check(name, value, origin)
    if "profile" in declared and "profile" not in values:
        values["profile"] = check("profile", profile, "profile name")
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for name, value in items:
        if isinstance(value, str):
            value = parse_value(value)
        values[name] = check(name, value, "-p")
    return values


# --------------------------------------------------------------------------------------------
# Execution


def book_root(start: Path | str) -> Path:
    """The nearest directory at or above ``start`` holding ``_toc.yml``, else the working directory."""
    start = Path(start).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "_toc.yml").is_file():
            return candidate
    return Path.cwd().resolve()


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


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def execute(
    source: Path | str,
    output: Path | str,
    parameters: Mapping[str, Any],
    cwd: Path | str,
    progress: bool | None = None,
) -> Path:
    """Execute ``source`` with papermill into ``output``; NotebookError shows the failing cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        papermill.execute_notebook(
            str(source), str(output), parameters=dict(parameters), kernel_name=ensure_kernel(),
            cwd=str(cwd), progress_bar=progress, request_save_on_cell_execute=True,
        )
    except PapermillExecutionError as exc:
        trace = _strip_ansi("\n".join(exc.traceback)).rstrip()
        code = "\n".join("    " + line for line in exc.source.splitlines())
        raise NotebookError(
            f"{source}: cell {exc.cell_index} (In [{exc.exec_count}]) raised "
            f"{exc.ename}: {exc.evalue}\n--- cell source ---\n{code}\n--- traceback ---\n{trace}\n"
            f"The partly executed notebook is {output}"
        ) from exc
    except Exception as exc:  # a dead kernel, a timeout, an unreadable notebook...
        raise NotebookError(f"{source}: execution failed: {type(exc).__name__}: {exc}") from exc
    return output


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
    shown = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "defaults"
    print(f"running {source} [profile {profile}: {shown}] -> {output}", flush=True)
    start = time.perf_counter()
    execute(source, output, parameters, cwd=root, progress=progress)
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return output


# --------------------------------------------------------------------------------------------
# The book


def toc_files(root: Path | str) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (root first), in reading order."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    files: list[str] = [toc["root"]] if toc.get("root") else []

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


def stored_errors(notebook: Path | str) -> list[str]:
    """Error outputs kept in an executed notebook (a book must never show one)."""
    nb = nbformat.read(notebook, as_version=4)
    return [f"{out.get('ename')}: {out.get('evalue')}" for cell in nb.cells
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def run_chapters(root: Path | str, profile: str = DEFAULT_PROFILE) -> list[Path]:
    """Execute every chapter of ``_toc.yml`` from ``notebooks/<stem>.ipynb``; stop at the first failure."""
    root = Path(root)
    stems = toc_chapters(root)
    missing = [s for s in stems if not (root / SOURCES_DIR / f"{s}.ipynb").is_file()]
    if missing:
        raise NotebookError("chapters in _toc.yml without a source notebook: "
                            + ", ".join(str(SOURCES_DIR / f"{s}.ipynb") for s in missing))
    # Check every chapter's parameters first: a typo in the last chapter's profile should not
    # surface after the first chapters have run for half an hour.
    for stem in stems:
        resolve_parameters(root / SOURCES_DIR / f"{stem}.ipynb", profile)
    return [run_notebook(root / SOURCES_DIR / f"{stem}.ipynb", profile) for stem in stems]


def build_html(root: Path | str, path_output: Path | str | None = None) -> Path:
    """``jupyter-book build <root> -W -n --keep-going``; returns ``_build/html/index.html``."""
    root = Path(root).resolve()
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
    out = Path(path_output).resolve() if path_output else root
    command = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
               "build", str(root), "-W", "-n", "--keep-going", "--path-output", str(out)]
    print("building:", "jupyter-book", " ".join(command[3:]), flush=True)
    if subprocess.run(command, cwd=root).returncode != 0:
        raise NotebookError("jupyter-book build failed (see the warnings above)")
    index = out / "_build" / "html" / "index.html"
    if not index.is_file():
        raise NotebookError(f"the build finished without {index}")
    return index


def build_book(root: Path | str, profile: str = DEFAULT_PROFILE, skip_run: bool = False,
               path_output: Path | str | None = None) -> Path:
    """Run every chapter (unless ``skip_run``), then build the HTML; returns its ``index.html``."""
    if not skip_run:
        run_chapters(root, profile)
    return build_html(root, path_output)
