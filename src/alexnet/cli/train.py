"""``alexnet train``, ``alexnet lr-find`` and ``alexnet experiment``: the commands that train, with one
flag per ``TrainConfig`` field; ``train`` writes the run's report once training returns."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..perf import PRECISIONS
from .arguments import add_model_switches, check_output_path


def add_train_command(commands) -> argparse.ArgumentParser:
    """Add ``train`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    train = commands.add_parser("train", help="train a model (default: the small AlexNet on Fashion-MNIST)")
    train.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder")
    train.add_argument("--nproc", type=int, default=None, help="processes on this machine (launches torchrun)")
    _add_config_flags(train)
    heads = train.add_mutually_exclusive_group()  # one or the other: the last of two is no answer
    heads.add_argument("--keep-head", dest="head", action="store_const", const="keep", default=argparse.SUPPRESS,
                       help="fine-tune: keep the trained classifier (same --head keep)")
    heads.add_argument("--new-head", dest="head", action="store_const", const="new", default=argparse.SUPPRESS,
                       help="fine-tune: start a new classifier (same --head new)")
    train.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                       help="write report.html once training ends (--no-report: `alexnet report RUN_DIR` writes "
                       "it later)")
    train.set_defaults(run=_cmd_train)
    return train


def add_lr_find_command(commands) -> argparse.ArgumentParser:
    """Add ``lr-find`` to ``commands``; returns its parser."""
    finder = commands.add_parser(
        "lr-find", help="learning-rate range test: a short sweep from a tiny to a large rate, a plot, a suggested rate")
    finder.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    finder.add_argument("--start-lr", type=float, default=1e-7)
    finder.add_argument("--end-lr", type=float, default=10.0)
    finder.add_argument("--steps", type=int, default=100, help="optimiser steps of the sweep")
    finder.add_argument("--plot", default="lr-find.png", metavar="FILE.png")
    _add_config_flags(finder)
    finder.set_defaults(run=_cmd_lr_find)
    return finder


def add_experiment_command(commands) -> argparse.ArgumentParser:
    """Add ``experiment`` to ``commands``; returns its parser."""
    from ..experiments import list_claims

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
    return experiment


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, typed from its annotation and documented by its comment:
    the dataclass stays the one source of truth for names, types, defaults and help."""
    import dataclasses
    import inspect
    import re
    import typing

    from ..training.config import RECIPE_FIELDS, TrainConfig

    comments = dict(re.findall(r"^\s+(\w+): [^#\n]+#\s*(.+)$", inspect.getsource(TrainConfig), re.M))
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model_options":
            continue
        kind = next((t for t in typing.get_args(hints[field.name]) if t is not type(None)), hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = "the recipe's" if field.name in RECIPE_FIELDS else field.default
        # None's meaning is the comment's to say ("None: the dataset's default"), not "(default: None)"
        text = comments.get(field.name, "") + (f" (default: {default})" if default is not None else "")
        if field.name == "augment":  # every operation a spec may hold, from their one table
            from ..data.augment_spec import OPERATIONS

            text += "; operations: " + ", ".join(operation.usage() for operation in OPERATIONS)
        text = text.replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=field.name.upper(), help=text)
    add_model_switches(parser)


def _given_values(args: argparse.Namespace) -> dict:
    """The configuration values the command line sets: a --config file's, then the flags given."""
    from ..training.config import TrainConfig

    values = {}
    if args.config:
        config = TrainConfig.from_yaml(args.config)
        defaults = TrainConfig()
        values = {k: v for k, v in config.__dict__.items() if v != getattr(defaults, k) or k == "model_options"}
    given = {k: v for k, v in vars(args).items()
             if k not in ("run", "command", "config", "resume", "nproc", "report")}
    from ..models import SWITCHES

    options = {**values.get("model_options", {}), **{k: given.pop(k) for k in list(given) if k in SWITCHES}}
    values = {**values, **given}
    if options:
        values["model_options"] = options
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    from ..training import TrainConfig

    values = _given_values(args)
    if args.nproc is not None and args.nproc != 1:  # refused here once, not in each of N processes
        from ..training.resume import check_before_launch

        check_before_launch(None if args.resume else TrainConfig.from_dict(values), resume=args.resume,
                            overrides=values if args.resume else None, processes=args.nproc)
        if args.nproc > 1:
            return _launch_torchrun(args.nproc)  # (this process never trains: the loop is not imported)
    from ..training import train

    if args.resume:  # what is given with --resume changes the run, where it may (RESUMABLE_FIELDS)
        run = train(resume=args.resume, overrides=values)
    else:
        run = train(TrainConfig.from_dict(values))
    if run.main_process and args.report:
        _write_report(run.directory)
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from ..report.figures import learning_rate_range, save_figure
    from ..training import TrainConfig
    from ..training.lr_find import lr_find

    check_output_path(args.plot, "--plot", picture=True)
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
    from ..report import build_report
    from ..runs import RunFolder, append_text

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

    from ..processes import STOP_GRACE_SECONDS, ForwardedSignals, signals_blocked

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
        from ..training.loop import Interrupted

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


def _cmd_experiment(args: argparse.Namespace) -> int:
    from ..experiments import ExperimentOptions, run_all, run_experiment
    from ..report import build_experiment_report

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
