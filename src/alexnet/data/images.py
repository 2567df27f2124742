"""One image file to a uint8 RGB tensor, refusing what would not fit in memory: every path that reads
image files (a streamed folder, Flowers-17, the previews) decodes through here."""

from __future__ import annotations

import io
import os
import re
import select
import stat
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF


def decode(path: str) -> torch.Tensor:
    """An image file as (3, H, W) uint8 RGB; raises on anything that is not a readable image.

    An image of more than Pillow's ``Image.MAX_IMAGE_PIXELS`` (89.5 million, 9,459 x 9,459) is
    refused from its header, before anything is decoded: an 875 KB PNG can declare 30,000 x 30,000
    pixels, 2.7 GB as RGB. Images of 16 bits per channel are scaled to 8, as batches are stacked and
    normalised as uint8; an animated GIF gives its first frame. Grey, palette, alpha (dropped) and
    CMYK images come as RGB.
    """
    if not _regular_file(path):  # a pipe (`<(cat a.png)`), a FIFO, a device: read once, then decoded
        return decode_bytes(read_stream(path))
    found = check_header(path)
    if found is not None and found not in TORCHVISION_FORMATS:  # PNG, BMP, TIFF, ...
        return _decode_pillow(path)
    return _as_rgb8(decode_image(read_file(path), mode=ImageReadMode.RGB))


def decode_bytes(data: bytes) -> torch.Tensor:
    """An image file's bytes as (3, H, W) uint8 RGB, with ``decode``'s checks and conversions."""
    found = check_header(io.BytesIO(data))
    if found is not None and found not in TORCHVISION_FORMATS:
        return _decode_pillow(io.BytesIO(data))
    return _as_rgb8(decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB))


# A pipe is read to its end before decoding: a header check that reads it first would consume what
# the decoder needs. A FIFO nobody writes to would block for ever, and a device (/dev/zero) never ends.
STREAM_WAIT_SECONDS = 10.0  # the longest wait for the next bytes of a pipe or FIFO
STREAM_BYTES = 256 * 2**20  # the most read from one: a 9,459 x 9,459 image (the pixel limit) as BMP is 268 MB


def read_stream(path: str) -> bytes:
    """All the bytes of a pipe, FIFO or device; raises ``ValueError`` (the reason) when nothing comes
    within ``STREAM_WAIT_SECONDS``, or when more than ``STREAM_BYTES`` do."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO without a writer: no wait to open
    try:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        chunks, size = [], 0
        while True:
            if not poller.poll(STREAM_WAIT_SECONDS * 1000):
                raise ValueError(f"nothing was written to it for {STREAM_WAIT_SECONDS:g} s (a pipe or FIFO "
                                 f"without a writer?)")
            try:
                chunk = os.read(handle, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > STREAM_BYTES:
                raise ValueError(f"more than {STREAM_BYTES // 2**20} MB, more than an image; is it a device?")
    finally:
        os.close(handle)
    if not size:
        raise ValueError("empty: nothing was written to it")
    return b"".join(chunks)


def _regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # missing or unreadable: the decoder's own error says which


def _as_rgb8(image: torch.Tensor) -> torch.Tensor:
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


def _decode_pillow(path) -> torch.Tensor:
    with Image.open(path) as image:  # the first frame of a multi-page TIFF
        if image.mode.startswith("I") or image.mode == "F":  # 16- or 32-bit grey, integer or float
            grey = _grey_to_8_bits(np.asarray(image), image.mode)
            array = np.repeat(grey[:, :, None], 3, axis=2)
        else:  # 16-bit RGB comes as RGB of its high bytes; palette, grey, alpha and CMYK convert like torchvision's
            array = np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def _grey_to_8_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """Grey pixels of more than 8 bits as 0..255. 16-bit ("I;16"): the high byte, as for uint16 above.
    Float ("F"): 0..1, as scientific TIFFs store intensities (Pillow's convert would clip them to
    black), or 0..255 when they go beyond 1. 32-bit integers ("I"): scaled by the bits their largest
    value needs (8 or 16 as such; beyond that, the top 8 of them), not clipped to white."""
    if mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return (values * scale).round().clip(0, 255).astype(np.uint8)
    values = values.astype(np.int64).clip(min=0)
    if mode.startswith("I;16"):
        return (values >> 8).astype(np.uint8)
    bits = int(values.max(initial=0)).bit_length()
    shift = 0 if bits <= 8 else 8 if bits <= 16 else bits - 8
    return (values >> shift).clip(0, 255).astype(np.uint8)


def check_header(path) -> str | None:
    """Pillow's name for the format of image ``path`` (None: not one Pillow knows); raises ``ValueError``
    when its header declares more than ``Image.MAX_IMAGE_PIXELS``.

    ``Image.open`` reads only the header. Files Pillow cannot identify are left for torchvision to
    accept or refuse (it reads the same formats, HEIC aside).
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
