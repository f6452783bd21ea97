"""clmini.engine: configs and their hashes, the loop and its hooks, the run cache, resuming after a kill."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clmini.engine import rundir as runs
from clmini.engine import config as config_module
from clmini.engine.augment import AugmentConfig
from clmini.engine.config import TrainConfig
from clmini.engine.models import build_model
from clmini.engine.runs import load_run, train_or_load
from clmini.engine.trainer import Trainer, learning_rate
from clmini.losses import ScheduledTemperature
from engine_helpers import StepCounter, killed_at_checkpoint, pattern_data, write_fashion_mnist
from engine_helpers import tiny_config as tiny

REPO = Path(__file__).resolve().parents[2]
TIMING = ("train_seconds", "eval_seconds")


@pytest.fixture(scope="module")
def data():
    return pattern_data(n_train=128, n_test=64)


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


# -- configs -----------------------------------------------------------------------------------

def test_hash_is_canonical():
    base = TrainConfig()
    assert TrainConfig(loss_args={"temperature": 0.1}).hash == base.hash  # defaults filled in
    assert TrainConfig(lr=1).hash == TrainConfig(lr=1.0).hash
    assert TrainConfig(loss_args={"temperature": 1}).hash == TrainConfig(loss_args={"temperature": 1.0}).hash
    assert TrainConfig.from_dict(json.loads(json.dumps(base.to_dict()))).hash == base.hash
    for changed in (TrainConfig(seed=1), TrainConfig(loss_args={"temperature": 0.2}),
                    TrainConfig(augment=AugmentConfig(blur_p=0.5)), TrainConfig(loss="temperature-free")):
        assert changed.hash != base.hash
    assert len(base.hash) == 16


def test_hash_depends_on_engine_version(monkeypatch):
    before = TrainConfig().hash
    monkeypatch.setattr(config_module, "ENGINE_VERSION", config_module.ENGINE_VERSION + 1)
    assert TrainConfig().hash != before


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=0), "lr must be"),
    (dict(epochs=-1), "epochs must be"),
    (dict(batch_size=1), "batch_size must be"),
    (dict(loss="nce"), "loss must be one of"),
    (dict(loss="temperature-free", loss_args={"temperature": 0.5}), r"takes \['eps'\]"),
    (dict(loss="hard", loss_args={"temperature": 0.5}), "exactly one of k"),
    (dict(loss_args={"temperature": -1.0}), "temperature must be"),
    (dict(mode="semi"), "mode must be one of"),
    (dict(warmup_epochs=-1), "warmup_epochs"),
    (dict(n_train=True), "n_train must be an integer"),
])
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"epoch": 3})


def test_learning_rate_schedule():
    config = TrainConfig(lr=1.0, epochs=4, warmup_epochs=1)
    lrs = [learning_rate(config, step, 10) for step in range(40)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up
    assert lrs[10] == pytest.approx(1.0)  # cosine from the peak ...
    assert lrs[10 + 15] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 30)))  # ... half-way
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01
    short = TrainConfig(lr=1.0, epochs=1, warmup_epochs=2)  # warm-up longer than the run: all warm-up
    assert [learning_rate(short, s, 4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


# -- the loop ----------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_records_the_history(tmp_path, data):
    run = train_or_load(tiny(epochs=4), tmp_path, device="cpu", data=data, progress=False)
    history = run.history
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    assert "loss" not in history[0]  # epoch 0: the random initialisation, before any step
    assert history[-1]["loss"] < history[1]["loss"]
    assert history[-1]["pos_sim"] > history[-1]["neg_sim"]
    for key in ("knn_acc", "linear_probe_acc", "uniformity", "tolerance", "alignment", "separation"):
        assert isinstance(run.metrics[key], float)
    assert run.metrics["steps_per_epoch"] == 128 // 32 and run.metrics["epochs_trained"] == 4
    assert sorted(p.name for p in run.dir.iterdir()) == [".lock", "config.json", "history.json",
                                                         "metrics.json", "weights.pt"]


def test_random_init_baseline_is_epochs_zero(tmp_path, data):
    config = tiny(epochs=0)
    run = train_or_load(config, tmp_path, device="cpu", data=data, progress=False)
    assert len(run.history) == 1 and run.metrics["epochs_trained"] == 0
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        init = build_model("small-cnn", 1, [0.0], [1.0], 16, 4).state_dict()
    weights = run.model().state_dict()
    assert all(torch.equal(weights[k], init[k]) for k in init if not k.startswith("standardize"))


def test_supervised_batches_are_class_balanced_and_labels_are_classes(data):
    trainer = Trainer(tiny(mode="supervised", loss="sincere", batch_size=16), data, torch.device("cpu"))
    batches = trainer.epoch_batches(0)
    assert batches.shape == (32 // 4, 16)  # 4 classes x 4 per batch; 32 images per class
    for batch in batches:
        assert torch.bincount(data.train_y[batch], minlength=4).tolist() == [4, 4, 4, 4]
        labels = trainer.batch_labels(batch)
        assert torch.equal(labels, torch.cat([data.train_y[batch]] * 2))
    simclr = Trainer(tiny(), data, torch.device("cpu"))
    assert torch.equal(simclr.batch_labels(torch.tensor([7, 3])), torch.tensor([0, 1, 0, 1]))
    assert not torch.equal(simclr.epoch_batches(0), simclr.epoch_batches(1))
    assert torch.equal(simclr.epoch_batches(1), simclr.epoch_batches(1))


def test_dystress_temperatures_are_recorded(tmp_path, data):
    run = train_or_load(tiny(loss="dystress", loss_args={"tau_min": 0.1, "tau_max": 0.3}), tmp_path,
                        device="cpu", data=data, progress=False)
    for record in run.history[1:]:
        assert 0.1 <= record["tau_pos"] <= 0.3 and 0.1 <= record["tau_neg"] <= 0.3
    plain = train_or_load(tiny(epochs=1), tmp_path, device="cpu", data=data, progress=False)
    assert "tau_pos" not in plain.history[1]


def test_every_loss_trains(tmp_path, data):
    for loss, args, mode in (("temperature-free", {}, "simclr"), ("supcon", {}, "supervised"),
                             ("simple", {}, "simclr"), ("hard", {"k": 8}, "simclr"),
                             ("hard-simple", {"alpha": 0.1}, "simclr")):
        run = train_or_load(tiny(epochs=1, loss=loss, loss_args=args, mode=mode), tmp_path, device="cpu",
                            data=data, progress=False)
        assert torch.isfinite(torch.tensor(run.history[1]["loss"]))


def test_the_rivals_train_and_record_their_temperature(tmp_path, data):
    """DCL/DCLW/MACL train; MACL's batch temperature, the learned one and the scheduled one are in
    the history; the learned temperature moves (trained, without weight decay) and the schedule
    follows the training progress the engine tells it."""
    for loss, args in (("dcl", {}), ("dclw", {}), ("macl", {}), ("learned-temperature", {"initial_temperature": 0.2}),
                       ("scheduled-temperature", {"tau_min": 0.1, "tau_max": 0.5})):
        run = train_or_load(tiny(epochs=2, loss=loss, loss_args=args, weight_decay=0.5), tmp_path, device="cpu",
                            data=data, progress=False)
        assert all(math.isfinite(record["loss"]) for record in run.history[1:]), loss
        if loss in ("dcl", "dclw"):
            assert "tau" not in run.history[1]
            continue
        taus = [record["tau"] for record in run.history[1:]]
        if loss == "macl":
            assert all(0.1 * 0.5 <= t <= 0.1 * 1.5 for t in taus)
        if loss == "learned-temperature":
            assert taus[0] != pytest.approx(0.2, abs=1e-6) and taus[0] != taus[1]
        if loss == "scheduled-temperature":
            # each epoch's mean of tau(p) at the progress p = step / steps of each of its steps
            schedule, steps = ScheduledTemperature(**args), run.metrics["steps_per_epoch"]
            expected = [sum(schedule.temperature_at((e * steps + k) / (2 * steps)) for k in range(steps)) / steps
                        for e in range(2)]
            assert taus == pytest.approx(expected, rel=1e-6) and taus[0] > taus[1]
    trainer = Trainer(tiny(loss="learned-temperature", weight_decay=0.5), data, torch.device("cpu"))
    scalar_groups = [g for g in trainer.optimizer.param_groups if any(p.dim() == 0 for p in g["params"])]
    assert len(scalar_groups) == 1 and scalar_groups[0]["weight_decay"] == 0.0


def test_a_learned_temperature_resumes_exactly(tmp_path, data, monkeypatch):
    config = tiny(epochs=2, loss="learned-temperature")
    reference = train_or_load(config, tmp_path / "a", device="cpu", data=data, progress=False)
    with killed_at_checkpoint(monkeypatch, 3):
        train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False, checkpoint_every=0)
    resumed = train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False)
    assert resumed.history == reference.history


def test_a_diverging_run_stops_with_a_clear_error(tmp_path, data):
    with pytest.raises((FloatingPointError, ValueError), match="NaN|nan|inf"):
        train_or_load(tiny(lr=1e30, optimizer="sgd"), tmp_path, device="cpu", data=data, progress=False)


# -- the cache ---------------------------------------------------------------------------------

def test_same_config_is_loaded_not_retrained(tmp_path, data, monkeypatch):
    first = train_or_load(tiny(), tmp_path, device="cpu", data=data, progress=False)
    counter = StepCounter(monkeypatch)
    second = train_or_load(tiny(), tmp_path, device="cpu", data=data, progress=False)
    assert counter.steps == 0 and second.metrics == first.metrics
    train_or_load(tiny(seed=1), tmp_path, device="cpu", data=data, progress=False)
    assert counter.steps == 2 * 4
    assert {p.name for p in tmp_path.iterdir()} == {tiny().hash, tiny(seed=1).hash}


def test_weights_load_without_pickled_code(tmp_path, data):
    run = train_or_load(tiny(), tmp_path, device="cpu", data=data, progress=False)
    state = torch.load(run.dir / runs.WEIGHTS, weights_only=True)
    model = run.model()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("damage", ["truncate weights", "garbage metrics", "edit history", "drop weights"])
def test_a_corrupt_run_is_detected_and_redone(tmp_path, data, monkeypatch, damage):
    run = train_or_load(tiny(), tmp_path, device="cpu", data=data, progress=False)
    target = {"truncate weights": runs.WEIGHTS, "garbage metrics": runs.METRICS,
              "edit history": runs.HISTORY, "drop weights": runs.WEIGHTS}[damage]
    path = run.dir / target
    if damage == "drop weights":
        path.unlink()
    elif damage == "edit history":
        path.write_text(path.read_text().replace('"epoch": 2', '"epoch": 3'))
    else:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(runs.CorruptRun):
        load_run(run.dir)
    counter = StepCounter(monkeypatch)
    with pytest.warns(UserWarning, match="redoing"):
        redone = train_or_load(tiny(), tmp_path, device="cpu", data=data, progress=False)
    assert counter.steps == 2 * 4
    assert comparable(redone.metrics) == comparable(run.metrics)  # and the redo is deterministic


def test_a_corrupt_checkpoint_is_discarded(tmp_path, data, monkeypatch):
    config = tiny()
    run_dir = tmp_path / config.hash
    run_dir.mkdir()
    (run_dir / runs.CHECKPOINT).write_bytes(b"PK\x03\x04 not a checkpoint")
    counter = StepCounter(monkeypatch)
    with pytest.warns(UserWarning, match="unusable checkpoint"):
        train_or_load(config, tmp_path, device="cpu", data=data, progress=False)
    assert counter.steps == 2 * 4 and not (run_dir / runs.CHECKPOINT).exists()


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    runs.atomic_write_json(path, {"v": 1})

    def crash(*args):
        raise KeyboardInterrupt  # killed between writing the temporary file and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}


# -- resuming ----------------------------------------------------------------------------------

def test_interrupted_run_resumes_mid_epoch_with_identical_results(tmp_path, data, monkeypatch):
    config = tiny(epochs=3)
    reference = train_or_load(config, tmp_path / "a", device="cpu", data=data, progress=False)

    # A checkpoint after each step but an epoch's last, and one at each epoch end: the 6th is
    # the one after step 2 of epoch 2.
    with killed_at_checkpoint(monkeypatch, 6):
        train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False, checkpoint_every=0)
    state = runs.torch_load(tmp_path / "b" / config.hash / runs.CHECKPOINT)
    assert (state["epoch"], state["step"]) == (1, 2)
    counter = StepCounter(monkeypatch)
    resumed = train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False)
    assert counter.steps == 3 * 4 - (4 + 2)  # only the steps after the checkpoint
    assert resumed.history == reference.history
    assert comparable(resumed.metrics) == comparable(reference.metrics)


CHILD = textwrap.dedent("""
    import sys
    from clmini import engine as train
    from clmini.engine import rundir as runs
    original = runs.atomic_torch_save
    count = 0
    def save(path, obj):
        global count
        original(path, obj)
        count += 1
        if count == int(sys.argv[2]):
            print("checkpointed", flush=True)
            import time; time.sleep(600)  # wait here to be killed
    runs.atomic_torch_save = save
    steps = 0
    step = train.Trainer.train_step
    def counted(*args):
        global steps
        steps += 1
        return step(*args)
    train.Trainer.train_step = counted
    config = train.TrainConfig(n_train=96, width=4, proj_dim=16, epochs=2, batch_size=24, lr=3e-3,
                               monitor_train_size=64, monitor_test_size=32, knn_k=20, probe_iters=20)
    run = train.train_or_load(config, sys.argv[1], device="cpu", root=sys.argv[3], progress=False,
                              checkpoint_every=0)
    print(steps, run.dir, flush=True)
""")


def test_kill_9_then_resume_gives_the_same_run(tmp_path):
    """A real SIGKILL mid-epoch, then a fresh process finishes the run."""
    root = tmp_path / "data"
    write_fashion_mnist(root, n_train=200, n_test=40)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def child(runs_dir: Path, kill_after: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(runs_dir), str(kill_after), str(root)],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)

    victim = child(tmp_path / "killed", kill_after=3)  # 4 steps per epoch: killed at step 3 of epoch 1
    assert victim.stdout.readline().strip() == "checkpointed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    [run_dir] = (tmp_path / "killed").iterdir()
    assert (run_dir / runs.CHECKPOINT).exists() and not (run_dir / runs.METRICS).exists()
    assert runs.torch_load(run_dir / runs.CHECKPOINT)["step"] == 3

    survivors = [child(tmp_path / "killed", kill_after=0), child(tmp_path / "clean", kill_after=0)]
    outputs = [p.communicate(timeout=300)[0].strip() for p in survivors]
    assert all(p.returncode == 0 for p in survivors), outputs
    (resumed_steps, resumed_dir), (clean_steps, clean_dir) = (out.splitlines()[-1].split() for out in outputs)
    assert (int(resumed_steps), int(clean_steps)) == (2 * 4 - 3, 2 * 4)  # it resumed, not restarted
    resumed, clean = load_run(resumed_dir), load_run(clean_dir)
    assert resumed.history == clean.history
    assert comparable(resumed.metrics) == comparable(clean.metrics)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_with_bfloat16_autocast(tmp_path, data):
    run = train_or_load(tiny(epochs=2), tmp_path, device="auto", data=data, progress=False)
    assert run.metrics["device"].startswith("cuda")
    assert all(math.isfinite(r["loss"]) for r in run.history[1:])
    assert run.history[-1]["loss"] < run.history[1]["loss"]
    assert run.model("cpu").features(torch.rand(2, 1, 28, 28)).shape == (2, 16)  # loads on the CPU
    # the views depend on the seed only: the same on the GPU as on the CPU
    from clmini.engine.augment import augment
    images = data.train_x[:32]
    on_gpu = augment(images.cuda(), torch.Generator().manual_seed(5)).cpu()
    assert torch.allclose(on_gpu, augment(images, torch.Generator().manual_seed(5)), atol=1e-4)
    with pytest.raises(ValueError, match="CPU generator"):
        augment(images.cuda(), torch.Generator("cuda"))


def test_runs_dir_defaults_to_clmini_runs(tmp_path, data, monkeypatch):
    monkeypatch.setenv("CLMINI_RUNS", str(tmp_path / "cache"))
    run = train_or_load(tiny(epochs=0), device="cpu", data=data, progress=False)
    assert run.dir == tmp_path / "cache" / tiny(epochs=0).hash


def test_n_train_limits_training_not_the_evaluation(tmp_path, data):
    run = train_or_load(tiny(n_train=64, epochs=1), tmp_path, device="cpu", data=data, progress=False)
    assert run.metrics["steps_per_epoch"] == 64 // 32
    assert run.metrics["eval_train_size"] == 128  # the kNN bank / probe use the whole train split
    small_bank = train_or_load(tiny(n_train=64, epochs=1, eval_train_size=40), tmp_path, device="cpu",
                               data=data, progress=False)
    assert small_bank.metrics["eval_train_size"] == 40


def test_hashes_are_pinned_and_canonicalise():
    # Pinned for ENGINE_VERSION 4: a change to what a config hashes must come with a version bump.
    assert TrainConfig(precision="fp32").hash == "7088940f63826a0c"
    assert TrainConfig(mode="supervised", loss="supcon", precision="fp32").hash == "bb9f0d62a12ad978"
    binary = TrainConfig(mode="supervised", loss="sincere", classes=[6, 0])
    assert binary.classes == (0, 6) and binary.hash == TrainConfig(mode="supervised", loss="sincere",
                                                                   classes=(0, 6, 6)).hash
    assert binary.hash != TrainConfig(mode="supervised", loss="sincere").hash
    assert TrainConfig.from_dict(json.loads(json.dumps(binary.to_dict()))).hash == binary.hash
    assert TrainConfig(mode="supervised", classes_per_batch=2).hash != TrainConfig(mode="supervised").hash
    for kwargs, message in ((dict(classes=[3]), "at least 2"), (dict(classes="06"), "sequence"),
                            (dict(classes=[0, -1]), "classes entry"),
                            (dict(mode="supervised", classes_per_batch=1), "classes_per_batch"),
                            (dict(classes_per_batch=2), "needs mode='supervised'")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**kwargs)


def test_class_subset_and_classes_per_batch_are_part_of_the_run(tmp_path, data):
    config = tiny(mode="supervised", loss="supcon", classes=(1, 3), batch_size=16, epochs=1)
    run = train_or_load(config, tmp_path, device="cpu", data=data, progress=False)
    assert run.metrics["eval_train_size"] == 64 and run.metrics["eval_test_size"] == 32
    assert run.metrics["steps_per_epoch"] == 32 // 8
    trainer = Trainer(tiny(mode="supervised", loss="supcon", batch_size=16, classes_per_batch=2), data,
                      torch.device("cpu"))
    for batch in trainer.epoch_batches(0):
        assert sorted(torch.bincount(data.train_y[batch], minlength=4).tolist()) == [0, 0, 8, 8]


def test_monitors_record_class_geometry_and_probes(tmp_path, data):
    monitored = tiny(mode="supervised", loss="sincere", batch_size=16, epochs=1, monitors=("class-geometry", "probe"))
    run = train_or_load(monitored, tmp_path, device="cpu", data=data, progress=False)
    for record in run.history:
        for key in ("nearest_same_sim", "nearest_other_sim", "separation", "knn1_acc", "knn5_acc",
                    "linear_probe_acc"):
            assert math.isfinite(record[key])
        assert record["separation"] == pytest.approx(abs(record["nearest_same_sim"] - record["nearest_other_sim"]))
        assert 0 <= record["knn1_acc"] <= 1
    assert {"nearest_same_sim", "nearest_other_sim"} <= set(run.metrics)
    simclr = train_or_load(tiny(epochs=1), tmp_path, device="cpu", data=data, progress=False)
    assert "knn1_acc" not in simclr.history[-1]
    # monitors are asked for, never implied by the mode, and are part of the run's identity
    plain = train_or_load(tiny(mode="supervised", loss="sincere", batch_size=16, epochs=1), tmp_path,
                          device="cpu", data=data, progress=False)
    assert "knn1_acc" not in plain.history[-1] and "separation" not in plain.history[-1]
    assert plain.dir != run.dir and plain.metrics["knn_acc"] == run.metrics["knn_acc"]
    geometry_only = train_or_load(dataclasses.replace(monitored, monitors=("class-geometry",)), tmp_path,
                                  device="cpu", data=data, progress=False)
    assert "separation" in geometry_only.history[-1] and "knn1_acc" not in geometry_only.history[-1]


@pytest.mark.parametrize("monitors, message", [(("nope",), "unknown"), ("probe", "sequence")])
def test_unknown_monitors_are_refused(monitors, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(monitors=monitors)
