"""Chapters as executable notebooks: parameters and profiles, the papermill runner, the book build."""
