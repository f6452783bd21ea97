"""Forward+backward time and peak memory of every clmini loss, beside the references, in one run.

For each batch size N (two-view batches: N/2 instances, labels = instance ids, D = 128) it times

* every loss of :data:`clmini.losses.LOSSES`,
* pytorch-metric-learning's ``NTXentLoss`` and ``SupConLoss`` (same definition as ``InfoNCE`` and
  ``SupCon`` here, and as each other, since every anchor has exactly one positive),
* the floor: forward+backward of the bare similarity matmul ``z @ z.T``,

and prints a markdown table with milliseconds, the ratio to the floor, the ratio to the
pytorch-metric-learning loss of the same definition, and the peak memory in units of one
``N x N`` float32 matrix (CPU: peak RSS growth measured in a fresh process; CUDA:
``torch.cuda.max_memory_allocated``). A reference that cannot run (pytorch-metric-learning's
``NTXentLoss`` builds O(N^3) index tensors) is reported, not crashed on.

    python benchmarks/bench_losses.py                      # CPU, N = 512 2048 4096 8192
    python benchmarks/bench_losses.py --device cuda --sizes 512 2048 8192 16384

Timings are only meaningful on an otherwise idle machine: with torch using every core, one busy
core stalls each parallel region (seen: 10x and worse on a 2-core machine).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time

import torch

from clmini.losses import LOSSES, make_loss, two_views

LOSS_ARGS = {"infonce": {"temperature": 0.2}, "supcon": {"temperature": 0.2}, "sincere": {"temperature": 0.2},
             "hard": {"temperature": 0.2, "alpha": 0.1}, "hard-simple": {"alpha": 0.1}}
SAME_DEFINITION = {"infonce": "pml NTXentLoss", "supcon": "pml SupConLoss", "sincere": "pml SupConLoss"}
# (with one positive per anchor InfoNCE = SupCon = SINCERE, so SupConLoss stands in for NTXentLoss)


def build(name: str):
    """A callable ``(z, labels) -> loss`` for a clmini loss, a reference, or the matmul floor."""
    if name == "matmul floor":
        return lambda z, labels: (z @ z.T).sum()
    if name.startswith("pml "):
        from pytorch_metric_learning import losses as pml
        return getattr(pml, name[4:])(temperature=0.2)
    return make_loss(name, **LOSS_ARGS.get(name, {}))


def batch(n: int, d: int, device: str):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n // 2, d, generator=g)
    z, labels = two_views(z1, z1 + 0.3 * torch.randn(n // 2, d, generator=g))
    return z.to(device).requires_grad_(True), labels.to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step(fn, z, labels) -> None:
    z.grad = None
    fn(z, labels).backward()


def time_ms(name: str, n: int, d: int, device: str, repeats: int) -> float:
    fn, (z, labels) = build(name), batch(n, d, device)
    step(fn, z, labels)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step(fn, z, labels)
        sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        return 1024 * int(re.search(rf"{key}:\s+(\d+)", fh.read()).group(1))


def peak_bytes(name: str, n: int, d: int, device: str) -> float:
    """Peak memory one forward+backward adds above what its inputs already hold."""
    fn, (z, labels) = build(name), batch(n, d, device)
    step(fn, z, labels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(fn, z, labels)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: reset the kernel's peak-RSS mark (VmHWM), run once, read it back. Large tensors are
    # mmap-ed and unmapped on free (threshold pinned in main()), so RSS tracks live tensors.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _proc_status_bytes("VmRSS")
    step(fn, z, labels)
    return _proc_status_bytes("VmHWM") - base


def cannot_run(name: str, n: int, memory_gb: float) -> str | None:
    # NTXentLoss materialises (positive pair x negative) tensors: seen asking 32 GiB at N = 2048, ~4 N^3 bytes.
    if name == "pml NTXentLoss" and 4 * n ** 3 > memory_gb * 1e9:
        return f"needs ~{4 * n ** 3 / 1e9:.0f} GB (O(N^3) tensors)"
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096, 8192])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-memory-gb", type=float, default=4.0,
                        help="skip a reference whose known memory need exceeds this")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--output", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    if not args.device.startswith("cuda") and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc raises its mmap threshold after frees, keeping freed matrices in the heap where
        # peak RSS cannot see them come and go; pin it (read at start-up, hence the re-exec).
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    header = (f"Device: {args.device} ({device_name}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, D = {args.dim}, float32, forward+backward, median of {args.repeats}.")
    lines = [header, "",
             "| N | loss | ms | × matmul floor | × pml same definition | peak memory (N×N fp32 matrices) |",
             "|---|---|---|---|---|---|"]
    print(header, flush=True)
    names = ["matmul floor", *LOSSES, "pml SupConLoss", "pml NTXentLoss"]
    for n in args.sizes:
        results = {}
        for name in names:
            reason = cannot_run(name, n, args.reference_memory_gb)
            if reason:
                results[name] = reason
                continue
            try:
                ms = time_ms(name, n, args.dim, args.device, args.repeats)
                mem = float("nan") if args.no_memory else peak_bytes(name, n, args.dim, args.device) / (4 * n * n)
                results[name] = (ms, mem)
            except (RuntimeError, MemoryError) as exc:  # out of memory and the like: record, go on
                results[name] = f"failed: {str(exc).splitlines()[0][:80]}"
            print(f"N={n} {name}: {results[name]}", flush=True)
        floor = results["matmul floor"][0]
        for name in names:
            res = results[name]
            if isinstance(res, str):
                lines.append(f"| {n} | {name} | – | – | – | {res} |")
                continue
            ms, mem = res
            ref = results.get(SAME_DEFINITION.get(name, ""))
            if name == "infonce" and isinstance(ref, str):  # NTXentLoss cannot run at this N:
                ref = results["pml SupConLoss"]               # the same definition for one positive
            vs_ref = f"{ms / ref[0]:.3g}" if isinstance(ref, tuple) else (ref if isinstance(ref, str) and ref else "–")
            lines.append(f"| {n} | {name} | {ms:.1f} | {ms / floor:.2f} | {vs_ref} | {mem:.1f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
