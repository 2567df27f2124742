"""``alexnet experiment``: a claim's arms trained as ordinary runs, measured, compared, judged.

An experiment folder holds ``runs/<arm>-seed<N>/`` (run folders that ``evaluate`` and ``report``
read like any other), ``results.json`` and ``results.md``. Run again, it trains only what is not
finished: a finished arm is read back, a stopped one continues from its checkpoint.

This module orders the steps; the arms are trained side by side by ``pool``, each finished run is
read by ``measure``, and ``tables`` judges the measures and writes them as a person reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import AlexNetError
from ..formatting import counted
from ..runs import RunFolder, RunLock, check_output, write_text
from .claims import BASE, CLAIMS, Arm, Claim, get_claim
from .measure import Task, cached_measures, check_same_run, measure_run
from .options import ExperimentOptions
from .pool import run_in_workers, stop_on_signals
from .tables import results_markdown, summarise, summary_markdown


def experiment_folder(name: str, options: ExperimentOptions) -> Path:
    return Path(options.out) / name


def arm_configs(claim: Claim, options: ExperimentOptions) -> dict[str, list]:
    """arm name -> one ``TrainConfig`` per seed (re-evaluated arms: the reference's)."""
    from ..training import TrainConfig

    options = options.resolved()
    epochs, subset = options.budget(claim)
    folder = experiment_folder(claim.name, options) / "runs"
    configs: dict[str, list] = {}
    for arm in claim.arms:
        if not claim.retrains and arm is not claim.reference:
            configs[arm.name] = configs[claim.reference.name]
            continue
        values = _merge(BASE, claim.base, arm.changes)
        values["model_options"] = {**values.get("model_options", {}), **_model_changes(options.model, arm)}
        configs[arm.name] = [
            TrainConfig(**{**values, "model": options.model, "dataset": options.dataset, "data_dir": options.data_dir, "val_size": options.val_size,
                           "epochs": epochs, "subset": subset, "seed": seed, "out": str(folder),
                           "name": f"{arm.name}-seed{seed}", "quiet": True, "precision": options.precision,
                           "device": options.device})
            for seed in range(options.seeds)
        ]
    return configs


def run_experiment(name: str, options: ExperimentOptions = ExperimentOptions(), *,
                   log: Callable[[str], None] = print) -> Path:
    """Train (or continue) every arm of the claim ``name``, measure and judge; returns the folder
    holding ``results.json`` and ``results.md``."""
    from ..data import dataset_info

    claim = get_claim(name)
    options.check()
    info = dataset_info(options.dataset)
    options = options.resolved()
    if claim.needs_colour and len(info.mean) != 3:
        raise AlexNetError(f"experiment {name} needs colour images and {options.dataset} is grey: "
                           f"{claim.transfer}. Pass --dataset cifar10 (or another colour dataset)")
    configs = arm_configs(claim, options)
    for seeds in configs.values():
        for config in seeds:
            config.resolved()  # a bad option is refused before anything trains
    folder = experiment_folder(name, options)
    check_output(folder / "results.json", "--out")  # a read-only place is refused before training, not after
    epochs, subset = options.budget(claim)
    with _experiment_lock(folder):
        log(f"experiment {name} ({claim.section}): {len(claim.arms)} arms x {counted(options.seeds, 'seed')}, "
            f"{counted(epochs, 'epoch')} on {subset:g} of {options.dataset}, {options.model}; folder {folder}")
        tasks = _tasks(claim, configs)
        measured = _train_all(tasks, options, log)
        failed = [task.name for task in tasks if task.name not in measured]
        results = {**summarise(claim, options, measured), "runs": len(tasks), "runs_finished": len(tasks) - len(failed)}
        kept = failed and (not measured or _complete_results(folder))
        if not kept:  # a rerun that failed never replaces complete results with a partial or empty table
            write_text(folder / "results.json", json.dumps(results, indent=2) + "\n")
            write_text(folder / "results.md", results_markdown(results))
    if failed:
        note = ""
        if not kept:
            note = f"; {folder / 'results.md'} shows the {len(measured)} that did, marked partial"
        elif (folder / "results.md").is_file():
            note = f"; {folder / 'results.md'} is left as it was"
        advice = ("Fix what they say, then run the same command again" if not measured else
                  "Run the same command again to continue: finished arms are kept")
        raise AlexNetError(f"experiment {name}: {len(failed)} run(s) did not finish ({', '.join(failed)}); their "
                           f"messages are above{note}. {advice}")
    return folder


def run_all(options: ExperimentOptions, *, log: Callable[[str], None] = print) -> list[Path]:
    """Every claim the dataset can test, one after another; a claim that needs colour images is skipped
    on grey data, saying so. A claim with runs that failed does not stop the others."""
    from ..data import dataset_info

    grey = len(dataset_info(options.dataset).mean) != 3
    folders, failures = [], []
    for claim in CLAIMS.values():
        if claim.needs_colour and grey:
            log(f"experiment {claim.name}: skipped, {options.dataset} is grey ({claim.transfer})")
            continue
        try:
            folders.append(run_experiment(claim.name, options, log=log))
        except AlexNetError as error:
            log(f"experiment {claim.name}: {error}")
            failures.append(claim.name)
    if folders:
        write_text(Path(options.out) / "summary.md", summary_markdown([
            json.loads((folder / "results.json").read_text()) for folder in folders]))
    if failures:
        raise AlexNetError(f"{', '.join(failures)} did not finish (see above); run the same command again to "
                           f"continue: finished arms are kept")
    return folders


@contextlib.contextmanager
def _experiment_lock(folder: Path):
    """One experiment at a time in a folder: a second one would find the first's runs locked, and
    write results of the few runs it could take as if they were the experiment's."""
    try:
        lock = RunLock(folder / ".lock").acquire()
    except AlexNetError:
        raise AlexNetError(f"{folder} is in use by another `alexnet experiment` (see {folder / '.lock'}); wait for "
                           f"it to finish, or give this one another --out") from None
    try:
        yield
    finally:
        lock.release()


def _complete_results(folder: Path) -> bool:
    """Whether ``folder`` holds the results of an experiment all of whose runs finished."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(results, dict):
        return False
    if "runs" not in results:  # written before partial results were marked: only complete ones were written
        return True
    return results.get("runs_finished") == results["runs"]


# --- training the arms ----------------------------------------------------------------------------


def _tasks(claim: Claim, configs: dict[str, list]) -> list[Task]:
    needs_gap = any(measure.key == "gap" for measure in claim.measures)
    re_evaluated = [arm for arm in claim.others if not claim.retrains]
    tasks = []
    for arm in claim.arms:
        if arm in re_evaluated:
            continue
        for config in configs[arm.name]:
            again = tuple((other.name, {"ten_crop": other.changes.get("ten_crop")}) for other in re_evaluated
                          if arm is claim.reference)
            tasks.append(Task(config.name, config, needs_gap, again))
    return tasks


def _train_all(tasks: list[Task], options: ExperimentOptions, log) -> dict[str, dict]:
    """Run the tasks, ``jobs`` at a time; returns run name -> measures for those that finished."""
    from ..perf import physical_cores

    cores = physical_cores()
    jobs = min(options.jobs or cores, len(tasks))
    threads = max(1, cores // jobs)
    tasks = [dataclasses.replace(task, config=dataclasses.replace(task.config, threads=threads)) for task in tasks]
    measured: dict[str, dict] = {}

    def record(task: Task, outcome: dict | str) -> None:
        if isinstance(outcome, str):
            log(f"  {task.name}: FAILED: {outcome}")
            return
        measured[task.name] = outcome
        note = " (already trained)" if outcome.get("reused") else f" ({outcome['seconds']:.0f} s)"
        log(f"  {task.name}: test top-1 error {outcome['test_top1_error']:.2%}" + note)

    if jobs == 1:
        with stop_on_signals():
            for task in tasks:
                record(task, _run_task(task))
    else:
        run_in_workers(tasks, jobs, _run_task, record)
    return measured


def _run_task(task: Task) -> dict | str:
    """Train (or continue, or read back) one run and measure it; a failure comes back as its message,
    so that the other arms go on."""
    import torch

    from ..perf import set_threads
    from ..training import TrainConfig, train

    folder = RunFolder(Path(task.config.out) / task.config.name)
    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    set_threads(task.config.threads)  # also for measuring: `jobs` processes share the cores
    try:
        if folder.config.is_file():
            check_same_run(folder, TrainConfig.from_yaml(folder.config), task.config)
        cached = cached_measures(folder, task)
        if cached is not None:
            return {**cached, "reused": True}
        evaluation, _ = folder.read_evaluation()
        finished = folder.weights.is_file() and evaluation and evaluation.get("epochs") == task.config.epochs
        if not finished:
            # Each run's epochs go to its own log.txt: the experiment prints a line per finished run.
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                if folder.holds_run():
                    train(resume=folder.directory, overrides={"epochs": task.config.epochs,
                                                              "threads": task.config.threads})
                else:
                    train(task.config)
        return {**measure_run(folder, task), "seconds": time.perf_counter() - start}
    except Exception as error:  # noqa: BLE001 -- reported, and the experiment goes on with the other arms
        return f"{error}" if isinstance(error, AlexNetError) else f"{type(error).__name__}: {error}"
    finally:
        set_threads(threads_before)


# --- helpers ------------------------------------------------------------------------------------


def _merge(*layers: dict) -> dict:
    """Later layers win; ``model_options`` are merged key by key."""
    merged: dict = {}
    for layer in layers:
        for key, value in layer.items():
            merged[key] = {**merged.get(key, {}), **value} if key == "model_options" else value
    return merged


def _model_changes(model: str, arm: Arm) -> dict:
    """Model options an arm works out from the model's own layers: half the kernels of conv1-4
    (Section 3.2's one-tower net keeps the last convolution and the FC layers whole, footnote 2),
    or one convolution removed (Section 6.1)."""
    if arm.model_changes is None:
        return {}
    import torch

    from ..models import build_model

    with torch.device("meta"):
        widths = [conv.channels for conv in build_model(model).architecture.convs]
    if arm.model_changes == "half-kernels":
        return {"conv_widths": [width // 2 for width in widths[:-1]] + [widths[-1]]}
    if arm.model_changes.startswith("remove-conv"):
        return {"remove_conv": int(arm.model_changes.removeprefix("remove-conv"))}
    raise AlexNetError(f"unknown model change {arm.model_changes!r}")
