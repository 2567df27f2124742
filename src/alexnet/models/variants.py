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


# -- four networks from tutorials, each as its code builds it ------------------------------------
# Keras layers are mapped onto ours: Conv2D padding "valid" is padding 0, "same" with a stride-1
# kxk kernel is padding (k - 1) / 2; MaxPooling2D is "valid" (floor) unless told otherwise; Dense
# and Conv2D start from glorot_uniform weights and zero biases (init="xavier"); Keras'
# BatchNormalization keeps eps 1e-3 and a running-statistics momentum of 0.99 (0.01 in PyTorch's
# terms). Keras flattens channels-last maps (H, W, C) where PyTorch flattens (C, H, W): the same
# layer widths, a different order of FC6's inputs, which matters only for importing Keras weights.
# Keras' summary() counts batch norm's moving mean and variance as (non-trainable) parameters;
# PyTorch keeps them as buffers, so our counts are Keras' trainable ones. In all four, conv1 and
# conv2 are marked normalized as in the paper, so --norm lrn puts LRN where the paper has it.

# A Keras notebook for CIFAR-10 ("AlexNet: A Comprehensive Overview"): 3x3 kernels from the first
# layer on, a stride-1 "valid" conv1 (32 -> 30), three 2x2 pools (30 -> 15 -> 7 -> 3) and the
# paper's FC 4096 -> 4096 with dropout 0.5. No normalisation, one tower.
KERAS_CIFAR = Architecture(
    convs=(
        ConvLayer(96, 3, normalized=True, pooled=True),  # "valid": (B, 96, 30, 30) -> 15x15
        ConvLayer(256, 3, padding=1, normalized=True, pooled=True, paper_bias=1.0),  # "same" -> 7x7
        ConvLayer(384, 3, padding=1),
        ConvLayer(384, 3, padding=1, paper_bias=1.0),
        ConvLayer(256, 3, padding=1, pooled=True, paper_bias=1.0),  # (B, 256, 7, 7) -> 3x3: 2,304
    ),
    hidden=(4096, 4096),
    input_size=(3, 32, 32),
)

# A Keras tutorial ("AlexNet ... built completely from Scratch") that builds the two towers as two
# Keras layers per convolution, trained on CIFAR-10 resized to 224x224: 2x48 11x11/4 kernels that
# both see the whole image (one 96-kernel conv here), 2x128 5x5 tower-local, 2x192 3x3 over both
# towers' maps, 2x192 and 2x128 3x3 tower-local; batch norm between conv and ReLU of conv1 and conv2
# only (where the paper has LRN), overlapping 3x3/2 pools after conv1, conv2, conv5.
# Its summary() shows 56x56 maps after conv1: TensorFlow's "same" at stride 4 gives ceil(224 / 4)
# = 56 by padding 3 before and 4 after. Symmetric padding 4 gives the same 56x56 maps and the
# same parameters, its windows one pixel up and left of TensorFlow's: (224 + 8 - 11) // 4 + 1 = 56.
# (Its prose says 55x55, the paper's figure; its code builds 56, which is what this is.) The pools
# then give 27, 13 and 6: FC6 sees 256 x 6 x 6 = 9,216 values, as the tutorial says.
TWO_TOWER_BN = Architecture(
    convs=(
        ConvLayer(96, 11, stride=4, padding=4, normalized=True, pooled=True),  # (B, 96, 56, 56) -> 27
        ConvLayer(256, 5, padding=2, tower_local=True, normalized=True, pooled=True, paper_bias=1.0),
        ConvLayer(384, 3, padding=1),  # (B, 384, 13, 13), sees both towers
        ConvLayer(384, 3, padding=1, tower_local=True, paper_bias=1.0),
        ConvLayer(256, 3, padding=1, tower_local=True, pooled=True, paper_bias=1.0),  # -> 6x6
    ),
    hidden=(4096, 4096),
    input_size=(3, 224, 224),
    batch_norm="marked",
    batch_norm_bias=True,  # Conv2D(filters=48, ...) keeps its bias under the batch norm
    batch_norm_eps=1e-3,
    batch_norm_momentum=0.01,
)

# A Keras article for Oxford Flowers-17 ("AlexNet Complete Architecture", CodeX): "valid" convs,
# conv2 11x11 (the paper's is 5x5), non-overlapping 2x2 pools, each block conv -> ReLU -> pool ->
# batch norm (after the block, not before the ReLU), and three hidden FC layers 4096 -> 4096 -> 1000,
# each Dense -> ReLU -> Dropout(0.4) -> batch norm, before the 17-way output (its text describes
# LRN; its code, reproduced here, has batch norm instead). The maps shrink
# 224 -> 54 -> 27 -> 17 -> 8 -> 6 -> 4 -> 2 -> 1, so FC6 sees 256 values, not 9,216. (Its
# Dense(4096, input_shape=(224*224*3,)) is ignored by Keras for a layer that is not the first.)
FLOWERS_BN = Architecture(
    convs=(
        ConvLayer(96, 11, stride=4, normalized=True, pooled=True),  # (B, 96, 54, 54) -> 27x27
        ConvLayer(256, 11, normalized=True, pooled=True, paper_bias=1.0),  # 17x17 -> 8x8
        ConvLayer(384, 3),  # 6x6
        ConvLayer(384, 3, paper_bias=1.0),  # 4x4
        ConvLayer(256, 3, pooled=True, paper_bias=1.0),  # 2x2 -> (B, 256, 1, 1)
    ),
    hidden=(4096, 4096, 1000),
    input_size=(3, 224, 224),
    batch_norm="after-block",
    batch_norm_eps=1e-3,
    batch_norm_momentum=0.01,
)

# Dive into Deep Learning (Zhang, Lipton, Li, Smola), Section 8.1 "Deep Convolutional Neural
# Networks (AlexNet)" (d2l-ai/d2l-en, chapter_convolutional-modern/alexnet.md), its PyTorch code:
# the paper's kernels at one tower and no LRN, padding 1 on the 11x11/4 conv1, for Fashion-MNIST
# resized to 1x224x224: 224 -> 54 -> 26 -> 26 -> 12 -> 12 -> 5, so FC6 sees 256 x 5 x 5 = 6,400
# values. d2l reports no accuracy figure (a plot of the losses and validation accuracy, and "hardly
# any overfitting: training and validation loss are virtually identical").
D2L = Architecture(
    convs=(
        ConvLayer(96, 11, stride=4, padding=1, normalized=True, pooled=True),  # (B, 96, 54, 54) -> 26
        ConvLayer(256, 5, padding=2, normalized=True, pooled=True, paper_bias=1.0),  # -> 12x12
        ConvLayer(384, 3, padding=1),
        ConvLayer(384, 3, padding=1, paper_bias=1.0),
        ConvLayer(256, 3, padding=1, pooled=True, paper_bias=1.0),  # (B, 256, 12, 12) -> 5x5
    ),
    hidden=(4096, 4096),
    input_size=(1, 224, 224),
)


@register_model(recipe="keras_cifar")
def alexnet_keras_cifar(**options) -> AlexNet:
    """A Keras CIFAR-10 notebook's AlexNet: 3x3 kernels, 2x2 pools, FC 4096-4096, no norm. 3x32x32."""
    defaults = dict(
        num_classes=10, towers=1, norm="none", pooling="non-overlapping", classifier_order="paper",
        init="xavier",
    )
    return AlexNet(KERAS_CIFAR, **{**defaults, **options})


@register_model(recipe="twotower_bn")
def alexnet_twotower_bn(**options) -> AlexNet:
    """A Keras tutorial's two-tower AlexNet with batch norm after conv1 and conv2; CIFAR-10 at 224."""
    defaults = dict(
        num_classes=10, towers=2, norm="batch", pooling="overlapping", classifier_order="paper",
        init="xavier",
    )
    return AlexNet(TWO_TOWER_BN, **{**defaults, **options})


@register_model(recipe="flowers_bn")
def alexnet_flowers_bn(**options) -> AlexNet:
    """A Keras Flowers-17 article's AlexNet: batch norm after every block and hidden FC layer. 224."""
    defaults = dict(
        num_classes=17, towers=1, norm="batch", fc_norm="batch", pooling="non-overlapping",
        dropout=0.4, classifier_order="paper", init="xavier",
    )
    return AlexNet(FLOWERS_BN, **{**defaults, **options})


@register_model(recipe="d2l")
def alexnet_d2l(**options) -> AlexNet:
    """Dive into Deep Learning's AlexNet (Section 8.1) for Fashion-MNIST resized to 1x224x224."""
    # d2l applies init_cnn (nn.init.xavier_uniform_ on every nn.Conv2d and nn.Linear weight, the
    # biases left as PyTorch draws them) with self.net.apply() in __init__, while its layers are
    # still nn.LazyConv2d / nn.LazyLinear, which that type test does not match: as printed, its
    # PyTorch code trains from PyTorch's default init. Xavier is what it means (its MXNet version
    # calls initialize(init.Xavier()), and earlier editions' train_ch6 applied xavier_uniform_ to
    # built layers); ours also zeroes the biases. init="default" gives what its PyTorch code runs.
    defaults = dict(
        num_classes=10, towers=1, norm="none", pooling="overlapping", classifier_order="paper",
        init="xavier",
    )
    return AlexNet(D2L, **{**defaults, **options})
