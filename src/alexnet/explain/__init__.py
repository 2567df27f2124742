"""Inside a trained network: why an image got its class, what each layer responds to, and which
image patches drive each filter.

    >>> from alexnet.explain import explain, feature_maps, top_patches, dataset_batches
    >>> from alexnet.inference import open_trained
    >>> explain("runs/fm", ["shirt.png"], method="gradcam")          # attribution maps (Captum)
    >>> trained = open_trained("runs/fm")
    >>> top_patches(trained, dataset_batches(trained), "conv5")      # Zeiler & Fergus' Figure 2

``alexnet explain`` is the command line over these; ``pictures`` draws what they return.
"""

import importlib
import importlib.util

# The attribution methods, by the name ``--method`` takes (here, light, for the command line's choices).
METHODS = ("gradcam", "saliency", "occlusion", "integrated-gradients")

# Each module and the public names it gives this package, imported on first use (attribution brings in
# the inference frame, the image transforms and Captum).
_EXPORTS = {
    "attribution": ("attribute", "explain", "Explanation", "Explanations", "feature_maps", "FeatureMaps"),
    "network": ("conv_outputs", "receptive_field", "ReceptiveField"),
    "patches": ("dataset_batches", "top_patches", "TopPatches"),
}
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_HOMES, "METHODS"])


def __getattr__(name: str):
    """A public name's value, its module imported the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:  # a submodule (alexnet.data.augment) is found as before, once imported
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
