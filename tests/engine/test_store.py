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


def test_a_measurement_of_the_network_travels_with_the_record(tmp_path, monkeypatch):
    """Run.measure: a local run measures its network and keeps the value; the published record carries
    the measurements named; a published run answers from its record without weights; a measurement
    the record lacks trains the run locally (with a warning) instead of failing."""
    import numpy as np
    import torch

    config, data = tiny_config(epochs=1), pattern_data(n_train=128, n_test=64)
    monkeypatch.setenv("CLMINI_RUNS", str(tmp_path / "cache"))
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("CLMINI_LEDGER", str(ledger))
    run = train_or_load(config, data=data, progress=False, stores=[])
    calls = []

    def projections(net):
        calls.append(1)
        with torch.no_grad():
            return {"z": net(data.test_x[:5].float()), "n": np.int64(5)}

    value = run.measure("projections", projections, images=5)
    assert isinstance(value["z"], list) and np.asarray(value["z"]).shape == (5, config.proj_dim)
    assert value["n"] == 5 and len(calls) == 1
    again = run.measure("projections", projections, images=5)  # a local run measures every time
    assert again == value and len(calls) == 2
    key = 'projections{"images":5}'
    stored = json.loads((tmp_path / "cache" / config.hash / "measurements.json").read_text())
    assert stored == {key: value}
    assert [json.loads(line).get("measurement") for line in ledger.read_text().splitlines()] == [None, key, key]

    reloaded = train_or_load(config, data=data, progress=False, stores=[])
    assert reloaded.measurements == {key: value}
    path = store.write_record(tmp_path / "results", reloaded, commit="0" * 40, measured=[key])
    with pytest.raises(KeyError, match="no measurement"):
        store.make_record(reloaded, None, measured=['other{}'])
    published = load_published(path)
    assert published.measure("projections", projections, images=5) == value and len(calls) == 2
    with pytest.warns(UserWarning, match="has no measurement"):
        other = published.measure("projections", projections, images=3)  # not published: from the local run
    assert len(calls) == 3 and other == value  # the function, not the key, decides what is measured


@pytest.mark.parametrize("name, key, why", [
    ("", {}, "non-empty string"),
    ("a{b", {}, "without braces"),
    ("ok", {"x": object()}, "JSON values"),
    ("ok", {"x": float("nan")}, "JSON values"),
])
def test_a_measurement_needs_a_name_and_a_json_key(name, key, why):
    from clmini.engine.runs import measurement_key
    with pytest.raises(ValueError, match=why):
        measurement_key(name, key)


def test_measurements_are_rounded_arrays_of_json_values():
    import numpy as np
    import torch
    from clmini.engine.runs import jsonable
    assert jsonable({1: torch.tensor([1 / 3, 2.0]), "b": (np.float32(0.5), np.arange(3))}) == {
        "1": [0.3333333, 2.0], "b": [0.5, [0, 1, 2]]}
    assert jsonable(np.array([[float("nan")]]))[0][0] != jsonable(np.array([[float("nan")]]))[0][0]  # NaN kept
    with pytest.raises(TypeError, match="set"):
        jsonable({1, 2})
