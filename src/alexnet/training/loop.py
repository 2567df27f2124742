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
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import build_loaders, dataset_info, files_digest, num_classes
from ..errors import AlexNetError
from ..evaluation import Evaluation, Metrics, evaluate_model, test_loader
from ..inference import TestViews, read_trained_metadata
from ..models import build_model
from ..formatting import counted
from ..perf import (
    autocast_context, gradient_scaler, precision_name, prepare_model, resolve_device, resolve_precision, set_threads,
)
from ..runs import RunFolder, RunLock, WriteError, append_text, write_text
from ..weights import WeightsMetadata, save_weights
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import (
    ProcessGroup, destroy_process_group, elastic_restart_count, elastic_run_id,
    init_process_group, lost_peer, per_process_batch, restarted_run_folder,
)
from .divergence import (
    DIVERGENCE_FACTOR, DIVERGENCE_STEPS, NAN_CHECK_EVERY, Diverged, NonFiniteLoss, divergence_threshold,
    epoch_divergence, first_non_finite, moving_average,
)
from .early_stopping import best_epoch, stops_early
from .finetune import Pretrained, describe_frozen, freeze, keep_frozen_norms_still, load_pretrained
from .optim import current_learning_rate, make_optimizer, make_scheduler, redrawn_scheduler, scale_rates
from .resume import folder_to_continue, new_folder, read_continuation

# A training set whose largest class has this many times the images of its smallest is imbalanced
# enough for top-1 to flatter a classifier that neglects the small classes: the run says so.
IMBALANCE_RATIO = 5


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
    """One run, in the order it happens: open the run folder, build the model and its data, then the
    optimiser, start from the first step or a checkpoint's position (``__init__``); then train epoch
    by epoch and finish with the test (``run``)."""

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
            self._build_optimizer()
            self.forward_model = self._wrap(self.model)
            self._start(checkpoint)
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
            directory = None
            if group.is_main:
                folder, self.lock = new_folder(config)
                directory = str(folder.directory)
            self.folder = RunFolder(group.broadcast_object(directory))
            self.fresh = True
            if group.is_main:
                write_text(self.folder.config, config.to_yaml())
                if elastic_run_id():
                    write_text(self.folder.elastic_run_id, elastic_run_id())
            return config, None

        folder = self.folder = folder_to_continue(resume)
        if group.is_main:
            self.lock = folder.lock()
            folder.remove_stale_temporaries()
        continuation = read_continuation(folder, overrides)
        self.trained_lr = continuation.trained.lr
        config = self._settle_precision(continuation.config)
        if group.is_main and config != continuation.written:
            write_text(folder.config, config.to_yaml())
        if continuation.checkpoint is None and group.is_main:
            # stopped (or restarted by torchrun) before its first checkpoint: start over, same config
            self.restarted = True
            folder.metrics.unlink(missing_ok=True)
        return config, continuation.checkpoint

    def _settle_precision(self, config: TrainConfig) -> TrainConfig:
        """The device and the precision, settled once for the run (``self.device``, ``self.dtype``).

        `auto` is settled by rank 0 and recorded: every process and any resume compute alike."""
        self.device = resolve_device(config.device, self.group.local_rank)
        precision = self.group.broadcast_object(precision_name(resolve_precision(config.precision, self.device)))
        self.dtype = resolve_precision(precision, self.device)  # fp32 or bf16 now: nothing to measure
        return dataclasses.replace(config, precision=precision)

    # -- building model, data, optimiser -------------------------------------------------------

    def _build(self, config: TrainConfig, checkpoint: dict | None = None) -> None:
        """The device's settings, the model and its data, as ``config`` says (and, resuming, the
        inputs' normalisation as the ``checkpoint`` was trained with)."""
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

    def _build_optimizer(self) -> None:
        """The optimiser over the trainable parameters and its learning-rate schedule."""
        self.optimizer = make_optimizer(self.model, self.config, self.device)
        self.scheduler = make_scheduler(self.optimizer, self.config, self.steps_per_epoch)

    # -- the position to start from ------------------------------------------------------------

    def _start(self, checkpoint: dict | None) -> None:
        """The first step's position, or, resuming, the checkpoint's."""
        self.epoch, self.step, self.history, self.best_top1 = 0, 0, [], -1.0
        self.partial = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (this epoch)
        self.start_loss: float | None = None  # the first step's training loss (divergence is measured from it)
        self.smoothed_loss: float | None = None  # the moving average of the training loss (bias-corrected)
        self.smoothed_steps = 0  # steps in that average
        self.resumed_changes: dict = {}  # values --resume changed ({"lr": [before, after]}), for the history
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.trained_lr is not None and self.trained_lr != self.config.lr:  # started over at another rate
            self.rate_changed = (self.trained_lr, self.config.lr)
            self.resumed_changes = {"lr": [self.trained_lr, self.config.lr]}

    def _restore(self, state: dict) -> None:
        """The position a checkpoint saved, and what ``--resume`` changed since (rate, epochs)."""
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
        scale_rates(self.optimizer, self.scheduler, self.config.lr / trained_lr)
        self.smoothed_loss, self.smoothed_steps = None, 0
        self.resumed_changes = {**self.resumed_changes, "lr": [trained_lr, self.config.lr]}
        self.rate_changed = (trained_lr, self.config.lr)

    def _stretch_schedule(self, trained_epochs: int) -> None:
        """A schedule whose length is the number of epochs (one-cycle, cosine), redrawn for the new
        number and moved to the steps already taken: the rate goes on from the longer curve's value."""
        done = self.epoch * self.steps_per_epoch + self.step
        self.scheduler = redrawn_scheduler(self.optimizer, self.config, self.steps_per_epoch, done)
        self.stretched = (trained_epochs, done)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Run:
        config = self.config
        self.log(f"run folder: {self.folder.directory}")
        changes = config.recipe_changes()
        if changes:  # a model trains as itself unless a recipe says otherwise, and then it says so
            self.log(f"recipe {config.recipe} changes {config.model}: {', '.join(changes)} (pass the switch, "
                     f"e.g. --{changes[0].split()[0]} {changes[0].split()[1]}, to keep the model's own)")
        self.log(f"{config.model} on {config.dataset}: recipe {config.recipe}, {counted(config.epochs, 'epoch')}, "
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
                     f"(lr {current_learning_rate(self.optimizer):.3g})")
        if self.rate_changed:
            before, after = self.rate_changed
            self.log(f"lr {before:g} -> {after:g}: " + ("starting over at the new rate" if self.restarted else
                     f"every rate of the optimiser and the {config.schedule} schedule scaled by {after / before:.3g}")
                     + " (recorded as resumed_with in the next epoch's row of metrics.jsonl)")
        if self.restarted:
            self.log(f"no checkpoint in {self.folder.checkpoints} (the run stopped before its first one): "
                     f"starting it over from epoch 1 with its configuration")
        if self.epoch >= config.epochs:  # every epoch trained, stopped before its final test
            self.log(f"every epoch trained ({counted(self.epoch, 'epoch')}); testing the weights (the run stopped "
                     f"before its final test)")
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
                         f"improved for {counted(config.early_stopping, 'epoch')} "
                         f"(best {self.history[best - 1]['val_top1']:.2%} "
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
        lr = current_learning_rate(self.optimizer)  # the epoch's (its last step's, when it varies)
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
        if config.divergence_check:
            failure = epoch_divergence(
                epoch=row["epoch"], steps=row["epoch"] * self.steps_per_epoch, train_top1=row["train_top1"],
                train_images=int(totals[2].item()), val=val, classes=len(self.data.classes),
                threshold=divergence_threshold(self.start_loss, len(self.data.classes)))
            if failure:  # neither this epoch's records nor its checkpoint: the last good one stays the one to resume
                self.log(f"epoch {row['epoch']:>3}/{config.epochs}  train loss {row['train_loss']:.4f} "
                         f"top-1 {row['train_top1']:.2%}  val loss {val.loss:.4f} top-1 {val.top1:.2%}")
                raise Diverged(self._failure(failure))
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

    def _check_finite(self, window: list[torch.Tensor]) -> None:
        """Stop at a NaN or infinite training loss among the last steps'."""
        losses = torch.stack(window)
        first = first_non_finite(losses)
        if first is None:
            return
        step = self.step - len(window) + first + 1
        raise NonFiniteLoss(self._failure(f"the loss became {losses[first].item()} at epoch {self.epoch + 1}, "
                                          f"step {step}") + " Check the data too (--strict stops at an unreadable image).")

    def _check_divergence(self, window: list[torch.Tensor]) -> None:
        """Stop when the smoothed training loss is far above its start and chance."""
        # Every process decides on the same numbers (the mean over processes), so all stop together.
        losses = (self.group.all_reduce_sum(torch.stack(window).float()) / self.group.world_size).cpu().tolist()
        if self.start_loss is None:
            self.start_loss = losses[0]
        threshold = divergence_threshold(self.start_loss, len(self.data.classes))
        for index, loss in enumerate(losses):
            self.smoothed_steps += 1
            self.smoothed_loss = moving_average(self.smoothed_loss, self.smoothed_steps, loss)
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
        return (f"{what}, at learning rate {rate:g} (this step's: {current_learning_rate(self.optimizer):.3g}). "
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
        # Asked to stop during the test: it stops, its result unrecorded. (Under torchrun the ranks must
        # agree on it, and a signal may reach one after its check and another before: they finish.)
        if self.stop.signum is not None and not self.group.distributed:
            self.log(f"{signal.Signals(self.stop.signum).name}: stopped during the final test; every epoch is "
                     f"trained and checkpointed. Test it with: alexnet train --resume {folder.directory}")
            raise Interrupted(self.stop.signum)
        run = Run(folder.directory, config, self.history, metrics, self.model, self.group.is_main)
        if self.group.is_main:
            save_weights(folder.weights, self.model, WeightsMetadata(
                model=config.model, model_options={**config.model_options}, class_names=tuple(self.data.classes),
                input_size=tuple(self.model.input_size), mean=tuple(self.normalization[0]),
                std=tuple(self.normalization[1]), dataset=config.dataset, data_dir=config.data_dir,
                val_size=config.val_size, test_size=self.data.test_size, seed=config.seed, precision=config.precision,
                test_files=files_digest(self.data.test.samples, config.data_dir) if self.data.test_size else None,
                test_views=views.to_dict(), epochs=self.epoch, test_top1=metrics.top1, test_top5=metrics.top5,
            ))
            # A test taken on the validation images (no test split apart from them) says so: early
            # stopping and the plateau schedule chose by them, so it is no independent test.
            split = "val" if self.data.test_is_val else "test"
            evaluation = Evaluation(metrics, split, config.dataset, views.views, self.epoch)
            write_text(folder.evaluation, json.dumps(evaluation.to_dict(), indent=2))
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
