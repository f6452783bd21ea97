"""clmini.engine.objectives: the cross-entropy baseline is one more objective through the same
train-or-load path (same batches, views, schedule, evaluation, cache and resume as a contrastive run)."""
from __future__ import annotations

import dataclasses
import math

import pytest

from clmini.engine import TrainConfig, Trainer, train_or_load
from clmini.engine import rundir as runs
from engine_helpers import killed_at_checkpoint, pattern_data


@pytest.fixture(scope="module")
def data():
    return pattern_data(n_train=128, n_test=64)


def tiny(**overrides) -> TrainConfig:
    values = dict(width=4, proj_dim=16, epochs=2, batch_size=16, lr=3e-3, mode="supervised", loss="supcon",
                  monitor_train_size=64, monitor_test_size=32, knn_k=20, probe_iters=20,
                  monitors=("class-geometry", "probe"))
    return TrainConfig(**{**values, **overrides})


def cross_entropy(config: TrainConfig) -> TrainConfig:
    return dataclasses.replace(config, objective="cross-entropy")


def test_cross_entropy_config_and_hash():
    supcon, sincere = tiny(loss="supcon", loss_args={"temperature": 0.05}), tiny(loss="sincere")
    assert cross_entropy(supcon) == cross_entropy(sincere)  # the loss does not enter such a run
    key = cross_entropy(supcon).hash
    assert key != supcon.hash and len(key) == 16
    assert cross_entropy(tiny(seed=1)).hash != key
    with pytest.raises(ValueError, match="supervised"):
        TrainConfig(objective="cross-entropy")
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="mse")


def test_cross_entropy_run_trains_caches_and_is_evaluated_like_the_others(tmp_path, data, monkeypatch):
    base = tiny(epochs=3)
    run = train_or_load(cross_entropy(base), tmp_path, device="cpu", data=data, progress=False)
    assert run.dir.name == cross_entropy(base).hash
    assert [r["epoch"] for r in run.history] == [0, 1, 2, 3]
    assert run.history[-1]["loss"] < run.history[1]["loss"]
    for key in ("knn_acc", "linear_probe_acc", "separation", "classifier_acc", "nearest_other_sim"):
        assert math.isfinite(run.metrics[key])
    assert 0 <= run.metrics["classifier_acc"] <= 1 and run.metrics["knn_acc"] > 0.5  # four classes, chance 0.25
    assert "knn1_acc" in run.history[-1]
    assert run.model().head[0].in_features == 16  # the engine's network, loadable the same way
    # loaded, not retrained
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("retrained a complete run"))
    again = train_or_load(cross_entropy(base), tmp_path, device="cpu", data=data, progress=False)
    assert again.metrics == run.metrics
    # a contrastive run of the same base lives elsewhere
    monkeypatch.undo()
    contrastive = train_or_load(base, tmp_path, device="cpu", data=data, progress=False)
    assert contrastive.dir != run.dir and "classifier_acc" not in contrastive.metrics


def test_cross_entropy_on_a_class_subset(tmp_path, data):
    run = train_or_load(cross_entropy(tiny(epochs=1, classes=(0, 2))), tmp_path, device="cpu", data=data,
                        progress=False)
    assert run.metrics["eval_test_size"] == 32 and 0 <= run.metrics["classifier_acc"] <= 1


def test_an_interrupted_cross_entropy_run_resumes_with_identical_results(tmp_path, data, monkeypatch):
    config = cross_entropy(tiny(epochs=2))
    reference = train_or_load(config, tmp_path / "a", device="cpu", data=data, progress=False)
    # 8 checkpoints per epoch (7 between steps, 1 at the end): the 10th is after epoch 1, step 2
    with killed_at_checkpoint(monkeypatch, 10):
        train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False, checkpoint_every=0)
    state = runs.torch_load(tmp_path / "b" / config.hash / runs.CHECKPOINT)
    assert state["config_hash"] == config.hash and (state["epoch"], state["step"]) == (1, 2)
    assert "classifier.weight" in state["objective"]
    resumed = train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False)
    assert resumed.history == reference.history
    timing = ("train_seconds", "eval_seconds")
    assert ({k: v for k, v in resumed.metrics.items() if k not in timing}
            == {k: v for k, v in reference.metrics.items() if k not in timing})
