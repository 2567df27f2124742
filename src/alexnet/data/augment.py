"""Augmentation of whole batches on the training device: the paper's operations and the tutorials'.

Every function takes a batch (B, C, H, W) and draws one set of random parameters *per image* from an
explicit ``torch.Generator``, so a batch is augmented by a handful of tensor operations and an epoch
replayed from the same generator seed is bit-identical. torchvision's ``transforms.v2`` draw one set of
parameters per call (the whole batch would get the same crop), which is why the batch versions here
are written by hand; the streaming path uses ``transforms.v2`` per image for the geometric part and
these functions for the photometric part, so the two paths share one ``AugmentConfig``.

Pixel values are uint8 before ``to_float`` and float on the 0..1 scale after it. Which operations a
batch gets is an ``AugmentConfig``, read from a spec (``augment_spec``).
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..errors import AlexNetError
from .augment_spec import AugmentConfig

# ITU-R BT.601 luma weights, the ones torchvision's rgb_to_grayscale uses.
LUMA = (0.299, 0.587, 0.114)


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
    """Eigen-decomposition of the covariance of pixel colours over ``images`` (N, C, H, W), on the 0..1
    scale: uint8 images are divided by 255, floating-point ones taken as 0..1 already.

    Exact over every pixel, accumulated in float64 chunks; eigenvalues descending, each eigenvector's
    largest component positive so that the result does not depend on the solver's sign choice.
    """
    channels = images.shape[1]
    per_image = images[0].numel() // channels
    step = max(1, chunk_pixels // per_image)
    total = torch.zeros(channels, dtype=torch.float64)
    products = torch.zeros(channels, channels, dtype=torch.float64)
    for start in range(0, len(images), step):
        chunk = images[start : start + step].to(torch.float64)
        if not images.is_floating_point():
            chunk.div_(255)
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


def random_erasing(
    images: torch.Tensor, probability: float, generator: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): each image, with ``probability``, gets one rectangle of
    ``scale`` of its area and aspect ratio (height / width) log-uniform in ``ratio`` filled with
    uniform noise on the 0..1 scale; the rest of the batch is unchanged. The rectangle is clipped to
    the image where its sides would not fit (torchvision's RandomErasing draws again instead)."""
    batch, _, height, width = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(batch, device=device).uniform_(low, high, generator=generator)

    area = uniform(*scale) * height * width
    aspect = uniform(math.log(ratio[0]), math.log(ratio[1])).exp()
    rows = (area * aspect).sqrt().round().clamp(1, height)
    cols = (area / aspect).sqrt().round().clamp(1, width)
    top = (uniform(0, 1) * (height - rows + 1)).floor()
    left = (uniform(0, 1) * (width - cols + 1)).floor()
    chosen = uniform(0, 1) < probability
    y = torch.arange(height, device=device).view(1, -1, 1)
    x = torch.arange(width, device=device).view(1, 1, -1)
    inside = ((y >= top.view(-1, 1, 1)) & (y < (top + rows).view(-1, 1, 1))
              & (x >= left.view(-1, 1, 1)) & (x < (left + cols).view(-1, 1, 1)) & chosen.view(-1, 1, 1))
    noise = torch.rand(images.shape, generator=generator, device=device, dtype=images.dtype)
    return torch.where(inside.unsqueeze(1), noise, images)


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
    """Colour jitter, hue, PCA lighting, noise and random erasing on float 0..1 images (training only)."""
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
    if config.erase_probability:
        images = random_erasing(images, config.erase_probability, generator)
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


def normalize_bytes(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 0..255 images -> float32 normalised with ``mean`` and ``std`` (of the 0..1 scale), in
    their memory format: ``to_float`` then ``normalize`` in two passes instead of four,
    x * 1/(255 std) - mean/std (equal to them within float32 rounding, a few 1e-7)."""
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32, device=images.device).view(-1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32, device=images.device).view(-1, 1, 1)
    out = images.to(torch.float32)
    return torch.addcmul(shift, out, scale, out=out)


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
