"""Sweeps: many runs, many workers, one run cache, no run trained twice.

A worker walks a list of configs and trains each one that is neither finished nor *claimed*: a
claim is an exclusive, non-blocking ``flock`` on ``<run dir>/.claim``, held while the worker
trains the run and released by the operating system when the worker exits or is killed. Workers
need nothing but the shared run directory to agree: several on one machine (one per GPU, several
per GPU, CPU processes), or processes on many machines that share the directory (a SLURM array
whose tasks all run the same command; the file system must support ``flock``, as local disks and
NFSv4 do). A killed worker's run keeps its last checkpoint; the next worker that finds it unclaimed
resumes it (:func:`clmini.engine.train_or_load`). A worker finishes when every run of its list is
finished, waiting for the runs that other workers hold.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from clmini.engine import rundir
from clmini.engine.config import TrainConfig
from clmini.engine.runs import default_runs_dir, load_run, train_or_load

CLAIM = ".claim"


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[bool]:
    """Whether this process got the run's claim (held for the block); never waits."""
    import fcntl

    rundir.make_run_dir(run_dir)
    with open(run_dir / CLAIM, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _finished(config: TrainConfig, runs_dir: Path) -> bool:
    try:
        load_run(runs_dir / config.hash, config.hash)
        return True
    except rundir.CorruptRun:
        return False


def work(configs: Sequence[TrainConfig], runs_dir: str | Path | None = None, *, device: str = "auto",
         root: str | Path | None = None, download: bool = False, start: int = 0, poll: float = 2.0,
         checkpoint_every: float = 60.0, log: Callable[[str], None] = print) -> dict[str, int]:
    """One worker: train every config of ``configs`` that no other worker holds, until all are
    finished. ``start`` rotates the order (worker ``i`` of ``n`` starts at its own place, so
    workers rarely meet). Returns how many runs this worker trained and how many it found finished."""
    runs_dir = Path(runs_dir or default_runs_dir())
    order = list(configs)[start % max(1, len(configs)):] + list(configs)[:start % max(1, len(configs))]
    remaining = {config.hash: config for config in order}
    counts = {"trained": 0, "found": 0}
    while remaining:
        progressed = False
        for key, config in list(remaining.items()):
            if _finished(config, runs_dir):
                counts["found"] += 1
                del remaining[key]
                continue
            with claimed(runs_dir / key) as mine:
                if not mine:
                    continue
                if not _finished(config, runs_dir):  # finished between the check and the claim
                    run = train_or_load(config, runs_dir, device=device, root=root, download=download,
                                        progress=False, stores=[], checkpoint_every=checkpoint_every)
                    counts["trained"] += 1
                    log(f"[worker {os.getpid()}] {key}: trained ({config.loss}, seed {config.seed}); "
                        f"kNN {run.metrics['knn_acc']:.4f}")
                else:
                    counts["found"] += 1
            del remaining[key]
            progressed = True
        if remaining and not progressed:
            time.sleep(poll)  # every remaining run is held by another worker: wait for it, or for its claim to fall
    return counts


def _worker(configs, runs_dir, device, root, download, start, threads, checkpoint_every, queue) -> None:
    if threads:
        torch.set_num_threads(threads)
    try:
        queue.put(work(configs, runs_dir, device=device, root=root, download=download, start=start,
                       checkpoint_every=checkpoint_every))
    except BaseException as err:  # reported, not swallowed: the parent raises it
        queue.put({"error": f"{type(err).__name__}: {err}"})
        raise


def sweep(configs: Sequence[TrainConfig], runs_dir: str | Path | None = None, *, workers: int = 1,
          devices: Sequence[str] = ("auto",), root: str | Path | None = None, download: bool = False,
          checkpoint_every: float = 60.0) -> dict[str, int]:
    """Train ``configs`` with ``workers`` processes on this machine, worker ``i`` on
    ``devices[i % len(devices)]`` (e.g. ``["cuda:0", "cuda:1"]``; several workers may share one).
    CPU workers split the cores between them. Returns the totals of :func:`work`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not devices:
        raise ValueError("devices: name at least one")
    configs = list(configs)
    if workers == 1:
        return work(configs, runs_dir, device=devices[0], root=root, download=download,
                    checkpoint_every=checkpoint_every)
    context = multiprocessing.get_context("spawn")  # CUDA and threads do not survive fork
    queue = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [context.Process(target=_worker, args=(configs, runs_dir, devices[i % len(devices)], root, download,
                                                       i * len(configs) // workers, threads, checkpoint_every,
                                                       queue))
                 for i in range(workers)]
    for process in processes:
        process.start()
    totals, errors = {"trained": 0, "found": 0}, []
    for _ in processes:
        result = queue.get()
        if "error" in result:
            errors.append(result["error"])
            continue
        for key, value in result.items():
            totals[key] += value
    for process in processes:
        process.join()
    if errors or any(p.exitcode for p in processes):
        raise RuntimeError(f"sweep worker(s) failed: {'; '.join(errors) or [p.exitcode for p in processes]}; "
                           "rerun the same sweep to resume")
    return totals


__all__ = ["CLAIM", "claimed", "work", "sweep"]
