"""The chapters' experiment helpers: variants share runs, tables hold the measured numbers, seeds fold."""
import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from clmini.study import plots  # noqa: E402
from clmini.study.experiments import (  # noqa: E402
    baseline, best, history_table, results_table, run_variants, seed_summary, seed_values, simclr_config,
    variant,
)
from engine_helpers import pattern_data  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = simclr_config("infonce", {"temperature": 0.5}, epochs=1, n_train=None, batch_size=32, eval_train_size=128,
                         monitor_train_size=64, monitor_test_size=32, probe_iters=10, knn_k=10)
    configs = [baseline(base), base, variant(base, seed=1), variant(base, loss_args={"temperature": 0.2})]
    data = pattern_data(n_train=128, n_test=64)
    directory = tmp_path_factory.mktemp("runs")
    first = run_variants(configs, directory, device="cpu", data=data)
    again = run_variants(configs, directory, device="cpu", data=data)  # loaded from the cache
    assert [r.metrics for r in again] == [r.metrics for r in first]
    return first


def test_baseline_is_untrained_and_shares_the_evaluation(runs):
    assert runs[0].config.epochs == 0 and runs[0].metrics["train_seconds"] == 0
    assert set(runs[0].metrics) == set(runs[1].metrics)
    assert baseline(variant(runs[1].config, loss="simple", loss_args={})) == runs[0].config
    assert variant(runs[1].config, loss="simple").loss_args == {"lam": None}  # not the base's temperature


def test_results_table_and_seed_summary(runs):
    table = results_table(runs)
    assert list(table["loss"]) == ["random init", "infonce", "infonce", "infonce"]
    assert table.loc[1, "knn_acc"] == runs[1].metrics["knn_acc"]
    summary = seed_summary(table[table["epochs"] > 0], ["temperature"])
    row = summary.set_index("temperature").loc[0.5]
    assert row["knn_acc_count"] == 2
    assert row["knn_acc_mean"] == pytest.approx((runs[1].metrics["knn_acc"] + runs[2].metrics["knn_acc"]) / 2)
    assert summary.set_index("temperature").loc[0.2, "knn_acc_count"] == 1
    assert best(table[table["epochs"] > 0], "knn_acc", "temperature")[0] in (0.2, 0.5)


def test_history_and_figures_are_labelled(runs):
    history = history_table(runs[1:3], names=["seed 0", "seed 1"])
    assert set(history["label"]) == {"seed 0", "seed 1"} and set(history["epoch"]) == {0, 1}
    table = results_table(runs)
    ax = plots.metric_curve(table[table["epochs"] > 0], "temperature", "knn_acc",
                            baseline=table.loc[0, "knn_acc"])
    assert ax.get_xlabel() == "temperature" and ax.get_ylabel() == "kNN accuracy"
    ax = plots.similarity_histogram(runs[1].metrics["histograms"]["views"])
    assert ax.get_xlabel() == "cosine similarity" and ax.get_ylabel() == "density"
    with pytest.raises(ValueError, match="names"):
        history_table(runs[1:3], names=["only one"])


def test_simclr_config_is_the_base_run_with_changes():
    from clmini.study.experiments import SIMCLR_BASE

    base = simclr_config()
    assert {name: getattr(base, name) for name in SIMCLR_BASE} == dict(SIMCLR_BASE)
    assert base.mode == "simclr" and base.loss == "infonce"
    assert simclr_config(epochs=5).epochs == 5 and simclr_config(epochs=5).n_train == SIMCLR_BASE["n_train"]
    assert simclr_config(**{"n_train": 512}).hash == simclr_config(n_train=512).hash
    with pytest.raises(ValueError, match="unknown run settings \\['epoch'\\]"):
        simclr_config(epoch=5)
    with pytest.raises(ValueError, match="lr"):
        simclr_config(lr=-1)


def test_variant_with_another_optimiser_takes_that_optimisers_recipe():
    from clmini.engine.config import RECIPES
    base = simclr_config(optimizer="sgd")
    adam = variant(base, optimizer="adam")
    assert adam.lr == RECIPES["adam"]["lr"] and adam.weight_decay == RECIPES["adam"]["weight_decay"]
    assert variant(base, optimizer="adam", lr=1e-4).lr == 1e-4
    assert variant(base, seed=3).lr == base.lr


def test_seed_values_orders_by_seed_and_refuses_gaps_and_duplicates():
    frame = pd.DataFrame([{"label": "x", "seed": seed, "a": v} for seed, v in enumerate([0.1, 0.2, 0.3])]).iloc[::-1]
    assert seed_values(frame, "x", "a").tolist() == [0.1, 0.2, 0.3]
    assert seed_values(frame, "x", "a", [2, 0]).tolist() == [0.3, 0.1]
    with pytest.raises(ValueError, match="no run for seeds"):
        seed_values(frame, "x", "a", [0, 5])
    with pytest.raises(ValueError, match="no runs with label"):
        seed_values(frame, "y", "a")
    with pytest.raises(ValueError, match="more than one run"):
        seed_values(pd.concat([frame, frame]), "x", "a")


def test_seed_values_reads_any_label_column():
    frame = pd.DataFrame([{"column": c, "seed": seed, "a": 10 * i + seed} for i, c in enumerate("pq") for seed in (1, 0)])
    assert seed_values(frame, "q", "a", [0, 1], column="column").tolist() == [10.0, 11.0]
