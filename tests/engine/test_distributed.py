"""clmini.engine.distributed: two CPU processes (gloo) with *different* inputs give the loss value and
the gradients of one process on the concatenated batch (float64, relative 1e-10).

The same input on every process would hide the usual mistakes (a gather without gradient, a loss
not scaled by the number of processes, a gradient returned to the local slice only), so each rank
gets its own embeddings, and the labels are arranged so that positives and negatives cross ranks.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clmini.engine.distributed import gathered_loss, rank, world_size
from clmini.losses import make_loss

REPO = Path(__file__).resolve().parents[2]
WORLD = 2
#: (loss, arguments, label pattern): instance ids whose two views sit on different ranks, classes
#: spread over both, and the batch-coupled losses (MACL's batch temperature, DCLW's weights).
CASES = [
    ("infonce", {"temperature": 0.2}, "views"),
    ("supcon", {"temperature": 0.1}, "classes"),
    ("sincere", {"temperature": 0.1}, "classes"),
    ("dystress", {"tau_min": 0.07, "tau_max": 0.2}, "views"),
    ("macl", {"temperature": 0.1}, "views"),
    ("dclw", {"temperature": 0.2}, "views"),
    ("hard", {"temperature": 0.2, "k": 3}, "views"),
    ("learned-temperature", {"initial_temperature": 0.1}, "views"),
]


def global_batch(pattern: str, n: int = 12, d: int = 5):
    """The global batch (float64): embeddings [N, D] and labels [N], N = WORLD * n."""
    g = torch.Generator().manual_seed(7)
    z = torch.randn(WORLD * n, d, generator=g, dtype=torch.float64)
    if pattern == "views":  # view 1 of 12 images on rank 0, view 2 on rank 1 (and shuffled)
        labels = torch.cat([torch.arange(n), torch.arange(n).flip(0)])
    else:
        labels = torch.randint(0, 4, (WORLD * n,), generator=g)
    return z, labels


WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_distributed import CASES, WORLD, global_batch
    from clmini.engine.distributed import gathered_loss, rank, world_size
    from clmini.losses import make_loss
    r = int(sys.argv[1])
    dist.init_process_group("gloo", init_method="file://" + {init!r}, rank=r, world_size=WORLD)
    assert world_size() == WORLD and rank() == r
    out = {{}}
    for name, args, pattern in CASES:
        z, labels = global_batch(pattern)
        n = z.shape[0] // WORLD
        mine = z[r * n:(r + 1) * n].clone().requires_grad_(True)
        # a model with parameters, data-parallel: its averaged gradient is what training uses
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(5, 4).double())
        loss = make_loss(name, **args).double()
        value = gathered_loss(loss, model(mine), labels[r * n:(r + 1) * n])
        value.backward()
        extra = {{k: p.grad.clone() for k, p in loss.named_parameters()}}
        out[name] = {{"value": value.detach(), "z_grad": mine.grad,
                      "param_grads": {{k: p.grad.clone() for k, p in model.module.named_parameters()}}, "loss_grads": extra}}
    torch.save(out, {result!r} + f".{{r}}")
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Each rank's results of every case, from two gloo processes."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = WORKER.format(tests=str(Path(__file__).parent), init=str(tmp / "init"), result=str(tmp / "out"))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for r in range(WORLD)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)[-3000:]
    return [torch.load(tmp / f"out.{r}") for r in range(WORLD)]


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name, args, pattern", CASES, ids=[c[0] for c in CASES])
def test_two_processes_equal_one_on_the_concatenated_batch(ranks, name, args, pattern):
    z, labels = global_batch(pattern)
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4).double()
    loss = make_loss(name, **args).double()
    zz = z.clone().requires_grad_(True)
    single = loss(model(zz), labels)
    single.backward()
    n = z.shape[0] // WORLD
    # the value: the processes' shares add up to K times the global mean
    close(sum(out[name]["value"] for out in ranks) / WORLD, single.detach(), f"{name}: loss value")
    for r, out in enumerate(ranks):
        # the embeddings' gradient arrives K times (every process's loss reaches every slice) ...
        close(out[name]["z_grad"] / WORLD, zz.grad[r * n:(r + 1) * n], f"{name}: rank {r}'s embedding gradient")
        # ... and DDP's average over the processes makes the parameters' gradient the single-process one
        for key, grad in out[name]["param_grads"].items():
            close(grad, dict(model.named_parameters())[key].grad, f"{name}: rank {r}'s gradient of {key}")
    for key, param in loss.named_parameters():  # a learned temperature: summed over ranks, as DDP would
        close(sum(out[name]["loss_grads"][key] for out in ranks) / WORLD, param.grad, f"{name}: {key}")


def test_one_process_is_the_plain_loss():
    z, labels = global_batch("views")
    loss = make_loss("infonce", temperature=0.2)
    assert world_size() == 1 and rank() == 0
    assert torch.equal(gathered_loss(loss, z, labels), loss(z, labels))
    with pytest.raises(ValueError, match="reduction must be 'mean'"):
        gathered_loss(make_loss("infonce", reduction="sum"), z, labels)


# ----------------------------------------------------------------------------- a data-parallel run
PRETRAIN = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    from engine_helpers import pattern_data, tiny_config
    from clmini.engine import distributed, train_or_load
    assert distributed.init_from_env(torch.device("cpu"))
    config = tiny_config(precision="fp32", **{changes!r})
    run = train_or_load(config, {runs!r}, device="cpu", data=pattern_data(n_train=128, n_test=64), progress=False)
    assert run.metrics["world_size"] == 2, run.metrics.get("world_size")
""")


def run_ranks(script: str, tmp: Path, port: int) -> None:
    env = {**__import__("os").environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(WORLD)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)[-4000:]


@pytest.mark.parametrize("changes", [{"epochs": 2}, {"epochs": 1, "mode": "supervised", "loss": "supcon"},
                                     {"epochs": 1, "loss": "learned-temperature"}],
                         ids=["simclr", "supervised", "learned-temperature"])
def test_a_two_process_run_ends_where_one_process_ends(tmp_path, changes):
    """Two gloo processes on one global batch: the same weights, history and metrics as one process
    within float32 rounding (the sums are formed in another order; fp32, since bf16 autocast rounds
    the two batch-norm paths differently), the run's hash and directory as one process's, and
    world_size recorded."""
    from clmini.engine import load_run, train_or_load
    from engine_helpers import pattern_data, tiny_config

    config = tiny_config(precision="fp32", **changes)
    single = train_or_load(config, tmp_path / "one", device="cpu", data=pattern_data(n_train=128, n_test=64),
                           progress=False)
    script = PRETRAIN.format(tests=str(Path(__file__).parents[1]), changes=changes, runs=str(tmp_path / "two"))
    run_ranks(script, tmp_path, port=29500 + sum(map(ord, str(changes))) % 400)
    double = load_run(tmp_path / "two" / config.hash, config.hash)
    assert double.metrics["world_size"] == 2 and single.metrics["world_size"] == 1
    weights = [torch.load(run.dir / "weights.pt", weights_only=True) for run in (single, double)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        if weights[0][key].dtype.is_floating_point:
            # measured: at most 5.2e-7 apart (weights of order 0.1-0.3), i.e. float32 rounding of reordered sums
            torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-5, msg=key)
    for a, b in zip(single.history, double.history):
        for key in a:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (key, a[key], b[key])
    for key in ("knn_acc", "linear_probe_acc", "uniformity", "tolerance", "alignment"):
        assert double.metrics[key] == pytest.approx(single.metrics[key], rel=1e-4, abs=1e-4), key


def test_torchrun_pretrain_then_a_killed_rank_resumes(tmp_path):
    """The command users type: torchrun with 2 CPU processes runs `clmini pretrain`; one rank is
    killed (-9) mid-run, the job dies, the same command resumes from process 0's last checkpoint and
    ends with the run a single uninterrupted one gives."""
    import json
    import os
    import signal
    import time

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from engine_helpers import write_fashion_mnist

    root = tmp_path / "data"
    write_fashion_mnist(root, n_train=512, n_test=64)
    args = ["pretrain", "--epochs", "3", "--batch-size", "32", "--width", "4", "--proj-dim", "16",
            "--monitor-train-size", "64", "--monitor-test-size", "32", "--knn-k", "20", "--probe-iters", "20",
            "--precision", "fp32", "--root", str(root), "--no-progress", "--checkpoint-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(runs: Path, port: int):
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--master_port", str(port), "-m", "clmini", *args, "--runs-dir", str(runs)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    job = torchrun(tmp_path / "runs", 29911)
    deadline = time.time() + 300
    checkpoints = lambda: list((tmp_path / "runs").glob("*/checkpoint.pt"))  # noqa: E731
    while not checkpoints() and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert checkpoints(), job.communicate()[1][-3000:]
    workers = subprocess.run(["pgrep", "-f", "-P", str(job.pid), "clmini"], capture_output=True, text=True).stdout.split()
    os.kill(int(workers[-1]), signal.SIGKILL)  # one rank dies; torchrun ends the job
    job.communicate(timeout=300)
    assert job.returncode != 0 and not list((tmp_path / "runs").glob("*/metrics.json"))

    resumed = torchrun(tmp_path / "runs", 29912)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    run_dir = Path(out.splitlines()[0].split("run: ")[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and out.count("run: ") == 1  # only process 0 reports

    whole = torchrun(tmp_path / "uninterrupted", 29913)
    assert whole.wait(timeout=600) == 0
    reference = json.loads((tmp_path / "uninterrupted" / run_dir.name / "metrics.json").read_text())
    for key in ("knn_acc", "linear_probe_acc", "uniformity", "tolerance", "final_loss"):
        assert metrics[key] == pytest.approx(reference[key], rel=1e-9, abs=1e-9), key
