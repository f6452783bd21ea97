"""The import contract of clmini's layers (.importlinter): kept by the package, and able to fail."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c",
        "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        "--config", str(REPO / ".importlinter"), "--no-cache"]


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``clmini`` package found in ``package_parent``."""
    return subprocess.run(LINT, cwd=package_parent, env={"PYTHONPATH": str(package_parent), "PATH": ""},
                          capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "clmini", tmp_path / "clmini", ignore=shutil.ignore_patterns("__pycache__"))
    core = tmp_path / "clmini" / "losses" / "core.py"
    core.write_text(core.read_text() + "\nfrom clmini.engine import TrainConfig  # a loss knowing the engine\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "clmini.losses.core -> clmini.engine" in result.stdout
