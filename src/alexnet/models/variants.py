"""The registered AlexNet variants: each is an ``Architecture`` (data) and a builder (defaults)."""

from __future__ import annotations

from ._registry import register_model
from .alexnet import AlexNet, Architecture, ConvLayer

# Section 3.5 and Figure 2 of the paper. The paper says 224x224 inputs, but 11x11 kernels at
# stride 4 only give the 55x55 maps of Figure 2 from 227 pixels: (227 - 11) / 4 + 1 = 55.
# Kernels: 96@11x11/4 -> 256@5x5 -> 384@3x3 -> 384@3x3 -> 256@3x3, FC 4096 -> 4096 -> 1000.
# Conv2, conv4 and conv5 connect only to maps of their own GPU ("tower"); conv3 and the fully
# connected layers see both. LRN follows conv1 and conv2; max pooling follows both LRNs and conv5.
PAPER = Architecture(
    convs=(
        ConvLayer(96, 11, stride=4, normalized=True, pooled=True),  # (B, 96, 55, 55) -> 27x27
        ConvLayer(256, 5, padding=2, tower_local=True, normalized=True, pooled=True, paper_bias=1.0),
        ConvLayer(384, 3, padding=1),  # (B, 384, 13, 13), sees both towers
        ConvLayer(384, 3, padding=1, tower_local=True, paper_bias=1.0),
        ConvLayer(256, 3, padding=1, tower_local=True, pooled=True, paper_bias=1.0),  # -> 6x6
    ),
    hidden=(4096, 4096),
    input_size=(3, 227, 227),
)

# torchvision's AlexNet, which follows "One weird trick for parallelizing convolutional neural
# networks" (Krizhevsky 2014): one tower, 64-192-384-256-256 kernels, no LRN, and an adaptive
# average pool to 6x6 so any input of at least 63 pixels works.
ONE_WEIRD_TRICK = Architecture(
    convs=(
        ConvLayer(64, 11, stride=4, padding=2, normalized=True, pooled=True),  # (B, 64, 55, 55)
        ConvLayer(192, 5, padding=2, tower_local=True, normalized=True, pooled=True),  # 27x27
        ConvLayer(384, 3, padding=1),  # 13x13
        ConvLayer(256, 3, padding=1, tower_local=True),
        ConvLayer(256, 3, padding=1, tower_local=True, pooled=True),  # -> 6x6
    ),
    hidden=(4096, 4096),
    input_size=(3, 224, 224),
    adaptive_pool=6,
)

# For 28x28 and 32x32 images an 11x11 stride-4 first layer would leave nothing to pool, so the
# small variants keep AlexNet's shape (5 convolutions, two towers, LRN after the first two, three
# overlapping 3x3/2 max pools, two dropout-regularised hidden FC layers) with stride-1 kernels,
# about a third of the paper's widths (96-256-384-384-256 -> 32-64-128-128-96) and FC 4096 -> 512.
# conv2 is 3x3, not 5x5: on 14x14 maps a 5x5 kernel spans a third of the image (the paper's spans
# a fifth of 27x27) and took 40% of the network's multiply-accumulates; spending them on wider
# 7x7 layers instead trained to a better accuracy in the same time (see the README). That is 13.4M
# multiply-accumulates per 28x28 image (the paper's network: 724M at 227x227), so an epoch of
# 60,000 images takes under a minute on two CPU cores. The pools are padded by 1 so they halve
# the maps exactly: 28 -> 14 -> 7 -> 4 (32 -> 16 -> 8 -> 4).
SMALL = Architecture(
    convs=(
        ConvLayer(32, 5, padding=2, normalized=True, pooled=True),  # (B, 32, 28, 28) -> 14x14
        ConvLayer(64, 3, padding=1, tower_local=True, normalized=True, pooled=True, paper_bias=1.0),
        ConvLayer(128, 3, padding=1),  # (B, 128, 7, 7), sees both towers
        ConvLayer(128, 3, padding=1, tower_local=True, paper_bias=1.0),
        ConvLayer(96, 3, padding=1, tower_local=True, pooled=True, paper_bias=1.0),  # -> 4x4
    ),
    hidden=(512, 512),
    input_size=(1, 28, 28),
    pool_padding=1,
)
SMALL_32 = Architecture(
    convs=SMALL.convs, hidden=SMALL.hidden, input_size=(3, 32, 32), pool_padding=1
)

# The Fashion-MNIST adaptation that circulates in tutorials: torchvision's widths with 3x3
# kernels, two non-overlapping 2x2 pools and no LRN, leaving 7x7 maps for a 4096-1024 classifier.
# 57,840,330 parameters, 89% of them in FC6.
TUTORIAL_28 = Architecture(
    convs=(
        ConvLayer(64, 3, padding=1, pooled=True),  # (B, 64, 28, 28) -> 14x14
        ConvLayer(192, 3, padding=1, pooled=True),  # -> 7x7
        ConvLayer(384, 3, padding=1),
        ConvLayer(256, 3, padding=1),
        ConvLayer(256, 3, padding=1),  # (B, 256, 7, 7), no third pool
    ),
    hidden=(4096, 1024),
    input_size=(1, 28, 28),
)


@register_model(recipe="paper")  # Section 5's SGD, with its LRN, dropout and init
def alexnet_paper(**options) -> AlexNet:
    """The 2012 network: two towers, LRN, overlapping pooling, dropout, the paper's init. 227x227."""
    defaults = dict(towers=2, norm="lrn", classifier_order="paper", init="paper")
    return AlexNet(PAPER, **{**defaults, **options})


@register_model(recipe="paper")  # torchvision trained it with SGD 0.01, momentum 0.9, /10 steps
def alexnet_owt(**options) -> AlexNet:
    """torchvision's single-tower AlexNet; loads ``torchvision.models.alexnet`` weights as they are."""
    defaults = dict(towers=1, norm="none", classifier_order="torchvision", init="default")
    return AlexNet(ONE_WEIRD_TRICK, **{**defaults, **options})


@register_model
def alexnet_small28(**options) -> AlexNet:
    """AlexNet's shape for 1x28x28 images (Fashion-MNIST, MNIST), 10 classes."""
    defaults = dict(num_classes=10, towers=2, norm="lrn", classifier_order="paper", init="kaiming")
    return AlexNet(SMALL, **{**defaults, **options})


@register_model
def alexnet_small32(**options) -> AlexNet:
    """AlexNet's shape for 3x32x32 images (CIFAR-10/100), 10 classes."""
    defaults = dict(num_classes=10, towers=2, norm="lrn", classifier_order="paper", init="kaiming")
    return AlexNet(SMALL_32, **{**defaults, **options})


@register_model(recipe="tutorial")  # the tutorials' Adam 1e-3, batch 64
def alexnet_tutorial28(**options) -> AlexNet:
    """The widely copied Fashion-MNIST tutorial adaptation (3x3 kernels, 2x2 pools, 4096-1024)."""
    defaults = dict(
        num_classes=10, towers=1, norm="none", pooling="non-overlapping",
        classifier_order="torchvision", init="default",
    )
    return AlexNet(TUTORIAL_28, **{**defaults, **options})
