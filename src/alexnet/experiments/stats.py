"""The arithmetic of a claim's verdict: spreads over seeds, paired intervals, and the rule.

Arms of an experiment are trained with the same seeds, so seed ``s`` of one arm shares its data
order and augmentation draws with seed ``s`` of the other: the per-seed differences are paired, and
their mean gets a Student-t interval (the seeds' spread, not the runs', sets its width).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t with 1..30 degrees of freedom (any statistics table, e.g.
# NIST/SEMATECH e-Handbook 1.3.6.7.2); written out because the standard library has only the normal.
T_95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
T_95_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))  # used for up to that many degrees of freedom
NORMAL_95 = 1.960

RULE = ("agrees: the 95% confidence interval of the mean paired difference (Student's t over seeds) lies "
        "wholly on the side of zero the paper predicts; disagrees: wholly on the other side; inconclusive: "
        "it contains zero, or there are fewer than two seeds to measure a spread from")


def t_quantile(degrees_of_freedom: int) -> float:
    """The two-sided 95% quantile of Student's t."""
    if degrees_of_freedom < 1:
        raise ValueError("a t interval needs at least one degree of freedom (two seeds)")
    if degrees_of_freedom <= len(T_95):
        return T_95[degrees_of_freedom - 1]
    # between rows, the next smaller row's degrees of freedom: a slightly wider, conservative interval
    return next((value for limit, value in reversed(T_95_LARGE) if degrees_of_freedom >= limit),
                T_95[-1]) if degrees_of_freedom < 1_000 else NORMAL_95


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of one quantity over seeds."""

    mean: float
    std: float  # 0 for a single seed
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        if not values:
            raise ValueError("no values")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, min(values), max(values), len(values))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.low, "max": self.high, "n": self.count}


def paired_interval(differences: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high): the 95% t interval of the mean of paired differences; None under two."""
    if len(differences) < 2:
        return None
    mean = statistics.fmean(differences)
    half = t_quantile(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def verdict(interval: tuple[float, float, float] | None, expected_sign: int) -> str:
    """``RULE`` applied: ``expected_sign`` is +1 when the paper predicts a positive difference."""
    if interval is None:
        return "inconclusive"
    _, low, high = interval
    if expected_sign * low > 0 and expected_sign * high > 0:
        return "agrees"
    if expected_sign * low < 0 and expected_sign * high < 0:
        return "disagrees"
    return "inconclusive"


def epochs_to_error(errors: list[float], threshold: float, chance: float) -> float | None:
    """Fractional epochs until the training error first reaches ``threshold`` (Figure 1's measure).

    ``errors[i]`` is the training error of epoch i + 1 averaged over its steps, as the paper's curve
    is: it stands for the middle of that epoch, i + 0.5, and the error before any step (0 epochs) is
    ``chance``. Linear interpolation between those points; None when the threshold is never reached
    in the epochs trained.
    """
    previous_time, previous = 0.0, chance
    for index, error in enumerate(errors):
        time = index + 0.5
        if error <= threshold:
            if previous <= threshold:
                return previous_time
            return previous_time + (time - previous_time) * (previous - threshold) / (previous - error)
        previous_time, previous = time, error
    return None


def epochs_to_converge(val_errors: list[float], tolerance: float) -> int | None:
    """The first epoch (from 1) whose validation error is within ``tolerance`` of the run's best."""
    if not val_errors:
        return None
    best = min(val_errors)
    return next(index + 1 for index, error in enumerate(val_errors) if error <= best + tolerance)
