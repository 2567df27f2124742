"""Why an image got its class: attribution maps by Captum, on the image the weights were tested on.

    >>> from alexnet.explain import explain
    >>> for item in explain("runs/fashion-mnist", ["shirt.png"], method="gradcam"):
    ...     print(item.class_name, item.probability, item.attribution.shape)   # (H, W) NumPy array

Captum (PyTorch's own interpretability library) computes every method: it works on any
``nn.Module`` through autograd and module hooks, so the paper's two towers (grouped convolutions),
the hand-written backward pass of its LRN and channels-last tensors need nothing of their own, and
it removes its hooks after every call. pytorch-grad-cam, the common alternative, has Grad-CAM and
its relatives but neither occlusion nor integrated gradients.

Methods, each a map over the input's pixels (positive: evidence for the class):

- ``gradcam`` (Selvaraju et al. 2017): a layer's rectified maps weighted by the mean gradient of the
  class's logit over each, summed, rectified and resized to the input. Default layer: the last
  convolution (the most class-specific maps that still have positions).
- ``saliency`` (Simonyan et al. 2014): the largest absolute gradient of the logit over the channels.
- ``occlusion`` (Zeiler and Fergus 2014): how much the logit falls when a square of the image is set
  to the training data's mean (zero after normalisation), a seventh of the image's side, half
  overlapping.
- ``integrated-gradients`` (Sundararajan et al. 2017): the gradient averaged along the straight
  path from the mean image to the image, times their difference, summed over channels (signed).

The class and its probability are the prediction ``alexnet predict`` gives (the weights' test
views and precision). The map is of the image the test sees first, its centre view. It is always
computed in fp32: under bf16 a gradient keeps 8 significant bits and a logit's fall under occlusion
is lost below 1/256 of the logit, so weights tested in bf16 are attributed in fp32, and the
explanation's ``note`` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import AlexNetError
from ..inference import TrainedModel, open_trained
from ..perf import autocast_context, to_channels_last
from ..predict import ImageInput, Skipped, read_images
from ..weights import WeightsMetadata
from . import METHODS
from .network import attribution_frame, conv_output, conv_outputs, output_module

INTEGRATION_STEPS = 32  # Sundararajan et al. use 20-300; 32 keeps the completeness gap near 1% here
OCCLUSION_FRACTION = 7  # the occluding square: a seventh of the side (4 px of 28, 32 px of 227)


def attribute(model: nn.Module, images: torch.Tensor, targets: Sequence[int], method: str = "gradcam", *,
              layer: str | None = None) -> torch.Tensor:
    """Attribution maps (B, H, W), fp32, of prepared images (B, C, H, W) for the classes ``targets``.

    ``model`` is any of the package's AlexNet models on the images' device; it is used in eval mode
    and fp32 and left exactly as it was (mode, in-place activations, ``requires_grad``, no hooks).
    ``layer`` (``conv1``..``conv5``, default the last) is Grad-CAM's; the other methods take none.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    _check_method(method, layer)
    if images.dim() != 4:
        raise AlexNetError(f"expected prepared images (B, C, H, W), got shape {tuple(images.shape)}")
    if len(targets) != images.shape[0]:
        raise AlexNetError(f"{images.shape[0]} images but {len(targets)} target classes")
    images = to_channels_last(images.float())
    target = torch.as_tensor(list(targets), dtype=torch.long, device=images.device)
    height, width = images.shape[-2:]
    with attribution_frame(model):
        if method == "gradcam":
            layer = layer or conv_outputs(model)[-1].name
            cam = LayerGradCam(model, output_module(model, layer)).attribute(images, target=target,
                                                                             relu_attributions=True)
            maps = LayerAttribution.interpolate(cam.float(), (height, width), interpolate_mode="bilinear")[:, 0]
        elif method == "saliency":
            # a copy: the caller's tensor may be ``images`` itself (one channel is channels-last already)
            maps = Saliency(model).attribute(images.detach().clone().requires_grad_(), target=target,
                                             abs=True).amax(1)
        elif method == "occlusion":
            window = max(2, round(min(height, width) / OCCLUSION_FRACTION))
            stride = max(1, window // 2)
            channels = images.shape[1]
            maps = Occlusion(model).attribute(images, sliding_window_shapes=(channels, window, window),
                                              strides=(channels, stride, stride), baselines=0.0, target=target,
                                              perturbations_per_eval=16).mean(1)
        else:
            maps = IntegratedGradients(model).attribute(images, baselines=0.0, target=target,
                                                        n_steps=INTEGRATION_STEPS,
                                                        internal_batch_size=INTEGRATION_STEPS).sum(1)
    return maps.detach().float().contiguous()


def _check_method(method: str, layer: str | None) -> None:
    if method not in METHODS:
        raise AlexNetError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if layer is not None and method != "gradcam":
        raise AlexNetError(f"--layer chooses Grad-CAM's layer; {method} attributes to the input pixels "
                           f"(leave --layer out, or use --method gradcam)")


@dataclass
class Explanation:
    """One image explained: the class attributed, its probability, the image and its map."""

    source: str | int  # the image file's path, or the position of a tensor among the inputs
    method: str
    layer: str | None  # Grad-CAM's layer; None for the other methods
    class_index: int  # the class attributed: the predicted one unless another was asked for
    class_name: str
    probability: float  # of that class, over the weights' test views
    predicted_index: int
    predicted_name: str
    predicted_probability: float
    image: np.ndarray  # (H, W, C) float32 0..1: the centre view the map is of
    attribution: np.ndarray  # (H, W) float32
    note: str = ""  # how it was computed where that differs from the prediction (precision, views)

    def to_dict(self) -> dict:
        """Everything but the arrays (``attribution`` is written as .npy by ``alexnet explain``)."""
        return {"source": self.source, "method": self.method, "layer": self.layer,
                "class": self.class_name, "index": self.class_index, "probability": self.probability,
                "predicted_class": self.predicted_name, "predicted_index": self.predicted_index,
                "predicted_probability": self.predicted_probability, "note": self.note}


class Explanations(list):
    """The ``Explanation`` of every image read, in input order; ``skipped``: the files left out."""

    def __init__(self, items=(), skipped: Sequence[Skipped] = ()) -> None:
        super().__init__(items)
        self.skipped = list(skipped)


def resolve_target(target: str | int, class_names: Sequence[str]) -> int | None:
    """The class index ``target`` names (a class name, or its index); None for ``top`` (the predicted one)."""
    if target == "top":
        return None
    if isinstance(target, int) or (isinstance(target, str) and target.strip().isdigit()):
        index = int(target)
        if not 0 <= index < len(class_names):
            raise AlexNetError(f"class index {index} is out of range: these weights have {len(class_names)} classes "
                               f"(0 to {len(class_names) - 1})")
        return index
    lowered = [name.lower() for name in class_names]
    if str(target).lower() in lowered:
        return lowered.index(str(target).lower())
    shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
    raise AlexNetError(f"unknown class {target!r}; pass top, an index, or one of: {shown}")


def display_images(images: torch.Tensor, metadata: WeightsMetadata) -> np.ndarray:
    """Prepared images (B, C, H, W) back to (B, H, W, C) float32 0..1 for display (normalisation undone)."""
    channels = images.shape[1]
    mean = torch.tensor(metadata.mean, dtype=torch.float32, device=images.device)
    std = torch.tensor(metadata.std, dtype=torch.float32, device=images.device)
    if len(mean) != channels:  # grey data given to an RGB model (or back): the first constants
        mean, std = mean[:1].expand(channels), std[:1].expand(channels)
    shown = (images.float() * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0, 1)
    return shown.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def explain(
    model_or_weights: str | os.PathLike | tuple[nn.Module, WeightsMetadata] | TrainedModel,
    inputs: Sequence[ImageInput] | ImageInput,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: str | int = "top",
    batch_size: int = 8,
    device: str = "auto",
    precision: str | None = None,
) -> Explanations:
    """Explain the class of each image: its prediction and an attribution map.

    Args:
        model_or_weights: a weights file, a run folder, a (model, ``WeightsMetadata``) pair, or a
            ``TrainedModel`` from ``inference.open_trained``.
        inputs: image files, folders (walked as ``alexnet predict`` walks them) and (C, H, W)
            tensors, uint8 or float 0..1; files that cannot be read are listed in ``skipped``.
        method: one of ``METHODS``; ``layer``: Grad-CAM's (default: the last convolution).
        target: ``top`` (each image's predicted class), a class name or a class index.
        device, precision: as for ``alexnet predict``; the prediction uses them, the map is fp32.
    """
    _check_method(method, layer)
    if batch_size < 1:
        raise AlexNetError(f"batch size must be at least 1, got {batch_size}")
    trained = (model_or_weights if isinstance(model_or_weights, TrainedModel)
               else open_trained(model_or_weights, device=device, precision=precision))
    metadata = trained.metadata
    chosen = resolve_target(target, trained.class_names)
    if layer is not None:  # an unknown layer is refused before any image is decoded
        conv_output(trained.model, layer)
    centre = trained.views.choose(ten_crop=False, flip=False)
    notes = []
    if trained.precision is not None:
        notes.append("predicted in bf16, attributed in fp32 (bf16 gradients keep 8 significant bits)")
    if trained.views.views != "centre":
        notes.append(f"probabilities over the test views ({trained.views.describe()}), map of the centre view")
    explained, skipped = Explanations(), []
    pending: list[tuple[str | int, torch.Tensor]] = []

    def flush() -> None:
        sources, images = zip(*pending)
        pending.clear()
        with trained.running():
            probabilities = trained.logits(trained.batch(images)).softmax(-1).cpu()
        prepared = to_channels_last(torch.stack([centre.preprocess(image, trained.input_size, metadata.mean,
                                                                   metadata.std) for image in images])
                                    .to(trained.device))
        predicted = probabilities.argmax(-1).tolist()
        targets = [chosen if chosen is not None else index for index in predicted]
        maps = attribute(trained.model, prepared, targets, method, layer=layer).cpu().numpy()
        shown = display_images(prepared, metadata)
        used_layer = (layer or conv_outputs(trained.model)[-1].name) if method == "gradcam" else None
        for row, source in enumerate(sources):
            explained.append(Explanation(
                source, method, used_layer, targets[row], trained.class_names[targets[row]],
                float(probabilities[row, targets[row]]), predicted[row], trained.class_names[predicted[row]],
                float(probabilities[row, predicted[row]]), shown[row], maps[row], "; ".join(notes)))

    for item in read_images(inputs, skipped):
        pending.append(item)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    explained.skipped = skipped
    return explained


@dataclass
class FeatureMaps:
    """The rectified maps of every convolution for one image, strongest (largest mean) first."""

    source: str | int
    image: np.ndarray  # (H, W, C) 0..1, the centre view
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (maps, h, w) float32, sorted
    order: dict[str, np.ndarray] = field(default_factory=dict)  # name -> the maps' channel numbers


def feature_maps(trained: TrainedModel, image: torch.Tensor, source: str | int = 0) -> FeatureMaps:
    """The activations of each convolution (after its activation) for one (C, H, W) image, as the
    Deep Visualization Toolbox shows them; computed in the weights' precision, hooks removed after."""
    metadata = trained.metadata
    centre = trained.views.choose(ten_crop=False, flip=False)
    prepared = to_channels_last(centre.preprocess(image, trained.input_size, metadata.mean, metadata.std)
                                .unsqueeze(0).to(trained.device))
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for layer in conv_outputs(trained.model):
            def keep(module, inputs, output, name=layer.name):
                captured[name] = output.detach().float().clone()  # before an in-place layer can change it
            handles.append(trained.model.features[layer.output_index].register_forward_hook(keep))
        with trained.running(), autocast_context(trained.device, trained.precision):
            trained.model(prepared)
    finally:
        for handle in handles:
            handle.remove()
    result = FeatureMaps(source, display_images(prepared, metadata)[0])
    for name, maps in captured.items():
        maps = maps[0]  # (C, h, w)
        order = maps.mean((1, 2)).argsort(descending=True)
        result.layers[name] = maps[order].cpu().numpy()
        result.order[name] = order.cpu().numpy()
    return result
