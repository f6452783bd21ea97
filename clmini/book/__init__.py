"""Chapters as executable notebooks, and the book built from them.

==========================  ===================================================================
:mod:`~clmini.book.sources`     chapter sources: MyST Markdown notebooks read with jupytext
:mod:`~clmini.book.typespec`    the types a parameters cell declares, and checking values against them
:mod:`~clmini.book.parameters`  the ``parameters`` cell, profiles, the checked values to inject
:mod:`~clmini.book.toc`         the book's layout: root, ``_toc.yml``, executed chapters
:mod:`~clmini.book.runner`      papermill execution in this interpreter's kernel, one chapter or all
:mod:`~clmini.book.build`       the Jupyter Book build from the executed chapters
:mod:`~clmini.book.publish`     published results per profile: build from them, publish, verify
:mod:`~clmini.book.errors`      bad input (nothing ran) versus a failed run or build
==========================  ===================================================================

The names below are the package's public interface (``python -m clmini run|book`` uses them).
"""
from clmini.book.build import MATHJAX_SCRIPT, build_book, build_html, stored_errors
from clmini.book.errors import NotebookError, ParameterError
from clmini.book.parameters import (DEFAULT_PROFILE, PROFILES_FILE, Parameter, load_profiles, parameters_cell,
                                    parse_parameters, parse_value, profile_values, read_parameters,
                                    resolve_parameters)
from clmini.book.publish import RESULTS_DIR, publish, published_results, results_store, verify
from clmini.book.runner import KERNEL_NAME, ensure_kernel, execute, run_chapters, run_notebook
from clmini.book.sources import SOURCES_DIR, chapter_source, read_source
from clmini.book.toc import CHAPTERS_DIR, book_root, toc_chapters, toc_files
from clmini.book.typespec import ANY, describe

__all__ = [
    "ANY", "CHAPTERS_DIR", "DEFAULT_PROFILE", "KERNEL_NAME", "MATHJAX_SCRIPT", "PROFILES_FILE", "RESULTS_DIR",
    "publish", "published_results", "results_store", "verify",
    "SOURCES_DIR", "NotebookError", "Parameter", "ParameterError", "book_root", "build_book",
    "build_html", "chapter_source", "describe", "ensure_kernel", "execute", "load_profiles",
    "parameters_cell", "parse_parameters", "parse_value", "profile_values", "read_parameters",
    "read_source", "resolve_parameters", "run_chapters", "run_notebook", "stored_errors",
    "toc_chapters", "toc_files",
]
