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
from torchvision.transforms.v2 import functional as TF

from ..errors import reason


def decode(source: str | bytes, *, max_pixels: int | None = None) -> torch.Tensor:
    """An image file (its path, or its bytes as uploaded to ``alexnet serve``) as (3, H, W) uint8 RGB;
    raises on anything that is not a readable image.

    An image of more than Pillow's ``Image.MAX_IMAGE_PIXELS`` (89.5 million, 9,459 x 9,459) is
    refused from its header, before anything is decoded: an 875 KB PNG can declare 30,000 x 30,000
    pixels, 2.7 GB as RGB. Images of 16 bits per channel are scaled to 8, as batches are stacked and
    normalised as uint8; an animated GIF gives its first frame. Grey, palette, alpha (dropped) and
    CMYK images come as RGB. ``max_pixels``: a lower limit than Pillow's (a server's, per request).
    A path that is a pipe (`<(cat a.png)`), a FIFO or a device is read once, boundedly, then decoded.
    """
    if isinstance(source, str) and not _regular_file(source):
        source = read_stream(source)
    if check_header(source, limit=max_pixels) is None:  # not a format Pillow knows (HEIC), or not an image
        return _decode_torchvision(source)
    return _decode_pillow(source)


def decode_problem(error: BaseException) -> str:
    """Why ``decode`` failed, in one line fit for a list of skipped files or a server's answer: the
    system's words for a file that cannot be read, and torchvision's decoder messages without the
    place in its C++ sources they start with ("decode_jpeg, /.../decode_jpeg.cpp:171, ")."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    message = re.sub(r"^[^,]+, \S+\.cpp:\d+, ", "", " ".join(str(error).split()))
    if message.startswith("Unsupported image file"):
        return "not an image file Pillow or torchvision can read"
    return reason(Exception(message), limit=160) if message else type(error).__name__


def decode_bytes(data: bytes, *, max_pixels: int | None = None) -> torch.Tensor:
    """An image file's bytes as (3, H, W) uint8 RGB, with ``decode``'s checks and conversions."""
    return decode(bytes(data), max_pixels=max_pixels)


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


# Pillow decodes every format it knows (JPEG with libjpeg-turbo, WebP, GIF, AVIF, PNG, BMP, TIFF, ...):
# torchvision 0.29 deprecates its own decoders in favour of TorchCodec. Pillow's JPEG and WebP pixels
# equal torchvision's (the same libraries: 0 of 255 apart on tests/data's photographs), and it
# raises on a damaged PNG where torchvision 0.29's decode_png kills the process (SIGSEGV).
# torchvision's decoder is kept for what Pillow cannot open: HEIC, and files that are no image (to
# refuse them as it always has).
TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def _decode_torchvision(source: str | bytes) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    with warnings.catch_warnings():  # the deprecation above: nothing else reads HEIC for us
        warnings.filterwarnings("ignore", message=TORCHVISION_DEPRECATION, category=DeprecationWarning)
        data = read_file(source) if isinstance(source, str) else torch.frombuffer(bytearray(source), dtype=torch.uint8)
        image = decode_image(data, mode=ImageReadMode.RGB)
    if image.dim() == 4:  # (frames, 3, H, W)
        image = image[0]
    if image.dtype != torch.uint8:  # 10- and 12-bit HEIC decode to uint16
        image = TF.to_dtype(image, torch.uint8, scale=True)  # 0..65535 to 0..255: the high byte
    return image


def _opened(source: str | bytes) -> str | io.BytesIO:
    """What ``Image.open`` reads: a path, or a file in memory."""
    return source if isinstance(source, str) else io.BytesIO(source)


def _decode_pillow(source: str | bytes) -> torch.Tensor:
    with Image.open(_opened(source)) as image:  # the first frame of a multi-page TIFF or an animated GIF
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


def check_header(source: str | bytes, limit: int | None = None) -> str | None:
    """Pillow's name for the format of image ``source`` (a path or the file's bytes; None: not one Pillow
    knows); raises ``ValueError`` when its header declares more than ``limit`` pixels (None:
    ``Image.MAX_IMAGE_PIXELS``; a lower limit applies besides Pillow's, never instead of it).

    ``Image.open`` reads only the header. Files Pillow cannot identify are left for torchvision to
    accept or refuse (HEIC).
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
