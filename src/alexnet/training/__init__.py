"""Training: the configuration, the recipes, the loop, checkpoints, many processes."""

from ..lazy import lazy_exports
from .config import TrainConfig
from .recipes import RECIPES, Recipe, get_recipe

# The loop, imported on first use: it brings in the data pipeline, the metrics and the image
# libraries, which the configuration alone (``alexnet --help``) does not need.
_, __getattr__, __dir__ = lazy_exports(__name__, {"loop": ("Run", "train")})
__all__ = ["RECIPES", "Recipe", "Run", "TrainConfig", "get_recipe", "train"]
