"""Augmentation of whole batches on the training device: the paper's, the tutorials', and presets.

Every function takes a batch (B, C, H, W) and draws one set of random parameters *per image* from an
explicit ``torch.Generator``, so a batch is augmented by a handful of tensor operations and an epoch
replayed from the same generator seed is bit-identical. torchvision's ``transforms.v2`` draw one set of
parameters per call (the whole batch would get the same crop), which is why the batch versions here
are written by hand; the streaming path uses ``transforms.v2`` per image for the geometric part and
these functions for the photometric part, so the two paths share one ``AugmentConfig``.

Pixel values are uint8 before ``to_float`` and float on the 0..1 scale after it.

What a run asks for is a *spec*, comma-separated operations such as ``paper,noise=0.02`` or
``hflip,rotate=15,scale=0.8-1.2``: ``parse_augment`` turns it into an ``AugmentConfig`` and
``AugmentConfig.spec`` writes one back; the presets are specs too (``PRESET_SPECS``).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..errors import AlexNetError, quote

# The paper trains on random 224x224 patches of images whose shorter side was resized to 256
# (Sections 2 and 4.1); as a fraction of the side that is 224/256 = 0.875.
PAPER_CROP_FRACTION = 224 / 256
# ITU-R BT.601 luma weights, the ones torchvision's rgb_to_grayscale uses.
LUMA = (0.299, 0.587, 0.114)


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


def derive_seed(seed: int, epoch: int, stream: str = "") -> int:
    """A 63-bit seed from (seed, epoch, stream): independent streams for shuffling, augmentation, ..."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu", stream: str = "") -> torch.Generator:
    """A generator seeded from (seed, epoch, stream) only: replaying an epoch replays its randomness."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, epoch, stream))


def _uniform(shape, low, high, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def _coin(count, generator, device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) < 0.5


# --- geometry -------------------------------------------------------------------------------


def random_crop(
    images: torch.Tensor, size: tuple[int, int], generator: torch.Generator, *, padding: int = 0,
    horizontal_flip: bool = False, vertical_flip: bool = False, indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """A random ``size`` crop of each image after zero ``padding``, each mirrored with probability 1/2.

    With ``indices``, crops ``images[indices]`` straight out of ``images`` (a whole dataset) without
    copying the selected images first: one indexing of an ``unfold`` view selects image and window.
    """
    if padding:
        images = F.pad(images if indices is None else images[indices], (padding,) * 4)
        indices = None
    _, _, height, width = images.shape
    crop_height, crop_width = size
    if crop_height > height or crop_width > width:
        raise AlexNetError(f"cannot crop {crop_height}x{crop_width} out of {height}x{width} images")
    device = images.device
    batch = len(images) if indices is None else len(indices)
    rows = torch.arange(batch, device=device) if indices is None else indices
    top = torch.randint(0, height - crop_height + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, width - crop_width + 1, (batch,), generator=generator, device=device)
    windows = images.unfold(2, crop_height, 1).unfold(3, crop_width, 1)  # (N, C, rows, cols, h, w), a view
    crops = windows[rows, :, top, left]  # (B, C, h, w)
    for flip, dim in ((horizontal_flip, -1), (vertical_flip, -2)):
        if flip:
            chosen = _coin(batch, generator, device)
            crops[chosen] = crops[chosen].flip(dim)
    return crops


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` crop of every image, placed as torchvision's (and ``ten_crop``'s) centre view."""
    return TF.center_crop(images, list(size))


def random_affine(
    images: torch.Tensor, output_size: tuple[int, int], generator: torch.Generator, *,
    crop_fraction: float = 1.0, scale_range: tuple[float, float] | None = None, degrees: float = 0.0,
    translate: float = 0.0, horizontal_flip: bool = False, vertical_flip: bool = False,
    shift_pixels: int = 0, zoom_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Resized crops, rotation, translation, zoom and flips of float images as one ``grid_sample`` per batch.

    The crop (area ``scale_range`` with aspect 3/4..4/3, else a side fraction ``crop_fraction``) is
    placed uniformly inside the image, then shifted by up to ``translate`` of the side and by a
    whole number of pixels up to ``shift_pixels`` (what zero padding and a random crop do on the
    integer path), rotated by up to ``degrees`` and zoomed about its centre by a factor uniform in
    ``zoom_range`` (below 1 the image shrinks inside the frame); outside the image is zero. Output
    is ``output_size``.
    """
    batch, channels = images.shape[:2]
    device = images.device
    if scale_range:
        area = _uniform(batch, scale_range[0], scale_range[1], generator, device)
        log_ratio = _uniform(batch, math.log(3 / 4), math.log(4 / 3), generator, device)
        ratio = torch.exp(log_ratio)
        scale_x = torch.sqrt(area * ratio).clamp(max=1.0)  # half-widths in normalised [-1, 1] units
        scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
    else:
        scale_x = scale_y = torch.full((batch,), crop_fraction, device=device)
    shift_x = _uniform(batch, -1, 1, generator, device) * (1 - scale_x)
    shift_y = _uniform(batch, -1, 1, generator, device) * (1 - scale_y)
    if translate:
        shift_x = shift_x + _uniform(batch, -2 * translate, 2 * translate, generator, device)
        shift_y = shift_y + _uniform(batch, -2 * translate, 2 * translate, generator, device)
    if shift_pixels:  # one pixel is 2 / side in normalised units
        height, width = images.shape[-2:]
        shift_x = shift_x + torch.randint(-shift_pixels, shift_pixels + 1, (batch,), generator=generator,
                                          device=device) * (2 / width)
        shift_y = shift_y + torch.randint(-shift_pixels, shift_pixels + 1, (batch,), generator=generator,
                                          device=device) * (2 / height)
    angle = _uniform(batch, -degrees, degrees, generator, device) * (math.pi / 180)
    if zoom_range:  # a zoom of z shows 1/z of the crop: the sampled half-widths shrink by z
        zoom = _uniform(batch, zoom_range[0], zoom_range[1], generator, device)
        scale_x, scale_y = scale_x / zoom, scale_y / zoom
    if horizontal_flip:
        scale_x = torch.where(_coin(batch, generator, device), -scale_x, scale_x)
    if vertical_flip:
        scale_y = torch.where(_coin(batch, generator, device), -scale_y, scale_y)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([scale_x * cos, -scale_y * sin, shift_x], 1),
            torch.stack([scale_x * sin, scale_y * cos, shift_y], 1),
        ],
        1,
    )  # (B, 2, 3): output coordinates -> input coordinates
    grid = F.affine_grid(theta.to(images.dtype), [batch, channels, *output_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float images on their device; antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


# --- colour ---------------------------------------------------------------------------------


class ColourPCA(NamedTuple):
    """Eigen-decomposition of the per-pixel colour covariance of a training set (0..1 scale)."""

    eigenvalues: torch.Tensor  # (C,) variances along the principal axes, descending
    eigenvectors: torch.Tensor  # (C, C), column i is the axis of eigenvalues[i]


def compute_pca(images: torch.Tensor, chunk_pixels: int = 1 << 22) -> ColourPCA:
    """Eigen-decomposition of the covariance of pixel colours over ``images`` (N, C, H, W), 0..1 scale.

    Exact over every pixel, accumulated in float64 chunks; eigenvalues descending, each eigenvector's
    largest component positive so that the result does not depend on the solver's sign choice.
    """
    channels = images.shape[1]
    per_image = images[0].numel() // channels
    step = max(1, chunk_pixels // per_image)
    total = torch.zeros(channels, dtype=torch.float64)
    products = torch.zeros(channels, channels, dtype=torch.float64)
    for start in range(0, len(images), step):
        chunk = images[start : start + step].to(torch.float64).div_(255)
        pixels = chunk.transpose(0, 1).reshape(channels, -1)  # (C, pixels)
        total += pixels.sum(1)
        products += pixels @ pixels.T
    count = len(images) * per_image
    mean = total / count
    covariance = (products - count * torch.outer(mean, mean)) / (count - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp(min=0), eigenvectors.flip(1)
    signs = torch.sign(eigenvectors.gather(0, eigenvectors.abs().argmax(0, keepdim=True)))
    return ColourPCA(eigenvalues.float(), (eigenvectors * signs).float())


def pca_lighting(images: torch.Tensor, pca: ColourPCA, std: float, generator: torch.Generator) -> torch.Tensor:
    """The paper's "fancy PCA" (Section 4.1): add ``P (alpha * sqrt(lambda))`` to every pixel of an image.

    ``alpha ~ N(0, std)`` per image and principal axis. The paper writes the eigenvalue ``lambda``; we
    scale by its square root, the standard deviation of the colours along that axis, so that the shift
    is ``std`` of the natural colour spread whatever the pixel scale (with ``lambda`` itself the shift
    would be 255 times larger on 0..255 pixels than on 0..1 ones). The shift along axis i therefore
    has standard deviation ``std * sqrt(lambda_i)``.
    """
    batch, channels = images.shape[:2]
    alpha = torch.randn(batch, channels, generator=generator, device=images.device) * std
    eigenvalues = pca.eigenvalues.to(images.device, images.dtype)
    eigenvectors = pca.eigenvectors.to(images.device, images.dtype)
    shift = (alpha * eigenvalues.sqrt()) @ eigenvectors.T  # (B, C)
    return images + shift.view(batch, channels, 1, 1)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (for RGB) saturation, each factor uniform in [1 - s, 1 + s] per image."""
    batch, channels = images.shape[:2]
    device = images.device
    low, high = max(0.0, 1 - strength), 1 + strength
    brightness = _uniform((batch, 1, 1, 1), low, high, generator, device)
    contrast = _uniform((batch, 1, 1, 1), low, high, generator, device)
    images = (images * brightness).clamp(0, 1)
    gray = _grayscale(images)
    images = (images - gray.mean((1, 2, 3), keepdim=True)) * contrast + gray.mean((1, 2, 3), keepdim=True)
    images = images.clamp(0, 1)
    if channels == 3:
        saturation = _uniform((batch, 1, 1, 1), low, high, generator, device)
        gray = _grayscale(images)
        images = ((images - gray) * saturation + gray).clamp(0, 1)
    return images


def hue_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Each RGB image's hue turned by a shift uniform in +-``strength`` of the hue circle (0.5: half
    of it), its HSV saturation and value kept. Grey images have no hue: returned as they are.

    torchvision's ``adjust_hue`` takes one shift per call (the whole batch would turn alike), so the
    HSV conversion is written out here, as torchvision's own, to shift every image by its own amount.
    """
    if images.shape[1] != 3:
        return images
    shift = _uniform((len(images), 1, 1), -strength, strength, generator, images.device)
    hue, saturation, value = _rgb_to_hsv(images).unbind(1)
    return _hsv_to_rgb(torch.stack([(hue + shift).remainder(1.0), saturation, value], 1))


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in 0..1 -> HSV, hue as a fraction of the circle."""
    red, green, blue = images.unbind(1)
    value = images.amax(1)
    chroma = value - images.amin(1)
    saturation = chroma / torch.where(value == 0, torch.ones_like(value), value)
    safe = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    hue = torch.where(value == red, (green - blue) / safe,
                      torch.where(value == green, 2 + (blue - red) / safe, 4 + (red - green) / safe))
    hue = torch.where(chroma == 0, torch.zeros_like(hue), hue / 6).remainder(1.0)
    return torch.stack([hue, saturation, value], 1)


def _hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV (hue as a fraction of the circle) -> RGB: one of the six sectors of the hue circle per pixel."""
    hue, saturation, value = images.unbind(1)
    sector = torch.floor(hue * 6)
    within = hue * 6 - sector
    low = value * (1 - saturation)
    falling = value * (1 - saturation * within)
    rising = value * (1 - saturation * (1 - within))
    # per sector, which of (value, low, falling, rising) is red, green, blue
    table = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]], device=images.device)
    choice = table[sector.long().remainder(6)].permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
    return torch.stack([value, low, falling, rising], 1).gather(1, choice)


def gaussian_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Independent N(0, std) noise on every pixel."""
    return images + torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype) * std


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


# --- the whole pipeline -----------------------------------------------------------------------


def _crop_size(height: int, width: int, fraction: float) -> tuple[int, int]:
    return max(1, round(height * fraction)), max(1, round(width * fraction))


def geometric(
    images: torch.Tensor, config: AugmentConfig, *, train: bool, output_size: tuple[int, int],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float 0..1 (B, C, *output_size): crops, flips, affine, resize.

    Evaluation takes the centre crop of ``config.crop_fraction`` (the paper's ten views are cut
    from whole images by ``inference.predict_logits``).
    """
    height, width = images.shape[-2:]
    if not train:
        return resize(to_float(center_crop(images, _crop_size(height, width, config.crop_fraction))), output_size)
    if config.geometric_affine:
        return random_affine(
            to_float(images), output_size, generator, crop_fraction=config.crop_fraction,
            scale_range=config.random_resized_crop, degrees=config.rotation_degrees, translate=config.translate,
            horizontal_flip=config.horizontal_flip, vertical_flip=config.vertical_flip,
            shift_pixels=config.crop_padding, zoom_range=config.zoom_range,
        )
    crop = _crop_size(height, width, config.crop_fraction)
    if crop != (height, width) or config.crop_padding or config.horizontal_flip or config.vertical_flip:
        images = random_crop(
            images, crop, generator, padding=config.crop_padding,
            horizontal_flip=config.horizontal_flip, vertical_flip=config.vertical_flip,
        )
    return resize(to_float(images), output_size)


def photometric(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator, pca: ColourPCA | None,
) -> torch.Tensor:
    """Colour jitter, hue, PCA lighting and noise on float 0..1 images (training only)."""
    if config.color_jitter:
        images = color_jitter(images, config.color_jitter, generator)
    if config.hue_jitter:
        images = hue_jitter(images, config.hue_jitter, generator)
    if config.pca_lighting_std:
        if pca is None:
            raise AlexNetError("PCA lighting needs the colour PCA of the training set (compute_pca)")
        images = pca_lighting(images, pca, config.pca_lighting_std, generator)
    if config.gaussian_noise_std:
        images = gaussian_noise(images, config.gaussian_noise_std, generator)
    return images


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, *, train: bool, output_size: tuple[int, int],
    generator: torch.Generator | None = None, pca: ColourPCA | None = None,
) -> torch.Tensor:
    """uint8 images -> augmented float 0..1 images at ``output_size`` (not yet normalised)."""
    images = geometric(images, config, train=train, output_size=output_size, generator=generator)
    return photometric(images, config, generator, pca) if train else images


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1."""
    return images.to(torch.float32).div_(255) if images.dtype == torch.uint8 else images


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], channels: int | None = None,
) -> torch.Tensor:
    """Subtract the dataset mean, divide by its std, and convert to ``channels`` (1 <-> 3).

    Grey to RGB repeats the normalised channel, so any model can train on any dataset; RGB to grey
    takes BT.601 luma with the luma-weighted mean and std (the std is an upper bound, exact when the
    channels are perfectly correlated).
    """
    if images.dim() == 3:  # one image
        return normalize(images.unsqueeze(0), mean, std, channels).squeeze(0)
    source = images.shape[-3]
    channels = channels or source
    if channels != source and not (source == 3 and channels == 1) and source != 1:
        raise AlexNetError(f"cannot convert {source}-channel images to {channels} channels")
    if source == 3 and channels == 1:
        images = _grayscale(images.flatten(0, -4)).view(*images.shape[:-3], 1, *images.shape[-2:])
        mean = (sum(w * m for w, m in zip(LUMA, mean)),)
        std = (sum(w * s for w, s in zip(LUMA, std)),)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    images = torch.sub(images, mean_t).div_(std_t)  # one new tensor, in the input's memory format
    if channels != images.shape[-3]:
        images = images.expand(*images.shape[:-3], channels, *images.shape[-2:])
    return images


# --- test time ------------------------------------------------------------------------------


def resize_shorter_side(image: torch.Tensor, side: int) -> torch.Tensor:
    """A (C, H, W) image with its shorter side resized to ``side``: bilinear, antialiased, in float32,
    rounded back to uint8 when it came as uint8. This is the arithmetic of torchvision's
    ``ImageClassification`` preset to the bit; transforms.v2's own uint8 kernel rounds about one pixel
    in six one level apart, enough to move a confident network's probabilities by 0.3%. Test images
    are resized by this one function, in the streaming loaders and in ``predict`` alike."""
    resized = TF.resize(image.float(), [side], antialias=True)
    return resized.round_().to(torch.uint8) if image.dtype == torch.uint8 else resized


class ResizeShorterSide:
    """``resize_shorter_side`` as a picklable per-image transform (DataLoader workers)."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return resize_shorter_side(image, self.side)


def ten_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The paper's ten test views (Section 4.1): (B, C, H, W) -> (B, 10, C, *size).

    Views 0-4 are the top-left, top-right, bottom-left, bottom-right and centre crops
    (torchvision's ``five_crop``); views 5-9 are the same crops mirrored left to right.
    """
    crops = TF.five_crop(images, list(size))
    return torch.stack([*crops, *(crop.flip(-1) for crop in crops)], dim=1)
