"""Image files for the tests, written and read with Pillow (torchvision 0.29 deprecates its codecs)."""

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _pillow(image: torch.Tensor) -> Image.Image:
    """A (1 or 3, H, W) uint8 tensor as a Pillow image (grey or RGB)."""
    array = image.detach().cpu().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def png_bytes(image: torch.Tensor) -> bytes:
    """The PNG file of a (C, H, W) uint8 tensor."""
    buffer = io.BytesIO()
    _pillow(image).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: torch.Tensor, quality: int = 75) -> bytes:
    """The JPEG file of a (C, H, W) uint8 tensor (75: the quality torchvision's and Pillow's encoders default to)."""
    buffer = io.BytesIO()
    _pillow(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def read_rgb(path: str | Path) -> torch.Tensor:
    """An image file as a (3, H, W) uint8 tensor."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
