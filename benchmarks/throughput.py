"""Training throughput: clmini's engine against a conventional input pipeline, same model and loss.

Both sides train the same network (``--arch``) with the same loss (InfoNCE, tau = 0.2), optimiser
(Adam), batch size and two SimCLR views per image; they differ only in how the views are made:

- **engine**: the data set is a uint8 tensor on the training device and each batch is augmented
  there in one batched call (:func:`clmini.engine.augment.augment`);
- **conventional**: torchvision's per-sample transforms (``transforms.v2``: RandomResizedCrop,
  RandomHorizontalFlip, ColorJitter with p = 0.8, RandomGrayscale for RGB) run in ``DataLoader``
  worker processes, batches are collated, pinned and copied to the device.

Reported: source images per second (each gives two views), the engine's augmentation time as a
share of its step time (augmentation timed alone on the same batches), and the share of the
conventional pipeline's step time spent waiting for data. A benchmark, not a
test: run it on the machine you care about, e.g.

    python benchmarks/throughput.py --device cpu --arch small-cnn --workers 2
    python benchmarks/throughput.py --device cuda --arch resnet18 --workers 8
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clmini.engine.augment import AugmentConfig, augment  # noqa: E402
from clmini.engine.data import load_dataset  # noqa: E402
from clmini.metrics import autocast  # noqa: E402
from clmini.losses import InfoNCE, two_views  # noqa: E402
from clmini.engine.models import build_model  # noqa: E402
from clmini.engine import resolve_device  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def make_model(arch, data, device):
    torch.manual_seed(0)
    model = build_model(arch, data.channels, *data.channel_stats()).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def train_step(model, optimizer, loss_fn, v1, v2, device):
    with autocast(device):
        z = model(torch.cat([v1, v2]))
    z, labels = two_views(*z.float().chunk(2))
    loss = loss_fn(z, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_engine(data, arch, batch_size, steps, warmup, device):
    model, optimizer = make_model(arch, data, device)
    loss_fn = InfoNCE(0.2)
    images = data.train_x.to(device)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), device=device)

    def views(step):
        index = order[(step * batch_size) % (len(images) - batch_size):][:batch_size]
        return augment(images[index].repeat(2, 1, 1, 1), generator).chunk(2)

    for step in range(warmup):
        train_step(model, optimizer, loss_fn, *views(step), device)
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        train_step(model, optimizer, loss_fn, *views(step), device)
    synchronize(device)
    step_time = (time.perf_counter() - start) / steps
    # Augmentation alone on the same batches (timing it inside the loop would need a
    # synchronisation per step, which on a GPU also charges it the previous step's queued work).
    start = time.perf_counter()
    for step in range(steps):
        views(step)
    synchronize(device)
    augment_time = (time.perf_counter() - start) / steps
    return {"images_per_s": batch_size / step_time, "augment_share": augment_time / step_time}


def bench_conventional(data, arch, batch_size, steps, warmup, device, workers):
    model, optimizer = make_model(arch, data, device)
    loss_fn = InfoNCE(0.2)
    loader = torch.utils.data.DataLoader(
        TwoViews(data.train_x.cpu(), AugmentConfig()), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None)
    batches = iter(loader)
    wait_time = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
            wait_time = 0.0
        t0 = time.perf_counter()
        try:
            v1, v2 = next(batches)
        except StopIteration:
            batches = iter(loader)
            v1, v2 = next(batches)
        wait_time += time.perf_counter() - t0
        train_step(model, optimizer, loss_fn, v1.to(device, non_blocking=True), v2.to(device, non_blocking=True),
                   device)
    synchronize(device)
    total = time.perf_counter() - start
    return {"images_per_s": steps * batch_size / total, "data_wait_share": wait_time / total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional side")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = load_dataset(args.dataset, args.root)
    engine = bench_engine(data, args.arch, args.batch_size, args.steps, args.warmup, device)
    conventional = bench_conventional(data, args.arch, args.batch_size, args.steps, args.warmup, device,
                                      args.workers)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "arch": args.arch, "dataset": args.dataset,
              "batch_size": args.batch_size, "steps": args.steps, "workers": args.workers,
              "engine": engine, "conventional": conventional,
              "speedup": engine["images_per_s"] / conventional["images_per_s"]}
    print(f"{args.arch} on {result['device']} ({result['threads']} threads), batch {args.batch_size}: "
          f"engine {engine['images_per_s']:.0f} img/s (augmentation {100 * engine['augment_share']:.1f} % "
          f"of step time), conventional ({args.workers} workers) {conventional['images_per_s']:.0f} img/s "
          f"(waiting for data {100 * conventional['data_wait_share']:.1f} %): {result['speedup']:.2f}x")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
