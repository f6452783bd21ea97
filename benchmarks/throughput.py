"""Training throughput: clmini's engine in float32 and in bf16 against a conventional input pipeline.

Every side trains the same network (``--arch``) with the same loss (InfoNCE, tau = 0.2), optimiser
(Adam), batch size and two SimCLR views per image:

- **engine fp32 / engine bf16**: the engine's own training step (:meth:`clmini.engine.Trainer.train_step`:
  the data set is a uint8 tensor on the device, each batch is augmented there in one batched call,
  the network runs under the run's precision, the loss in float32), run from a
  :class:`~clmini.engine.TrainConfig` with ``precision="fp32"`` and ``"bf16"``;
- **conventional**: torchvision's per-sample transforms (``transforms.v2``: RandomResizedCrop,
  RandomHorizontalFlip, ColorJitter with p = 0.8, RandomGrayscale for RGB) in ``DataLoader`` worker
  processes, batches collated, pinned and copied to the device, the same model and loss in the same
  precision.

Reported per side: source images per second (each gives two views); for the engine, augmentation
time as a share of its step time (augmentation timed alone on the same batches) and the fraction of
the compute limit reached, i.e. achieved FLOP/s (FLOPs of one step counted by
``torch.utils.flop_counter``) over the FLOP/s of a large matmul in the same precision measured in
the same run; for the conventional side, the share of its time spent waiting for data.
``--concurrent K`` also trains K engine runs at once in separate processes (threads split between
them on the CPU) and reports their total throughput against one run. A benchmark, not a test: run
it on the machine you care about, e.g.

    python benchmarks/throughput.py --device cpu --arch small-cnn --workers 2 --markdown out.md
    python benchmarks/throughput.py --device cuda --arch small-cnn --workers 8 --concurrent 8
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clmini.engine import TrainConfig, Trainer, native_bf16, resolve_device  # noqa: E402
from clmini.engine.augment import AugmentConfig, augment  # noqa: E402
from clmini.engine.data import load_dataset  # noqa: E402
from clmini.losses import InfoNCE, two_views  # noqa: E402
from clmini.metrics import autocast  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call of ``fn(i)``, ``i = 0 .. repeats - 1``, one synchronisation at the end."""
    synchronize(device)
    start = time.perf_counter()
    for i in range(repeats):
        fn(i)
    synchronize(device)
    return (time.perf_counter() - start) / repeats


# -------------------------------------------------------------------------------- the compute limit
def matmul_flops_per_s(device: torch.device, precision: str, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an ``n x n`` matmul in ``precision``: what the hardware gives dense compute here."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    return 2 * n ** 3 / timed(lambda i: a @ b, repeats, device)


def step_flops(trainer: Trainer) -> float:
    """FLOPs of one training step of the network (forward and backward of both views)."""
    from torch.utils.flop_counter import FlopCounterMode

    views = torch.rand(2 * trainer.config.batch_size, *trainer.data.train_x.shape[1:], device=trainer.device)
    with FlopCounterMode(display=False) as counter:
        trainer.model(views).sum().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# -------------------------------------------------------------------------------- the two pipelines
def engine_config(arch: str, batch_size: int, precision: str) -> TrainConfig:
    return TrainConfig(arch=arch, batch_size=batch_size, precision=precision, loss="infonce",
                       loss_args={"temperature": 0.2}, optimizer="adam", lr=1e-3, epochs=1)


def bench_engines(data, arch, batch_size, steps, warmup, device, precisions, rounds) -> dict:
    """The engine in each precision, interleaved: ``rounds`` rounds of ``steps`` steps per precision
    in turn, so that a change of machine load hits every precision alike; the median round counts."""
    trainers = {p: Trainer(engine_config(arch, batch_size, p), data, device) for p in precisions}
    batches = trainers[precisions[0]].epoch_batches(0)
    generator = torch.Generator().manual_seed(0)

    def step_of(trainer):
        return lambda i: trainer.train_step(batches[i % len(batches)], generator, 1e-3)

    for trainer in trainers.values():
        timed(step_of(trainer), warmup, device)
    step_times = {p: [] for p in precisions}
    for _ in range(rounds):
        for p, trainer in trainers.items():
            step_times[p].append(timed(step_of(trainer), steps, device))
    result = {}
    for p, trainer in trainers.items():
        step_time = statistics.median(step_times[p])

        def views(i):
            images = trainer.train_data.train_x[batches[i % len(batches)]]
            augment(torch.cat([images, images]), generator, trainer.config.augment)

        achieved = step_flops(trainer) / step_time
        result[p] = {"images_per_s": batch_size / step_time,
                     "augment_share": timed(views, steps, device) / step_time,
                     "compute_fraction": achieved / matmul_flops_per_s(device, p)}
    return result


class TwoViews(torch.utils.data.Dataset):
    """Per-sample torchvision transforms, applied twice to each uint8 image."""

    def __init__(self, images: torch.Tensor, config: AugmentConfig):
        from torchvision.transforms import v2

        self.images = images
        size = images.shape[-2:]
        rgb = images.shape[1] == 3
        jitter = v2.ColorJitter(config.brightness, config.contrast,
                                config.saturation if rgb else None, config.hue if rgb else None)
        steps = [v2.RandomResizedCrop(size, scale=config.crop_scale, ratio=config.crop_ratio, antialias=True),
                 v2.RandomHorizontalFlip(config.flip_p), v2.RandomApply([jitter], p=config.jitter_p)]
        if rgb:
            steps.append(v2.RandomGrayscale(config.grayscale_p))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        return self.transform(image), self.transform(image)


def bench_conventional(data, arch, batch_size, steps, warmup, device, workers, precision) -> dict:
    trainer = Trainer(engine_config(arch, batch_size, precision), data, device)  # the same network
    model, optimizer, loss_fn = trainer.model, trainer.optimizer, InfoNCE(0.2)
    loader = torch.utils.data.DataLoader(
        TwoViews(data.train_x.cpu(), AugmentConfig()), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None)
    batches = iter(loader)
    wait_time, start = 0.0, time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start, wait_time = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        try:
            v1, v2 = next(batches)
        except StopIteration:
            batches = iter(loader)
            v1, v2 = next(batches)
        wait_time += time.perf_counter() - t0
        with autocast(device, precision):
            z = model(torch.cat([v1, v2]).to(device, non_blocking=True))
        z, labels = two_views(*z.float().chunk(2))
        loss = loss_fn(z, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    total = time.perf_counter() - start
    return {"images_per_s": steps * batch_size / total, "data_wait_share": wait_time / total}


# -------------------------------------------------------------------------------- several runs at once
def _one_of_many(args: tuple) -> float:
    dataset, root, arch, batch_size, steps, warmup, device, precision, threads = args
    torch.set_num_threads(threads)
    data = load_dataset(dataset, root, device=torch.device(device))
    return bench_engines(data, arch, batch_size, steps, warmup, torch.device(device), [precision],
                         rounds=1)[precision]["images_per_s"]


def bench_concurrent(k: int, dataset, root, arch, batch_size, steps, warmup, device, precision) -> dict:
    """Total images/s of ``k`` engine runs in ``k`` processes started together (one run: ``k = 1``)."""
    threads = max(1, torch.get_num_threads() // k) if device.type == "cpu" else torch.get_num_threads()
    jobs = [(dataset, root, arch, batch_size, steps, warmup, str(device), precision, threads)] * k
    with multiprocessing.get_context("spawn").Pool(k) as pool:
        rates = pool.map(_one_of_many, jobs)
    return {"runs": k, "threads_per_run": threads, "total_images_per_s": sum(rates)}


# -------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    rows = [f"Device: {result['device']} ({result['cpu']}), torch {result['torch']}, {result['threads']} threads, "
            f"{result['arch']} on {result['dataset']}, batch {result['batch_size']} (two views each). Engine: "
            f"median of {result['rounds']} rounds of {result['steps']} steps per precision, interleaved; "
            f"conventional: {result['steps']} steps after {result['warmup']} warm-up.",
            "", "| pipeline | precision | images/s | × engine fp32 | × conventional fp32 | × conventional same "
                "precision | notes |", "|---|---|---|---|---|---|---|"]
    base = result["engine"]["fp32"]["images_per_s"]
    conventional_fp32 = result["conventional"]["fp32"]["images_per_s"]
    for precision, row in result["engine"].items():
        conventional = result["conventional"][precision]["images_per_s"]
        rows.append(f"| engine | {precision} | {row['images_per_s']:.0f} | {row['images_per_s'] / base:.2f} | "
                    f"{row['images_per_s'] / conventional_fp32:.2f} | "
                    f"{row['images_per_s'] / conventional:.2f} | augmentation {100 * row['augment_share']:.0f} % of "
                    f"the step; {100 * row['compute_fraction']:.0f} % of the {precision} matmul FLOP/s |")
    for precision, row in result["conventional"].items():
        rows.append(f"| conventional ({result['workers']} workers) | {precision} | {row['images_per_s']:.0f} | "
                    f"{row['images_per_s'] / base:.2f} | {row['images_per_s'] / conventional_fp32:.2f} | 1.00 | "
                    f"waiting for data "
                    f"{100 * row['data_wait_share']:.0f} % of the time |")
    for row in result.get("concurrent", []):
        rows.append(f"| engine, {row['runs']} runs at once | {result['best_precision']} | "
                    f"{row['total_images_per_s']:.0f} (total) | – | – | – | {row['threads_per_run']} threads per run |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the engine precisions")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional side")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[],
                        help="also train K engine runs at once in K processes (e.g. 1 4 8), best precision")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = load_dataset(args.dataset, args.root, device=device)
    precisions = ["fp32"] + (["bf16"] if native_bf16(device) else [])
    common = (data, args.arch, args.batch_size, args.steps, args.warmup, device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "arch": args.arch, "dataset": args.dataset,
              "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
              "workers": args.workers,
              "best_precision": precisions[-1],
              "engine": bench_engines(*common, precisions, args.rounds),
              "conventional": {p: bench_conventional(*common, args.workers, p) for p in precisions}}
    if args.concurrent:
        result["concurrent"] = [bench_concurrent(k, args.dataset, args.root, args.arch, args.batch_size, args.steps,
                                                 args.warmup, device, precisions[-1]) for k in args.concurrent]
    table = markdown(result)
    print(table)
    print(json.dumps(result), flush=True)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
