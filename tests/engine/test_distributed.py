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
