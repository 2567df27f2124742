"""One image file to a uint8 RGB tensor, refusing what would not fit in memory: every path that reads
image files (a streamed folder, Flowers-17, the previews) decodes through here."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF


def decode(source: str | bytes, *, max_pixels: int | None = None) -> torch.Tensor:
    """An image file (its path, or its bytes as uploaded to ``alexnet serve``) as (3, H, W) uint8 RGB;
    raises on anything that is not a readable image.

    An image of more than Pillow's ``Image.MAX_IMAGE_PIXELS`` (89.5 million, 9,459 x 9,459) is
    refused from its header, before anything is decoded: an 875 KB PNG can declare 30,000 x 30,000
    pixels, 2.7 GB as RGB. Images of 16 bits per channel are scaled to 8, as batches are stacked and
    normalised as uint8; an animated GIF gives its first frame. Grey, palette, alpha (dropped) and
    CMYK images come as RGB. ``max_pixels``: a lower limit than Pillow's (a server's, per request).
    """
    found = check_header(source, limit=max_pixels)
    if found is not None and found not in TORCHVISION_FORMATS:  # PNG, BMP, TIFF, ...
        return _decode_pillow(source)
    data = read_file(source) if isinstance(source, str) else torch.frombuffer(bytearray(source), dtype=torch.uint8)
    image = decode_image(data, mode=ImageReadMode.RGB)
    if image.dim() == 4:  # (frames, 3, H, W)
        image = image[0]
    if image.dtype != torch.uint8:  # 10- and 12-bit AVIF and HEIC decode to uint16
        image = TF.to_dtype(image, torch.uint8, scale=True)  # 0..65535 to 0..255: the high byte
    return image


# What torchvision's decode_image reads (libjpeg-turbo, libwebp, giflib; CMYK JPEG included); PNG is
# left to Pillow: torchvision 0.29's decode_png kills the process (SIGSEGV) on a PNG whose compressed
# pixels are damaged (one changed byte will do), where it should raise; Pillow raises. Formats only
# Pillow reads (BMP, TIFF, ...) go to Pillow too; those Pillow does not know (AVIF, HEIC) to torchvision.
TORCHVISION_FORMATS = ("JPEG", "WEBP", "GIF")


def _opened(source: str | bytes) -> str | io.BytesIO:
    """What ``Image.open`` reads: a path, or a file in memory."""
    return source if isinstance(source, str) else io.BytesIO(source)


def _decode_pillow(source: str | bytes) -> torch.Tensor:
    with Image.open(_opened(source)) as image:  # the first frame of a multi-page TIFF
        if image.mode.startswith("I"):  # 16-bit grey ("I;16"): keep the high byte, as for uint16 above
            grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            array = np.repeat(grey[:, :, None], 3, axis=2)
        else:  # 16-bit RGB comes as RGB of its high bytes; palette, grey, alpha and CMYK convert like torchvision's
            array = np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def check_header(source: str | bytes, limit: int | None = None) -> str | None:
    """Pillow's name for the format of image ``source`` (a path or the file's bytes; None: not one Pillow
    knows); raises ``ValueError`` when its header declares more than ``limit`` pixels (None:
    ``Image.MAX_IMAGE_PIXELS``; a lower limit applies besides Pillow's, never instead of it).

    ``Image.open`` reads only the header. Files Pillow cannot identify are left for torchvision to
    accept or refuse (it reads the same formats, HEIC aside).
    """
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = min(limit, pillow_limit) if limit and pillow_limit else limit or pillow_limit
    try:
        with warnings.catch_warnings():
            # Pillow warns past the limit (and refuses past twice it), for a GIF frame by frame
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_opened(source)) as image:
                width, height = image.size
                # torchvision decodes every frame of a GIF (counting them skips their data, decodes none)
                frames = image.n_frames if image.format == "GIF" else 1
                found = image.format
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        count = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(count[1]):,} pixels" if count else "its size"
    except Exception:  # not an image Pillow knows: torchvision decides
        return None
    else:
        if not limit or frames * width * height <= limit:  # no limit: the user switched Pillow's guard off
            return found
        size = f"{width}x{height} pixels" + (f" x {frames} frames" if frames > 1 else "")
    # kept short: the loader quotes the first 120 characters of the reason with the file's name
    name = "PIL.Image.MAX_IMAGE_PIXELS" if limit == pillow_limit else "pixels an image may have"
    raise ValueError(f"{size} is over the limit of {limit:,} ({name}); shrink it")
