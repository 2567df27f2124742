"""The ``alexnet`` command: a thin layer that parses arguments, calls the library and prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_explain import add_explain_command
from .cli_export import add_export_command, add_summary_command, parse_shape
from .cli_predict import add_predict_command, add_weights_command
from .cli_serve import add_serve_command
from .errors import AlexNetError
from .perf import PRECISIONS


def _output_file(path: str | None) -> None:
    """An output path checked before any work is done, not after (``runs.check_output``)."""
    from .runs import check_output

    if path is not None:
        check_output(path, "--out")


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import build_model, default_recipe, get_model_builder, list_models

    for name in list_models():
        model = build_model(name)
        params = sum(p.numel() for p in model.parameters())
        shape = "x".join(map(str, model.input_size))
        doc = (get_model_builder(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<20} {shape:<10} {params:>12,} params  recipe {default_recipe(name):<11}  {doc}")
    return 0


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, typed from its annotation and documented by its comment:
    the dataclass stays the one source of truth for names, types, defaults and help."""
    import dataclasses
    import inspect
    import re
    import typing

    from .training.config import RECIPE_FIELDS, TrainConfig

    comments = dict(re.findall(r"^\s+(\w+): [^#\n]+#\s*(.+)$", inspect.getsource(TrainConfig), re.M))
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model_options":
            continue
        kind = next((t for t in typing.get_args(hints[field.name]) if t is not type(None)), hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = "the recipe's" if field.name in RECIPE_FIELDS else field.default
        text = f"{comments.get(field.name, '')} (default: {default})"
        if field.name == "augment":  # every operation a spec may hold, from their one table
            from .data.augment_spec import OPERATIONS

            text += "; operations: " + ", ".join(operation.usage() for operation in OPERATIONS)
        text = text.replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=field.name.upper(), help=text)
    from .models import SWITCHES  # the model's own table: one flag per switch, filling model_options

    for name, (kind, choices, text) in SWITCHES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, choices=choices,
                            default=argparse.SUPPRESS, help=f"model switch: {text}")


def _given_values(args: argparse.Namespace) -> dict:
    """The configuration values the command line sets: a --config file's, then the flags given."""
    from .training.config import TrainConfig

    values = {}
    if args.config:
        config = TrainConfig.from_yaml(args.config)
        defaults = TrainConfig()
        values = {k: v for k, v in config.__dict__.items() if v != getattr(defaults, k) or k == "model_options"}
    given = {k: v for k, v in vars(args).items() if k not in ("run", "command", "config", "resume", "nproc")}
    from .models import SWITCHES

    options = {**values.get("model_options", {}), **{k: given.pop(k) for k in list(given) if k in SWITCHES}}
    values = {**values, **given}
    if options:
        values["model_options"] = options
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, train

    values = _given_values(args)
    if args.nproc is not None and args.nproc != 1:  # refused here once, not in each of N processes
        from .training.resume import check_before_launch

        check_before_launch(None if args.resume else TrainConfig.from_dict(values), resume=args.resume,
                            overrides=values if args.resume else None, processes=args.nproc)
        if args.nproc > 1:
            return _launch_torchrun(args.nproc)
    if args.resume:  # what is given with --resume changes the run, where it may (RESUMABLE_FIELDS)
        run = train(resume=args.resume, overrides=values)
    else:
        run = train(TrainConfig.from_dict(values))
    if run.main_process:
        _write_report(run.directory)
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from .report.figures import learning_rate_range, save_figure
    from .training import TrainConfig
    from .training.lr_find import lr_find

    _output_file(args.plot)
    values = {k: v for k, v in _given_values(args).items() if k not in ("start_lr", "end_lr", "steps", "plot")}
    result = lr_find(TrainConfig.from_dict(values), start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    save_figure(learning_rate_range(result.rates, result.losses, result.smoothed, result.suggestion), args.plot)
    print(f"{len(result.rates)} steps from lr {result.rates[0]:.3g} to {result.rates[-1]:.3g} (recipe {result.recipe}, "
          f"{result.precision})" + (": the loss diverged there" if result.stopped_early else ""))
    print(f"plot: {args.plot}")
    print(f"suggested: --lr {result.suggestion:.3g} (the steepest fall of the loss; a tenth of the rate at the "
          f"lowest loss: {result.minimum_tenth:.3g})")
    return 0


def _write_report(directory) -> None:
    """The finished run's report.html, noted in its log; a failing figure or missing data never
    costs the finished run, only the report, which ``alexnet report`` can retry."""
    from .report import build_report
    from .runs import RunFolder, append_text

    try:
        message = f"report: {build_report(directory)}"
    except Exception as error:
        message = f"warning: report.html not written ({error}); retry with: alexnet report {directory}"
    print(message)
    append_text(RunFolder(directory).log, message + "\n")


def _launch_torchrun(nproc: int) -> int:
    """``--nproc N``: the same command under torchrun on this machine (one process per device).

    torchrun runs in a session of its own, so that a Ctrl-C reaches it once, passed on from here
    (see ``alexnet.processes``); it then stops its ranks, which save, and this waits for it."""
    import os
    import subprocess

    from .processes import STOP_GRACE_SECONDS, ForwardedSignals, signals_blocked

    argv = sys.argv[1:]
    cleaned, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        cleaned.append(item)
    start = f"from alexnet.training.distributed import run_torchrun; run_torchrun({os.getpid()})"
    command = [sys.executable, "-c", start, "--standalone", f"--nproc-per-node={nproc}", "-m", "alexnet", *cleaned]
    started: list[subprocess.Popen] = []
    with ForwardedSignals.installed(lambda: [process.pid for process in started]) as forward:
        with signals_blocked():  # a signal meanwhile is passed on once torchrun has a pid
            started.append(subprocess.Popen(command, start_new_session=True))
        code = _wait_for(started[0], forward, STOP_GRACE_SECONDS)
    if forward.signum is not None:
        from .training.loop import Interrupted

        raise Interrupted(forward.signum)
    return code


def _wait_for(process, forward, grace: float) -> int:
    """``process``'s exit status; after a signal was passed on, killed if not ended within ``grace`` s."""
    import subprocess
    import time

    stopped_at = None
    while True:
        try:
            return process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if forward.signum is not None:
            stopped_at = stopped_at or time.monotonic()
            if time.monotonic() - stopped_at > grace:
                process.kill()


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluation import evaluate

    _output_file(args.out)
    metrics = evaluate(args.source, dataset=args.dataset, split=args.split, ten_crop=args.ten_crop,
                       flip=args.flip, data_dir=args.data_dir, device=args.device,
                       precision=args.precision, batch_size=args.batch_size, compile=args.compile)
    if args.json:
        print(json.dumps(metrics.to_dict(), indent=2))
    else:
        print(format_metrics(metrics))
    if args.out:
        from .runs import write_text

        write_text(Path(args.out), json.dumps(metrics.to_dict(), indent=2))
    return 0


def format_metrics(metrics) -> str:
    """The metrics as text tables: headline numbers, per-class scores, the confusion matrix."""
    lines = [
        f"images {metrics.count}   top-1 {metrics.top1:.2%} (error {metrics.top1_error:.2%})   "
        f"top-5 {metrics.top5:.2%} (error {metrics.top5_error:.2%})   loss {metrics.loss:.4f}",
        f"balanced accuracy {metrics.balanced_accuracy:.2%}   macro F1 {metrics.macro_f1:.4f}   "
        f"weighted F1 {metrics.weighted_f1:.4f}",
        "",
    ]
    width = max(12, *(len(name) for name in metrics.class_names))
    lines.append(f"{'class':<{width}}  precision  recall     F1")
    for name, p, r, f in zip(metrics.class_names, metrics.precision, metrics.recall, metrics.f1):
        lines.append(f"{name:<{width}}  {p:9.4f}  {r:6.4f}  {f:6.4f}")
    if len(metrics.class_names) <= 20:
        lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
        cell = max(5, len(str(max(max(row) for row in metrics.confusion_matrix))) + 1)
        lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(metrics.class_names))))
        for i, (name, row) in enumerate(zip(metrics.class_names, metrics.confusion_matrix)):
            lines.append(f"{name[:width]:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from .data.preview import augment_preview

    path = augment_preview(args.dataset, args.out, data_dir=args.data_dir, count=args.count, seed=args.seed,
                           augment=args.augment, images=args.image)
    print(f"wrote {path}")
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    from .data.loaders import pack_folder

    def progress(split: str, done: int, total: int) -> None:
        print(f"\r{split}: {done:,}/{total:,} images", end="\n" if done == total else "", file=sys.stderr, flush=True)

    index = pack_folder(args.folder, args.out, size=args.size, val_size=args.val_size, test_size=args.test_size,
                        seed=args.seed, workers=args.workers, progress=None if args.quiet else progress)
    splits = ", ".join(f"{split} {index.images(split):,} images in {len(shards)} shards"
                       for split, shards in index.splits.items())
    skipped = f"; {index.skipped} unreadable files left out (named in packed.json)" if index.skipped else ""
    print(f"wrote {args.out}: {splits}, {len(index.classes)} classes, shorter side {index.size}{skipped}\n"
          f"train on it: alexnet train --dataset folder --data-dir {args.out}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import ExperimentOptions, run_all, run_experiment
    from .report import build_experiment_report

    options = ExperimentOptions(
        dataset=args.dataset, model=args.model, seeds=args.seeds, epochs=args.epochs, subset=args.subset,
        jobs=args.jobs, out=args.out, data_dir=args.data_dir, val_size=args.val_size, threshold=args.threshold,
        precision=args.precision, device=args.device)
    folders = run_all(options) if args.name == "all" else [run_experiment(args.name, options)]
    for folder in folders:
        print((folder / "results.md").read_text())
        print(f"wrote {build_experiment_report(folder)}")
    if args.name == "all":
        print((Path(options.out) / "summary.md").read_text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_comparison, build_experiment_report, build_report, is_experiment_folder
    from .runs import RunFolder, atomic_write

    own_report = (len(args.run_dirs) == 1 and args.out is not None
                  and _same_path(args.out, RunFolder(args.run_dirs[0]).report))
    if not own_report:  # the run's own report.html is where `report RUN_DIR` writes anyway
        _output_file(args.out)
    if len(args.run_dirs) == 1 and is_experiment_folder(args.run_dirs[0]):
        print(f"wrote {build_experiment_report(args.run_dirs[0])}")
        return 0
    if len(args.run_dirs) == 1 and (args.out is None or own_report):
        path = build_report(args.run_dirs[0], data_dir=args.data_dir, device=args.device)
    elif len(args.run_dirs) == 1:
        page = build_report(args.run_dirs[0], data_dir=args.data_dir, device=args.device).read_bytes()
        path = Path(args.out)
        atomic_write(path, lambda file: file.write(page))
    else:
        path = build_comparison(args.run_dirs, args.out or "comparison.html")
    print(f"wrote {path}")
    return 0


def _same_path(first: str | Path, second: str | Path) -> bool:
    import os

    return os.path.realpath(first) == os.path.realpath(second)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import format_result, run_benchmark

    result = run_benchmark(args.model, batch_size=args.batch_size, precision=args.precision, compile=args.compile,
                           input_shape=args.input, repeats=args.repeats, warmup=args.warmup,
                           device=args.device, threads=args.threads, peers=not args.no_peers)
    print(format_result(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(run=_cmd_models)

    add_summary_command(commands)
    add_export_command(commands)

    train = commands.add_parser("train", help="train a model (default: the small AlexNet on Fashion-MNIST)")
    train.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder")
    train.add_argument("--nproc", type=int, default=None, help="processes on this machine (launches torchrun)")
    _add_config_flags(train)
    train.add_argument("--keep-head", dest="head", action="store_const", const="keep", default=argparse.SUPPRESS,
                       help="fine-tune: keep the trained classifier (same --head keep)")
    train.add_argument("--new-head", dest="head", action="store_const", const="new", default=argparse.SUPPRESS,
                       help="fine-tune: start a new classifier (same --head new)")
    train.set_defaults(run=_cmd_train)

    finder = commands.add_parser(
        "lr-find", help="learning-rate range test: a short sweep from a tiny to a large rate, a plot, a suggested rate")
    finder.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    finder.add_argument("--start-lr", type=float, default=1e-7)
    finder.add_argument("--end-lr", type=float, default=10.0)
    finder.add_argument("--steps", type=int, default=100, help="optimiser steps of the sweep")
    finder.add_argument("--plot", default="lr-find.png", metavar="FILE.png")
    _add_config_flags(finder)
    finder.set_defaults(run=_cmd_lr_find)

    evaluate = commands.add_parser("evaluate", help="top-1/top-5, per-class scores, confusion matrix")
    evaluate.add_argument("source", metavar="RUN_DIR|WEIGHTS")
    evaluate.add_argument("--dataset", help="default: the one the weights were trained on")
    evaluate.add_argument("--split", choices=("test", "val"), default="test")
    evaluate.add_argument("--ten-crop", action=argparse.BooleanOptionalAction, default=None,
                          help="average the paper's ten views (default: as the run did)")
    evaluate.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                          help="average with mirrored images (default: as in training)")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--precision", default=None, choices=PRECISIONS,
                          help="default: the precision the run trained and tested in")
    evaluate.add_argument("--batch-size", type=int, default=1000)
    evaluate.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                          help="torch.compile the model, weights frozen in (default: when the pass is long "
                               "enough to pay for compiling, e.g. ImageNet's validation set; never one image)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of tables")
    evaluate.add_argument("--out", help="also write the metrics to this JSON file")
    evaluate.set_defaults(run=_cmd_evaluate)
    preview = commands.add_parser(
        "augment-preview", help="a PNG grid of images under each augmentation alone, then combined")
    preview.add_argument("--augment", "--preset", metavar="SPEC",
                         help="a preset or operations, e.g. paper,noise=0.02: each operation alone, then all "
                              "combined (default: every operation and the presets)")
    preview.add_argument("--image", action="append", metavar="PATH",
                         help="your own image instead of the dataset's samples (repeat for more rows)")
    preview.add_argument("--dataset", default="fashion-mnist",
                         help="whose training images to show (with --image: whose rules apply, e.g. mnist's no flips)")
    preview.add_argument("--out", default="augment-preview.png", metavar="FILE.png")
    preview.add_argument("--data-dir")
    preview.add_argument("--count", type=int, default=6, help="sample images (rows), one per class")
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(run=_cmd_augment_preview)

    report = commands.add_parser(
        "report", help="report.html of a run (figures, metrics, how to use the weights), or several runs compared")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", metavar="FILE.html",
                        help="one run: also copy its report here; several: default comparison.html")
    report.add_argument("--data-dir", help="where the run's dataset is (default: the run's, then the usual places)")
    report.add_argument("--device", default="auto")
    report.set_defaults(run=_cmd_report)

    benchmark = commands.add_parser(
        "benchmark", help="images/s and GFLOP/s of inference and a training step, against torchvision's AlexNet",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    benchmark.add_argument("--model", default="alexnet_owt")
    benchmark.add_argument("--batch-size", type=int, default=32)
    benchmark.add_argument("--precision", default="auto", choices=PRECISIONS,
                           help="auto: bf16 only where the hardware multiplies it natively")
    benchmark.add_argument("--compile", action="store_true", help="torch.compile (also times eager, and compiling)")
    benchmark.add_argument("--input", type=parse_shape, default=None, help="CxHxW (default: the model's own)")
    benchmark.add_argument("--repeats", type=int, default=5, help="timed batches per workload")
    benchmark.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    benchmark.add_argument("--threads", type=int, default=None, help="default: one per physical core")
    benchmark.add_argument("--device", default="cpu", help="cpu or cuda")
    benchmark.add_argument("--no-peers", action="store_true",
                           help="time only ours and the plain baseline, not the peers (torchvision cast, "
                                "ONNX Runtime, OpenVINO)")
    benchmark.set_defaults(run=_cmd_benchmark)

    data = commands.add_parser("data", help="data tools: pack a folder of images into shards").add_subparsers(
        dest="data_command", required=True)
    pack = data.add_parser("pack", help="write a folder of class folders once as WebDataset tar shards, resized, "
                                        "for fast sequential reading (train with --dataset folder --data-dir OUT)")
    pack.add_argument("folder", metavar="FOLDER", help="class folders, or train/ and val/ (and test/) of them")
    pack.add_argument("--out", required=True, help="a new folder for the shards and packed.json")
    pack.add_argument("--size", type=int, default=256, help="shorter side images are stored at (default: 256)")
    pack.add_argument("--val-size", type=int, default=None, help="a flat tree: images held out (default: 10%%)")
    pack.add_argument("--test-size", type=int, default=None,
                      help="a flat tree: images held out for the test, apart from validation (default: 10%%; 0: none)")
    pack.add_argument("--seed", type=int, default=0, help="the held-out images and the stored order")
    pack.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPU count)")
    pack.add_argument("--quiet", action="store_true")
    pack.set_defaults(run=_cmd_data_pack)

    from .experiments import list_claims

    experiment = commands.add_parser(
        "experiment", help="a claim of the paper measured: its arms trained over seeds, compared, judged")
    experiment.add_argument("name", choices=(*list_claims(), "all"), metavar="NAME",
                            help=f"one of {', '.join(list_claims())}, or all")
    experiment.add_argument("--dataset", default="fashion-mnist")
    experiment.add_argument("--model", default=None, help="the network every arm starts from (default: the paper-"
                            "faithful one for the data: alexnet_small28 at 28x28, alexnet_small32 at 32x32, else "
                            "alexnet_paper)")
    experiment.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, the same for every arm (default: 3)")
    experiment.add_argument("--epochs", type=int, default=None, help="default: the claim's own budget")
    experiment.add_argument("--subset", type=float, default=None, help="fraction of the training set (default: the claim's)")
    experiment.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per physical core)")
    experiment.add_argument("--out", default="experiments", help="parent folder of the experiment folders")
    experiment.add_argument("--data-dir")
    experiment.add_argument("--val-size", type=int, default=None, help="images held out (default: the dataset's)")
    experiment.add_argument("--threshold", type=float, default=0.25, help="relu: the training error timed (Figure 1; default: 0.25)")
    experiment.add_argument("--precision", default="auto", choices=PRECISIONS)
    experiment.add_argument("--device", default="auto")
    experiment.set_defaults(run=_cmd_experiment)

    add_predict_command(commands)
    add_weights_command(commands)
    add_explain_command(commands)
    add_serve_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (caf\xe9.png) is printed as the bytes it is, as ls prints it,
        # instead of raising UnicodeEncodeError halfway through the output.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    if args.command in ("train", "benchmark", "evaluate", "report", "experiment"):
        from .perf import reuse_freed_memory

        reuse_freed_memory()  # the process is the command's: it may keep its peak memory (see perf.py)
    try:
        return args.run(args)
    except AlexNetError as error:
        print(f"alexnet: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM during training (which saved first)
        import signal

        signum = getattr(interrupt, "signum", signal.SIGINT)
        print(f"alexnet: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
