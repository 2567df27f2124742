"""One image file to a uint8 RGB tensor, refusing what would not fit in memory: every path that reads
image files (a streamed folder, Flowers-17, the previews) decodes through here."""

from __future__ import annotations

import re
import warnings

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF


def decode(path: str) -> torch.Tensor:
    """An image file as (3, H, W) uint8 RGB; raises on anything that is not a readable image.

    An image of more than Pillow's ``Image.MAX_IMAGE_PIXELS`` (89.5 million, 9,459 x 9,459) is
    refused from its header, before anything is decoded: an 875 KB PNG can declare 30,000 x 30,000
    pixels, 2.7 GB as RGB. 16-bit PNGs (decoded by torchvision as uint16) are scaled to 8 bits, as
    batches are stacked and normalised as uint8; an animated GIF gives its first frame.
    """
    check_pixel_count(path)
    image = decode_image(read_file(path), mode=ImageReadMode.RGB)
    if image.dim() == 4:  # (frames, 3, H, W)
        image = image[0]
    if image.dtype != torch.uint8:
        image = TF.to_dtype(image, torch.uint8, scale=True)  # 0..65535 to 0..255 by dropping the low byte
    return image


def check_pixel_count(path: str) -> None:
    """Raise ``ValueError`` when the header of image ``path`` declares more than ``Image.MAX_IMAGE_PIXELS``.

    ``Image.open`` reads only the header. Files Pillow cannot identify are left for torchvision to
    accept or refuse (it reads the same formats, AVIF and HEIC aside).
    """
    limit = Image.MAX_IMAGE_PIXELS
    if not limit:  # the user switched Pillow's guard off
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                # torchvision decodes every frame of a GIF (counting them skips their data, decodes none)
                frames = image.n_frames if image.format == "GIF" else 1
    except Image.DecompressionBombError as error:  # Pillow's own refusal, at twice the limit
        count = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(count[1]):,} pixels" if count else "its size"
    except Exception:  # not an image Pillow knows: torchvision decides
        return
    else:
        if frames * width * height <= limit:
            return
        size = f"{width}x{height} pixels" + (f" x {frames} frames" if frames > 1 else "")
    # kept short: the loader quotes the first 120 characters of the reason with the file's name
    raise ValueError(f"{size} is over the limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); shrink it")
