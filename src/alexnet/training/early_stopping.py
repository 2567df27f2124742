"""Early stopping, decided from a run's per-epoch records (metrics.jsonl's rows) alone."""

from __future__ import annotations


def best_epoch(history: list[dict]) -> int:
    """The (first) epoch, counted from 1, with the highest validation top-1."""
    return max(range(len(history)), key=lambda index: (history[index]["val_top1"], -index)) + 1


def stops_early(history: list[dict], patience: int) -> bool:
    """Whether ``patience`` epochs have passed without a better validation top-1 (0: never stop).

    Worked out from the per-epoch records alone, so a resumed run, and a run stopped early that is
    asked to go on with another patience (``--resume DIR --early-stopping 0``), decide alike."""
    return bool(patience and history) and len(history) - best_epoch(history) >= patience
