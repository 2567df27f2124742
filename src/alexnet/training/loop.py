"""``train(config)``: from a configuration to a run folder with metrics, checkpoints and weights.

The run folder::

    config.yaml          the fully resolved configuration
    metrics.jsonl        one line per epoch: losses, accuracies, learning rate, images/s
    log.txt              what was printed
    checkpoints/last.pt  model, optimiser, scheduler, position, random states (resume from here)
    checkpoints/best.pt  the same, at the best validation top-1
    model.safetensors    final weights with their metadata (model, classes, input size, mean/std)
    evaluation.json      final test metrics
    report.html          the run's report (figures/ holds each of its pictures as a PNG)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import build_loaders, dataset_info
from ..errors import AlexNetError
from ..evaluation import Metrics, evaluate_model, ten_crop_shape
from ..models import build_model
from ..perf import (
    autocast_context, optimizer_options, precision_name, resolve_precision, reuse_freed_memory, set_threads,
)
from ..weights import save_weights
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import (
    ELASTIC_RUN_ID_FILE, ProcessGroup, destroy_process_group, elastic_restart_count, elastic_run_id,
    init_process_group, lost_peer, per_process_batch, restarted_run_folder,
)
from .recipes import Recipe, get_recipe

NAN_CHECK_EVERY = 25  # steps between checks of the loss (each check is one host sync)


@dataclass
class Run:
    """What a finished training run left behind."""

    directory: Path
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    test_metrics: Metrics | None = None
    model: nn.Module | None = None

    @property
    def weights_path(self) -> Path:
        return self.directory / "model.safetensors"


class NonFiniteLoss(AlexNetError):
    pass


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None) -> Run:
    """Train a model as ``config`` says, or continue the run folder ``resume``; returns the Run."""
    group = init_process_group(config.device if config else "auto")
    try:
        return _Trainer(config, resume, group).run()
    finally:
        destroy_process_group()


class _Trainer:
    def __init__(self, config: TrainConfig | None, resume: str | Path | None, group: ProcessGroup):
        self.group = group
        checkpoint = None
        if resume is None and config is not None:  # torchrun --max-restarts restarted the group
            resume = restarted_run_folder(config.out, config.name)
        if resume is not None:
            directory = Path(resume)
            if not (directory / "config.yaml").is_file():
                raise AlexNetError(f"{directory} is not a run folder (no config.yaml); pass the folder "
                                   f"that `alexnet train` printed")
            config = TrainConfig.from_yaml(directory / "config.yaml")
            checkpoint = load_checkpoint(directory / "checkpoints" / "last.pt")
        config = (config or TrainConfig()).resolved()
        self.config, self.recipe = config, get_recipe(config.recipe)
        self.device = resolve_device(config.device, group.local_rank)
        if self.device.type == "cpu":
            set_threads()
            reuse_freed_memory()
        # `auto` is settled once, by rank 0, and recorded: every process and any resume compute alike.
        precision = group.broadcast_object(precision_name(resolve_precision(config.precision, self.device)))
        config = self.config = dataclasses.replace(config, precision=precision)
        self.dtype = resolve_precision(precision, self.device)
        self.autocast = lambda: autocast_context(self.device, self.dtype)

        if checkpoint is None:
            directory = self._new_directory() if group.is_main else None
            directory = Path(group.broadcast_object(str(directory) if directory else None))
        self.directory = directory
        if group.is_main and checkpoint is None:  # (resuming, the other ranks are reading it)
            (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
            (directory / "config.yaml").write_text(config.to_yaml())
            if elastic_run_id():
                (directory / ELASTIC_RUN_ID_FILE).write_text(elastic_run_id())

        info = dataset_info(config.dataset)
        options = dict(config.model_options)
        if info.num_classes:  # a folder's classes are only known once it is read
            options.setdefault("num_classes", info.num_classes)
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, **options)
        batch = per_process_batch(config.batch_size, group.world_size)
        # The paper's only preprocessing is subtracting the mean from raw 0..255 pixels (Section 2),
        # and its N(0, 0.01) initialisation is sized for inputs of that scale; otherwise inputs are
        # standardised to unit scale, which PyTorch's default initialisation expects.
        raw_scale = self.model.init == "paper"
        self.normalization = (info.mean, (1 / 255,) * len(info.mean) if raw_scale else info.std)
        self.data = build_loaders(
            config.dataset, data_dir=config.data_dir, download=config.download, batch_size=batch,
            eval_batch_size=config.eval_batch_size, output_shape=self.model.input_size,
            augment=config.augment, val_size=config.val_size, subset=config.subset, seed=config.seed,
            device=self.device, rank=group.rank, world_size=group.world_size, strict=config.strict,
            channels_last=config.channels_last, normalization=self.normalization,
        )
        if self.model.num_classes != len(self.data.classes):
            torch.manual_seed(config.seed)
            self.model = build_model(config.model, **{**options, "num_classes": len(self.data.classes)})
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = _make_optimizer(self.model, self.recipe, config, self.device)
        self.steps_per_epoch = len(self.data.train) // config.accumulation_steps
        self.scheduler = _make_scheduler(self.optimizer, self.recipe, config, self.steps_per_epoch)
        self.forward_model = self._wrap(self.model)

        self.epoch, self.step, self.history, self.best_top1 = 0, 0, [], -1.0
        self.partial = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (this epoch)
        if checkpoint is not None:
            self._restore(checkpoint)
        self.writer = self._tensorboard()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Run:
        config = self.config
        self.log(f"run folder: {self.directory}")
        self.log(f"{config.model} on {config.dataset}: recipe {config.recipe}, {config.epochs} epochs, "
                 f"batch {config.batch_size}, lr {config.lr}, {precision_name(self.dtype)} on "
                 f"{self.device}" + (f", {self.group.world_size} processes" if self.group.distributed else "")
                 + (f", {config.allreduce_dtype} gradient all-reduce" if self.group.distributed else "")
                 + (f", {config.accumulation_steps} micro-batches per step" if config.accumulation_steps > 1 else ""))
        if self.epoch or self.step:
            restarts = elastic_restart_count()
            self.log(f"continuing from epoch {self.epoch + 1}, step {self.step}"
                     + (f" (torchrun restart {restarts})" if restarts else ""))
        try:
            while self.epoch < config.epochs:
                self._train_epoch()
        except KeyboardInterrupt:
            if self.group.is_main:
                self._save("last.pt")
            self.log(f"interrupted in epoch {self.epoch + 1} at step {self.step}; saved. Continue with: "
                     f"alexnet train --resume {self.directory}")
            raise
        except RuntimeError as error:
            if not (self.group.distributed and lost_peer(error)):
                raise
            raise AlexNetError(
                f"process {self.group.rank} of {self.group.world_size} lost contact with the others "
                f"({str(error).splitlines()[0][:300]}); another process has probably died: torchrun's "
                f"report names the first failure. Continue from the last checkpoint with the same "
                f"command and --resume {self.directory}"
            ) from error
        return self._finish()

    def _train_epoch(self) -> None:
        config, model = self.config, self.forward_model
        loader = self.data.train
        loader.set_epoch(self.epoch)
        model.train()
        start, images_seen = time.perf_counter(), 0
        window: list[torch.Tensor] = []
        totals = self.partial = self.partial.to(self.device)  # updated in place, saved on interrupt
        bar = tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                   disable=config.quiet or not self.group.is_main, leave=False, dynamic_ncols=True)
        batches = iter(loader)
        for _ in range(self.step * config.accumulation_steps):  # resuming mid-epoch: replay the data
            next(batches)
        while self.step < self.steps_per_epoch:
            loss, correct, count = self._optimizer_step(batches)
            totals[0] += loss.detach().double() * count  # stays on the device: no sync per step
            totals[1] += correct
            totals[2] += count
            window.append(loss.detach())
            self.step += 1
            images_seen += count
            if len(window) == NAN_CHECK_EVERY or self.step == self.steps_per_epoch:
                self._check_finite(window)
                window.clear()
                rate = images_seen * self.group.world_size / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{totals[0].item() / totals[2].item():.3f}",
                                acc=f"{totals[1].item() / totals[2].item():.3f}", img_s=f"{rate:.0f}")
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - start
        totals = self.group.all_reduce_sum(totals)
        val, _ = evaluate_model(self.model, self.data.val, self.data.classes, device=self.device,
                                autocast=self.autocast())
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's (its last step's, when it varies)
        if self.recipe.schedule == "plateau":
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
        self.history.append(row)
        self.epoch, self.step = self.epoch + 1, 0
        self.partial = torch.zeros(3, dtype=torch.float64)
        improved = val.top1 > self.best_top1
        self.best_top1 = max(self.best_top1, val.top1)
        if self.group.is_main:
            with open(self.directory / "metrics.jsonl", "a") as file:
                file.write(json.dumps(row) + "\n")
            if self.epoch % config.checkpoint_every == 0 or self.epoch == config.epochs:
                self._save("last.pt")
            if improved:
                self._save("best.pt")
            if self.writer:
                for key, value in row.items():
                    if key != "epoch":
                        self.writer.add_scalar(key, value, self.epoch)
        skipped = getattr(self.data.train, "skipped", 0)
        self.log(f"epoch {row['epoch']:>3}/{config.epochs}  train loss {row['train_loss']:.4f} "
                 f"top-1 {row['train_top1']:.2%}  val loss {val.loss:.4f} top-1 {val.top1:.2%} "
                 f"top-5 {val.top5:.2%}  lr {row['lr']:.2e}  {row['images_per_second']:.0f} img/s  "
                 f"{seconds:.0f}s" + (f"  ({skipped} unreadable images skipped)" if skipped else ""))

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
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
                (loss / config.accumulation_steps).backward()
            loss_sum = loss_sum + loss.detach() * len(labels)
            correct = correct + (logits.argmax(1) == labels).sum()
            count += len(labels)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.recipe.schedule != "plateau":
            self.scheduler.step()
        return loss_sum / count, correct, count

    def _check_finite(self, window: list[torch.Tensor]) -> None:
        losses = torch.stack(window)
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0])
        step = self.step - len(window) + first + 1
        raise NonFiniteLoss(
            f"the loss became {losses[first].item()} at epoch {self.epoch + 1}, step {step} "
            f"(learning rate {self.optimizer.param_groups[0]['lr']:.3g}). Training stopped; the last "
            f"good checkpoint and the metrics are in {self.directory}. Try a lower learning rate, "
            f"e.g. --lr {self.config.lr / 10:g}."
        )

    # -- the end -------------------------------------------------------------------------------

    def _finish(self) -> Run:
        config = self.config
        test = self.data.test
        if config.ten_crop:  # the ten views are cropped from images 256/224 larger (Section 4.1)
            test = build_loaders(
                config.dataset, data_dir=config.data_dir, batch_size=config.eval_batch_size,
                output_shape=ten_crop_shape(self.model.input_size), augment="none",
                val_size=config.val_size, seed=config.seed, device=self.device, rank=self.group.rank,
                world_size=self.group.world_size, channels_last=config.channels_last,
                normalization=self.normalization).test
        metrics, _ = evaluate_model(self.model, test, self.data.classes, device=self.device,
                                    autocast=self.autocast(), flip=config.flip_test and not config.ten_crop,
                                    ten_crop=config.ten_crop)
        run = Run(self.directory, config, self.history, metrics, self.model)
        if self.group.is_main:
            info = self.data.info
            save_weights(
                run.weights_path, self.model, model_name=config.model,
                model_options={**config.model_options}, class_names=list(self.data.classes),
                mean=list(self.normalization[0]), std=list(self.normalization[1]), dataset=config.dataset,
                augment=config.augment, flip_test=config.flip_test, ten_crop=config.ten_crop,
                epochs=self.epoch, test_top1=metrics.top1, seed=config.seed, val_size=config.val_size,
                precision=config.precision,
            )
            (self.directory / "evaluation.json").write_text(json.dumps(
                {"split": "test", "dataset": info.name, "ten_crop": config.ten_crop,
                 "flip": config.flip_test and not config.ten_crop, **metrics.to_dict()}, indent=2))
            self.log(f"test: top-1 {metrics.top1:.2%}  top-5 {metrics.top5:.2%}  loss {metrics.loss:.4f}  "
                     f"macro F1 {metrics.macro_f1:.4f}")
            self.log(f"weights: {run.weights_path}")
            try:  # a failing figure or missing data must never cost the finished run
                from ..report import build_report

                self.log(f"report: {build_report(self.directory)}")
            except Exception as error:
                self.log(f"warning: report.html not written ({error}); retry with: alexnet report {self.directory}")
            if self.writer:
                self.writer.close()
        self.group.barrier()
        return run

    # -- helpers -------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if not self.group.is_main:
            return
        tqdm.write(message)
        with open(self.directory / "log.txt", "a") as file:
            file.write(message + "\n")

    def _new_directory(self) -> Path:
        name = self.config.name or f"{self.config.model}-{self.config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        directory = Path(self.config.out) / name
        if (directory / "metrics.jsonl").exists() and elastic_restart_count():
            (directory / "metrics.jsonl").unlink()  # restarted by torchrun before any checkpoint: start over
        elif (directory / "metrics.jsonl").exists():
            raise AlexNetError(f"{directory} already holds a run; choose another --name, or continue it "
                               f"with --resume {directory}")
        return directory

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
        return SummaryWriter(str(self.directory / "tensorboard"))

    def _save(self, name: str) -> None:
        save_checkpoint(self.directory / "checkpoints" / name, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "partial": self.partial.cpu(),
            "history": self.history, "best_top1": self.best_top1,
            "rng": rng_state(),
            "config": json.loads(json.dumps(self.config.__dict__)),
        })

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.partial = state["epoch"], state["step"], state["partial"]
        if not self.group.is_main:  # rank 0's sums are in the checkpoint once; they are all-reduced
            self.partial = torch.zeros_like(self.partial)
        self.history, self.best_top1 = list(state["history"]), state["best_top1"]
        set_rng_state(state["rng"])
        if self.group.is_main:  # drop epochs logged after the checkpoint was written
            lines = [json.dumps(row) for row in self.history]
            (self.directory / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's CUDA device when there is one, else the CPU."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AlexNetError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def _make_optimizer(model: nn.Module, recipe: Recipe, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for parameter in model.parameters():
        (no_decay if parameter.ndim <= 1 and not recipe.decay_norm_and_bias else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    fast = optimizer_options(device)  # one fused step over all parameters
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, **fast)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, **fast)
    return torch.optim.AdamW(groups, lr=config.lr, **fast)


def _make_scheduler(optimizer, recipe: Recipe, config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if recipe.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=recipe.plateau_factor, patience=recipe.plateau_patience,
            threshold=recipe.plateau_threshold, threshold_mode="abs")
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, pct_start=recipe.warmup_fraction,
            div_factor=10, final_div_factor=100)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
