"""Training recipes: each is the set of hyper-parameters a source used, in one place.

A recipe is a table of defaults: ``TrainConfig.resolved()`` copies each of its values into every
``TrainConfig`` field the user left unset (anything given on the command line or in a YAML file
wins), and training reads only the resolved configuration, which ``config.yaml`` records whole. Learning rates are per batch as given (no automatic scaling with batch
size, except across processes; see ``alexnet.training.distributed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import AlexNetError


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # where the numbers come from
    optimizer: str  # "sgd" | "adam" | "adamw"
    lr: float  # peak learning rate
    batch_size: int
    epochs: int
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # applied to weights only when decay_norm_and_bias is False
    decay_norm_and_bias: bool = True  # the paper decays every parameter
    schedule: str = "constant"  # "plateau" | "onecycle" | "cosine" | "step" | "constant"
    plateau_factor: float = 0.1  # "divided the learning rate by 10 when the validation error rate
    plateau_patience: int = 2  # stopped improving" (Section 5); patience is ours, and so is
    plateau_threshold: float = 0.002  # the least fall in validation error (absolute) that counts as
    # improving: 5,000 validation images measure an error of ~9% to +-0.4%, so smaller gains are
    # noise, and counting them kept the rate at 0.01 for 16 of 20 epochs of Fashion-MNIST
    warmup_fraction: float = 0.0  # share of the steps spent warming up (onecycle)
    step_epochs: int = 30  # step: epochs between falls (torchvision's reference recipe for AlexNet)
    step_factor: float = 0.1  # step: /10 at each fall, as Caffe's bvlc_alexnet and torchvision
    label_smoothing: float = 0.0
    augment: str = "none"  # an augmentation preset of alexnet.data
    flip_test: bool = False  # average the logits of each test image and its mirror
    ten_crop: bool = False  # final evaluation averages the softmax of ten views (Section 4.1)
    backbone_lr_scale: float = 1.0  # fine-tuning: the pretrained layers' rate, relative to the new head's

    model_options: dict = field(default_factory=dict)  # switches the recipe sets on the model


FAST = Recipe(
    name="fast",
    source="ours, tuned for time to accuracy on two CPU cores (see README: what each "
    "choice bought)",
    optimizer="sgd",
    lr=0.1,
    batch_size=256,
    epochs=10,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    decay_norm_and_bias=False,
    schedule="onecycle",
    warmup_fraction=0.25,
    label_smoothing=0.1,
    # Mirrors only: within 10 epochs the small network is under- rather than over-fitted
    # (train accuracy about val accuracy), so it gained from less regularisation, not more.
    augment="flip",
    flip_test=True,
    # Batch norm between each convolution and its ReLU; PyTorch's own init (with batch norm
    # it trained better than Kaiming's here: 92.0% against 90.8-91.4% after 8 epochs);
    # no dropout, for the same reason as the augmentation.
    model_options={"norm": "batch", "init": "default", "dropout": 0.0},
)


# fast's recipe with the rates of fine-tuning (all else as fast's).
FINETUNE = replace(
    FAST,
    name="finetune",
    source="the fine-tuning guides of torchvision (references/classification: a rate 10x lower "
    "than from scratch for pretrained weights), timm (a short warm-up) and Keras (a new head "
    "on a pretrained base, the base at a low rate): fast's recipe with the pretrained layers "
    "at a tenth of its peak rate (0.01), the new classifier at 0.1, a warm-up of a tenth of the steps",
    # fast's one-cycle peak of 0.1 on every layer overwrote what the pretrained layers had
    # learnt (measured: MNIST digits from Fashion-MNIST weights, no better than from scratch),
    # and it made the three unnormalised FC layers of a frozen backbone diverge to chance;
    # with them at 0.01 the same run gained 8 points. A new classifier at 0.01 too learnt too
    # slowly: 45 steps from 20 images a class left it below the scratch run.
    backbone_lr_scale=0.1,
    batch_size=64,  # fine-tuning sets are small: more steps from the same images
    warmup_fraction=0.1,
    # No model switches: a fine-tuned model is built with the switches its weights were
    # trained with (TrainConfig.resolved reads them from the weights' metadata).
    model_options={},
)


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="paper",
            source="Krizhevsky et al. 2012, Section 5: SGD, batch 128, momentum 0.9, weight decay "
            "5e-4, lr 0.01 divided by 10 when validation error stops improving",
            optimizer="sgd",
            lr=0.01,
            batch_size=128,
            epochs=30,  # the paper's ran "roughly 90 cycles through the training set"
            momentum=0.9,
            weight_decay=5e-4,
            schedule="plateau",
            augment="paper",
            # "At test time, the network makes a prediction by extracting five 224x224 patches (the
            # four corner patches and the center patch) as well as their horizontal reflections"
            # (Section 4.1): the test images are resized to 256/224 of the input and cut ten times.
            ten_crop=True,
            # The initialisation is the model's own: N(0, 0.01) for alexnet_paper, which Section 5
            # sized for the 227x227 network; on the small variants it stays at chance (measured:
            # 10% after two epochs of Fashion-MNIST, with either input scale), so they keep
            # their Kaiming init unless --init paper is given.
        ),
        Recipe(
            name="tutorial",
            source="the widely copied Fashion-MNIST AlexNet tutorial: Adam, lr 1e-3, batch 64, "
            "no schedule, no augmentation",
            optimizer="adam",
            lr=1e-3,
            batch_size=64,
            epochs=4,
            augment="none",
        ),
        FAST,
        FINETUNE,
        # The tutorial networks' own training, as their code runs it. What a recipe cannot say:
        # their inputs are pixels / 255 (the two-tower one: per-image standardisation) where ours
        # are normalised per channel, and Keras' Adam has epsilon 1e-7 (PyTorch's: 1e-8).
        Recipe(
            name="keras_cifar",
            source="the Keras CIFAR-10 notebook of alexnet_keras_cifar: compile(optimizer='adam') "
            "(lr 1e-3), fit(epochs=10) without batch_size (Keras' default of 32), no augmentation",
            optimizer="adam",
            lr=1e-3,
            batch_size=32,
            epochs=10,
            augment="none",
        ),
        Recipe(
            name="twotower_bn",
            source="the Keras two-tower tutorial of alexnet_twotower_bn: SGD(lr=0.001) without "
            "momentum, batch(batch_size=1), 'upto 5 epochs', CIFAR-10 resized to 224x224",
            optimizer="sgd",
            lr=0.001,
            # The tutorial's own batch of one image: 45,000 optimiser steps an epoch, each on one
            # 224x224 image, impractically slow on a CPU; pass --batch-size (and --lr) to go faster.
            batch_size=1,
            epochs=5,  # its fit() call is cut off after "Fit the model upto 5 epochs"
            momentum=0.0,
            augment="none",
        ),
        Recipe(
            name="flowers_bn",
            source="the Keras Flowers-17 article of alexnet_flowers_bn: compile(optimizer='adam') "
            "(lr 1e-3), fit(batch_size=64, epochs=1, validation_split=0.2, shuffle=True)",
            optimizer="adam",
            lr=1e-3,
            batch_size=64,
            # One pass of 17 steps (1,088 images): batch norm's running statistics (momentum 0.99)
            # are then still 0.99^17 = 84% their initial 0 and 1, which evaluation uses.
            epochs=1,
            augment="none",
            # validation_split=0.2 holds out a fifth of all 1,360 images (272) and tests on nothing
            # else; our Flowers-17 keeps 340 for testing and holds out --val-size images of the
            # other 1,020 (a fifth: --val-size 204).
        ),
        Recipe(
            name="d2l",
            source="Dive into Deep Learning, Section 8.1: AlexNet(lr=0.01) with d2l.Classifier's "
            "plain torch.optim.SGD (no momentum, no weight decay), FashionMNIST(batch_size=128, "
            "resize=(224, 224)), Trainer(max_epochs=10), no augmentation",
            optimizer="sgd",
            lr=0.01,
            batch_size=128,
            epochs=10,
            momentum=0.0,
            augment="none",
        ),
    )
}
ALIASES = {"seed": "tutorial", "fine-tune": "finetune"}
# The recipe a run starts from trained weights (--init-from) with when none is named.
FINE_TUNING_RECIPE = "finetune"


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name lists the known ones."""
    try:
        return RECIPES[ALIASES.get(name, name)]
    except KeyError:
        raise AlexNetError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None
