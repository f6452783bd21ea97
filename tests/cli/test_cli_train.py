"""``python -m clmini pretrain`` / ``evaluate``: every knob reachable, bad values refused up front."""
from __future__ import annotations

import json

import pytest

from clmini.__main__ import main
from clmini.losses import LOSSES
from engine_helpers import write_fashion_mnist

TINY = ["--n-train", "96", "--width", "4", "--proj-dim", "16", "--epochs", "1", "--batch-size", "24",
        "--monitor-train-size", "64", "--monitor-test-size", "32", "--knn-k", "20", "--probe-iters", "20",
        "--device", "cpu", "--no-progress"]


def test_help_lists_every_loss_and_hyperparameter(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for loss in LOSSES:
        assert loss in text
    for option in ("--temperature", "--eps", "--tau-min", "--tau-max", "--lam", "--k", "--alpha",
                   "--mode", "--optimizer", "--lr", "--warmup-epochs", "--seed", "--crop-scale",
                   "--blur-p", "--hue", "--knn-k", "--dataset", "--arch", "--device", "--runs-dir",
                   "--objective", "--monitors", "--precision"):
        assert option in text


@pytest.mark.parametrize("argv, message", [
    (["--loss", "temperature-free", "--temperature", "0.5"], "--temperature: not an argument of loss"),
    (["--lr", "-1"], "--lr must be"),
    (["--loss", "hard", "--temperature", "0.2"], "exactly one of k"),
    (["--crop-scale", "0.5", "0.1"], "--crop-scale"),
    (["--loss", "nce"], "invalid choice"),
    (["--epochs", "two"], "invalid int value"),
    (["--objective", "cross-entropy"], "--objective cross-entropy needs mode supervised"),
    (["--monitors", "geometry"], "invalid choice"),
    (["--precision", "fp16"], "invalid choice"),
])
def test_bad_values_fail_before_any_work(tmp_path, capsys, argv, message):
    runs_dir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", *argv, "--runs-dir", str(runs_dir), "--root", str(tmp_path / "no-data")])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not runs_dir.exists()  # nothing was started


def test_missing_data_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from clmini.engine import data

    monkeypatch.delenv("CLMINI_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    code = main(["pretrain", *TINY, "--runs-dir", str(tmp_path / "runs"), "--root", str(tmp_path / "none")])
    assert code == 2 and "Fashion-MNIST not found" in capsys.readouterr().err


def test_pretrain_then_evaluate(tmp_path, capsys):
    root = tmp_path / "data"
    write_fashion_mnist(root, n_train=120, n_test=40)
    argv = ["pretrain", *TINY, "--loss", "dystress", "--tau-min", "0.1", "--runs-dir", str(tmp_path / "runs"),
            "--root", str(root)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / out.splitlines()[0].split("/")[-1]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["loss_args"] == {"tau_min": 0.1, "tau_max": 0.2, "detach": True, "positive_temperature": None}
    assert config["n_train"] == 96 and "knn_acc" in out

    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "linear_probe_acc" in out and "tau_pos" in out  # metrics and the history table
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["config_hash"] == run_dir.name

    # --config re-creates the same run (loaded from the cache), options override it
    assert main(["pretrain", "--config", str(run_dir / "config.json"), "--runs-dir", str(tmp_path / "runs"),
                 "--root", str(root), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(run_dir.name)
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", str(run_dir / "config.json"), "--loss", "infonce", "--eps", "0.1",
              "--runs-dir", str(tmp_path / "runs")])
    assert "not an argument of loss 'infonce'" in capsys.readouterr().err


def test_evaluate_an_incomplete_run_says_how_to_finish_it(tmp_path, capsys):
    (tmp_path / "partial").mkdir()
    assert main(["evaluate", str(tmp_path / "partial")]) == 1
    err = capsys.readouterr().err
    assert "not a complete run" in err and "pretrain --config" in err


def test_the_cross_entropy_baseline_and_monitors_from_the_command_line(tmp_path, capsys):
    root = tmp_path / "data"
    write_fashion_mnist(root, n_train=120, n_test=40)
    argv = ["pretrain", *TINY, "--mode", "supervised", "--objective", "cross-entropy", "--monitors", "class-geometry",
            "probe", "--classes", "6", "0", "--n-train", "all", "--runs-dir", str(tmp_path / "runs"), "--root", str(root)]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    assert 0 <= metrics["classifier_acc"] <= 1 and "separation" in history[-1] and "knn1_acc" in history[-1]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["objective"] == "cross-entropy" and config["monitors"] == ["class-geometry", "probe"]
    assert config["classes"] == [0, 6]
