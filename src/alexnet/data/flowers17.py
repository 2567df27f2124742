"""Oxford 17 Category Flowers (Nilsback & Zisserman, 2006): what torchvision lacks for it.

The archive ``17flowers.tgz`` unpacks to ``jpg/image_0001.jpg`` ... ``image_1360.jpg``: 80 images per
class, the classes in the order of ``CLASSES``, so image ``i`` (from 1) is class ``(i - 1) // 80``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms.v2 import functional as TF

from ..errors import AlexNetError
from .images import decode, decode_problem

URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
# The md5 of 17flowers.tgz is not published on the dataset's page and could not be checked from here
# (no internet), so none is asserted: a download is instead checked by its contents (all 1,360 files).
ARCHIVE_MD5: str | None = None

CLASSES = (
    "Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip",
    "Fritillary", "Sunflower", "Daisy", "ColtsFoot", "Dandelion", "Cowslip", "Buttercup",
    "Windflower", "Pansy",
)
IMAGES_PER_CLASS = 80
NUM_IMAGES = IMAGES_PER_CLASS * len(CLASSES)  # 1,360
# Stored once at 256x256 (shorter side resized to 256, centre crop), the paper's preprocessing of
# ImageNet (Section 2), so its random 224/227 crops come straight out of the cached tensor.
# All 1,360 images take 1360 x 3 x 256 x 256 bytes = 267 MB as uint8.
STORED_SIZE = 256
# The dataset's own splits (datasplits.mat, three 40/20/20 splits) are a MATLAB file that would need
# scipy; we hold out a fixed, seeded 20 images per class as the test split instead.
TEST_PER_CLASS = 20
SPLIT_SEED = 17


def _files(jpg: Path) -> list[Path]:
    return [jpg / f"image_{index:04d}.jpg" for index in range(1, NUM_IMAGES + 1)]


def locate(candidates: list[Path]) -> Path | None:
    """The ``jpg/`` folder of the first candidate holding all 1,360 images."""
    for path in candidates:
        jpg = path / "jpg"
        if jpg.is_dir() and all(file.is_file() for file in _files(jpg)):
            return jpg
    return None


def download(target: Path) -> None:
    """Fetch and unpack the archive into ``target`` (torchvision's downloader, with a progress bar)."""
    download_and_extract_archive(URL, str(target), filename="17flowers.tgz", md5=ARCHIVE_MD5)
    if locate([target]) is None:
        raise AlexNetError(f"{target}: 17flowers.tgz did not unpack to the expected {NUM_IMAGES} images")


def split_indices(split: str) -> torch.Tensor:
    """0-based image indices of ``split``: per class, a fixed permutation's last 20 are the test set."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.stack([torch.randperm(IMAGES_PER_CLASS, generator=generator) for _ in CLASSES])
    order += torch.arange(len(CLASSES)).unsqueeze(1) * IMAGES_PER_CLASS  # (17, 80)
    chosen = order[:, -TEST_PER_CLASS:] if split == "test" else order[:, :-TEST_PER_CLASS]
    return chosen.flatten().sort().values


def read(jpg: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode ``split`` to (N, 3, STORED_SIZE, STORED_SIZE) uint8 images and their labels."""
    indices = split_indices(split)
    files = _files(jpg)
    images = torch.empty(len(indices), 3, STORED_SIZE, STORED_SIZE, dtype=torch.uint8)
    for row, index in enumerate(indices.tolist()):
        try:
            image = decode(str(files[index]))
        except (RuntimeError, ValueError, OSError) as error:
            raise AlexNetError(f"{files[index]}: cannot decode ({decode_problem(error)}); get the archive again") from None
        image = TF.resize(image, STORED_SIZE, antialias=True)
        images[row] = TF.center_crop(image, [STORED_SIZE, STORED_SIZE])
    return images, indices // IMAGES_PER_CLASS, list(CLASSES)
