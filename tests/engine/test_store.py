"""clmini.engine.store: published records are read before the run cache, hold no weights, and a
record the current code would not produce is refused, named, and trained again instead."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from clmini.engine import ENGINE_VERSION, NoWeights, TrainConfig, load_published, store, train_or_load
from engine_helpers import pattern_data, tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A run trained into a cache, then published into a store: (config, cache, store, record path)."""
    root = tmp_path_factory.mktemp("store")
    config, data = tiny_config(epochs=1), pattern_data(n_train=128, n_test=64)
    run = train_or_load(config, root / "cache", data=data, progress=False, stores=[])
    path = store.write_record(root / "results", run, commit="0" * 40)
    return config, data, root / "cache", root / "results", path


def test_a_record_holds_the_run_without_its_weights(published):
    config, _, cache, _, path = published
    record = json.loads(path.read_text())
    assert path.name == f"{config.hash}.json" and record["hash"] == config.hash
    assert record["engine_version"] == ENGINE_VERSION and TrainConfig.from_dict(record["config"]) == config
    local = json.loads((cache / config.hash / "metrics.json").read_text())
    assert record["metrics"] == {k: v for k, v in local.items() if k != "sha256"}
    assert record["history"] == json.loads((cache / config.hash / "history.json").read_text())
    provenance = record["provenance"]
    assert provenance["device"] == "cpu" and provenance["torch_version"] and provenance["precision"] == config.precision
    assert provenance["commit"] == "0" * 40 and provenance["finished"].endswith("+00:00")
    assert provenance["wall_seconds"] == pytest.approx(local["train_seconds"] + local["eval_seconds"])
    assert path.stat().st_size < 20_000, "a record is a few kilobytes: metrics and history, never weights"


def test_train_or_load_reads_the_store_first(published, tmp_path, monkeypatch):
    config, data, _, results, _ = published
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("CLMINI_LEDGER", str(ledger))
    monkeypatch.setenv(store.STORES_ENV, str(results))
    run = train_or_load(config, tmp_path / "empty-cache", data=data, progress=False)  # stores from the env
    assert run.published is not None and run.published["device"] == "cpu"
    assert not (tmp_path / "empty-cache").exists(), "nothing was trained or cached"
    with pytest.raises(NoWeights, match="keep no weights"):
        run.model()
    local = train_or_load(config, tmp_path / "cache", data=data, progress=False, stores=[])  # opting out trains
    assert local.published is None and local.model() is not None
    assert [json.loads(line)["source"] for line in ledger.read_text().splitlines()] == ["published", "trained"]


@pytest.mark.parametrize("damage, why", [
    (lambda r: r.update(engine_version=ENGINE_VERSION - 1), "engine version"),
    (lambda r: r["config"].update(epochs=2), "hashes to"),
    (lambda r: r["config"].update(loss="no-such-loss"), "not valid for this code"),
    (lambda r: r.update(history={"epoch": 1}), "'history' must be a JSON list"),
    (lambda r: r.update(record_version=99), "record format"),
])
def test_a_stale_record_is_refused_named_and_retrained(published, tmp_path, damage, why):
    config, data, _, results, path = published
    stale_store = tmp_path / "results"
    stale_store.mkdir()
    record = json.loads(path.read_text())
    damage(record)
    (stale_store / path.name).write_text(json.dumps(record))
    with pytest.raises(store.StaleRecord, match=why):
        load_published(stale_store / path.name)
    problems = store.stale_records([stale_store, results])
    assert len(problems) == 1 and path.name in problems[0] and why.split()[0] in problems[0]
    assert store.find(config, [stale_store]) is None
    run = train_or_load(config, tmp_path / "cache", data=data, progress=False, stores=[stale_store])
    assert run.published is None  # trained here, as if the record had never been published


def test_a_record_of_another_config_is_not_loaded(published, tmp_path):
    config, _, _, results, _ = published
    assert store.find(dataclasses.replace(config, seed=config.seed + 1), [results]) is None
    assert store.find(config, [tmp_path / "missing", results]) == results / f"{config.hash}.json"


def test_no_published_record_is_stale():
    """Every record in the repository's results/ must be one the current code produces for its config
    with the current ENGINE_VERSION: published numbers never outlive the code that computed them."""
    stores = sorted(p for p in (REPO / "results").glob("*") if p.is_dir())
    problems = store.stale_records(stores)
    assert not problems, "stale published records (republish them: python -m clmini publish --profile P):\n" \
        + "\n".join(problems)
