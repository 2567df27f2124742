"""Name -> builder registry: a new variant is one decorated builder function."""

from __future__ import annotations

import difflib
import re
from typing import Callable

from torch import nn

from ..errors import AlexNetError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_RECIPES: dict[str, str] = {}  # the recipe a model trains with unless told otherwise


def register_model(builder: Callable[..., nn.Module] | None = None, *, recipe: str = "fast"):
    """Register ``builder`` under its function name, with the training recipe it is meant for:
    ``@register_model`` or ``@register_model(recipe="paper")``."""
    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[builder.__name__] = builder
        _RECIPES[builder.__name__] = recipe
        return builder

    return register(builder) if builder is not None else register


def default_recipe(name: str) -> str:
    """The recipe ``name`` trains with when none is given: a model trains as itself."""
    get_model_builder(name)
    return _RECIPES[name]


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_BUILDERS)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; an unknown name lists the known ones."""
    try:
        return _BUILDERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _BUILDERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AlexNetError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(list_models())}"
        ) from None


def build_model(name: str, **options) -> nn.Module:
    """Build the registered model ``name``; ``options`` are its keyword arguments (switches)."""
    builder = get_model_builder(name)
    try:
        model = builder(**options)
    except TypeError as error:  # an option the builder does not take
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if unknown is None:
            raise AlexNetError(f"bad option for model {name!r}: {error}") from None
        from .alexnet import SWITCHES

        close = difflib.get_close_matches(unknown.group(1), SWITCHES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AlexNetError(f"model {name!r} takes no option {unknown.group(1)!r}.{hint} Its switches: "
                           f"{', '.join(SWITCHES)}") from None
    model.model_name = name  # what exports and summaries call it
    return model
