"""Packages whose public names are imported from their modules on first use (PEP 562).

``alexnet --help``, or a mistyped flag, should answer in the time torch takes to import; the data
pipeline, the training loop and the explainers bring in torchvision (and with it ``torch._dynamo``),
Captum and the image decoders, about 2 s of CPU more. Their packages list what each module gives
them, and this imports a module the first time one of its names is asked for:

    >>> __all__, __getattr__, __dir__ = lazy_exports(__name__, {"augment": ("normalize", ...), ...})
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable, Callable]:
    """(``__all__``, ``__getattr__``, ``__dir__``) for ``package``, whose modules (``exports``' keys)
    give it the public names listed with them. A name is found directly once asked for; a submodule
    (``alexnet.data.augment``) is found as an attribute too, as it is once imported."""
    homes = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            if importlib.util.find_spec(f"{package}.{name}") is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return sorted(homes), __getattr__, __dir__
