"""Numbers as a person reads them: a count of something, a spread over seeds and a paired difference.

One text for both places an experiment's numbers are shown: ``results.md``
(``experiments.tables``) and the experiment's page (``report.experiment``), which are siblings
and import it from below.
"""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """``number`` of ``noun``, the noun in the plural unless there is one: "1 epoch", "3 epochs"."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def format_spread(spread: dict, unit: str) -> str:
    """A measure's mean ± standard deviation over seeds (``results.json``'s ``Spread``); ``>=`` where
    some seed did not reach it within the epochs trained. ``unit`` ``%``: fractions shown as percentages."""
    scale, suffix = (100, "%") if unit == "%" else (1, "")
    text = f"{spread['mean'] * scale:.2f}{suffix} ± {spread['std'] * scale:.2f}"
    return (">= " + text) if any(spread.get("censored", [])) else text


def format_difference(comparison: dict) -> str:
    """A comparison's mean paired difference, its 95% interval and ratio where it has them: points for
    percentages, epochs otherwise; ``>=`` where it is a lower bound."""
    if comparison["mean"] is None:
        return "n/a"
    scale, suffix = (100, " points") if comparison["unit"] == "%" else (1, " epochs")
    text = f"{comparison['mean'] * scale:+.2f}{suffix}"
    if comparison["interval"]:
        low, high = comparison["interval"]
        text += f" [{low * scale:+.2f}, {high * scale:+.2f}]"
    if comparison.get("ratio") is not None:
        text += f", ratio {comparison['ratio']:.2f}x"
    return (">= " + text) if comparison.get("lower_bound") else text
