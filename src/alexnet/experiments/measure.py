"""What the claims read off an arm's finished run: its test errors, its curves, the error on its own
training images and other evaluations of the same weights, kept in the run folder for a rerun."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import AlexNetError
from ..runs import RunFolder, write_text

MEASURES_FILE = "experiment-measures.json"  # written into each arm's run folder, read back on a rerun
MEASURES_VERSION = 2  # bumped when a measure changes: cached measures of an older version are taken again


@dataclass(frozen=True)
class Task:
    """One training run, and what to measure on it besides its own metrics."""

    name: str  # the run folder's name
    config: object  # TrainConfig
    train_set_error: bool  # the gap measure needs the error on the training images in eval mode
    re_evaluations: tuple[tuple[str, dict], ...]  # (arm, evaluate() options) on the same weights


def check_same_run(folder: RunFolder, written, wanted) -> None:
    """Refuse to take a run folder that holds another experiment's run for this arm."""
    from ..training.config import RESUMABLE_FIELDS

    # What an arm's run folder may differ in from the arm and still be its run: what --resume may change
    # (how long, where and how fast), the precision `auto` settled on, and where the folder is.
    may_differ = {*RESUMABLE_FIELDS, "precision", "out", "name"}
    wanted = wanted.resolved()
    differences = [f"{key}: {getattr(written, key)!r} there, {getattr(wanted, key)!r} asked"
                   for key in vars(wanted) if key not in may_differ and getattr(written, key) != getattr(wanted, key)]
    if differences:
        raise AlexNetError(f"{folder.directory} holds a run of other settings ({'; '.join(differences[:3])}); "
                           f"give the experiment another --out, or delete that folder")


def cached_measures(folder: RunFolder, task: Task) -> dict | None:
    """The measures an earlier run of the experiment wrote to ``folder``, when they are of this version,
    of as many epochs, and hold all that ``task`` asks; else None (they are taken again)."""
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


def measure_run(folder: RunFolder, task: Task) -> dict:
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
