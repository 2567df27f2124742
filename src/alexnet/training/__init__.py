"""Training: the configuration, the recipes, the loop, checkpoints, many processes."""

from .config import TrainConfig
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ["RECIPES", "Recipe", "Run", "TrainConfig", "get_recipe", "train"]


def __getattr__(name: str):
    """``train`` and ``Run``, imported on first use: the loop brings in the data pipeline, the
    metrics and the image libraries, which the configuration alone (``alexnet --help``) does not need."""
    if name in ("Run", "train"):
        from . import loop

        globals().update(Run=loop.Run, train=loop.train)  # found directly from now on
        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
