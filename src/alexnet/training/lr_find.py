"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", Section 3.3; fastai's
``lr_find`` and Lightning's ``Tuner.lr_find``): train for a short while with a rate that grows
exponentially from tiny to large, record the loss at every step, and read a good rate off the curve.

The loss falls slowly while the rate is too small to move the weights, fast where the rate is
useful, and climbs once the rate is too large. The suggestion is the rate at the steepest fall of the
smoothed loss (Lightning's choice); fastai's other rule of thumb, a tenth of the rate at the lowest
loss, is returned beside it. The model, data, optimiser and precision are those ``train`` would
build from the same configuration (fine-tuning, freezing and per-group rates included); nothing is
written and no weights are kept.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import build_loaders, dataset_info, num_classes
from ..errors import AlexNetError
from ..inference import read_trained_metadata
from ..models import build_model
from ..perf import (
    autocast_context, gradient_scaler, precision_name, prepare_model, resolve_device, resolve_precision, set_threads,
)
from .config import TrainConfig
from .finetune import freeze, keep_frozen_norms_still, load_pretrained
from .optim import make_optimizer

SMOOTHING = 0.98  # fastai's: the loss of one batch is noisy, its moving average over ~50 steps is not
STOP_FACTOR = 4.0  # fastai's: the sweep ends once the smoothed loss is 4x its lowest
SKIP_START, SKIP_END = 10, 5  # fastai's: the first and last steps are left out of the suggestion


@dataclass
class RangeTest:
    """What the sweep measured: the rate and loss of every step, and the rates read off them."""

    rates: list[float]
    losses: list[float]  # each step's training loss
    smoothed: list[float]  # their bias-corrected moving average
    suggestion: float  # the rate at the steepest fall of the smoothed loss
    minimum_tenth: float  # a tenth of the rate at the lowest smoothed loss
    stopped_early: bool  # the loss diverged before the last rate
    precision: str
    recipe: str


def lr_find(config: TrainConfig, *, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100) -> RangeTest:
    """Sweep the learning rate from ``start_lr`` to ``end_lr`` over ``steps`` optimiser steps of the
    run ``config`` describes, and suggest a rate (the configuration's own ``lr`` is not used)."""
    if not (0 < start_lr and math.isfinite(end_lr)):
        raise AlexNetError(f"the sweep's rates must be positive and finite: got {start_lr:g} to {end_lr:g}")
    if not start_lr < end_lr:
        raise AlexNetError(f"the sweep goes from a small rate to a larger one: got {start_lr:g} to {end_lr:g}")
    if steps < SKIP_START + SKIP_END + 5:
        raise AlexNetError(f"steps must be at least {SKIP_START + SKIP_END + 5} (a curve to read), got {steps}")

    config = config.resolved()
    device = resolve_device(config.device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        set_threads(config.threads)
    try:
        dtype = resolve_precision(config.precision, device)
        info = dataset_info(config.dataset)
        torch.manual_seed(config.seed)
        model = build_model(config.model, **{**config.model_options,
                                             "num_classes": num_classes(config.dataset, config.data_dir)})
        normalization = (info.mean, (1 / 255,) * len(info.mean) if model.init == "paper" else info.std)
        if config.init_from:
            trained = read_trained_metadata(config.init_from)
            if len(trained.mean) == len(info.mean):
                normalization = (tuple(trained.mean), tuple(trained.std))
        data = build_loaders(config.dataset, config.loader_options(device=device, output_shape=model.input_size,
                                                                    normalization=normalization))
        if config.init_from:
            load_pretrained(model, config.init_from, data.classes, config.head)
        freeze(model, config.freeze)
        prepare_model(model, device, channels_last=config.channels_last)
        # Rates of 1 (the head) and backbone_lr_scale (the pretrained rest), multiplied by the sweep's.
        optimizer = make_optimizer(model, dataclasses.replace(config, lr=1.0), device)
        growth = (end_lr / start_lr) ** (1 / (steps - 1))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: start_lr * growth ** step)
        scaler = gradient_scaler(device, dtype)
        model.train()
        keep_frozen_norms_still(model, config.freeze)
        rates, losses, smoothed = [], [], []
        average, best, epoch = 0.0, math.inf, 0
        batches = iter(data.train)
        while len(rates) < steps:
            try:
                images, labels = next(batches)
            except StopIteration:  # a small training set: go round again, reshuffled
                epoch += 1
                data.train.set_epoch(epoch)
                batches = iter(data.train)
                continue
            rate = optimizer.param_groups[0]["lr"]
            with autocast_context(device, dtype):
                loss = F.cross_entropy(model(images).float(), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            value = loss.item()
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            rates.append(rate)
            losses.append(value)
            smoothed.append(average / (1 - SMOOTHING ** len(rates)))
            best = min(best, smoothed[-1])
            if smoothed[-1] > STOP_FACTOR * best:
                break
    finally:
        if device.type == "cpu":
            torch.set_num_threads(threads)
    if len(rates) < SKIP_START + SKIP_END + 2:
        raise AlexNetError(f"the loss diverged after {len(rates)} steps, at a rate of {rates[-1] if rates else start_lr:.3g}: "
                           f"too soon to read a rate; start the sweep lower (--start-lr)")
    return RangeTest(rates, losses, smoothed, *_suggestions(rates, smoothed), stopped_early=len(rates) < steps,
                     precision=precision_name(dtype), recipe=config.recipe)


def _suggestions(rates: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(the rate at the steepest fall of the smoothed loss against log rate, a tenth of the rate at its
    lowest), both read between the first ``SKIP_START`` and the last ``SKIP_END`` steps."""
    logs = torch.tensor(rates).log()
    values = torch.tensor(smoothed)
    slopes = torch.diff(values) / torch.diff(logs)
    window = slice(SKIP_START, len(rates) - SKIP_END)
    steepest = SKIP_START + int(torch.argmin(slopes[window]))
    lowest = SKIP_START + int(torch.argmin(values[window]))
    return rates[steepest], rates[lowest] / 10
