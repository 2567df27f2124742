"""Inside a trained network: why an image got its class, what each layer responds to, and which
image patches drive each filter.

    >>> from alexnet.explain import explain, feature_maps, top_patches, dataset_batches
    >>> from alexnet.inference import open_trained
    >>> explain("runs/fm", ["shirt.png"], method="gradcam")          # attribution maps (Captum)
    >>> trained = open_trained("runs/fm")
    >>> top_patches(trained, dataset_batches(trained), "conv5")      # Zeiler & Fergus' Figure 2

``alexnet explain`` is the command line over these; ``pictures`` draws what they return.
"""

from ..lazy import lazy_exports

# The attribution methods, by the name ``--method`` takes (here, light, for the command line's choices).
METHODS = ("gradcam", "saliency", "occlusion", "integrated-gradients")

# Each module and the public names it gives this package, imported on first use (attribution brings in
# the inference frame, the image transforms and Captum).
_EXPORTS = {
    "attribution": ("attribute", "explain", "Explanation", "Explanations", "feature_maps", "FeatureMaps"),
    "network": ("conv_outputs", "receptive_field", "ReceptiveField"),
    "patches": ("dataset_batches", "top_patches", "TopPatches"),
}
_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted([*_names, "METHODS"])
