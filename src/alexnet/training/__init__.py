"""Training: the configuration, the recipes, the loop, checkpoints, many processes."""

from .config import TrainConfig
from .loop import Run, train
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ["RECIPES", "Recipe", "Run", "TrainConfig", "get_recipe", "train"]
