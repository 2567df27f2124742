"""The paper's claims, each as data: what it says, the number it gives, the arms that test it.

Every arm is an ordinary training run of the paper's recipe on the small paper-faithful network
(``alexnet_small28``: LRN, two towers, overlapping pools, dropout 0.5), differing from the claim's
reference arm in the one switch under test. Section numbers are those of Krizhevsky, Sutskever and
Hinton, "ImageNet Classification with Deep Convolutional Neural Networks", NIPS 2012.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AlexNetError

# What every arm shares unless its claim says otherwise: the paper's recipe (SGD, momentum 0.9, weight
# decay 5e-4, batch 128, lr 0.01 divided by 10 on plateaus). Its 224/256 crops translate a centred
# 28x28 garment by up to 1/8 of the image, which cost the small network accuracy (README); the arms
# mirror instead and are tested on the whole image alone, except in the claims about augmentation and
# the test views, which use the paper's own.
BASE: dict = {"recipe": "paper", "augment": "flip", "ten_crop": False, "flip_test": False}


@dataclass(frozen=True)
class Arm:
    """One setting of the switch under test."""

    name: str  # folder-safe: runs are <name>-seed<N>
    label: str  # as a table shows it
    changes: dict = field(default_factory=dict)  # TrainConfig values on top of the claim's base
    model_changes: str | None = None  # a change worked out from the model: "half-kernels", "remove-conv2", ...


@dataclass(frozen=True)
class Measure:
    """A quantity read off each run, and the difference the paper predicts between two arms."""

    key: str  # "test_top1_error", "test_top5_error", "gap", "epochs_to_error", "convergence"
    label: str
    unit: str  # "%" (shown as percentage points) or "epochs"
    expected_sign: int = 1  # sign of (other arm - reference arm) the paper predicts; +1: the other is larger
    paper: str = ""  # the paper's number for this difference


@dataclass(frozen=True)
class Claim:
    name: str
    section: str
    statement: str  # the claim, in the paper's terms
    paper: str  # the number the paper gives
    reference: Arm  # the paper's choice
    others: tuple[Arm, ...]  # what it is compared against
    measures: tuple[Measure, ...]  # the first decides the claim's verdict
    epochs: int  # the default budget, sized for a laptop (README: what `experiment all` takes)
    subset: float
    base: dict = field(default_factory=dict)  # TrainConfig values on top of BASE for every arm
    needs_colour: bool = False
    retrains: bool = True  # False: the other arms re-evaluate the reference's weights (tencrop)
    transfer: str = ""  # where the 28x28 setting differs from the paper's and the claim may not carry over
    # (arm, arm it is compared against) by name; the default: the reference against each other arm
    comparisons: tuple[tuple[str, str], ...] = ()
    deciding: int | None = None  # how many of the first comparisons decide the verdict (None: all)

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.reference, *self.others)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return self.comparisons or tuple((self.reference.name, other.name) for other in self.others)


TOP1 = "test_top1_error"
TOP5 = "test_top5_error"


def _errors(paper_top1: str, paper_top5: str = "") -> tuple[Measure, ...]:
    return (Measure(TOP1, "test top-1 error", "%", paper=paper_top1),
            Measure(TOP5, "test top-5 error", "%", paper=paper_top5))


def _gap(paper: str) -> Measure:
    return Measure("gap", "overfitting: validation error minus training error (eval mode)", "%", paper=paper)

CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        Claim(
            name="relu", section="3.1, Figure 1",
            statement="ReLUs reach 25% training error several times faster than tanh units",
            paper="6x fewer epochs to 25% training error (CIFAR-10, a four-layer network)",
            reference=Arm("relu", "ReLU", {"model_options": {"activation": "relu"}}),
            others=(Arm("tanh", "tanh", {"model_options": {"activation": "tanh"}}),),
            measures=(Measure("epochs_to_error", "epochs to 25% training error", "epochs", paper="6x (ratio)"),
                      Measure(TOP1, "test top-1 error", "%")),
            # "No regularization of any kind was employed" (Figure 1): no dropout, weight decay,
            # augmentation or LRN. The paper chose each network's learning rate to train as fast as
            # possible; here both take the recipe's 0.01.
            base={"augment": "none", "weight_decay": 0.0, "model_options": {"dropout": 0.0, "norm": "none"}},
            epochs=8, subset=0.05,
            transfer="Fashion-MNIST is easier than CIFAR-10: 25% training error comes within the first epochs "
                     "for both units, so the measure has less room than in Figure 1; one learning rate for both "
                     "instead of the fastest for each; both start from Kaiming's initialisation, which is sized "
                     "for ReLUs",
        ),
        Claim(
            name="lrn", section="3.3",
            statement="local response normalisation lowers the error",
            paper="-1.4% top-1, -1.2% top-5 (ImageNet); 13% -> 11% test error (CIFAR-10, four layers)",
            reference=Arm("lrn", "LRN", {"model_options": {"norm": "lrn"}}),
            others=(Arm("none", "no normalisation", {"model_options": {"norm": "none"}}),),
            measures=_errors("+1.4 points", "+1.2 points"),
            epochs=6, subset=0.25,
            transfer="LRN's constants (k=2, n=5, alpha=1e-4, beta=0.75) were chosen on ImageNet's validation set "
                     "for 96- and 256-map layers; the small network's 32 and 64 maps are normalised with them as they are",
        ),
        Claim(
            name="overlap", section="3.4",
            statement="overlapping pooling (3x3, stride 2) lowers the error of non-overlapping 2x2 pooling, and "
                      "overfits slightly less",
            paper="-0.4% top-1, -0.3% top-5",
            reference=Arm("overlapping", "3x3 stride 2", {"model_options": {"pooling": "overlapping"}}),
            others=(Arm("non-overlapping", "2x2 stride 2", {"model_options": {"pooling": "non-overlapping"}}),),
            measures=(*_errors("+0.4 points", "+0.3 points"), _gap("positive: \"slightly more difficult to overfit\"")),
            epochs=6, subset=0.25,
            transfer="both poolings halve the small network's maps 28 -> 14 -> 7 -> 4 (the 2x2 windows keep a last, "
                     "partial window), as both give 55 -> 27 -> 13 -> 6 in the paper's",
        ),
        Claim(
            name="towers", section="3.2",
            statement="two towers that communicate only in some layers beat one tower with half the kernels",
            paper="-1.7% top-1, -1.2% top-5",
            reference=Arm("two-towers", "two towers", {"model_options": {"towers": 2}}),
            # Footnote 2: the one-GPU net keeps the full last convolutional layer and FC layers, so
            # that the two have about as many parameters.
            others=(Arm("one-tower-half", "one tower, half the kernels of conv1-4", {"model_options": {"towers": 1}},
                        model_changes="half-kernels"),),
            measures=_errors("+1.7 points", "+1.2 points"),
            epochs=6, subset=0.25,
            transfer="the paper split the network over two GPUs for memory; the small network's towers are 16-64 "
                     "maps wide",
        ),
        Claim(
            name="dropout", section="4.2",
            statement="without dropout the network overfits substantially; dropout roughly doubles the "
                      "iterations needed to converge",
            paper="qualitative; about 2x the iterations",
            reference=Arm("dropout", "dropout 0.5", {"model_options": {"dropout": 0.5}}),
            others=(Arm("no-dropout", "no dropout", {"model_options": {"dropout": 0.0}}),),
            measures=(_gap("positive: \"substantial overfitting\" without"),
                      Measure("convergence", "epochs until validation error is within 0.5 points of its best",
                              "epochs", expected_sign=-1, paper="about 2x (dropout slower)"),
                      *_errors("")),
            epochs=8, subset=0.1,
            transfer="the paper's FC layers hold 58.6M parameters for 1.2M images; the small network's 1.2M for "
                     "5,400 images here, so it can overfit too, but within a few epochs it may not have yet",
        ),
        Claim(
            name="augment", section="4.1",
            statement="without data augmentation the network overfits substantially",
            paper="qualitative",
            reference=Arm("paper", "the paper's: 224/256 crops, mirrors, PCA lighting", {"augment": "paper"}),
            others=(Arm("none", "none", {"augment": "none"}),
                    Arm("flipped-copies", "mirrored and upside-down copies added (the PyTorch Fashion-MNIST tutorial's)",
                        {"augment": "none", "flipped_copies": True})),
            measures=(_gap("positive: \"substantial overfitting\" without"), *_errors("")),
            epochs=8, subset=0.1,
            # Each augmentation against none; the copies arm also takes three times the steps an epoch.
            comparisons=(("paper", "none"), ("flipped-copies", "none")),
            deciding=1,  # the paper's augmentation decides; the PyTorch Fashion-MNIST tutorial's copies are reported beside it
            transfer="on grey images PCA lighting has one axis: it scales the brightness; the flipped-copies "
                     "arm takes three times the steps of the others in an epoch",
        ),
        Claim(
            name="pca", section="4.1",
            statement="PCA colour lighting lowers the error",
            paper="over 1% top-1 (ImageNet)",
            reference=Arm("pca", "PCA lighting, sigma 0.1", {"augment": "paper"}),
            others=(Arm("no-pca", "without", {"augment": "crop=224/256,hflip"}),),
            measures=_errors("over +1 point"),
            epochs=8, subset=0.25, needs_colour=True,
            transfer="needs colour images (CIFAR-10, Flowers-17, ImageNet): on grey ones there is no colour to vary",
        ),
        Claim(
            name="tencrop", section="4.1",
            statement="averaging the predictions of ten views (four corners, centre, and their mirrors) at test "
                      "time lowers the error",
            paper="used for the reported results",
            reference=Arm("ten-views", "ten 224/256 views", {"augment": "paper", "ten_crop": True}),
            # The same weights tested on the centre 224/256 crop alone: no second training.
            others=(Arm("centre", "the centre crop alone", {"ten_crop": False}),),
            measures=_errors("positive (not given separately)"),
            epochs=6, subset=0.25, retrains=False,
            transfer="the same weights, evaluated twice",
        ),
        Claim(
            name="depth", section="6.1",
            statement="removing any middle convolutional layer costs accuracy",
            paper="about 2% top-1",
            reference=Arm("five-convs", "all five convolutions"),
            others=tuple(Arm(f"without-conv{index}", f"without conv{index}", model_changes=f"remove-conv{index}")
                         for index in (2, 3, 4)),
            measures=_errors("about +2 points"),
            epochs=6, subset=0.25,
            transfer="the small network has a third of the paper's kernels at 1/8 of its input side; removing "
                     "conv2 removes its LRN too, and its pooling stays",
        ),
    )
}


def get_claim(name: str) -> Claim:
    try:
        return CLAIMS[name]
    except KeyError:
        raise AlexNetError(f"unknown experiment {name!r}; choose one of: {', '.join(CLAIMS)}, or all") from None


def list_claims() -> list[str]:
    return list(CLAIMS)
