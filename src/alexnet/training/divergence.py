"""Runs that notice they fail: a training loss that is not finite, or climbs far above where it
started; a validation loss that explodes, or a network that stays at chance. The loop runs these
checks as it trains and stops with one of the errors below, which say what happened."""

from __future__ import annotations

import math

import torch

from ..errors import AlexNetError
from ..evaluation import Metrics

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
# A run that has taken this many steps and still classifies its training and validation images at
# chance (not 2 standard errors above 1/classes) has stopped learning; fewer steps may not have started.
CHANCE_MIN_STEPS = 100


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


def first_non_finite(losses: torch.Tensor) -> int | None:
    """The index of the first NaN or infinite value in ``losses``; None when all are finite."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    return int((~finite).nonzero()[0])


def divergence_threshold(start_loss: float | None, classes: int) -> float:
    """The smoothed training loss above which a run has diverged: ``DIVERGENCE_FACTOR`` times the
    larger of its first step's loss (None before it) and chance's, ln(classes)."""
    return DIVERGENCE_FACTOR * max(start_loss or 0.0, math.log(classes))


def moving_average(average: float | None, steps: int, loss: float) -> float:
    """The training loss's moving average over about ``DIVERGENCE_STEPS`` steps, bias-corrected, once
    ``loss`` is its ``steps``-th value; ``average`` is the one before (None before the first)."""
    beta = 1.0 - 1.0 / DIVERGENCE_STEPS
    # the average's sum, then its bias correction (an average of k steps weighs 1 - beta^k)
    raw = (average or 0.0) * (1.0 - beta ** (steps - 1))
    raw = beta * raw + (1.0 - beta) * loss
    return raw / (1.0 - beta ** steps)


def epoch_divergence(*, epoch: int, steps: int, train_top1: float, train_images: int, val: Metrics,
                     classes: int, threshold: float) -> str | None:
    """Why epoch ``epoch`` (counted from 1, ending on optimiser step ``steps``) shows a run that has
    failed, or None: its validation loss exploded near chance, or it still classifies at chance.
    ``threshold`` is the training loss's, from ``divergence_threshold``."""
    stuck = (steps >= CHANCE_MIN_STEPS and at_chance(train_top1, train_images, classes)
             and at_chance(val.top1, val.count, classes))
    # A network whose validation loss has exploded is broken, whether its top-1 is exactly at
    # chance or a little above (measured: 11.96% of 5,000 images, top-5 50%, at a validation loss
    # of 23.7 for 10 classes): under 1.5x chance counts, when its training images are near chance
    # too. A healthy run on a few images can pass through a validation loss as high while it fits
    # its training images (measured: 23.2 at 27% validation top-1, 5 classes, 100 images, epoch 6).
    limit = VAL_DIVERGENCE_FACTOR / DIVERGENCE_FACTOR * threshold
    exploded = (val.top1 < VAL_CHANCE_FACTOR / classes and train_top1 < VAL_CHANCE_FACTOR / classes
                and not val.loss <= limit)
    if exploded:
        return (f"the validation loss diverged in epoch {epoch}: {val.loss:.4g}, above {limit:.3g}, near chance "
                f"(validation top-1 {val.top1:.2%}, chance {1 / classes:.2%})")
    if stuck:
        return (f"after epoch {epoch} ({steps} steps) the network still classifies at chance (training top-1 "
                f"{train_top1:.2%}, validation {val.top1:.2%}, chance {1 / classes:.2%})")
    return None
