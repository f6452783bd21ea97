"""A chapter's parameters: its ``parameters`` cell, profiles of values, and the checked values to inject.

A chapter declares every tunable in its first code cell, tagged ``parameters``: plain assignments
such as ``temperatures = [0.1, 0.5]`` (an annotation, e.g. ``max_steps: int | None = None``, refines
the type when the default alone does not say it). A *profile* (``smoke``, ``quick``, ``full``) is a
named set of values for them, kept as data in ``profiles.yaml`` beside the sources; ``-p name value``
overrides come last. Every value is checked against the cell *before* a kernel starts: plain
papermill only warns about a typo'd name and never checks a type, so a mistake would surface
minutes later, or never.
"""
from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from clmini.book.errors import ParameterError
from clmini.book.sources import read_source
from clmini.book.typespec import ANY, MISMATCH, conform, describe, spec_of_annotation, spec_of_value

DEFAULT_PROFILE = "quick"
PROFILES_FILE = "profiles.yaml"


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any  # the literal default; None when the right-hand side is not a literal
    source: str   # the right-hand side as written, for messages
    spec: tuple
    annotated: bool = False  # the cell gave a type: then an empty list is as good as any

    def check(self, value: Any, origin: str) -> Any:
        """``value`` converted to this parameter's type; ParameterError if it does not fit.

        A list whose default holds values must hold some: ``temperatures = []`` would only fail
        deep inside the chapter. A cell that means to allow an empty list says so with a type,
        e.g. ``ablations: list[str] = [...]``.
        """
        converted = conform(value, self.spec)
        if converted == [] and isinstance(self.default, list) and self.default and not self.annotated:
            raise ParameterError(f"{origin}: parameter {self.name!r} needs at least one value "
                                 f"(default: {self.source}), got []")
        if converted is MISMATCH:
            raise ParameterError(
                f"{origin}: parameter {self.name!r} expects {describe(self.spec)} "
                f"(default: {self.source}), got {value!r} ({type(value).__name__})"
            )
        return converted


def parameters_cell(nb: nbformat.NotebookNode, path: Path | str = "notebook") -> nbformat.NotebookNode:
    """The one code cell tagged ``parameters``, which must be the first code cell.

    Papermill injects the values after the first tagged cell; a second tagged cell, or one after
    other code, would hold names that this check and the injected values never see.
    """
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ParameterError(f"{path}: no code cell is tagged 'parameters' (tag the first code cell)")
    if tagged[0] is not code[0]:
        raise ParameterError(f"{path}: the cell tagged 'parameters' must be the first code cell")
    if len(tagged) > 1:
        raise ParameterError(f"{path}: {len(tagged)} code cells are tagged 'parameters'; tag only the first")
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
                params[target.id] = Parameter(target.id, default, ast.get_source_segment(source, value), spec,
                                              annotated=annotation is not None)
    return params


def read_parameters(notebook: Path | str) -> dict[str, Parameter]:
    """The parameters a chapter source declares in its first code cell (tagged ``parameters``)."""
    return parse_parameters(parameters_cell(read_source(notebook), notebook).source, notebook)


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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
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
    """The error for a name the cell does not declare: the nearest valid name, then all of them."""
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
