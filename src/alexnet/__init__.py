"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012), faithful and fast."""

from .errors import AlexNetError
from .models import AlexNet, build_model, list_models
from .summary import summarize

__version__ = "0.1.0"

__all__ = ["AlexNet", "AlexNetError", "build_model", "evaluate", "list_models", "summarize", "train", "__version__"]


def __getattr__(name: str):
    """``alexnet.train`` and ``alexnet.evaluate``, imported on first use (they pull in the data and
    training modules, which ``import alexnet`` alone does not need)."""
    if name == "train":
        from .training import train

        return train
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
