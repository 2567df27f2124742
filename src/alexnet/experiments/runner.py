"""``alexnet experiment``: a claim's arms trained as ordinary runs, measured, compared, judged.

An experiment folder holds ``runs/<arm>-seed<N>/`` (run folders that ``evaluate`` and ``report``
read like any other), ``results.json`` and ``results.md``. Run again, it trains only what is not
finished: a finished arm is read back, a stopped one continues from its checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlexNetError
from ..formatting import format_difference, format_spread
from ..processes import STOP_GRACE_SECONDS, STOP_SIGNALS, ForwardedSignals, signals_blocked, start_child
from ..runs import RunFolder, RunLock, check_output, write_text
from .claims import BASE, CLAIMS, Arm, Claim, get_claim
from .stats import RULE, Spread, epochs_to_converge, epochs_to_error, paired_interval, verdict

MEASURES_FILE = "experiment-measures.json"  # written into each arm's run folder, read back on a rerun
CONVERGENCE_TOLERANCE = 0.005  # "converged": validation error within half a point of its best


@dataclass(frozen=True)
class ExperimentOptions:
    """What every arm of an experiment shares; None means the claim's own budget."""

    dataset: str = "fashion-mnist"
    model: str | None = None  # None: the paper-faithful network for the data's size (default_model)
    seeds: int = 3  # seeds 0..N-1, the same for every arm: the differences are paired by seed
    epochs: int | None = None
    subset: float | None = None
    jobs: int | None = None  # arms trained at once; None: one per physical core, each with one thread
    out: str = "experiments"
    data_dir: str | None = None
    val_size: int | None = None  # images held out for validation; None: the dataset's default
    threshold: float = 0.25  # relu: the training error Figure 1 times (25%)
    precision: str = "auto"
    device: str = "auto"

    def resolved(self) -> "ExperimentOptions":
        """A copy naming its model (the data's paper-faithful network when none is given)."""
        return self if self.model else dataclasses.replace(self, model=default_model(self.dataset))

    def budget(self, claim: Claim) -> tuple[int, float]:
        """(epochs, subset): the ones given, else the claim's own (None only means "not given")."""
        return (claim.epochs if self.epochs is None else self.epochs,
                claim.subset if self.subset is None else self.subset)

    def check(self) -> None:
        if self.seeds < 1:
            raise AlexNetError(f"--seeds must be at least 1, got {self.seeds}")
        if self.jobs is not None and self.jobs < 1:
            raise AlexNetError(f"--jobs must be at least 1, got {self.jobs}")
        if self.epochs is not None and self.epochs < 1:
            raise AlexNetError(f"--epochs must be at least 1, got {self.epochs} (leave it out for the claim's own)")
        if self.subset is not None and not 0 < self.subset <= 1:
            raise AlexNetError(f"--subset must be a fraction in (0, 1], got {self.subset} (leave it out for the "
                               f"claim's own)")
        if not 0 < self.threshold < 1:
            raise AlexNetError(f"--threshold must be a training error in (0, 1), got {self.threshold}")


def default_model(dataset: str) -> str:
    """The paper-faithful network (LRN, two towers, dropout 0.5) sized for ``dataset``'s images:
    the small variants for 28x28 and 32x32 sets, the paper's own for the rest."""
    from ..data import dataset_info

    shape = dataset_info(dataset).input_shape
    if shape and shape[1:] == (28, 28):
        return "alexnet_small28"
    if shape and shape[1:] == (32, 32):
        return "alexnet_small32"
    return "alexnet_paper"


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
        log(f"experiment {name} ({claim.section}): {len(claim.arms)} arms x {options.seeds} seeds, {epochs} epochs "
            f"on {subset:g} of {options.dataset}, {options.model}; folder {folder}")
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


@dataclass(frozen=True)
class _Task:
    """One training run, and what to measure on it besides its own metrics."""

    name: str  # the run folder's name
    config: object  # TrainConfig
    train_set_error: bool  # the gap measure needs the error on the training images in eval mode
    re_evaluations: tuple[tuple[str, dict], ...]  # (arm, evaluate() options) on the same weights


def _tasks(claim: Claim, configs: dict[str, list]) -> list[_Task]:
    needs_gap = any(measure.key == "gap" for measure in claim.measures)
    re_evaluated = [arm for arm in claim.others if not claim.retrains]
    tasks = []
    for arm in claim.arms:
        if arm in re_evaluated:
            continue
        for config in configs[arm.name]:
            again = tuple((other.name, {"ten_crop": other.changes.get("ten_crop")}) for other in re_evaluated
                          if arm is claim.reference)
            tasks.append(_Task(config.name, config, needs_gap, again))
    return tasks


def _train_all(tasks: list[_Task], options: ExperimentOptions, log) -> dict[str, dict]:
    """Run the tasks, ``jobs`` at a time; returns run name -> measures for those that finished."""
    from ..perf import physical_cores

    cores = physical_cores()
    jobs = min(options.jobs or cores, len(tasks))
    threads = max(1, cores // jobs)
    tasks = [dataclasses.replace(task, config=dataclasses.replace(task.config, threads=threads)) for task in tasks]
    measured: dict[str, dict] = {}

    def record(task: _Task, outcome: dict | str) -> None:
        if isinstance(outcome, str):
            log(f"  {task.name}: FAILED: {outcome}")
            return
        measured[task.name] = outcome
        note = " (already trained)" if outcome.get("reused") else f" ({outcome['seconds']:.0f} s)"
        log(f"  {task.name}: test top-1 error {outcome['test_top1_error']:.2%}" + note)

    if jobs == 1:
        with _stop_on_signals():
            for task in tasks:
                record(task, _run_task(task))
    else:
        _train_in_workers(tasks, jobs, record)
    return measured


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM (and Ctrl-C) outside training, while a run is measured, stops the experiment as a
    Ctrl-C does, with its message and exit status, instead of killing it without a word. (Training
    puts its own handlers in place while it runs: it saves first.)"""
    from ..training.loop import Interrupted

    def interrupt(signum: int, frame) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {each: signal.signal(each, interrupt) for each in STOP_SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def _train_in_workers(tasks: list[_Task], jobs: int, record: Callable[[_Task, dict | str], None]) -> None:
    """Run the tasks in ``jobs`` worker processes at a time (a fresh interpreter each, in a session of
    its own; see ``alexnet.processes``). A Ctrl-C or SIGTERM is passed on to the running workers,
    which save their position; no new one starts, and the ones running are waited for (killed after
    ``STOP_GRACE_SECONDS``) before ``Interrupted`` is raised: nothing of ours outlives the experiment."""
    from ..training.loop import Interrupted

    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
    waiting = list(reversed(tasks))
    running: dict = {}  # the receiving end of a worker's pipe -> (process, task)

    def children() -> list[int]:
        return [process.pid for process, _ in running.values() if process.pid]

    with ForwardedSignals.installed(children) as forward:
        stopped_at = None
        while (waiting and forward.signum is None) or running:
            while waiting and forward.signum is None and len(running) < jobs:
                task = waiting.pop()
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(task, sender, os.getpid()), name=f"alexnet {task.name}")
                with signals_blocked():
                    process.start()
                sender.close()
                running[receiver] = (process, task)
            if forward.signum is not None and stopped_at is None:
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_SECONDS:
                for process, _ in running.values():
                    process.kill()
            for receiver in multiprocessing.connection.wait(list(running), timeout=1.0):
                process, task = running.pop(receiver)
                try:
                    outcome = receiver.recv()
                except (EOFError, OSError):  # the worker died before it could answer
                    outcome = None
                receiver.close()
                process.join()
                if outcome is None and forward.signum is None:
                    code = process.exitcode
                    cause = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
                    outcome = f"its process ended without an answer ({cause}; out of memory?)"
                if outcome is not None:
                    record(task, outcome)
        if forward.signum is not None:
            raise Interrupted(forward.signum)


def _worker(task: _Task, sender, parent: int) -> None:
    """A worker process: one task, its outcome sent back; None when a signal stopped it."""
    try:
        with _stop_on_signals():
            start_child(parent, new_session=True)
            outcome = _run_task(task)
    except KeyboardInterrupt:
        outcome = None
    with contextlib.suppress(OSError):
        sender.send(outcome)
    sender.close()


def _run_task(task: _Task) -> dict | str:
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
            _check_same_run(folder, TrainConfig.from_yaml(folder.config), task.config)
        cached = _cached_measures(folder, task)
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
    except Exception as error:  # noqa: BLE001: reported, and the experiment goes on with the other arms
        return f"{error}" if isinstance(error, AlexNetError) else f"{type(error).__name__}: {error}"
    finally:
        set_threads(threads_before)


# What an arm's run folder may differ in from the arm and still be its run: what --resume may change
# (how long, where and how fast), the precision `auto` settled on, and where the folder is.


def _check_same_run(folder: RunFolder, written, wanted) -> None:
    """Refuse to take a run folder that holds another experiment's run for this arm."""
    from ..training.config import RESUMABLE_FIELDS

    may_differ = {*RESUMABLE_FIELDS, "precision", "out", "name"}
    wanted = wanted.resolved()
    differences = [f"{key}: {getattr(written, key)!r} there, {getattr(wanted, key)!r} asked"
                   for key in vars(wanted) if key not in may_differ and getattr(written, key) != getattr(wanted, key)]
    if differences:
        raise AlexNetError(f"{folder.directory} holds a run of other settings ({'; '.join(differences[:3])}); "
                           f"give the experiment another --out, or delete that folder")


MEASURES_VERSION = 2  # bumped when a measure changes: cached measures of an older version are taken again


def _cached_measures(folder: RunFolder, task: _Task) -> dict | None:
    path = folder.directory / MEASURES_FILE
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    wanted = {name for name, _ in task.re_evaluations}
    complete = (cached.get("version") == MEASURES_VERSION and cached.get("epochs") == task.config.epochs
                and (not task.train_set_error or "train_error" in cached)
                and wanted <= set(cached.get("re_evaluations", {})))
    return cached if complete else None


def measure_run(folder: RunFolder, task: _Task) -> dict:
    """What the claims read off a finished run, written to the run folder for the next time."""
    from ..evaluation import evaluate

    evaluation, problem = folder.read_evaluation()
    if evaluation is None:
        raise AlexNetError(f"{folder.directory}: {problem}")
    history, _ = folder.read_history()
    measures = {
        "version": MEASURES_VERSION,
        "run": str(folder.directory),
        "seed": task.config.seed,
        "epochs": evaluation.get("epochs", len(history)),
        "test_top1_error": 1 - evaluation["top1"],
        "test_top5_error": 1 - evaluation["top5"],
        "train_errors": [1 - row["train_top1"] for row in history],
        "val_errors": [1 - row["val_top1"] for row in history],
        "num_classes": len(evaluation.get("class_names", [])) or 10,
    }
    if task.train_set_error:
        measures["train_error"] = 1 - training_set_top1(folder)
    measures["re_evaluations"] = {}
    for arm, choice in task.re_evaluations:
        metrics = evaluate(folder.directory, ten_crop=choice.get("ten_crop"), flip=False, device=task.config.device)
        measures["re_evaluations"][arm] = {"test_top1_error": 1 - metrics.top1, "test_top5_error": 1 - metrics.top5}
    write_text(folder.directory / MEASURES_FILE, json.dumps(measures, indent=2) + "\n")
    return measures


def training_set_top1(folder: RunFolder) -> float:
    """Top-1 of a run's final weights on its own training images, seen as its validation images are
    (the centre crop its augmentation tests on; no dropout, no augmentation): the paper's
    "overfitting" is the distance from this to the validation accuracy. (The running training
    accuracy of metrics.jsonl is taken with dropout on, on augmented images.)"""
    from ..evaluation import evaluate
    from ..training import TrainConfig

    config = TrainConfig.from_yaml(folder.config)
    metrics = evaluate(folder.directory, split="train", subset=config.subset, ten_crop=False, flip=False,
                       data_dir=config.data_dir, device=config.device, batch_size=config.eval_batch_size)
    return metrics.top1


# --- measuring and judging --------------------------------------------------------------------------


def arm_runs(claim: Claim, arm: Arm, measured: dict[str, dict], options: ExperimentOptions) -> dict[int, dict]:
    """seed -> the measures of ``arm``'s run of that seed (for an arm that re-evaluates the reference's
    weights, the reference's run with the arm's evaluation in place of its own)."""
    source = arm if claim.retrains else claim.reference
    runs = {}
    for seed in range(options.seeds):
        run = measured.get(f"{source.name}-seed{seed}")
        if run is not None:
            runs[seed] = run if source is arm else {**run, **run["re_evaluations"][arm.name]}
    return runs


def arm_values(claim: Claim, arm: Arm, measured: dict[str, dict], options: ExperimentOptions,
               key: str) -> dict[int, tuple[float, bool]]:
    """seed -> (value of ``key``, censored) for one arm; censored: not reached within the epochs trained,
    and the budget stands in for it (a lower bound)."""
    return {seed: _value(run, key, options) for seed, run in arm_runs(claim, arm, measured, options).items()}


def _value(run: dict, key: str, options: ExperimentOptions) -> tuple[float, bool]:
    if key in ("test_top1_error", "test_top5_error"):
        return run[key], False
    if key == "gap":
        return run["val_errors"][-1] - run["train_error"], False
    if key == "epochs_to_error":
        chance = 1 - 1 / run["num_classes"]
        epochs = epochs_to_error(run["train_errors"], options.threshold, chance)
        return (float(run["epochs"]), True) if epochs is None else (epochs, False)
    if key == "convergence":
        return float(epochs_to_converge(run["val_errors"], CONVERGENCE_TOLERANCE)), False
    raise AlexNetError(f"unknown measure {key!r}")


def summarise(claim: Claim, options: ExperimentOptions, measured: dict[str, dict]) -> dict:
    """results.json: per arm and measure the spread over seeds; per comparison the paired difference,
    its interval, the paper's number and the verdict."""
    arms = {}
    for arm in claim.arms:
        runs = list(arm_runs(claim, arm, measured, options).values())
        entry = {"label": arm.label, "runs": [run["run"] for run in runs], "measures": {}}
        for measure in claim.measures:
            values = arm_values(claim, arm, measured, options, measure.key)
            if values:
                numbers = [value for value, _ in values.values()]
                entry["measures"][measure.key] = {
                    **Spread.of(numbers).to_dict(), "values": numbers,
                    "censored": [censored for _, censored in values.values()],
                }
        if runs:
            entry["curves"] = {"train_errors": [run["train_errors"] for run in runs],
                               "val_errors": [run["val_errors"] for run in runs]}
        arms[arm.name] = entry

    comparisons = []
    arms_by_name = {arm.name: arm for arm in claim.arms}
    for reference_name, other_name in claim.pairs:
        base, other = arms_by_name[reference_name], arms_by_name[other_name]
        for measure in claim.measures:
            reference = arm_values(claim, base, measured, options, measure.key)
            values = arm_values(claim, other, measured, options, measure.key)
            seeds = sorted(set(reference) & set(values))
            differences = [values[seed][0] - reference[seed][0] for seed in seeds]
            interval = paired_interval(differences)
            # A censored value (not reached within the epochs trained) is a lower bound: an interval
            # with the other arm censored can still show a positive difference, and one with the
            # reference censored a negative one, but not the reverse.
            judged = verdict(interval, measure.expected_sign)
            other_censored = any(values[seed][1] for seed in seeds)
            reference_censored = any(reference[seed][1] for seed in seeds)
            shown_sign = measure.expected_sign if judged == "agrees" else -measure.expected_sign
            if judged != "inconclusive" and ((reference_censored and (other_censored or shown_sign > 0))
                                             or (other_censored and shown_sign < 0)):
                judged = "inconclusive"
            ratio = None
            if measure.unit == "epochs" and seeds and sum(reference[seed][0] for seed in seeds) > 0:
                ratio = (sum(values[seed][0] for seed in seeds) / sum(reference[seed][0] for seed in seeds))
            comparisons.append({
                "reference": base.name, "other": other.name, "measure": measure.key,
                "label": measure.label, "unit": measure.unit, "expected_sign": measure.expected_sign,
                "differences": differences, "seeds": seeds,
                "mean": interval[0] if interval else (differences[0] if differences else None),
                "interval": [interval[1], interval[2]] if interval else None,
                "ratio": ratio, "lower_bound": any(values[seed][1] for seed in seeds),
                "paper": measure.paper, "verdict": judged,
            })
    deciding = claim.pairs[:claim.deciding]
    primary = [c for c in comparisons if c["measure"] == claim.measures[0].key
               and (c["reference"], c["other"]) in deciding]
    for comparison in comparisons:
        comparison["deciding"] = comparison in primary
    verdicts = {c["verdict"] for c in primary}
    overall = ("agrees" if verdicts == {"agrees"} else "disagrees" if "disagrees" in verdicts else "inconclusive")
    return {
        "experiment": claim.name, "section": claim.section, "statement": claim.statement, "paper": claim.paper,
        "dataset": options.dataset, "model": options.model, "seeds": options.seeds,
        "epochs": options.budget(claim)[0], "subset": options.budget(claim)[1],
        "threshold": options.threshold if any(m.key == "epochs_to_error" for m in claim.measures) else None,
        "rule": RULE, "transfer": claim.transfer, "verdict": overall,
        "arms": arms, "comparisons": comparisons,
    }


def results_markdown(results: dict) -> str:
    """results.md: the arms' spreads, the comparisons and the verdict, as a person reads them."""
    lines = [f"# {results['experiment']}: {results['statement']} (Section {results['section']})", "",
             f"Paper: {results['paper']}.", "",
             f"{results['model']} on {results['subset']:g} of {results['dataset']}, {results['epochs']} epochs, "
             f"{results['seeds']} seeds (0..{results['seeds'] - 1}, the same for every arm). "
             f"**Verdict: {results['verdict']}.**", ""]
    if results.get("runs_finished", results.get("runs")) != results.get("runs"):
        lines += [f"**Partial: {results['runs_finished']} of {results['runs']} runs finished**; the spreads and "
                  f"intervals are over those alone. Run the same command again to finish the others.", ""]
    measure_keys = []
    for arm in results["arms"].values():
        for key in arm["measures"]:
            if key not in measure_keys:
                measure_keys.append(key)
    labels = {c["measure"]: (c["label"], c["unit"]) for c in results["comparisons"]}
    lines += ["| arm | " + " | ".join(labels.get(key, (key, ""))[0] for key in measure_keys) + " |",
              "|---|" + "---:|" * len(measure_keys)]
    for arm in results["arms"].values():
        cells = []
        for key in measure_keys:
            spread = arm["measures"].get(key)
            unit = labels.get(key, ("", "%"))[1]
            cells.append(format_spread(spread, unit) if spread else "n/a")
        lines.append(f"| {arm['label']} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | measure | difference (mean, 95% CI) | paper | verdict |", "|---|---|---|---|---|"]
    for c in results["comparisons"]:
        other = results["arms"][c["other"]]["label"]
        reference = results["arms"][c["reference"]]["label"]
        shown = f"**{c['verdict']}**" if c.get("deciding") else c["verdict"]
        lines.append(f"| {other} - {reference} | {c['label']} | {format_difference(c)} | {c['paper'] or '-'} | "
                     f"{shown} |")
    lines += ["", f"Rule: {results['rule']}; the claim's verdict is that of the comparisons in bold (all "
                  f"agree: agrees; any disagrees: disagrees).", "",
              f"Where this setting differs: {results['transfer']}.", ""]
    return "\n".join(lines)


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


def summary_markdown(all_results: list[dict]) -> str:
    """One row per claim: the deciding measure's differences, the paper's number, the verdict, the command."""
    lines = ["| claim | section | measured (mean, 95% CI) | paper | seeds x epochs, subset | verdict | command |",
             "|---|---|---|---|---|---|---|"]
    for results in all_results:
        deciding = [c for c in results["comparisons"]
                    if c["measure"] == results["comparisons"][0]["measure"] and c.get("deciding", True)]
        measured = "; ".join(
            f"{results['arms'][c['other']]['label']} - {results['arms'][c['reference']]['label']}: "
            f"{format_difference(c)}" for c in deciding)
        command = (f"`alexnet experiment {results['experiment']}`" if results["dataset"] == "fashion-mnist"
                   else f"`alexnet experiment {results['experiment']} --dataset {results['dataset']}`")
        lines.append(f"| `{results['experiment']}`: {results['statement']} | {results['section']} | "
                     f"{deciding[0]['label']}: {measured} | {results['paper']} | {results['seeds']} x "
                     f"{results['epochs']}, {results['subset']:g} | **{results['verdict']}** | {command} |")
    return "\n".join(lines) + "\n"
