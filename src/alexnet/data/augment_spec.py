"""The augmentation spec language: what a run asks for, as text and as a typed ``AugmentConfig``.

A spec is comma-separated operations such as ``paper,noise=0.02`` or ``hflip,rotate=15,scale=0.8-1.2``:
``parse_augment`` turns it into an ``AugmentConfig`` and ``AugmentConfig.spec`` writes one back; the
presets are specs too (``PRESET_SPECS``). The batch operations the config switches on are in
``augment``; the test-time views in ``test_time``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace

from ..errors import AlexNetError, quote

# The paper trains on random 224x224 patches of images whose shorter side was resized to 256
# (Sections 2 and 4.1); as a fraction of the side that is 224/256 = 0.875.
PAPER_CROP_FRACTION = 224 / 256


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations a training batch gets; the same switches drive both loading paths.

    Written as a spec by ``spec()`` and read from one by ``parse_augment``; ``OPERATIONS`` names the
    operation that sets each field.
    """

    crop_padding: int = 0  # zero padding (pixels), then a random crop back to full size: shifts by up to this
    crop_fraction: float = 1.0  # random crops of this fraction of the side (centre crop at evaluation); paper 224/256
    random_resized_crop: tuple[float, float] | None = None  # area range of Inception-style crops, aspect 3/4..4/3
    horizontal_flip: bool = False  # mirror half the images (paper Section 4.1)
    vertical_flip: bool = False  # upside down half the images
    rotation_degrees: float = 0.0  # uniform in +-degrees
    translate: float = 0.0  # shift by up to this fraction of the side, each axis
    color_jitter: float = 0.0  # brightness, contrast, saturation factors uniform in [1 - x, 1 + x]
    pca_lighting_std: float = 0.0  # sigma of the PCA lighting coefficients; paper 0.1 (Section 4.1)
    gaussian_noise_std: float = 0.0  # per-pixel noise on the 0..1 scale
    zoom_range: tuple[float, float] | None = None  # isotropic zoom, uniform: > 1 zooms in, < 1 out (zero borders)
    hue_jitter: float = 0.0  # hue shift uniform in +-x of the hue circle (RGB; grey images have no hue)
    erase_probability: float = 0.0  # random erasing: share of the images given a rectangle of noise

    @classmethod
    def preset(cls, name: str, dataset: str | None = None) -> AugmentConfig:
        """A named recipe (``list_presets()``); for digit datasets, flips are switched off."""
        try:
            config = PRESETS[name]
        except KeyError:
            raise AlexNetError(f"unknown augmentation preset {name!r}. Known presets: {', '.join(PRESETS)}") from None
        if dataset in DIGIT_DATASETS:
            config = replace(config, horizontal_flip=False, vertical_flip=False)
        return config

    @property
    def geometric_affine(self) -> bool:
        """Whether training needs the general (resampling) geometric path instead of integer crops."""
        return bool(self.random_resized_crop or self.rotation_degrees or self.translate or self.zoom_range)

    @property
    def photometric(self) -> bool:
        """Whether training changes the images' pixel values: colours, noise or erasing (``augment.photometric``)."""
        return bool(self.color_jitter or self.hue_jitter or self.pca_lighting_std or self.gaussian_noise_std
                    or self.erase_probability)

    def spec(self) -> str:
        """The canonical spec of this config, e.g. ``shift=4,hflip``; ``parse_augment`` reads it back
        to an equal config (for any dataset: it names operations, never presets)."""
        terms = []
        for operation in OPERATIONS:
            value = getattr(self, operation.field)
            if value != _DEFAULTS[operation.field]:
                terms.append(operation.name if operation.kind == "switch" else
                             f"{operation.name}={operation.render(value)}")
        return ",".join(terms) or "none"


# A mirrored 2, 3 or 7 is not a digit: presets mirror nothing on these (the ``hflip`` operation still does).
DIGIT_DATASETS = ("mnist",)
_DEFAULTS = {item.name: item.default for item in fields(AugmentConfig)}


# --- the spec: operations, and presets made of them -----------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation of a spec (``name`` or ``name=value``), setting one ``AugmentConfig`` field."""

    name: str
    field: str
    kind: str  # switch (no value) | pixels (an integer) | number | fraction (a number or A/B) | range (MIN-MAX)
    syntax: str  # the value as the help writes it (PIXELS, MIN-MAX, ...)
    low: float  # the value's bounds: numbers in [low, high]; fractions and ranges in (low, high]
    high: float
    effect: str
    source: str  # where it comes from: the paper's section, a seed, common practice

    def usage(self) -> str:
        return self.name if self.kind == "switch" else f"{self.name}={self.syntax}"

    def expects(self) -> str:
        """The value this operation takes, with its bounds, as an error message says it."""
        if self.kind == "pixels":
            return f"{self.syntax}, an integer in [{self.low:g}, {self.high:g}]"
        if self.kind == "range":
            return f"{self.syntax} with {self.low:g} < MIN <= MAX <= {self.high:g}"
        if self.kind == "fraction":
            return f"{self.syntax}, a number or a ratio in ({self.low:g}, {self.high:g}]"
        return f"{self.syntax}, a number in [{self.low:g}, {self.high:g}]"

    def read(self, text: str) -> object:
        """The field's value from the text after ``=``; ``ValueError`` when it is not one."""
        if self.kind == "pixels":
            if not re.fullmatch(r"\d+", text) or not self.low <= int(text) <= self.high:
                raise ValueError
            return int(text)
        if self.kind == "range":
            match = re.fullmatch(rf"({_NUMBER})-({_NUMBER})", text)
            if not match:
                raise ValueError
            low, high = float(match[1]), float(match[2])
            if not self.low < low <= high <= self.high:
                raise ValueError
            return (low, high)
        match = re.fullmatch(rf"({_NUMBER})/({_NUMBER})", text) if self.kind == "fraction" else None
        if match:
            value = float(match[1]) / float(match[2]) if float(match[2]) else math.inf
        elif re.fullmatch(_NUMBER, text):
            value = float(text)
        else:
            raise ValueError
        inside = self.low < value <= self.high if self.kind == "fraction" else self.low <= value <= self.high
        if not inside:
            raise ValueError
        return value

    def render(self, value: object) -> str:
        if self.kind == "range":
            return f"{_number(value[0])}-{_number(value[1])}"
        if self.kind == "fraction" and value == PAPER_CROP_FRACTION:
            return "224/256"
        return str(value) if self.kind == "pixels" else _number(value)


_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"  # unsigned: no operation takes a negative value


def _number(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (``repr``), without a trailing ``.0``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


# In the order ``spec()`` writes them: geometry as it is applied, then colour.
OPERATIONS: tuple[Operation, ...] = (
    # The bounds leave an image to learn from: shifts of at most 256 pixels (beyond that, past the side of
    # any input, only padding is left), crops of more than 5% of the side or 1% of the area, zooms out to
    # no less than 1/20 (crop=1e-300 would be one pixel blown up to the whole input).
    Operation("shift", "crop_padding", "pixels", "PIXELS", 0, 256,
              "zero padding, then a random crop back to full size: shifts of up to PIXELS",
              "He et al. 2016; airbench (CIFAR)"),
    Operation("crop", "crop_fraction", "fraction", "A/B|FRACTION", 0.05, 1,
              "random crops of FRACTION of the side, resized to the input; the centre crop at test",
              "paper Sections 2, 4.1 (224/256)"),
    Operation("resized-crop", "random_resized_crop", "range", "MIN-MAX", 0.01, 1,
              "Inception-style crops of MIN..MAX of the area, aspect 3/4..4/3, resized to the input",
              "Szegedy et al. 2015; tutorials"),
    Operation("hflip", "horizontal_flip", "switch", "", 0, 0, "mirror half the images left to right",
              "paper Section 4.1"),
    Operation("vflip", "vertical_flip", "switch", "", 0, 0, "turn half the images upside down", "the PyTorch Fashion-MNIST tutorial"),
    Operation("rotate", "rotation_degrees", "number", "DEGREES", 0, 180, "rotation uniform in +-DEGREES",
              "tutorials, seeds"),
    Operation("translate", "translate", "number", "FRACTION", 0, 1,
              "shift uniform in +-FRACTION of the side, each axis (zero fill)", "tutorials, seeds"),
    Operation("scale", "zoom_range", "range", "MIN-MAX", 0.05, 10,
              "isotropic zoom uniform in MIN..MAX about the centre: above 1 in, below 1 out (zero borders)",
              "torchvision's RandomAffine scale"),
    Operation("jitter", "color_jitter", "number", "STRENGTH", 0, 1,
              "brightness, contrast and (RGB) saturation factors uniform in 1 +- STRENGTH", "tutorials, seeds"),
    Operation("hue", "hue_jitter", "number", "FRACTION", 0, 0.5,
              "hue shift uniform in +-FRACTION of the hue circle, value and saturation kept; RGB only, "
              "grey images are unchanged", "the PyTorch Fashion-MNIST tutorial (ColorJitter hue=0.1)"),
    Operation("pca", "pca_lighting_std", "number", "SIGMA", 0, 1,
              "the paper's PCA lighting: colour shifts along the principal axes, coefficients N(0, SIGMA)",
              "paper Section 4.1 (0.1)"),
    Operation("noise", "gaussian_noise_std", "number", "SIGMA", 0, 1,
              "Gaussian noise N(0, SIGMA) on every pixel (0..1 scale)", "tutorials"),
    Operation("erase", "erase_probability", "number", "P", 0, 1,
              "random erasing: with probability P, a rectangle of 2-33% of the image (aspect 0.3-3.3) "
              "filled with uniform noise", "Zhong et al. 2017; torchvision's RandomErasing, timm"),
)
OPERATION_NAMES = {operation.name: operation for operation in OPERATIONS}

# The presets, each a spec of operations: the one place they are defined.
PRESET_SPECS: dict[str, str] = {
    "none": "",
    # 28/32 px data: translate by up to 4 px and mirror, two integer operations per batch (the
    # standard CIFAR recipe of He et al. 2016 and airbench).
    "light": "shift=4,hflip",
    # Mirrors alone: the fast Fashion-MNIST recipe's choice. Its garments are centred, and within
    # 10 epochs the network fitted them better without translations (93.4% test top-1, against
    # 92.7% with 2-pixel and ~92% with 4-pixel shifts).
    "flip": "hflip",
    # Section 4.1: random 224/256 crops and their mirrors, PCA lighting with sigma 0.1.
    "paper": "crop=224/256,hflip,pca=0.1",
    # What tutorials and the tutorials stack on top: resized crops, rotation, translation, jitter, noise.
    "tutorial": "resized-crop=0.7-1,hflip,rotate=10,translate=0.1,jitter=0.2,noise=0.02",
}


def augment_syntax() -> str:
    """Every operation with its value, and the presets: what an error about a spec lists."""
    return (f"operations {', '.join(operation.usage() for operation in OPERATIONS)}; presets "
            f"{', '.join(PRESETS)}; e.g. paper,noise=0.02 or hflip,rotate=15,scale=0.8-1.2")


def parse_augment(spec: str, dataset: str | None = None) -> AugmentConfig:
    """The ``AugmentConfig`` of a spec: comma-separated operations (``OPERATIONS``) and presets.

    Terms apply left to right, each setting the fields it names, so later terms override earlier
    ones: ``paper,noise=0.02`` is the paper's augmentation plus noise, ``paper,pca=0`` without its
    lighting. A preset sets the fields its own spec sets; on digit datasets (``dataset="mnist"``) it
    mirrors nothing, while an explicit ``hflip`` or ``vflip`` is kept. A bad term is an
    ``AlexNetError`` that names it and lists the valid operations.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AlexNetError(f"empty augmentation spec {quote(spec)}; give {augment_syntax()}")
    values: dict[str, object] = {}
    for term in spec.split(","):
        values.update(_term_values(term.strip(), spec, dataset))
    config = replace(AugmentConfig(), **values)
    if config.random_resized_crop and config.crop_fraction != 1.0:
        raise AlexNetError(f"augmentation {quote(spec)}: crop and resized-crop both choose the training crops; "
                           f"give one (resized-crop's images are tested whole, crop's on the centre crop)")
    return config


def _term_values(term: str, spec: str, dataset: str | None) -> dict[str, object]:
    """The fields one term of ``spec`` sets: a preset's, or one operation's."""
    name, has_value, _ = (part.strip() for part in term.partition("="))
    if name not in PRESETS:
        return _operation_values(term, spec)
    if has_value:
        raise AlexNetError(f"{_where(term, spec)}: {name} is a preset and takes no value; valid: {augment_syntax()}")
    config = AugmentConfig.preset(name, dataset)
    own = PRESETS[name]  # the fields the preset sets, flips included where the dataset drops them
    return {key: getattr(config, key) for key, default in _DEFAULTS.items() if getattr(own, key) != default}


def _operation_values(term: str, spec: str) -> dict[str, object]:
    """The field one operation sets, e.g. ``rotate=15`` -> ``{"rotation_degrees": 15.0}``."""
    name, has_value, text = (part.strip() for part in term.partition("="))
    operation = OPERATION_NAMES.get(name)
    if not term:
        raise AlexNetError(f"empty operation in augmentation {quote(spec)} (two commas, or one at an end); "
                           f"valid: {augment_syntax()}")
    if operation is None:
        raise AlexNetError(f"unknown operation {_where(term, spec)}; valid: {augment_syntax()}")
    if operation.kind == "switch":
        if has_value:
            raise AlexNetError(f"{_where(term, spec)}: {name} takes no value; valid: {augment_syntax()}")
        return {operation.field: True}
    if not text:
        raise AlexNetError(f"{_where(term, spec)}: {name} needs a value, {operation.usage()}; "
                           f"valid: {augment_syntax()}")
    try:
        return {operation.field: operation.read(text)}
    except ValueError:
        raise AlexNetError(
            f"{_where(term, spec)}: {name} takes {operation.expects()}, got {quote(text)}; "
            f"valid: {augment_syntax()}"
        ) from None


def _where(term: str, spec: str) -> str:
    """The bad term as a message names it: alone, or within the spec it came in."""
    return quote(term) if term == spec.strip() else f"{quote(term)} in augmentation {quote(spec)}"


# Presets are made of operations alone (never of other presets).
PRESETS: dict[str, AugmentConfig] = {
    name: replace(AugmentConfig(), **{key: value for term in filter(None, spec.split(","))
                                      for key, value in _operation_values(term, spec).items()})
    for name, spec in PRESET_SPECS.items()
}


def list_presets() -> list[str]:
    return list(PRESETS)


def list_operations() -> list[str]:
    return [operation.name for operation in OPERATIONS]


def resolve_augment(augment: AugmentConfig | str | None, dataset: str | None = None) -> AugmentConfig:
    """An ``AugmentConfig`` from a config, a spec (a preset name is one), or None (no augmentation)."""
    if augment is None:
        return PRESETS["none"]
    if isinstance(augment, str):
        return parse_augment(augment, dataset)
    return augment


def ten_views_unlike_training(augment: AugmentConfig) -> str | None:
    """Why the paper's ten views would show a network images unlike its training ones, or None.

    The ten views are the training crops' corners and centre, cut from test images enlarged by
    256/224, and their mirrors: a network trained on whole images would see them at the wrong
    scale, and one never trained on mirrors (digits are not mirrored) would see half of them as it
    never has (measured: a mirror-trained run scored 16.7% on the ten views against 19.7% on its own)."""
    if augment.crop_fraction == 1.0:
        return "trains on whole images"
    if not augment.horizontal_flip:
        return "never mirrors the training images"
    return None
