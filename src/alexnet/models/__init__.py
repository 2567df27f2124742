"""The AlexNet model family and its registry."""

from . import variants as _variants  # noqa: F401  (registers the builders)
from ._registry import build_model, default_recipe, get_model_builder, list_models, register_model
from .alexnet import SWITCHES, AlexNet, Architecture, ConvLayer
from .layers import LocalResponseNorm

__all__ = [
    "SWITCHES", "AlexNet", "Architecture", "ConvLayer", "LocalResponseNorm",
    "build_model", "default_recipe", "get_model_builder", "list_models", "register_model",
]
