"""The types of chapter parameters: a tiny language, enough for what a parameters cell holds.

A spec is a tuple: ``("any",)``, ``("none",)``, ``("bool",)``, ``("int",)``, ``("float",)``,
``("str",)``, ``("dict",)``, ``("list", item_spec)``, ``("union", spec, spec, ...)``. Tuples are
treated as lists. Specs come from a default value or from an annotation; :func:`conform` checks a
value against one, so a wrong value is refused before a kernel starts rather than minutes later.
"""
from __future__ import annotations

import math

import ast
from collections.abc import Iterable
from typing import Any

ANY = ("any",)
MISMATCH = object()  # what conform() returns for a value that does not fit
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


def conform(value: Any, spec: tuple) -> Any:
    """``value`` converted to ``spec`` (an int is a valid float), or ``MISMATCH``."""
    kind = spec[0]
    if kind == "any":
        return value
    if kind == "none":
        return value if value is None else MISMATCH
    if kind == "bool":
        return value if isinstance(value, bool) else MISMATCH
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else MISMATCH
    if kind == "float":  # NaN and inf would pass every comparison a chapter makes, silently
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else MISMATCH
    if kind == "str":
        return value if isinstance(value, str) else MISMATCH
    if kind == "dict":
        return value if isinstance(value, dict) else MISMATCH
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return MISMATCH
        items = [conform(v, spec[1]) for v in value]
        return MISMATCH if any(v is MISMATCH for v in items) else items
    if kind == "union":
        for option in spec[1:]:
            converted = conform(value, option)
            if converted is not MISMATCH:
                return converted
        return MISMATCH
    raise AssertionError(f"unknown type spec {spec!r}")
