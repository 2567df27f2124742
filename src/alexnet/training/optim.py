"""The optimiser and the learning-rate schedule a configuration asks for, and the rates they hold:
the one shown, and every one of them scaled when ``--resume --lr`` changes the rate."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..perf import optimizer_options
from .config import TrainConfig
from .finetune import classifier_parameter_ids


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
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


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The configuration's learning-rate schedule over ``config.epochs`` epochs of ``steps_per_epoch``
    optimiser steps. Every schedule but ``plateau`` is stepped once per optimiser step; ``plateau`` is
    stepped once per epoch with the validation error."""
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
        # The peak of each group: its rate in a new optimiser; in one restored from a checkpoint, the
        # peak the schedule drew before (its rate by then is wherever the curve had taken it).
        peaks = [group.get("max_lr", group["lr"]) for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total, pct_start=warmup, div_factor=10, final_div_factor=100)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "step":  # stepped every optimiser step: a fall every step_epochs epochs
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_epochs * max(1, steps_per_epoch),
                                               gamma=config.step_factor)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def redrawn_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                      steps_taken: int):
    """A schedule whose length is the number of epochs (one-cycle, cosine), drawn for
    ``config.epochs`` and moved on by the ``steps_taken`` already: the rate goes on from the
    longer curve's value."""
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    with warnings.catch_warnings():  # stepping a scheduler without an optimiser step warns
        warnings.simplefilter("ignore")
        for _ in range(steps_taken):
            scheduler.step()
    return scheduler


def scale_rates(optimizer: torch.optim.Optimizer, scheduler, ratio: float) -> None:
    """Every rate the optimiser and the schedule hold (each group's, the one-cycle peak and floor,
    the schedule's base) multiplied by ``ratio``, so the schedule goes on from where it was."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if isinstance(group.get(key), float):
                group[key] *= ratio
    for key in ("base_lrs", "_last_lr", "min_lrs"):
        values = getattr(scheduler, key, None)
        if isinstance(values, list):
            setattr(scheduler, key, [value * ratio if isinstance(value, float) else value for value in values])


def current_learning_rate(optimizer: torch.optim.Optimizer) -> float:
    """The rate shown and logged: the new layers' when fine-tuning (the pretrained ones learn at
    ``backbone_lr_scale`` times it, 0 when they are kept still), else the one rate."""
    groups = optimizer.param_groups
    return next((group["lr"] for group in groups if group.get("rate") == "full"), groups[0]["lr"])
