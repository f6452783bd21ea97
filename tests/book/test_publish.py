"""Published results: ``python -m clmini publish`` writes a profile's records from a committed tree,
``python -m clmini book`` then loads them instead of training and says so, ``python -m clmini
verify`` retrains a sample and finds the same numbers."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from test_book import REPO, clmini_book, make_book


def clmini(root, *args):
    return subprocess.run([sys.executable, "-m", "clmini", *args, "--root", str(root)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "CLMINI_RUNS": str(root / ".runs")})


def git(root, *args):
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=test", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = make_book(tmp_path_factory.mktemp("published"), ["claims_chapter", "trains"], results=True)
    # make_book links the repository's own files in: replace the link, never write through it
    (root / ".gitignore").unlink(missing_ok=True)
    (root / ".gitignore").write_text(".runs/\n_build/\nbook/chapters/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fixture book")
    return root


def test_the_fixture_book_leaves_the_repository_alone(book):
    assert not (book / ".gitignore").is_symlink()
    assert (REPO / ".gitignore").read_text() != (book / ".gitignore").read_text()


def test_publish_refuses_uncommitted_chapters(book):
    source = book / "notebooks" / "trains.md"
    original = source.read_text()
    source.write_text(original + "\n<!-- an edit -->\n")
    try:
        done = clmini(book, "publish", "--profile", "smoke")
    finally:
        source.write_text(original)
    assert done.returncode == 2 and "uncommitted changes" in done.stderr and "trains.md" in done.stderr
    assert not (book / "results").exists()


def test_publish_then_build_loads_instead_of_training_then_verify(book):
    done = clmini(book, "publish", "--profile", "smoke")
    assert done.returncode == 0, done.stderr
    records = sorted((book / "results" / "smoke").glob("*.json"))
    assert len(records) == 2 and "published 2 records" in done.stdout
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=book, capture_output=True, text=True).stdout.strip()
    assert {json.loads(p.read_text())["provenance"]["commit"] for p in records} == {commit}
    assert {json.loads(p.read_text())["config"]["seed"] for p in records} == {0, 1}
    measured = {json.loads(p.read_text())["config"]["seed"]: json.loads(p.read_text())["measurements"] for p in records}
    assert list(measured[0]) == ['test-projections{"images":8}'] and len(measured[0]['test-projections{"images":8}']) == 8
    assert measured[1] == {}, "only what a chapter measured is published"

    # A fresh run cache: the build trains nothing, every run comes from the published results.
    (book / ".runs").rename(book / ".runs-publish")
    built = clmini_book(book, "--profile", "smoke")
    assert built.returncode == 0, built.stderr
    assert "2 runs: 2 loaded from the published results" in built.stdout and "0 trained on this machine" in built.stdout
    assert not list((book / ".runs").glob("*/weights.pt")), "a published run is not retrained"
    page = (book / "_build" / "html" / "book" / "chapters" / "00_results.html").read_text()
    assert "This build" in page and "2 loaded from the published results in results/smoke" in page
    front = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (book / "_build" / "html" / "book" / "intro.html").read_text()))
    assert re.search(r"This build \(profile smoke , run on \d{4}-\d\d-\d\d\): 2 runs: 2 loaded from the published "
                     r"results in results/smoke .*, 0 trained on this machine", front), "the front page says it too"

    verified = clmini(book, "verify", "--profile", "smoke", "--sample", "1", "--seed", "0")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verified: every sampled record reproduces" in verified.stdout and "equal check" in verified.stdout


def test_verify_reports_a_number_that_does_not_reproduce(book):
    records = sorted((book / "results" / "smoke").glob("*.json"))
    if not records:
        pytest.skip("needs the records published by the test above")
    record = json.loads(records[0].read_text())
    record["metrics"]["knn_acc"] += 0.5
    records[0].write_text(json.dumps(record))
    done = clmini(book, "verify", "--profile", "smoke", "--sample", "2")
    assert done.returncode == 1 and f"{records[0].name}: knn_acc published" in done.stderr
