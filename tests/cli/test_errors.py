"""Every command ends a failure with one message and a non-zero exit (issue 12): bad input exits 2
before anything runs, a failed run exits 1, the Python stack only with --debug or CLMINI_DEBUG=1."""
from __future__ import annotations

import json

import pytest

from clmini.__main__ import main
from clmini.cli import train as cli_train


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_an_unknown_device_is_a_one_line_error(tmp_path, capsys):
    code, err = run(capsys, "pretrain", "--epochs", "0", "--device", "tpu", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("seconds", ["nan", "-5", "soon"])
def test_checkpoint_every_must_be_a_number_of_seconds(tmp_path, capsys, seconds):
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--checkpoint-every", seconds, "--runs-dir", str(tmp_path / "runs")])
    assert exit_.value.code == 2
    assert f"expected a number of seconds >= 0, got {seconds!r}" in capsys.readouterr().err


def test_a_config_file_that_is_not_an_object_is_refused(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps([1, 2]))
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--config", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert exit_.value.code == 2
    assert "expected a JSON object of config fields" in capsys.readouterr().err


@pytest.mark.parametrize("error, code, shown", [
    (FloatingPointError("the run diverged at epoch 1, step 3: lower lr"), 1, "error: the run diverged"),
    (OSError(28, "No space left on device"), 1, "error: [Errno 28] No space left on device"),
    (RuntimeError("boom"), 1, "error: RuntimeError: boom (an unexpected failure: rerun with --debug"),
])
def test_failures_during_a_run_are_one_line(tmp_path, capsys, monkeypatch, error, code, shown):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli_train, "train_or_load", fail)
    got, err = run(capsys, "pretrain", "--runs-dir", str(tmp_path / "runs"))
    assert got == code and shown in err and "Traceback" not in err and err.count("\n") == 1


def test_debug_shows_the_stack(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_train, "train_or_load", fail)
    with pytest.raises(RuntimeError, match="boom"):
        main(["pretrain", "--runs-dir", str(tmp_path / "runs"), "--debug"])
    monkeypatch.setenv("CLMINI_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["pretrain", "--runs-dir", str(tmp_path / "runs")])


def test_an_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "train_or_load", interrupt)
    assert run(capsys, "pretrain", "--runs-dir", str(tmp_path / "runs")) == (130, "interrupted\n")
