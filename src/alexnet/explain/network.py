"""The network as ``explain`` sees it: its convolutions by name, where each one's output is, the
receptive field of a unit of each, and the frame attributions run in.

A layer's *output* is its rectified maps: the activation that follows the convolution (after batch
norm where there is one, before LRN and pooling), as Grad-CAM (Selvaraju et al. 2017) and the
Deep Visualization Toolbox take them. The receptive field is hand-written: neither Captum nor
pytorch-grad-cam computes one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import AlexNetError


@dataclass(frozen=True)
class ConvOutput:
    """One convolution of ``model.features``: its name (``conv1`` ..), the module, and the index in
    ``model.features`` of the activation that gives its rectified maps."""

    name: str
    conv: nn.Conv2d
    output_index: int


def conv_outputs(model: nn.Module) -> list[ConvOutput]:
    """The convolutions of ``model.features`` in order, named ``conv1``.. as the paper numbers them
    (a convolution left out by ``remove_conv`` keeps its number free, so ``conv4`` is always the
    fourth of the architecture)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise AlexNetError("explain works on the package's AlexNet models (a `features` Sequential of "
                           "convolutions); open the weights with alexnet.inference.open_trained")
    numbers = [index for index in range(1, 1 + len(getattr(model, "architecture").convs))
               if index != getattr(model, "remove_conv", None)] if hasattr(model, "architecture") else None
    found: list[ConvOutput] = []
    modules = list(features)
    for position, module in enumerate(modules):
        if not isinstance(module, nn.Conv2d):
            continue
        output = position
        # The maps a unit "sees with": after batch norm and the activation that follow the convolution.
        while output + 1 < len(modules) and isinstance(modules[output + 1], (nn.BatchNorm2d, nn.ReLU, nn.Tanh)):
            output += 1
            if isinstance(modules[output], (nn.ReLU, nn.Tanh)):
                break
        number = numbers[len(found)] if numbers else len(found) + 1
        found.append(ConvOutput(f"conv{number}", module, output))
    return found


def conv_output(model: nn.Module, layer: str) -> ConvOutput:
    """The convolution named ``layer`` (``conv1``..``conv5``); refuses another name, listing them."""
    layers = conv_outputs(model)
    for candidate in layers:
        if candidate.name == layer:
            return candidate
    raise AlexNetError(f"unknown layer {layer!r}; this model's are {', '.join(item.name for item in layers)}")


def output_module(model: nn.Module, layer: str) -> nn.Module:
    """The module whose output is ``layer``'s rectified maps (where Grad-CAM and feature maps hook)."""
    return model.features[conv_output(model, layer).output_index]


@dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of a layer looks in the input: unit (row, column) of the layer's maps sees input
    rows ``row * stride + offset`` .. ``+ size - 1`` (and columns alike); ``offset`` is negative where
    padding puts part of the field outside the image."""

    size: int
    stride: int
    offset: int

    def box(self, row: int, column: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the field of unit (row, column), clipped to a height x width
        input; bottom and right exclusive."""
        top, left = row * self.stride + self.offset, column * self.stride + self.offset
        return max(0, top), max(0, left), min(height, top + self.size), min(width, left + self.size)


def receptive_field(model: nn.Module, layer: str) -> ReceptiveField:
    """The receptive field of ``layer``'s units, from the kernels, strides and paddings of the
    convolutions and pools before it (the architecture's table, as ``model.features`` holds it).

    Each layer of kernel k, stride s and padding p widens the field by (k - 1) x the distance between
    neighbouring units of its input, moves its start back by p such distances, and multiplies the
    distance by s. Batch norm, the activation and LRN (across maps, not positions) leave it as it is.
    """
    target = conv_output(model, layer).output_index
    size, stride, offset = 1, 1, 0
    for module in list(model.features)[: target + 1]:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, step, padding = (_first(module.kernel_size), _first(module.stride), _first(module.padding))
            dilation = _first(getattr(module, "dilation", 1))
            size += (dilation * (kernel - 1)) * stride
            offset -= padding * stride
            stride *= step
    return ReceptiveField(size, stride, offset)


def _first(value) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


@contextlib.contextmanager
def attribution_frame(model: nn.Module) -> Iterator[nn.Module]:
    """Within, ``model`` computes attributions: eval mode, fp32, gradients for the input only, and
    activations not in place (a hook must see a layer's output before the next layer changes it:
    ``nn.ReLU(inplace=True)`` would overwrite it). Everything is put back on leaving, even after an
    error, and the model is checked to hold no hook left behind."""
    was_training = model.training
    activations = [module for module in model.modules() if getattr(module, "inplace", False) is True]
    parameters = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    hooks_before = _hook_count(model)
    model.eval()
    try:
        for module in activations:
            module.inplace = False
        for parameter, _ in parameters:
            parameter.requires_grad_(False)  # gradients of the input only: none kept on the weights
        with torch.enable_grad():
            yield model
    finally:
        for module in activations:
            module.inplace = True
        for parameter, required in parameters:
            parameter.requires_grad_(required)
        model.train(was_training)
    if _hook_count(model) != hooks_before:
        raise AlexNetError("an attribution left a hook on the model; this is a bug, please report it")


def _hook_count(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
               + len(getattr(module, "_backward_pre_hooks", {})) for module in model.modules())
