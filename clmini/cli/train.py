"""``python -m clmini pretrain`` (train or load a cached run) and ``python -m clmini evaluate RUN_DIR``.

The ``pretrain`` options are generated from :class:`~clmini.engine.TrainConfig`,
:class:`~clmini.engine.AugmentConfig` and the constructor arguments of the losses, so every
hyperparameter is reachable and ``--help`` lists them all. The config is built and validated
(loss included) before any data is loaded: a bad value is an error naming the option, at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from clmini.engine import (ARCHS, DATASETS, MODES, MONITORS, OBJECTIVES, OPTIMIZERS, PRECISIONS, AugmentConfig,
                           TrainConfig, load_run, loss_arguments, train_or_load)
from clmini.engine import distributed, resolve_device, rundir
from clmini.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED
from clmini.losses import LOSSES


_HELP = {
    "dataset": "data set",
    "n_train": "train on a stratified subset of this many images ('all' for the whole split)",
    "classes": "train and evaluate on these classes only (indices, relabelled 0..)",
    "arch": "encoder architecture",
    "width": "small-cnn channel width (32 -> 32/64/128 channels)",
    "proj_dim": "output dimension of the projection head",
    "objective": "contrastive (the --loss) or cross-entropy (a linear classifier on z; needs --mode supervised)",
    "loss": "loss (see clmini.losses.LOSSES)",
    "mode": "simclr: two views, labels = instance ids; supervised: labels = classes, class-balanced batches",
    "epochs": "training epochs (0: the random-init baseline)",
    "batch_size": "images per batch (each contributes two views)",
    "optimizer": "optimizer",
    "lr": "peak learning rate (default: the --optimizer's recipe)",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay (default: the --optimizer's recipe)",
    "warmup_epochs": "linear warm-up epochs before the cosine decay (default: the --optimizer's recipe)",
    "precision": "fp32, bf16 (autocast; the loss stays float32), or auto: bf16 where the device has it natively",
    "seed": "seed of the run (initialisation, batches, augmentations)",
    "knn_k": "k of the weighted kNN classifier",
    "eval_train_size": "kNN bank / linear-probe training images ('all' for the whole split)",
    "monitor_train_size": "per-epoch kNN monitor: bank size",
    "monitor_test_size": "per-epoch kNN monitor: held-out queries",
    "probe_iters": "linear-probe L-BFGS iterations (at most)",
    "monitors": "per-epoch extras to record: class-geometry (SINCERE's separation), probe (1-NN, 5-NN, linear probe)",
    "crop_scale": "random resized crop: area fraction range",
    "crop_ratio": "random resized crop: aspect-ratio range",
    "flip_p": "horizontal flip probability",
    "jitter_p": "colour-jitter probability",
    "brightness": "brightness jitter strength",
    "contrast": "contrast jitter strength",
    "saturation": "saturation jitter strength (RGB)",
    "hue": "hue jitter (fraction of a turn, RGB)",
    "grayscale_p": "random grayscale probability (RGB)",
    "blur_p": "Gaussian blur probability",
    "blur_sigma": "Gaussian blur sigma range",
}
_CHOICES = {"dataset": DATASETS, "arch": ARCHS, "mode": MODES, "optimizer": OPTIMIZERS,
            "loss": tuple(sorted(LOSSES)), "objective": tuple(OBJECTIVES), "monitors": tuple(MONITORS),
            "precision": PRECISIONS}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _int_or_all(text: str) -> int | None:
    return None if text.lower() in ("all", "none") else int(text)


def _option(parser: argparse.ArgumentParser, name: str, default, help_text: str, choices=None,
            value_type=None) -> None:
    """Add ``--name`` typed after ``default`` (or ``value_type``); absent from the namespace
    unless given, so a ``--config`` file's value is only overridden on purpose."""
    kwargs = dict(dest=name, default=argparse.SUPPRESS, help=f"{help_text} (default: {default})")
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(default, tuple) and not default:  # a list of names, possibly empty
        kwargs.update(nargs="*", type=str, choices=choices, metavar=name.upper())
    elif name == "classes":  # a list of class indices, None (all) by default
        kwargs.update(nargs="+", type=int, metavar="CLASS")
    elif isinstance(default, tuple):
        kwargs.update(nargs=len(default), type=type(default[0]), metavar=("MIN", "MAX"))
    else:
        kwargs.update(type=value_type or (_int_or_all if default is None else type(default)), choices=choices)
    parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def _loss_options() -> dict[str, tuple[object, type]]:
    """Every loss constructor argument: name -> (its default, its type)."""
    options = {}
    for loss in LOSSES:
        for name, param in loss_arguments(loss).items():
            annotation = str(param.annotation)
            value_type = int if annotation.startswith("int") else \
                bool if annotation.startswith("bool") else float
            options.setdefault(name, (param.default, value_type))
    return options


def register(subparsers: argparse._SubParsersAction) -> None:
    pretrain = subparsers.add_parser(
        "pretrain", help="train an encoder with a contrastive loss (or load the cached run)",
        description="Train (or load from the run cache) one contrastive pre-training run and print "
                    "its metrics. Example: python -m clmini pretrain --loss infonce --temperature 0.5 "
                    "--dataset fashion-mnist --epochs 5")
    _add_run_options(pretrain)
    pretrain.set_defaults(func=cmd_pretrain, _parser=pretrain)

    sweep = subparsers.add_parser(
        "sweep", help="train many runs with several workers sharing the run cache",
        description="Train a set of runs with N worker processes (one per GPU, several per GPU, or CPU "
                    "processes); processes on other machines that share --runs-dir may join with the same "
                    "command. Workers claim runs through locks in the run directories: no run is trained "
                    "twice, and a killed worker's run is resumed by another. The runs: the config the "
                    "options describe, one per combination of the --grid values, and/or those of --plan. "
                    "Example: python -m clmini sweep --workers 2 --grid temperature=0.1,0.2,0.5 "
                    "--grid seed=0,1,2 --epochs 3")
    sweep.add_argument("--plan", type=Path, action="append", default=[],
                       help="a JSON file of configs: a list (or one per line) of config objects or runs' "
                            "config.json contents; repeatable")
    sweep.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                       help="vary an option over values (JSON or plain words), e.g. temperature=0.1,0.5; repeatable")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default: 1)")
    sweep.add_argument("--devices", nargs="+", default=None,
                       help="devices of the workers, assigned in turn (default: --device for all)")
    _add_run_options(sweep)
    sweep.set_defaults(func=cmd_sweep, _parser=sweep)

    evaluate = subparsers.add_parser(
        "evaluate", help="print the metrics of a finished run",
        description="Check a run directory (complete, files matching their digests) and print its "
                    "metrics and per-epoch history.")
    evaluate.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/<hash>")
    evaluate.add_argument("--json", action="store_true", help="print metrics.json as it is")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_run_options(pretrain: argparse.ArgumentParser) -> None:
    """The options that describe a run and where it trains (pretrain, sweep)."""
    pretrain.add_argument("--config", type=Path, default=None,
                          help="start from a JSON config (a run's config.json or a dict of fields); "
                               "options given here override it")
    defaults = TrainConfig()
    group = pretrain.add_argument_group("run config (hashed: a change means a new run)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("loss_args", "augment"):
            continue
        _option(group, f.name, getattr(defaults, f.name), _HELP.get(f.name, f.name), _CHOICES.get(f.name))
    loss_group = pretrain.add_argument_group("loss arguments (only those of the chosen --loss; "
                                             "defaults are the loss's own)")
    for name, (default, value_type) in _loss_options().items():
        takers = [loss for loss in LOSSES if name in loss_arguments(loss)]
        _option(loss_group, name, default, f"for {', '.join(takers)}", value_type=value_type)
    aug_group = pretrain.add_argument_group("augmentation")
    for f in dataclasses.fields(AugmentConfig):
        _option(aug_group, f.name, getattr(AugmentConfig(), f.name), _HELP.get(f.name, f.name))
    rt = pretrain.add_argument_group("runtime (not part of the run's identity)")
    rt.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    rt.add_argument("--root", type=Path, default=None, help="data directory (else $CLMINI_DATA, then "
                                                            "Debian's dataset-fashion-mnist)")
    rt.add_argument("--download", action="store_true", help="allow torchvision to download the data")
    rt.add_argument("--runs-dir", type=Path, default=None, help="run cache (default: $CLMINI_RUNS, else runs)")
    rt.add_argument("--checkpoint-every", type=_seconds, default=60.0,
                    help="seconds between mid-epoch checkpoints (default: 60)")
    rt.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the options describe (``--config`` file, then the options)."""
    values: dict = {}
    if args.config is not None:
        loaded = json.loads(args.config.read_text())
        loaded = loaded.get("config", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of config fields (or a run's "
                             f"config.json), got {type(loaded).__name__}")
        values = dict(loaded)
    config_loss = values.get("loss")
    given = vars(args)
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"loss_args", "augment"}
    values.update({k: given[k] for k in config_fields if k in given})
    augment = dict(values.get("augment", {}))
    augment.update({f.name: tuple(given[f.name]) if isinstance(given[f.name], list) else given[f.name]
                    for f in dataclasses.fields(AugmentConfig) if f.name in given})
    values["augment"] = augment
    # A --config's loss arguments belong to its loss: they carry over only if --loss keeps it.
    loss_args = dict(values.get("loss_args", {})) if values.get("loss") == config_loss else {}
    loss_args.update({k: given[k] for k in _loss_options() if k in given})
    loss = values.get("loss", TrainConfig.loss)
    accepted = loss_arguments(loss) if loss in LOSSES else {}
    wrong = [k for k in loss_args if k not in accepted]
    if wrong and loss in LOSSES:
        options = ", ".join("--" + w.replace("_", "-") for w in wrong)
        takes = ", ".join("--" + a.replace("_", "-") for a in accepted) or "no arguments"
        raise ValueError(f"{options}: not an argument of loss {loss!r} (it takes {takes})")
    values["loss_args"] = loss_args
    return TrainConfig.from_dict(values)


def _as_option(message: str) -> str:
    """Name the option, not the config field: "lr must be ..." -> "--lr must be ..."."""
    first, _, rest = message.partition(" ")
    names = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(AugmentConfig)}
    if first in names | set(_loss_options()):
        return f"--{first.replace('_', '-')} {rest}"
    return message


def cmd_pretrain(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, TypeError, OSError) as err:
        args._parser.error(_as_option(str(err)))  # exits with status 2 and the usage line
    # Under torchrun (WORLD_SIZE > 1) this process joins the group and trains its share of each batch;
    # the run, its directory and its hash are those of one process (clmini.engine.distributed).
    parallel = distributed.init_from_env(resolve_device(args.device))
    try:
        run = train_or_load(config, args.runs_dir, device=args.device, root=args.root,
                            download=args.download, progress=not args.no_progress,
                            checkpoint_every=args.checkpoint_every)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if parallel:
            distributed.destroy()
    if distributed.rank_from_env() == 0:
        print(f"run: {run.dir}")
        print(format_metrics(run.metrics))
    return 0


def _grid_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def sweep_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """The runs of ``clmini sweep``: the --plan files' configs, and the options' config over the --grid."""
    import itertools

    configs = []
    for path in args.plan:
        text = path.read_text()
        try:
            entries = json.loads(text)
        except ValueError:
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        for entry in entries if isinstance(entries, list) else [entries]:
            entry = entry.get("config", entry) if isinstance(entry, dict) else entry
            if not isinstance(entry, dict):
                raise ValueError(f"--plan {path}: each config must be a JSON object, got {type(entry).__name__}")
            configs.append(TrainConfig.from_dict(entry))
    axes = []
    for item in args.grid:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2,...")
        axes.append((name.replace("-", "_"), [_grid_value(v) for v in values.split(",")]))
    if axes or not args.plan:
        for combination in itertools.product(*(values for _, values in axes)):
            point = argparse.Namespace(**vars(args))
            for (name, _), value in zip(axes, combination):
                setattr(point, name, tuple(value) if isinstance(value, list) else value)
            configs.append(config_from_args(point))
    unique = {config.hash: config for config in configs}
    return list(unique.values())


def cmd_sweep(args: argparse.Namespace) -> int:
    from clmini.engine.sweep import sweep

    try:
        configs = sweep_configs(args)
    except (ValueError, TypeError, OSError) as err:
        args._parser.error(_as_option(str(err)))
    print(f"sweep: {len(configs)} runs, {args.workers} worker(s) here, run cache {args.runs_dir or 'runs'}", flush=True)
    try:
        totals = sweep(configs, args.runs_dir, workers=args.workers, devices=args.devices or [args.device],
                       root=args.root, download=args.download, checkpoint_every=args.checkpoint_every)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"sweep: {totals['trained']} trained by this machine's workers, the others found finished")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        run = load_run(args.run_dir)
    except rundir.CorruptRun as err:
        print(f"error: {args.run_dir} is not a complete run ({err}).\nTo finish or redo it: "
              f"python -m clmini pretrain --config {args.run_dir / rundir.CONFIG}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(run.metrics, indent=1))
        return 0
    print(f"run {run.dir}")
    print(json.dumps(run.config.to_dict()))
    print(format_metrics(run.metrics))
    print(format_history(run.history))
    return 0


_SHOWN = ("knn_acc", "linear_probe_acc", "uniformity", "tolerance", "alignment", "separation",
          "pos_sim", "neg_sim", "final_loss", "train_seconds", "eval_seconds", "device_name")


def format_metrics(metrics: dict) -> str:
    width = max(map(len, _SHOWN))
    lines = []
    for key in _SHOWN:
        value = metrics.get(key)
        lines.append(f"  {key:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    return "\n".join(lines)


def format_history(history: list[dict]) -> str:
    keys = ["epoch"] + [k for k in ("loss", "knn_acc", "uniformity", "tolerance", "pos_sim", "neg_sim",
                                    "tau_pos", "tau_neg", "lr") if any(k in r for r in history)]
    rows = [" ".join(f"{k:>10}" for k in keys)]
    for record in history:
        cells = [record.get(k) for k in keys]
        rows.append(" ".join(f"{c:>10.4f}" if isinstance(c, float) else f"{'' if c is None else c:>10}"
                             for c in cells))
    return "\n".join(rows)
