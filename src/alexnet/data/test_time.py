"""The test-time views: images resized as the paper's test images are, and its ten crops (Section 4.1)."""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF


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
