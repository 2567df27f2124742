"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) and its variants, as one configurable module.

Every variant is five convolutions and fully connected layers (three in the paper); what differs
between them is data (an ``Architecture``) and the switches the paper argues for, passed as keyword
arguments:

========================  ==================================  =====================================
switch                    choices                             paper section
========================  ==================================  =====================================
``activation``            ``relu`` | ``tanh``                 3.1 (ReLU trains ~6x faster)
``norm``                  ``lrn`` | ``batch`` | ``none``      3.3 (LRN: -1.4% top-1 error)
``pooling``               ``overlapping`` | ``non-overlapping``  3.4 (3x3 stride 2: -0.4% top-1)
``dropout``               probability                         4.2
``towers``                1 | 2                               3.2 (two GPUs: -1.7% top-1)
``fc_norm``               ``none`` | ``batch``                 none (a Flowers-17 tutorial's)
========================  ==================================  =====================================

``init`` picks the paper's N(0, 0.01) (Section 5), Kaiming's, Glorot's (``xavier``) or PyTorch's
default. Where ``norm="batch"`` puts its layers is the architecture's (``Architecture.batch_norm``):
the usual modern replacement for LRN puts it between every convolution and its activation; the
tutorial networks reproduced here put it only where the paper has LRN, or after each whole block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import AlexNetError
from .layers import ACTIVATIONS, NORMALIZATIONS, POOLINGS, LocalResponseNorm, make_activation, make_pool


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of the feature extractor and what follows it."""

    channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    tower_local: bool = False  # with two towers, sees only its own tower's maps (groups=2)
    normalized: bool = False  # LRN follows when norm="lrn" (and batch norm where batch_norm="marked")
    pooled: bool = False  # max pooling follows
    paper_bias: float = 0.0  # bias value under the paper's initialisation (Section 5)


@dataclass(frozen=True)
class Architecture:
    """The data that tells one AlexNet variant from another."""

    convs: tuple[ConvLayer, ...]
    hidden: tuple[int, ...]  # widths of the hidden FC layers: FC6 and FC7 in the paper
    input_size: tuple[int, int, int]  # (channels, height, width) the variant is designed for
    pool_padding: int = 0  # padding of the max-pooling layers (small variants pad to halve exactly)
    adaptive_pool: int | None = None  # torchvision averages the last maps to a fixed 6x6 grid
    # Where norm="batch" puts batch norm: "every" convolution, between it and its activation (the
    # usual modern replacement for LRN); only the convolutions "marked" normalized, between it and
    # its activation; or "after-block", after the activation and pooling of every convolution.
    batch_norm: str = "every"
    # A convolution that batch norm follows directly keeps its bias: redundant (batch norm subtracts
    # the mean), but Keras' Conv2D has one unless told otherwise, and its parameter counts include it.
    batch_norm_bias: bool = False
    batch_norm_eps: float = 1e-5  # PyTorch's default; Keras' BatchNormalization uses 1e-3
    # Weight of each batch in the running statistics: PyTorch's 0.1; Keras' momentum=0.99 is 0.01.
    batch_norm_momentum: float = 0.1


class AlexNet(nn.Module):
    """Five convolutions, three fully connected layers, and the paper's design switches.

    Layer names follow ``torchvision.models.alexnet`` (``features``, ``avgpool``, ``classifier``) so
    that a torchvision ``state_dict`` loads into the single-tower variant unchanged.

    Args:
        architecture: layer sizes of the variant.
        num_classes: outputs of the last layer.
        in_chans: input channels (defaults to the architecture's).
        activation: ``relu`` or ``tanh``.
        norm: ``lrn`` (after the ReLU of the layers the architecture marks), ``batch`` (batch norm
            where the architecture's ``batch_norm`` says: by default between every convolution and
            its activation, a modern replacement), or ``none``.
        pooling: ``overlapping`` (3x3, stride 2) or ``non-overlapping`` (2x2, stride 2).
        dropout: probability of zeroing a unit of each hidden FC layer (FC6 and FC7).
        towers: 1, or 2 for the paper's two-GPU connectivity.
        fc_norm: ``batch`` (batch norm after each hidden FC layer, after its activation and
            dropout) or ``none`` (the paper).
        classifier_order: where dropout sits. ``paper``: on the outputs of FC6 and FC7 ("setting to
            zero the output of each hidden neuron", Section 4.2). ``torchvision``: on the inputs of
            FC6 and FC7, so the pooled conv5 maps are dropped too and FC7's outputs are not.
        conv_widths: kernels of each convolution instead of the architecture's (Section 3.2's
            one-tower comparison halves conv1-4).
        remove_conv: leave out this convolution (2 to 5; one that keeps the size of its maps), its
            LRN with it; its pooling stays, so the layers after it see maps of the size they were
            built for (Section 6.1's ablation).
        init: ``paper`` (weights N(0, 0.01), biases 1 where Section 5 says), ``kaiming`` (He et
            al. 2015: variance 2/fan-in for layers followed by a ReLU, zero biases; what lets the
            small variants learn without batch norm), ``xavier`` (Glorot and Bengio 2010: uniform,
            variance 2/(fan-in + fan-out), zero biases; Keras' default), or ``default`` (PyTorch's
            own, as torchvision uses: its variance of 1/(3 fan-in) shrinks the signal layer after
            layer).
    """

    def __init__(
        self,
        architecture: Architecture,
        *,
        num_classes: int = 1000,
        in_chans: int | None = None,
        activation: str = "relu",
        norm: str = "lrn",
        pooling: str = "overlapping",
        dropout: float = 0.5,
        towers: int = 2,
        classifier_order: str = "paper",
        init: str = "paper",
        fc_norm: str = "none",
        conv_widths: tuple[int, ...] | None = None,
        remove_conv: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("norm", norm, NORMALIZATIONS)
        _check_choice("pooling", pooling, POOLINGS)
        _check_choice("classifier_order", classifier_order, ("paper", "torchvision"))
        _check_choice("init", init, INITS)
        _check_choice("fc_norm", fc_norm, FC_NORMALIZATIONS)
        _check_choice("architecture.batch_norm", architecture.batch_norm, BATCH_NORM_PLACEMENTS)
        if towers not in (1, 2):
            raise AlexNetError(f"towers must be 1 or 2, got {towers}")
        if not 0.0 <= dropout < 1.0:
            raise AlexNetError(f"dropout must be a probability in [0, 1), got {dropout}")
        if num_classes < 1:
            raise AlexNetError(f"num_classes must be at least 1, got {num_classes}")

        convs = architecture.convs
        if conv_widths is not None:
            if len(conv_widths) != len(convs) or any(int(width) < 1 for width in conv_widths):
                raise AlexNetError(f"conv_widths takes {len(convs)} positive numbers (one per convolution), "
                                   f"got {tuple(conv_widths)}")
            convs = tuple(replace(conv, channels=int(width)) for conv, width in zip(convs, conv_widths))
        if remove_conv is not None:
            if not 2 <= remove_conv <= len(convs):
                raise AlexNetError(f"remove_conv names a convolution after the first, 2 to {len(convs)}; got "
                                   f"{remove_conv}")
            removed = convs[remove_conv - 1]
            if removed.stride != 1 or 2 * removed.padding != removed.kernel_size - 1:
                raise AlexNetError(f"conv{remove_conv} changes the size of its maps ({removed.kernel_size}x"
                                   f"{removed.kernel_size}, stride {removed.stride}, padding {removed.padding}): "
                                   f"without it the layers after it would not fit; remove one that keeps them")
        architecture = replace(architecture, convs=convs)
        self.architecture = architecture
        self.remove_conv = remove_conv
        self.in_chans = in_chans or architecture.input_size[0]
        self.input_size = (self.in_chans, *architecture.input_size[1:])
        self.num_classes = num_classes
        self.towers = towers
        self.init = init
        self.options = dict(
            activation=activation, norm=norm, pooling=pooling, dropout=dropout, towers=towers,
            classifier_order=classifier_order, init=init, fc_norm=fc_norm,
        )
        if conv_widths is not None:
            self.options["conv_widths"] = [conv.channels for conv in convs]
        if remove_conv is not None:
            self.options["remove_conv"] = remove_conv

        layers: list[nn.Module] = []
        channels = self.in_chans
        placement = architecture.batch_norm if norm == "batch" else None
        for index, conv in enumerate(architecture.convs, 1):
            if index == remove_conv:  # Section 6.1's ablation: the layer goes, its pooling stays, so the
                if conv.pooled:  # layers after it see maps of the size they were built for
                    layers.append(make_pool(pooling, architecture.pool_padding))
                continue
            groups = towers if conv.tower_local else 1
            if channels % groups or conv.channels % groups:
                raise AlexNetError(f"conv{index} splits {channels} -> {conv.channels} maps between {groups} towers: "
                                   f"both must be even (choose even conv_widths, or towers=1)")
            batch_first = placement == "every" or (placement == "marked" and conv.normalized)
            layers.append(
                nn.Conv2d(channels, conv.channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=groups, bias=architecture.batch_norm_bias or not batch_first)
            )
            if batch_first:
                layers.append(self._batch_norm(nn.BatchNorm2d, conv.channels))
            layers.append(make_activation(activation))
            if norm == "lrn" and conv.normalized:
                layers.append(LocalResponseNorm(groups=towers))
            if conv.pooled:
                layers.append(make_pool(pooling, architecture.pool_padding))
            if placement == "after-block":
                layers.append(self._batch_norm(nn.BatchNorm2d, conv.channels))
            channels = conv.channels
        self.features = nn.Sequential(*layers)

        if architecture.adaptive_pool:
            side = architecture.adaptive_pool
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((side, side))
        else:
            side = self._feature_side(architecture.input_size[1])
            self.avgpool = nn.Identity()
        self.feature_shape = (channels, side, side)
        widths = (channels * side * side, *architecture.hidden)
        self.num_features = widths[-1]  # width of the last hidden layer's features (pre-logits)

        classifier: list[nn.Module] = []
        for fan_in, width in zip(widths, widths[1:]):
            block = [nn.Linear(fan_in, width), make_activation(activation)]
            if classifier_order == "paper":
                block.append(nn.Dropout(dropout))
            else:
                block.insert(0, nn.Dropout(dropout))
            if fc_norm == "batch":
                block.append(self._batch_norm(nn.BatchNorm1d, width))
            classifier += block
        self.classifier = nn.Sequential(*classifier, nn.Linear(widths[-1], num_classes))
        if init == "paper":
            self._init_paper()
        elif init == "kaiming":
            self._init_kaiming()
        elif init == "xavier":
            self._init_xavier()

    # -- the shared interface ------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) to the last convolutional maps, e.g. (B, 256, 6, 6)."""
        self._check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Convolutional maps to logits (B, classes), or to the FC7 features with ``pre_logits``."""
        x = torch.flatten(self.avgpool(x), 1)  # (B, 256 * 6 * 6) for the ImageNet variants
        x = self.classifier[:-1](x)  # (B, 4096): the last hidden layer (FC7) after its activation
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace FC8 with a freshly initialised layer of ``num_classes`` outputs (fine-tuning)."""
        old = self.classifier[-1]
        self.classifier[-1] = nn.Linear(old.in_features, num_classes).to(old.weight.device)
        self.num_classes = num_classes
        if self.init in ("paper", "kaiming"):
            nn.init.normal_(self.classifier[-1].weight, 0.0, 0.01)
            nn.init.zeros_(self.classifier[-1].bias)
        elif self.init == "xavier":
            self._init_xavier(self.classifier[-1])

    # -- details -------------------------------------------------------------------------------

    def _init_paper(self) -> None:
        """Section 5: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC
        layers ("accelerates the early stages of learning by providing the ReLUs with positive
        inputs"), 0 in the remaining layers."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        specs = [spec for index, spec in enumerate(self.architecture.convs, 1) if index != self.remove_conv]
        for conv, spec in zip(convs, specs):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            if conv.bias is not None:
                nn.init.constant_(conv.bias, spec.paper_bias)
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for index, linear in enumerate(linears):
            nn.init.normal_(linear.weight, 0.0, 0.01)
            nn.init.constant_(linear.bias, 1.0 if index < len(linears) - 1 else 0.0)

    def _init_kaiming(self) -> None:
        layers = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        for layer in layers[:-1]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        nn.init.normal_(layers[-1].weight, 0.0, 0.01)  # small logits at first: an even start
        nn.init.zeros_(layers[-1].bias)

    def _init_xavier(self, only: nn.Module | None = None) -> None:
        """Glorot and Bengio (2010), as Keras' ``glorot_uniform`` with zero biases: weights from
        U(-a, a), a = sqrt(6 / (fan_in + fan_out)). With two towers every convolution is two layers of
        half the kernels (the two-tower Keras code builds it so), so fan_out counts one tower's kernels;
        ``nn.init.xavier_uniform_`` would count both and draw smaller weights."""
        for module in [only] if only is not None else self.modules():
            if isinstance(module, nn.Conv2d):
                area = math.prod(module.kernel_size)
                fan_in = module.in_channels // module.groups * area
                fan_out = module.out_channels // self.towers * area
            elif isinstance(module, nn.Linear):
                fan_in, fan_out = module.in_features, module.out_features
            else:
                continue
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _batch_norm(self, kind: type[nn.Module], channels: int) -> nn.Module:
        """``nn.BatchNorm2d`` or ``nn.BatchNorm1d`` with the architecture's epsilon and momentum."""
        architecture = self.architecture
        return kind(channels, eps=architecture.batch_norm_eps, momentum=architecture.batch_norm_momentum)

    def _feature_side(self, side: int) -> int:
        """Spatial side of the last maps for an input of ``side`` pixels (shape arithmetic)."""
        for module in self.features:
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
                kernel, stride, padding = (_first(module.kernel_size), _first(module.stride),
                                           _first(module.padding))
                span = side + 2 * padding - kernel
                rounded_up = getattr(module, "ceil_mode", False)  # a last, partial window is kept
                side = (-(-span // stride) if rounded_up else span // stride) + 1
        return side

    def _check_input(self, x: torch.Tensor) -> None:
        channels, height, width = self.input_size
        if x.dim() != 4 or x.shape[1] != channels:
            raise AlexNetError(
                f"expected a batch of images shaped (B, {channels}, {height}, {width}), got "
                f"{tuple(x.shape)}; {channels}-channel input is what this model was built for "
                f"(pass in_chans= to build it for other images)"
            )
        if self.architecture.adaptive_pool:
            if min(self._feature_side(x.shape[2]), self._feature_side(x.shape[3])) < 1:
                raise AlexNetError(
                    f"input {tuple(x.shape[2:])} is too small for this model; use at least "
                    f"{height}x{width} (resize the images)"
                )
        elif tuple(x.shape[2:]) != (height, width):
            raise AlexNetError(
                f"this model takes {height}x{width} images, got {x.shape[2]}x{x.shape[3]}; resize or "
                f"crop them to {height}x{width} (its fully connected layers fix the input size)"
            )


INITS = ("paper", "kaiming", "default", "xavier")
FC_NORMALIZATIONS = ("none", "batch")
BATCH_NORM_PLACEMENTS = ("every", "marked", "after-block")

def parse_widths(text: str) -> list[int]:
    """``"16,32,64,64,96"`` -> ``[16, 32, 64, 64, 96]`` (the command line's --conv-widths)."""
    try:
        return [int(width) for width in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


# The switches every variant takes, as (type, choices or None, what it does): the command line's
# flags are made from this table.
SWITCHES: dict[str, tuple[type, tuple[str, ...] | None, str]] = {
    "activation": (str, ACTIVATIONS, "ReLU or the saturating tanh it replaced (Section 3.1)"),
    "norm": (str, NORMALIZATIONS, "the paper's LRN, batch norm, or none (Section 3.3)"),
    "pooling": (str, POOLINGS, "3x3 stride 2 or 2x2 stride 2 max pooling (Section 3.4)"),
    "dropout": (float, None, "dropout probability of FC6 and FC7 (Section 4.2)"),
    "towers": (int, None, "1, or 2 for the paper's two-GPU connectivity (Section 3.2)"),
    "init": (str, INITS, "the paper's N(0, 0.01), Kaiming's, PyTorch's default, or Glorot's (Section 5)"),
    "fc_norm": (str, FC_NORMALIZATIONS, "batch norm after each hidden FC layer, or none (the paper)"),
    "conv_widths": (parse_widths, None,
                    "kernels of each convolution, comma-separated, e.g. 16,32,64,64,96 (Section 3.2's comparison)"),
    "remove_conv": (int, None, "leave out this convolution (2 to 5, one that keeps the size of its maps), keeping its pooling (Section 6.1's ablation)"),
}


def _first(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AlexNetError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
