"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012), faithful and fast."""

from .errors import AlexNetError
from .models import AlexNet, build_model, list_models
from .summary import summarize

__version__ = "0.1.0"

__all__ = ["AlexNet", "AlexNetError", "build_model", "list_models", "summarize", "__version__"]
