"""``train(config)``: from a configuration to a run folder with metrics, checkpoints and weights.

The run folder's files are listed in ``alexnet.runs``. One process trains in a folder at a time
(a lock); Ctrl-C or SIGTERM (what a cluster scheduler sends before it kills a job) stops after the
current step with its position saved, and ``train(resume=folder)`` continues from there exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import build_loaders, dataset_info, files_digest, num_classes
from ..errors import AlexNetError, quote
from ..evaluation import Metrics, evaluate_model, test_loader
from ..inference import TestViews, read_trained_metadata
from ..models import build_model
from ..perf import (
    autocast_context, gradient_scaler, optimizer_options, precision_name, prepare_model, resolve_device,
    resolve_precision, set_threads,
)
from ..runs import RunFolder, RunLock, WriteError, append_text, write_text
from ..weights import WeightsMetadata, save_weights
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RESUMABLE_FIELDS, TrainConfig
from .finetune import (
    Pretrained, classifier_parameter_ids, describe_frozen, freeze, keep_frozen_norms_still, load_pretrained,
)
from .distributed import (
    ProcessGroup, destroy_process_group, elastic_restart_count, elastic_run_id,
    init_process_group, lost_peer, per_process_batch, restarted_run_folder,
)

NAN_CHECK_EVERY = 25  # steps between checks of the loss (each check is one host sync)
# Divergence: the training loss, smoothed over about DIVERGENCE_STEPS steps (an exponential moving
# average, as fastai's and Lightning's learning-rate finders smooth it, judged once it spans that
# many), above DIVERGENCE_FACTOR times the larger of its first step's and chance's (ln(classes), what
# a network that knows nothing scores); or, after an epoch, a validation loss above
# VAL_DIVERGENCE_FACTOR times that, with validation top-1 under VAL_CHANCE_FACTOR times chance. The factors leave room for what
# healthy runs do at their peak rate: on 100 images, the fast recipe at batch 32 had an epoch's
# training loss at 1.5x ln(5) and a validation loss at 5.9x ln(5), at chance, before recovering (batch
# norm's running statistics lag behind weights that move fast); a 6-step run on 2 classes averaged
# 3.3x ln(2) over its steps. A diverged run is far beyond: the fast recipe at --lr 0.5 on 5% of
# Fashion-MNIST ended its first epoch at a training loss of 37 and a validation loss of 1.5e8 (bf16).
DIVERGENCE_FACTOR = 4.0
DIVERGENCE_STEPS = 10
VAL_DIVERGENCE_FACTOR = 10.0
VAL_CHANCE_FACTOR = 1.5
# A training set whose largest class has this many times the images of its smallest is imbalanced
# enough for top-1 to flatter a classifier that neglects the small classes: the run says so.
IMBALANCE_RATIO = 5
# A run that has taken this many steps and still classifies its training and validation images at
# chance (not 2 standard errors above 1/classes) has stopped learning; fewer steps may not have started.
CHANCE_MIN_STEPS = 100


@dataclass
class Run:
    """What a finished training run left behind."""

    directory: Path
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    test_metrics: Metrics | None = None
    model: nn.Module | None = None
    main_process: bool = True  # rank 0, which writes the run folder (under torchrun, one of several)

    @property
    def weights_path(self) -> Path:
        return RunFolder(self.directory).weights


class NonFiniteLoss(AlexNetError):
    """The training loss became NaN or infinite."""

    exit_code = 3


class Diverged(NonFiniteLoss):
    """The training loss climbed far above where it started, or the run stayed at chance."""


def at_chance(top1: float, count: int, classes: int) -> bool:
    """Whether a top-1 of ``top1`` over ``count`` images is no better than guessing among ``classes``:
    not two binomial standard errors above 1/classes."""
    chance = 1.0 / classes
    return top1 <= chance + 2.0 * math.sqrt(chance * (1.0 - chance) / max(1, count))


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal (Ctrl-C, SIGTERM) after saving its position."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          overrides: dict | None = None) -> Run:
    """Train a model as ``config`` says, or continue the run folder ``resume``; returns the Run.

    ``overrides`` (with ``resume``): configuration values to change when continuing, e.g.
    ``{"epochs": 20}`` to train a finished run longer; only ``RESUMABLE_FIELDS`` may change.
    """
    group = init_process_group(config.device if config else "auto")
    trainer = None
    try:
        with _StopRequest.installed() as stop:
            trainer = _Trainer(config, resume, group, overrides or {}, stop)
            return trainer.run()
    except WriteError as error:
        folder = trainer.folder if trainer else None
        if folder is None or not folder.last.is_file():
            raise
        raise WriteError(f"{error}; then continue with: alexnet train --resume {folder.directory} (the last "
                         f"good checkpoint is kept)") from None
    finally:
        if trainer is not None:
            trainer.close()
        destroy_process_group()


class _StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM set a flag that the loop reads after each step, so the position
    it saves is a whole step's; a second Ctrl-C stops at once. SIGTERM never stops at once: a
    scheduler (and torchrun, after a Ctrl-C) sends it to every process, and the first signal's
    save must not be cut short by it."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise Interrupted(signum)
        if self.signum is None:
            self.signum = signum
            tqdm.write(f"{signal.Signals(signum).name}: stopping after this step and saving its position"
                       + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""), file=sys.stderr)

    @classmethod
    @contextlib.contextmanager
    def installed(cls):
        stop = cls()
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield stop
            return
        previous = {each: signal.signal(each, stop) for each in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield stop
        finally:
            for each, handler in previous.items():
                signal.signal(each, handler)


class _Trainer:
    def __init__(self, config: TrainConfig | None, resume: str | Path | None, group: ProcessGroup,
                 overrides: dict, stop: _StopRequest):
        self.group, self.stop = group, stop
        self.folder: RunFolder | None = None
        self.lock: RunLock | None = None
        self.updating = False  # between the optimiser's step and the step count: not a position to save
        self.threads_before: int | None = None
        self.pretrained: Pretrained | None = None  # what --init-from loaded and replaced
        self.frozen: list[str] = []  # parameters --freeze keeps as they are
        self.fresh = False  # this process created the run folder and nothing has been trained in it yet
        self.restarted = False  # resumed a run that had no checkpoint yet: it starts over
        self.stretched: tuple[int, int] | None = None  # (epochs before, steps done) when --epochs changed
        self.rate_changed: tuple[float, float] | None = None  # (lr before, after) when --resume --lr changed it
        self.trained_lr: float | None = None  # the rate the run to continue was trained at
        try:
            config, checkpoint = self._open(config, resume, overrides)
            self._build(config, checkpoint)
            if checkpoint is not None:
                self._restore(checkpoint)
            elif self.trained_lr is not None and self.trained_lr != config.lr:  # started over at another rate
                self.rate_changed = (self.trained_lr, config.lr)
                self.resumed_changes = {"lr": [self.trained_lr, config.lr]}
            self.writer = self._tensorboard()
        except BaseException:
            self.close()
            if self.fresh and self.group.is_main:
                self.folder.remove_unstarted()  # a run refused before its first step leaves nothing behind
            raise

    # -- opening the run folder ----------------------------------------------------------------

    def _open(self, config: TrainConfig | None, resume, overrides: dict) -> tuple[TrainConfig, dict | None]:
        """The run folder (created and locked, or the one to continue) and the configuration."""
        group = self.group
        if resume is None and config is not None:  # torchrun --max-restarts restarted the group
            resume = restarted_run_folder(config.out, config.name)
        if resume is None:
            if overrides:
                raise AlexNetError("configuration overrides apply only when continuing a run (--resume)")
            config = (config or TrainConfig()).resolved()
            config = self._settle_precision(config)
            directory = self._new_folder(config) if group.is_main else None
            self.folder = RunFolder(group.broadcast_object(str(directory) if directory else None))
            self.fresh = True
            if group.is_main:
                write_text(self.folder.config, config.to_yaml())
                if elastic_run_id():
                    write_text(self.folder.elastic_run_id, elastic_run_id())
            return config, None

        folder = self.folder = RunFolder(Path(resume))
        if not folder.config.is_file():
            raise AlexNetError(f"{folder.directory} is not a run folder (no config.yaml); pass the folder "
                               f"that `alexnet train` printed")
        if group.is_main:
            self.lock = folder.lock()
            folder.remove_stale_temporaries()
        written = TrainConfig.from_yaml(folder.config)
        checkpoint = load_checkpoint(folder.last) if folder.last.is_file() else None
        trained = written
        if checkpoint is not None and isinstance(checkpoint.get("config"), dict):
            trained = TrainConfig.from_dict(checkpoint["config"])  # what the weights were trained with
        config = _continued_config(trained, written, overrides).resolved()
        self.trained_lr = trained.lr
        if checkpoint is not None:
            _check_not_finished(folder, config, checkpoint["epoch"],
                                stops_early(checkpoint["history"], config.early_stopping))
        config = self._settle_precision(config)
        if group.is_main and config != written:
            write_text(folder.config, config.to_yaml())
        if checkpoint is None and group.is_main:
            # stopped (or restarted by torchrun) before its first checkpoint: start over, same config
            self.restarted = True
            folder.metrics.unlink(missing_ok=True)
        return config, checkpoint

    def _settle_precision(self, config: TrainConfig) -> TrainConfig:
        """The device and the precision, settled once for the run (``self.device``, ``self.dtype``).

        `auto` is settled by rank 0 and recorded: every process and any resume compute alike."""
        self.device = resolve_device(config.device, self.group.local_rank)
        precision = self.group.broadcast_object(precision_name(resolve_precision(config.precision, self.device)))
        self.dtype = resolve_precision(precision, self.device)  # fp32 or bf16 now: nothing to measure
        return dataclasses.replace(config, precision=precision)

    def _new_folder(self, config: TrainConfig) -> Path:
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
        self.lock = folder.lock()
        if folder.holds_run() and elastic_restart_count():
            folder.metrics.unlink(missing_ok=True)  # restarted by torchrun before any checkpoint: start over
        elif folder.holds_run():
            self.lock.release()
            self.lock = None
            _refuse_taken(folder)
        folder.checkpoints.mkdir(exist_ok=True)
        folder.remove_stale_temporaries()
        return folder.directory

    # -- building model, data, optimiser -------------------------------------------------------

    def _build(self, config: TrainConfig, checkpoint: dict | None = None) -> None:
        group = self.group
        resuming = checkpoint is not None
        self.config = config  # its device and precision settled by _settle_precision: self.device, self.dtype
        if self.device.type == "cpu":  # one thread per physical core while training; close() gives back the caller's
            self.threads_before = torch.get_num_threads()
            set_threads(config.threads)
        self.autocast = lambda: autocast_context(self.device, self.dtype)
        self.scaler = gradient_scaler(self.device, self.dtype)  # fp16: loss scaling; otherwise does nothing
        group.barrier()  # rank 0 has written config.yaml (and holds the lock) before anyone reads data

        info = dataset_info(config.dataset)
        # The class count first (a folder's from its class folders, no image read), then the model,
        # once, then its data: the input size and the input scale are the model's.
        options = {**config.model_options, "num_classes": num_classes(config.dataset, config.data_dir)}
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, **options)
        batch = per_process_batch(config.batch_size, group.world_size)
        # The paper's only preprocessing is subtracting the mean from raw 0..255 pixels (Section 2),
        # and its N(0, 0.01) initialisation is sized for inputs of that scale; otherwise inputs are
        # standardised to unit scale, which PyTorch's default initialisation expects.
        raw_scale = self.model.init == "paper"
        self.normalization = (info.mean, (1 / 255,) * len(info.mean) if raw_scale else info.std)
        if resuming and "normalization" in checkpoint:  # as trained, whatever became of an --init-from source
            self.normalization = tuple(tuple(values) for values in checkpoint["normalization"])
        elif config.init_from:  # fine-tuning: the features expect the inputs they were trained on
            trained = read_trained_metadata(config.init_from)
            if len(trained.mean) == len(info.mean):  # (grey weights on RGB data keep the data's)
                self.normalization = (tuple(trained.mean), tuple(trained.std))
        self.loader_options = config.loader_options(
            device=self.device, output_shape=self.model.input_size, normalization=self.normalization, batch_size=batch,
            rank=group.rank, world_size=group.world_size,
        )
        self.data = build_loaders(config.dataset, self.loader_options)
        if self.model.num_classes != len(self.data.classes):  # the two ways of counting must agree
            raise AlexNetError(f"{config.dataset}: {len(self.data.classes)} classes in the data, "
                               f"{self.model.num_classes} counted from its folders; check --data-dir")
        self.class_weights = None
        if config.class_weights == "balanced":  # sklearn's "balanced": images / (classes * class count)
            counts = torch.tensor(self.data.class_counts, dtype=torch.float32).clamp(min=1)
            self.class_weights = (counts.sum() / (len(counts) * counts)).to(self.device)
        if config.init_from and not resuming:  # the class names decide whether the classifier is kept
            self.pretrained = load_pretrained(self.model, config.init_from, self.data.classes, config.head)
        self.frozen = freeze(self.model, config.freeze)
        prepare_model(self.model, self.device, channels_last=config.channels_last)  # compile: in _wrap, after DDP
        self.steps_per_epoch = len(self.data.train) // config.accumulation_steps
        if self.steps_per_epoch == 0:
            raise AlexNetError(_too_few_images(self.data.train, config, group.world_size))
        self.optimizer = _make_optimizer(self.model, config, self.device)
        self.scheduler = _make_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.forward_model = self._wrap(self.model)
        self.epoch, self.step, self.history, self.best_top1 = 0, 0, [], -1.0
        self.partial = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (this epoch)
        self.start_loss: float | None = None  # the first step's training loss (divergence is measured from it)
        self.smoothed_loss: float | None = None  # the moving average of the training loss (bias-corrected)
        self.smoothed_steps = 0  # steps in that average
        self.resumed_changes: dict = {}  # values --resume changed ({"lr": [before, after]}), for the history

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Run:
        config = self.config
        self.log(f"run folder: {self.folder.directory}")
        changes = config.recipe_changes()
        if changes:  # a model trains as itself unless a recipe says otherwise, and then it says so
            self.log(f"recipe {config.recipe} changes {config.model}: {', '.join(changes)} (pass the switch, "
                     f"e.g. --{changes[0].split()[0]} {changes[0].split()[1]}, to keep the model's own)")
        self.log(f"{config.model} on {config.dataset}: recipe {config.recipe}, {config.epochs} epochs, "
                 f"batch {config.batch_size}, lr {config.lr}, {precision_name(self.dtype)} on "
                 f"{self.device}" + (f", {self.group.world_size} processes" if self.group.distributed else "")
                 + (f", {config.allreduce_dtype} gradient all-reduce" if self.group.distributed else "")
                 + (f", {config.accumulation_steps} micro-batches per step" if config.accumulation_steps > 1 else ""))
        if self.pretrained:
            self.log(self.pretrained.describe())
        counts = self.data.class_counts
        if counts and min(counts) and max(counts) >= IMBALANCE_RATIO * min(counts):
            largest, smallest = counts.index(max(counts)), counts.index(min(counts))
            balanced = config.class_weights == "balanced" or config.sampler == "balanced"
            self.log(f"warning: the training classes are imbalanced: {self.data.classes[largest]!r} has "
                     f"{max(counts)} images, {self.data.classes[smallest]!r} {min(counts)} ({max(counts) / min(counts):.0f}x); "
                     + ("the loss is balanced (--class-weights/--sampler balanced)" if balanced else
                        "consider --class-weights balanced or --sampler balanced, and read balanced accuracy "
                        "beside top-1"))
        elif counts and not min(counts):
            self.log(f"warning: no training images of {self.data.classes[counts.index(0)]!r}")
        if config.init_from:
            self.log(describe_frozen(self.frozen) + (f"; pretrained layers learn at {config.backbone_lr_scale:g}x "
                                                     f"the rate" if config.backbone_lr_scale != 1 else ""))
        if self.stretched:
            self.log(f"epochs {self.stretched[0]} -> {config.epochs}: the {self.config.schedule} schedule now "
                     f"spans {config.epochs} epochs and goes on from its step {self.stretched[1]} "
                     f"(lr {self._learning_rate():.3g})")
        if self.rate_changed:
            before, after = self.rate_changed
            self.log(f"lr {before:g} -> {after:g}: " + ("starting over at the new rate" if self.restarted else
                     f"every rate of the optimiser and the {config.schedule} schedule scaled by {after / before:.3g}")
                     + " (recorded as resumed_with in the next epoch's row of metrics.jsonl)")
        if self.restarted:
            self.log(f"no checkpoint in {self.folder.checkpoints} (the run stopped before its first one): "
                     f"starting it over from epoch 1 with its configuration")
        if self.epoch >= config.epochs:  # every epoch trained, stopped before its final test
            self.log(f"all {self.epoch} epochs trained; testing them (the run stopped before its final test)")
        elif self.epoch or self.step:
            restarts = elastic_restart_count()
            self.log(f"continuing from epoch {self.epoch + 1}, step {self.step}"
                     + (f" (torchrun restart {restarts})" if restarts else ""))
        try:
            while self.epoch < config.epochs and not stops_early(self.history, config.early_stopping):
                self._train_epoch()
                if self.stop.signum is not None:
                    raise Interrupted(self.stop.signum)
            if self.epoch < config.epochs:
                best = best_epoch(self.history)
                self.log(f"early stopping after epoch {self.epoch} of {config.epochs}: validation top-1 has not "
                         f"improved for {config.early_stopping} epochs (best {self.history[best - 1]['val_top1']:.2%} "
                         f"in epoch {best}, whose weights are checkpoints/best.pt); testing the last epoch's")
        except KeyboardInterrupt as interrupt:
            name = signal.Signals(getattr(interrupt, "signum", signal.SIGINT)).name
            # Cut inside an optimiser step, the weights are neither before nor after it. Under
            # torchrun, each process holds its own share of the epoch's running totals, and a group
            # that is stopping (or has lost a process) cannot be counted on to gather them: there,
            # the epoch's checkpoint is the position to continue from.
            if self.updating or (self.group.distributed and self.step):
                kept = f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else "no checkpoint yet"
                self.log(f"{name}: stopped in epoch {self.epoch + 1} at step {self.step}; {kept}. Continue "
                         f"with: alexnet train --resume {self.folder.directory}")
            else:
                if self.group.is_main:
                    self._save("last.pt")
                self.log(f"{name}: stopped in epoch {self.epoch + 1} at step {self.step}; saved. Continue with: "
                         f"alexnet train --resume {self.folder.directory}")
            raise
        except RuntimeError as error:
            if not (self.group.distributed and lost_peer(error)):
                raise
            raise AlexNetError(
                f"process {self.group.rank} of {self.group.world_size} lost contact with the others "
                f"({str(error).splitlines()[0][:300]}); another process has probably died: torchrun's "
                f"report names the first failure. Continue from the last checkpoint with the same "
                f"command and --resume {self.folder.directory}"
            ) from error
        return self._finish()

    def _train_epoch(self) -> None:
        """One epoch: its steps, then (unless a signal stopped it) validation and the epoch's records."""
        stepped = self._train_steps()
        if stepped is not None:
            self._end_epoch(*stepped)

    def _train_steps(self) -> tuple[torch.Tensor, float, int] | None:
        """The epoch's optimiser steps from ``self.step`` on; returns (loss sum, correct, count) summed
        over processes, the seconds and the images this process saw; None when a signal stopped it."""
        config, model = self.config, self.forward_model
        loader = self.data.train
        loader.set_epoch(self.epoch)
        model.train()
        keep_frozen_norms_still(self.model, config.freeze)
        start, images_seen = time.perf_counter(), 0
        window: list[torch.Tensor] = []
        totals = self.partial = self.partial.to(self.device)  # updated in place, saved on interrupt
        # A progress bar redraws itself with carriage returns: in a log file (nohup, a cluster job, CI)
        # that is one line per step, ~400 KB for the main job, so there the epoch's line is all.
        bar = tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                   disable=config.quiet or not self.group.is_main or not sys.stderr.isatty(),
                   leave=False, dynamic_ncols=True)
        batches = iter(loader)
        for _ in range(self.step * config.accumulation_steps):  # resuming mid-epoch: replay the data
            next(batches)
        with contextlib.closing(bar):
            while self.step < self.steps_per_epoch:
                if self.stop.signum is not None:
                    return None  # run() saves this position
                try:
                    loss, correct, count = self._optimizer_step(batches)
                except Exception:
                    if self.stop.signum is not None and not self.updating:
                        return None  # Ctrl-C also reached the DataLoader's workers: stop before the step
                    raise
                totals[0] += loss.detach().double() * count  # stays on the device: no sync per step
                totals[1] += correct
                totals[2] += count
                window.append(loss.detach())
                self.step += 1
                self.updating = False
                images_seen += count
                if len(window) == NAN_CHECK_EVERY or self.step == self.steps_per_epoch:
                    self._check_finite(window)
                    if config.divergence_check:
                        self._check_divergence(window)
                    window.clear()
                    rate = images_seen * self.group.world_size / (time.perf_counter() - start)
                    bar.set_postfix(loss=f"{totals[0].item() / totals[2].item():.3f}",
                                    acc=f"{totals[1].item() / totals[2].item():.3f}", img_s=f"{rate:.0f}")
                bar.update(1)
        seconds = time.perf_counter() - start
        return self.group.all_reduce_sum(totals), seconds, images_seen

    def _end_epoch(self, totals: torch.Tensor, seconds: float, images_seen: int) -> None:
        """Validation, the learning-rate plateau rule, and the epoch's row, checkpoints and log line,
        written through the run folder."""
        config = self.config
        val, _ = evaluate_model(self.model, self.data.val, self.data.classes, device=self.device,
                                precision=self.dtype)
        lr = self._learning_rate()  # the epoch's (its last step's, when it varies)
        if config.schedule == "plateau":
            self.scheduler.step(1.0 - val.top1)  # sets the next epoch's
        row = {
            "epoch": self.epoch + 1,
            "train_loss": totals[0].item() / totals[2].item(),
            "train_top1": totals[1].item() / totals[2].item(),
            "val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5,
            "lr": lr,
            "images_per_second": images_seen * self.group.world_size / seconds,
            "epoch_seconds": seconds,
        }
        if self.resumed_changes:  # the run's history says where --resume changed its course
            row["resumed_with"] = self.resumed_changes
            self.resumed_changes = {}
        classes = len(self.data.classes)
        val_at_chance = at_chance(val.top1, val.count, classes)
        stuck = (config.divergence_check and (self.epoch + 1) * self.steps_per_epoch >= CHANCE_MIN_STEPS
                 and at_chance(row["train_top1"], int(totals[2].item()), classes) and val_at_chance)
        # A network whose validation loss has exploded is broken, whether its top-1 is exactly at
        # chance or a little above (measured: 11.96% of 5,000 images, top-5 50%, at a validation loss
        # of 23.7 for 10 classes): under 1.5x chance counts, when its training images are near chance
        # too. A healthy run on a few images can pass through a validation loss as high while it fits
        # its training images (measured: 23.2 at 27% validation top-1, 5 classes, 100 images, epoch 6).
        exploded = (config.divergence_check and val.top1 < VAL_CHANCE_FACTOR / classes
                    and row["train_top1"] < VAL_CHANCE_FACTOR / classes
                    and not val.loss <= VAL_DIVERGENCE_FACTOR / DIVERGENCE_FACTOR * self._divergence_threshold())
        if exploded or stuck:  # neither this epoch's records nor its checkpoint: the last good one stays the one to resume
            self.log(f"epoch {row['epoch']:>3}/{config.epochs}  train loss {row['train_loss']:.4f} "
                     f"top-1 {row['train_top1']:.2%}  val loss {val.loss:.4f} top-1 {val.top1:.2%}")
            raise Diverged(self._failure(
                f"the validation loss diverged in epoch {row['epoch']}: {val.loss:.4g}, above "
                f"{VAL_DIVERGENCE_FACTOR / DIVERGENCE_FACTOR * self._divergence_threshold():.3g}, near chance "
                f"(validation top-1 {val.top1:.2%}, chance {1 / classes:.2%})" if exploded else
                f"after epoch {row['epoch']} ({row['epoch'] * self.steps_per_epoch} steps) the network still "
                f"classifies at chance (training top-1 {row['train_top1']:.2%}, validation {val.top1:.2%}, "
                f"chance {1 / classes:.2%})"))
        self.history.append(row)
        self.epoch, self.step = self.epoch + 1, 0
        self.partial = torch.zeros(3, dtype=torch.float64)
        improved = val.top1 > self.best_top1
        self.best_top1 = max(self.best_top1, val.top1)
        if self.group.is_main:
            append_text(self.folder.metrics, json.dumps(row) + "\n")
            if (self.epoch % config.checkpoint_every == 0 or self.epoch == config.epochs
                    or stops_early(self.history, config.early_stopping)):
                self._save("last.pt")
            if improved:
                self._save("best.pt")
            if self.writer:
                for key, value in row.items():
                    if key != "epoch":
                        self.writer.add_scalar(key, value, self.epoch)
        skipped = self.data.train.skipped
        val_skipped = self.data.val.skipped
        self.log(f"epoch {row['epoch']:>3}/{config.epochs}  train loss {row['train_loss']:.4f} "
                 f"top-1 {row['train_top1']:.2%}  val loss {val.loss:.4f} top-1 {val.top1:.2%} "
                 f"top-5 {val.top5:.2%}  lr {row['lr']:.2e}  {row['images_per_second']:.0f} img/s  "
                 f"{seconds:.0f}s" + (f"  ({skipped} unreadable training images skipped)" if skipped else "")
                 + (f"  ({val_skipped} unreadable validation images skipped)" if val_skipped else ""))

    def _optimizer_step(self, batches) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimiser step over ``accumulation_steps`` micro-batches; gradients are all-reduced
        only on the last of them (``no_sync`` on the others)."""
        config = self.config
        loss_sum = correct = torch.zeros((), device=self.device)
        count = 0
        for micro in range(config.accumulation_steps):
            images, labels = next(batches)
            sync = micro == config.accumulation_steps - 1
            context = contextlib.nullcontext() if sync or not self.group.distributed else self.forward_model.no_sync()
            with context:
                with self.autocast():
                    logits = self.forward_model(images)
                    loss = F.cross_entropy(logits.float(), labels, weight=self.class_weights,
                                           label_smoothing=config.label_smoothing)
                self.scaler.scale(loss / config.accumulation_steps).backward()
            loss_sum = loss_sum + loss.detach() * len(labels)
            correct = correct + (logits.argmax(1) == labels).sum()
            count += len(labels)
        self.updating = True  # until the caller has counted the step
        self.scaler.step(self.optimizer)  # fp16: skipped, and the scale lowered, where a gradient overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.schedule != "plateau":
            self.scheduler.step()
        return loss_sum / count, correct, count

    def _learning_rate(self) -> float:
        """The rate shown and logged: the new layers' when fine-tuning (the pretrained ones learn at
        ``backbone_lr_scale`` times it, 0 when they are kept still), else the one rate."""
        groups = self.optimizer.param_groups
        return next((group["lr"] for group in groups if group.get("rate") == "full"), groups[0]["lr"])

    def _check_finite(self, window: list[torch.Tensor]) -> None:
        losses = torch.stack(window)
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0])
        step = self.step - len(window) + first + 1
        raise NonFiniteLoss(self._failure(f"the loss became {losses[first].item()} at epoch {self.epoch + 1}, "
                                          f"step {step}") + " Check the data too (--strict stops at an unreadable image).")

    def _divergence_threshold(self) -> float:
        return DIVERGENCE_FACTOR * max(self.start_loss or 0.0, math.log(len(self.data.classes)))

    def _check_divergence(self, window: list[torch.Tensor]) -> None:
        """Stop when the smoothed training loss is far above its start and chance."""
        # Every process decides on the same numbers (the mean over processes), so all stop together.
        losses = (self.group.all_reduce_sum(torch.stack(window).float()) / self.group.world_size).cpu().tolist()
        if self.start_loss is None:
            self.start_loss = losses[0]
        threshold = self._divergence_threshold()
        beta = 1.0 - 1.0 / DIVERGENCE_STEPS
        for index, loss in enumerate(losses):
            # the average's sum, then its bias correction (an average of k steps weighs 1 - beta^k)
            self.smoothed_steps += 1
            raw = (self.smoothed_loss or 0.0) * (1.0 - beta ** (self.smoothed_steps - 1))
            raw = beta * raw + (1.0 - beta) * loss
            self.smoothed_loss = raw / (1.0 - beta ** self.smoothed_steps)
            if self.smoothed_steps >= DIVERGENCE_STEPS and self.smoothed_loss > threshold:
                step = self.step - len(losses) + index + 1
                raise Diverged(self._failure(
                    f"the training loss diverged in epoch {self.epoch + 1}: at step {step} its average over the "
                    f"last ~{DIVERGENCE_STEPS} steps was {self.smoothed_loss:.4g}, above {threshold:.3g} "
                    f"({DIVERGENCE_FACTOR:g}x the larger of its first step's {self.start_loss:.3g} and chance's "
                    f"ln({len(self.data.classes)}))"))

    def _failure(self, what: str) -> str:
        """What failed, at which rate, what is kept and what to do: the message of a run that stopped."""
        rate = self.config.lr
        kept = (f"the checkpoint of epoch {self.epoch} is kept" if self.epoch
                else "no epoch ended well, so there is no checkpoint: a resume starts over")
        return (f"{what}, at learning rate {rate:g} (this step's: {self._learning_rate():.3g}). "
                f"The rate is probably too high. Training stopped; {kept} in {self.folder.directory}. Continue "
                f"at a lower rate with: alexnet train --resume {self.folder.directory} --lr {rate / 10:g} "
                f"(or find one with: alexnet lr-find), or turn this check off with --no-divergence-check.")

    # -- the end -------------------------------------------------------------------------------

    def _finish(self) -> Run:
        """The final test, as the configuration's test views say, and the weights that record them."""
        config, folder = self.config, self.folder
        views = TestViews.from_config(config)
        test = self.data.test
        if views.views == "ten":  # cut from test images 256/224 larger than the training crops
            # the test images the run held out; an unreadable one is skipped and counted, as evaluate does
            options = dataclasses.replace(self.loader_options, test_size=self.data.test_size, strict=False)
            test, _ = test_loader(config.dataset, views, self.model.input_size, options)
        metrics, _ = evaluate_model(self.model, test, self.data.classes, device=self.device,
                                    precision=self.dtype, views=views)
        run = Run(folder.directory, config, self.history, metrics, self.model, self.group.is_main)
        if self.group.is_main:
            save_weights(folder.weights, self.model, WeightsMetadata(
                model=config.model, model_options={**config.model_options}, class_names=tuple(self.data.classes),
                input_size=tuple(self.model.input_size), mean=tuple(self.normalization[0]),
                std=tuple(self.normalization[1]), dataset=config.dataset, data_dir=config.data_dir,
                val_size=config.val_size, test_size=self.data.test_size, seed=config.seed, precision=config.precision,
                test_files=files_digest(self.data.test.samples, config.data_dir) if self.data.test_size else None,
                test_views=views.to_dict(), epochs=self.epoch, test_top1=metrics.top1,
            ))
            # A test taken on the validation images (no test split apart from them) says so: early
            # stopping and the plateau schedule chose by them, so it is no independent test.
            split = "val" if self.data.test_is_val else "test"
            write_text(folder.evaluation, json.dumps(
                {"split": split, "dataset": config.dataset, "views": views.views, "epochs": self.epoch, **metrics.to_dict()}, indent=2))
            self.log(f"{'validation' if self.data.test_is_val else 'test'}: top-1 {metrics.top1:.2%}  "
                     f"balanced {metrics.balanced_accuracy:.2%}  top-5 {metrics.top5:.2%}  loss {metrics.loss:.4f}  "
                     f"macro F1 {metrics.macro_f1:.4f}  ({views.describe()}"
                     + ("; the validation images, as there is no test split apart from them" if self.data.test_is_val
                        else "") + ")")
            self.log(f"weights: {run.weights_path}")
            if self.writer:
                self.writer.close()
        self.group.barrier()
        return run

    # -- helpers -------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if not self.group.is_main:
            return
        tqdm.write(message)
        append_text(self.folder.log, message + "\n")

    def close(self) -> None:
        """Let the run folder go (the lock; the process ending would also release it), and give the
        caller back its thread count: a library call leaves the process as it found it."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.threads_before is not None:
            torch.set_num_threads(self.threads_before)
            self.threads_before = None

    def _wrap(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.group.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
            if self.config.allreduce_dtype == "bf16":
                from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

                wrapped.register_comm_hook(None, default_hooks.bf16_compress_hook)
        if self.config.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    def _tensorboard(self):
        if not (self.config.tensorboard and self.group.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AlexNetError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.folder.directory / "tensorboard"))

    def _save(self, name: str) -> None:
        save_checkpoint(self.folder.checkpoints / name, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "partial": self.partial.cpu(),
            "history": self.history, "best_top1": self.best_top1,
            "start_loss": self.start_loss, "smoothed_loss": self.smoothed_loss, "smoothed_steps": self.smoothed_steps,
            "resumed_changes": self.resumed_changes,
            "rng": rng_state(),
            "config": json.loads(json.dumps(self.config.__dict__)),
            # the inputs' mean/std: resuming a fine-tuned run needs no --init-from source any more
            "normalization": [list(self.normalization[0]), list(self.normalization[1])],
        })

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.partial = state["epoch"], state["step"], state["partial"]
        if not self.group.is_main:  # rank 0's sums are in the checkpoint once; they are all-reduced
            self.partial = torch.zeros_like(self.partial)
        self.history, self.best_top1 = list(state["history"]), state["best_top1"]
        self.start_loss, self.smoothed_loss = state.get("start_loss"), state.get("smoothed_loss")
        self.smoothed_steps = state.get("smoothed_steps", 0)
        self.resumed_changes = dict(state.get("resumed_changes") or {})
        set_rng_state(state["rng"])
        trained_lr = state.get("config", {}).get("lr", self.config.lr)
        if trained_lr != self.config.lr:
            self._change_rate(trained_lr)
        trained_epochs = state.get("config", {}).get("epochs", self.config.epochs)
        if trained_epochs != self.config.epochs and self.config.schedule in ("onecycle", "cosine"):
            self._stretch_schedule(trained_epochs)
        if self.group.is_main:  # drop epochs logged after the checkpoint was written
            lines = [json.dumps(row) for row in self.history]
            write_text(self.folder.metrics, "".join(line + "\n" for line in lines))

    def _change_rate(self, trained_lr: float) -> None:
        """``--resume --lr``: every rate the optimiser and the schedule hold (each group's, the
        one-cycle peak and floor, the schedule's base) scaled by new / old, so the schedule goes on
        from where it was at the new rate; the divergence count starts again."""
        ratio = self.config.lr / trained_lr
        for group in self.optimizer.param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if isinstance(group.get(key), float):
                    group[key] *= ratio
        for key in ("base_lrs", "_last_lr", "min_lrs"):
            values = getattr(self.scheduler, key, None)
            if isinstance(values, list):
                setattr(self.scheduler, key, [value * ratio if isinstance(value, float) else value for value in values])
        self.smoothed_loss, self.smoothed_steps = None, 0
        self.resumed_changes = {**self.resumed_changes, "lr": [trained_lr, self.config.lr]}
        self.rate_changed = (trained_lr, self.config.lr)

    def _stretch_schedule(self, trained_epochs: int) -> None:
        """A schedule whose length is the number of epochs (one-cycle, cosine), redrawn for the new
        number and moved to the steps already taken: the rate goes on from the longer curve's value."""
        done = self.epoch * self.steps_per_epoch + self.step
        self.scheduler = _make_scheduler(self.optimizer, self.config, self.steps_per_epoch)
        with warnings.catch_warnings():  # stepping a scheduler without an optimiser step warns
            warnings.simplefilter("ignore")
            for _ in range(done):
                self.scheduler.step()
        self.stretched = (trained_epochs, done)


def _make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimiser over the trainable parameters (frozen ones are left out), in groups:
    with and without weight decay, and, when fine-tuning, the new classifier at ``lr`` and the
    pretrained rest at ``lr * backbone_lr_scale``."""
    head = classifier_parameter_ids(model) if config.init_from else set()
    groups: dict[tuple[bool, bool], list] = {}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        decays = parameter.ndim > 1 or config.decay_norm_and_bias
        groups.setdefault((decays, id(parameter) in head or not config.init_from), []).append(parameter)
    param_groups = [
        {"params": params, "weight_decay": config.weight_decay if decays else 0.0,
         "lr": config.lr if full_rate else config.lr * config.backbone_lr_scale,
         "rate": "full" if full_rate else "backbone"}
        for (decays, full_rate), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))
    ]
    fast = optimizer_options(device)  # one fused step over all parameters
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, **fast)
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, **fast)
    return torch.optim.AdamW(param_groups, lr=config.lr, **fast)


def _make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
            threshold=config.plateau_threshold, threshold_mode="abs")
    if config.schedule == "onecycle":
        # OneCycleLR counts the rate before the first step as step 0, so T steps end on its step T
        # of T + 1. It divides by the length of each phase, so each needs a step or more: a run of
        # a handful of steps (a small --subset) warms up over at least two of at least three.
        total = max(total + 1, 3)
        warmup = max(config.warmup_fraction, 2 / total)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total, pct_start=warmup,
            div_factor=10, final_div_factor=100)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "step":  # stepped every optimiser step: a fall every step_epochs epochs
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_epochs * max(1, steps_per_epoch),
                                               gamma=config.step_factor)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _continued_config(trained: TrainConfig, written: TrainConfig, overrides: dict) -> TrainConfig:
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


def _refuse_taken(folder: RunFolder) -> None:
    """Refuse to start a new run in a folder that holds one, saying how to continue it."""
    if folder.last.is_file():
        raise AlexNetError(f"{folder.directory} already holds a run; continue it with --resume "
                           f"{folder.directory}, or choose another --name")
    raise AlexNetError(
        f"{folder.directory} holds a run that stopped before its first checkpoint; start it over with "
        f"--resume {folder.directory} (same configuration), or choose another --name")


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
    folder = RunFolder(Path(resume))
    if not folder.config.is_file():
        raise AlexNetError(f"{folder.directory} is not a run folder (no config.yaml); pass the folder "
                           f"that `alexnet train` printed")
    _check_free(folder)
    written = TrainConfig.from_yaml(folder.config)
    checkpoint = load_checkpoint(folder.last) if folder.last.is_file() else None
    trained = written
    if checkpoint is not None and isinstance(checkpoint.get("config"), dict):
        trained = TrainConfig.from_dict(checkpoint["config"])
    config = _continued_config(trained, written, overrides or {}).resolved()
    if checkpoint is not None:
        stopped = stops_early(checkpoint["history"], config.early_stopping)
        _check_not_finished(folder, config, checkpoint["epoch"], stopped)
    per_process_batch(config.batch_size, processes)


def _check_free(folder: RunFolder) -> None:
    """Refuse a folder another process is training in (the lock is taken and let go at once)."""
    if folder.lock_file.exists():
        folder.lock().release()


def _same_augmentation(spec, trained, dataset: str) -> bool:
    from ..data import resolve_augment

    try:
        return resolve_augment(spec, dataset) == resolve_augment(trained, dataset)
    except AlexNetError:  # a bad spec is refused by name as a change
        return False


def best_epoch(history: list[dict]) -> int:
    """The (first) epoch, counted from 1, with the highest validation top-1."""
    return max(range(len(history)), key=lambda index: (history[index]["val_top1"], -index)) + 1


def stops_early(history: list[dict], patience: int) -> bool:
    """Whether ``patience`` epochs have passed without a better validation top-1 (0: never stop).

    Worked out from the per-epoch records alone, so a resumed run, and a run stopped early that is
    asked to go on with another patience (``--resume DIR --early-stopping 0``), decide alike."""
    return bool(patience and history) and len(history) - best_epoch(history) >= patience


def _check_not_finished(folder: RunFolder, config: TrainConfig, trained_epochs: int, stopped: bool = False) -> None:
    """Refuse to "continue" a run that has nothing left to do, saying how to train it longer."""
    if config.epochs < trained_epochs:
        raise AlexNetError(f"{folder.directory} has trained {trained_epochs} epochs already; --epochs must be "
                           f"at least that (more trains it longer)")
    if stopped and folder.weights.is_file() and _tested_epochs(folder) == trained_epochs:
        raise AlexNetError(
            f"{folder.directory} stopped early after epoch {trained_epochs}: validation top-1 had not improved for "
            f"{config.early_stopping} epochs, and it is tested. To train it on: alexnet train --resume "
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
        f"{folder.directory} has finished: all {trained_epochs} epochs trained and tested{score}. To train "
        f"it longer: alexnet train --resume {folder.directory} --epochs {trained_epochs + 10} (say)"
    )


def _tested_epochs(folder: RunFolder) -> int | None:
    """The epochs of the weights that evaluation.json tested; None when it cannot be read."""
    try:
        evaluation = json.loads(folder.evaluation.read_text())
    except (OSError, ValueError):
        return None
    return evaluation.get("epochs") if isinstance(evaluation, dict) else None


def _too_few_images(loader, config: TrainConfig, world_size: int) -> str:
    """Why an epoch would have no step, and the smallest subset or largest batch that gives one."""
    images = loader.num_images
    per_step = config.batch_size * config.accumulation_steps
    subset = f" ({config.subset:g} of the training set)" if config.subset < 1 else ""
    if images < world_size * config.accumulation_steps:  # no batch size helps: too few images are left
        held_out = f" after --val-size {config.val_size} held out for validation" if config.val_size else ""
        return (f"{images} training images{subset} are left{held_out}: not one per process and micro-batch; "
                f"hold out fewer with a smaller --val-size" + (", or use a larger --subset" if config.subset < 1 else ""))
    advice = f"a --batch-size of at most {images // (world_size * config.accumulation_steps) * world_size}"
    if config.subset < 1:
        whole = images / config.subset
        advice = (f"a --subset of at least {math.ceil(per_step / whole * 1000) / 1000:g}, or " + advice)
    return (f"{images} training images{subset} are fewer than one step takes ({per_step}: batch "
            f"{config.batch_size} x {config.accumulation_steps} accumulation steps); use {advice}")
