"""Inside a trained network: why an image got its class, what each layer responds to, and which
image patches drive each filter.

    >>> from alexnet.explain import explain, feature_maps, top_patches, dataset_batches
    >>> from alexnet.inference import open_trained
    >>> explain("runs/fm", ["shirt.png"], method="gradcam")          # attribution maps (Captum)
    >>> trained = open_trained("runs/fm")
    >>> top_patches(trained, dataset_batches(trained), "conv5")      # Zeiler & Fergus' Figure 2

``alexnet explain`` is the command line over these; ``pictures`` draws what they return.
"""

from .attribution import METHODS, Explanation, Explanations, FeatureMaps, attribute, explain, feature_maps
from .network import ReceptiveField, conv_outputs, receptive_field
from .patches import TopPatches, dataset_batches, top_patches

__all__ = ["METHODS", "Explanation", "Explanations", "FeatureMaps", "ReceptiveField", "TopPatches", "attribute",
           "conv_outputs", "dataset_batches", "explain", "feature_maps", "receptive_field", "top_patches"]
