"""One image file to a uint8 RGB tensor, refusing what would not fit in memory: every path that reads
image files (a streamed folder, Flowers-17, the previews) decodes through here."""

from __future__ import annotations

import re
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF


def decode(path: str) -> torch.Tensor:
    """An image file as (3, H, W) uint8 RGB; raises on anything that is not a readable image.

    An image of more than Pillow's ``Image.MAX_IMAGE_PIXELS`` (89.5 million, 9,459 x 9,459) is
    refused from its header, before anything is decoded: an 875 KB PNG can declare 30,000 x 30,000
    pixels, 2.7 GB as RGB. Images of 16 bits per channel are scaled to 8, as batches are stacked and
    normalised as uint8; an animated GIF gives its first frame. Grey, palette, alpha (dropped) and
    CMYK images come as RGB.
    """
    if check_header(path) is None:  # not a format Pillow knows (HEIC), or not an image
        return _decode_torchvision(path)
    return _decode_pillow(path)


# Pillow decodes every format it knows (JPEG with libjpeg-turbo, WebP, GIF, AVIF, PNG, BMP, TIFF, ...):
# torchvision 0.29 deprecates its own decoders in favour of TorchCodec. Pillow's JPEG and WebP pixels
# equal torchvision's (the same libraries: 0 of 255 apart on tests/data's photographs), and it
# raises on a damaged PNG where torchvision 0.29's decode_png kills the process (SIGSEGV).
# torchvision's decoder is kept for what Pillow cannot open: HEIC, and files that are no image (to
# refuse them as it always has).
TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def _decode_torchvision(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    with warnings.catch_warnings():  # the deprecation above: nothing else reads HEIC for us
        warnings.filterwarnings("ignore", message=TORCHVISION_DEPRECATION, category=DeprecationWarning)
        image = decode_image(read_file(path), mode=ImageReadMode.RGB)
    if image.dim() == 4:  # (frames, 3, H, W)
        image = image[0]
    if image.dtype != torch.uint8:  # 10- and 12-bit HEIC decode to uint16
        image = TF.to_dtype(image, torch.uint8, scale=True)  # 0..65535 to 0..255: the high byte
    return image


def _decode_pillow(path: str) -> torch.Tensor:
    with Image.open(path) as image:  # the first frame of a multi-page TIFF or an animated GIF
        if image.mode.startswith("I"):  # 16-bit grey ("I;16"): keep the high byte, as for uint16 above
            grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            array = np.repeat(grey[:, :, None], 3, axis=2)
        else:  # 16-bit RGB comes as RGB of its high bytes; palette, grey, alpha and CMYK convert like torchvision's
            array = np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def check_header(path: str) -> str | None:
    """Pillow's name for the format of image ``path`` (None: not one Pillow knows); raises ``ValueError``
    when its header declares more than ``Image.MAX_IMAGE_PIXELS``.

    ``Image.open`` reads only the header. Files Pillow cannot identify are left for torchvision to
    accept or refuse (HEIC).
    """
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns past the limit (and refuses past twice it), for a GIF frame by frame
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
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
    raise ValueError(f"{size} is over the limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); shrink it")
