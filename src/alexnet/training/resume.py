"""Opening a run folder: a new one created and locked, or a run to continue (``--resume``), with
what a resumed run may change and the refusals, each saying what to do, of a folder that is taken,
a change that is not allowed, or a run that has nothing left to do."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..data import resolve_augment
from ..errors import AlexNetError, quote
from ..formatting import counted
from ..runs import RunFolder, RunLock
from .checkpoint import load_checkpoint
from .config import RESUMABLE_FIELDS, TrainConfig
from .distributed import elastic_restart_count, per_process_batch
from .early_stopping import stops_early


@dataclass(frozen=True)
class Continuation:
    """How a run folder's run goes on."""

    written: TrainConfig  # config.yaml as it is (edited by hand, perhaps)
    trained: TrainConfig  # what the checkpoint's weights were trained with (config.yaml's before one)
    config: TrainConfig  # the one to continue with: trained's, with the changes asked for, resolved
    checkpoint: dict | None  # the last one (checkpoints/last.pt); None before the first


def new_folder(config: TrainConfig) -> tuple[RunFolder, RunLock]:
    """Create and lock ``out/name``; a folder that already holds a run is refused, saying what to do."""
    name = config.name or f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = RunFolder(Path(config.out) / name)
    try:
        folder.directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AlexNetError(f"cannot create the run folder {folder.directory}: {error.strerror or error}; "
                           f"choose another --out") from None
    if not folder.directory.is_dir():
        raise AlexNetError(f"cannot create the run folder {folder.directory}: a file is in the way; "
                           f"choose another --out or --name")
    lock = folder.lock()
    try:
        if folder.holds_run() and elastic_restart_count():
            folder.metrics.unlink(missing_ok=True)  # restarted by torchrun before any checkpoint: start over
        elif folder.holds_run():
            _refuse_taken(folder)
        folder.checkpoints.mkdir(exist_ok=True)
        folder.remove_stale_temporaries()
    except BaseException:
        lock.release()
        raise
    return folder, lock


def folder_to_continue(resume: str | Path) -> RunFolder:
    """The run folder ``resume``, refused when it holds no run's configuration."""
    folder = RunFolder(Path(resume))
    if not folder.config.is_file():
        raise AlexNetError(f"{folder.directory} is not a run folder (no config.yaml); pass the folder "
                           f"that `alexnet train` printed")
    return folder


def read_continuation(folder: RunFolder, overrides: dict) -> Continuation:
    """How the run in ``folder`` goes on with the changes ``overrides`` asks for; a change that
    ``RESUMABLE_FIELDS`` does not allow, or a run that has nothing left to do, is refused."""
    written = TrainConfig.from_yaml(folder.config)
    checkpoint = load_checkpoint(folder.last) if folder.last.is_file() else None
    trained = written
    if checkpoint is not None and isinstance(checkpoint.get("config"), dict):
        trained = TrainConfig.from_dict(checkpoint["config"])  # what the weights were trained with
    config = continued_config(trained, written, overrides).resolved()
    if checkpoint is not None:
        _check_not_finished(folder, config, checkpoint["epoch"],
                            stops_early(checkpoint["history"], config.early_stopping))
    return Continuation(written, trained, config, checkpoint)


def continued_config(trained: TrainConfig, written: TrainConfig, overrides: dict) -> TrainConfig:
    """The configuration a resumed run goes on with: the one its checkpoint was trained with, with
    the changes that config.yaml (edited by hand) and the flags given with --resume ask for.

    Only ``RESUMABLE_FIELDS`` may change; any other change is refused by name rather than ignored.
    """
    before = dataclasses.asdict(trained)
    changes: dict[str, tuple[object, str]] = {}
    for source, values in (("config.yaml", dataclasses.asdict(written)), ("the command line", overrides)):
        for key, value in values.items():
            if key not in before:
                raise AlexNetError(f"unknown configuration key {quote(key)}")
            if key == "model_options" and source == "the command line":
                value = {**before["model_options"], **value}
            if key == "augment" and _same_augmentation(value, before[key], before["dataset"]):
                continue  # `hflip` for a `flip` run: another spelling of the same augmentation
            if value != before[key]:
                changes[key] = (value, source)
    refused = {key: change for key, change in changes.items() if key not in RESUMABLE_FIELDS}
    if refused:
        detail = "; ".join(f"{key}: trained with {quote(before[key])}, {source} asks for {quote(value)}"
                           for key, (value, source) in refused.items())
        raise AlexNetError(
            f"cannot change {', '.join(refused)} when continuing a run ({detail}). A checkpoint goes on "
            f"as the run it was: start a new run (another --name) for that. What may change with "
            f"--resume: {', '.join(RESUMABLE_FIELDS)}"
        )
    return dataclasses.replace(trained, **{key: value for key, (value, _) in changes.items()})


def check_before_launch(config: TrainConfig | None, *, resume: str | Path | None = None,
                        overrides: dict | None = None, processes: int = 1) -> None:
    """What ``train`` would refuse before its first step, checked without creating or locking
    anything: for ``alexnet train --nproc N``, which would otherwise start N processes to print the
    same refusal N times. The settings, the batch's split over ``processes``, the run folder (free,
    not holding a run; or, with ``resume``, a run that is not finished)."""
    if processes < 1:
        raise AlexNetError(f"--nproc must be at least 1 (processes on this machine), got {processes}")
    if resume is None:
        if overrides:
            raise AlexNetError("configuration overrides apply only when continuing a run (--resume)")
        config = (config or TrainConfig()).resolved()
        per_process_batch(config.batch_size, processes)
        if config.name:
            folder = RunFolder(Path(config.out) / config.name)
            if folder.directory.exists() and not folder.directory.is_dir():
                raise AlexNetError(f"cannot create the run folder {folder.directory}: a file is in the way; "
                                   f"choose another --out or --name")
            if folder.holds_run():
                _check_free(folder)
                _refuse_taken(folder)
        return
    folder = folder_to_continue(resume)
    _check_free(folder)
    continuation = read_continuation(folder, overrides or {})
    per_process_batch(continuation.config.batch_size, processes)


def _refuse_taken(folder: RunFolder) -> None:
    """Refuse to start a new run in a folder that holds one, saying how to continue it."""
    if folder.last.is_file():
        raise AlexNetError(f"{folder.directory} already holds a run; continue it with --resume "
                           f"{folder.directory}, or choose another --name")
    raise AlexNetError(
        f"{folder.directory} holds a run that stopped before its first checkpoint; start it over with "
        f"--resume {folder.directory} (same configuration), or choose another --name")


def _check_free(folder: RunFolder) -> None:
    """Refuse a folder another process is training in (the lock is taken and let go at once)."""
    if folder.lock_file.exists():
        folder.lock().release()


def _same_augmentation(spec, trained, dataset: str) -> bool:
    try:
        return resolve_augment(spec, dataset) == resolve_augment(trained, dataset)
    except AlexNetError:  # a bad spec is refused by name as a change
        return False


def _check_not_finished(folder: RunFolder, config: TrainConfig, trained_epochs: int, stopped: bool = False) -> None:
    """Refuse to "continue" a run that has nothing left to do, saying how to train it longer."""
    if config.epochs < trained_epochs:
        raise AlexNetError(f"{folder.directory} has trained {counted(trained_epochs, 'epoch')} already; --epochs "
                           f"must be at least that (more trains it longer)")
    if stopped and folder.weights.is_file() and _tested_epochs(folder) == trained_epochs:
        raise AlexNetError(
            f"{folder.directory} stopped early after epoch {trained_epochs}: validation top-1 had not improved for "
            f"{counted(config.early_stopping, 'epoch')}, and it is tested. To train it on: alexnet train --resume "
            f"{folder.directory} --early-stopping 0 (or a longer patience)")
    if (config.epochs > trained_epochs and not stopped) or not (folder.weights.is_file() and folder.evaluation.is_file()):
        return  # epochs to train, or all trained but killed before its final test: finish it
    try:
        evaluation = json.loads(folder.evaluation.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(evaluation, dict) or evaluation.get("epochs", trained_epochs) != trained_epochs:
        return  # the test of an earlier, shorter run: test this one
    top1 = evaluation.get("top1")
    score = f" (test top-1 {top1:.2%})" if isinstance(top1, float) else ""
    raise AlexNetError(
        f"{folder.directory} has finished: {counted(trained_epochs, 'epoch')} trained and tested{score}. To train "
        f"it longer: alexnet train --resume {folder.directory} --epochs {trained_epochs + 10} (say)"
    )


def _tested_epochs(folder: RunFolder) -> int | None:
    """The epochs of the weights that evaluation.json tested; None when it cannot be read."""
    try:
        evaluation = json.loads(folder.evaluation.read_text())
    except (OSError, ValueError):
        return None
    return evaluation.get("epochs") if isinstance(evaluation, dict) else None
