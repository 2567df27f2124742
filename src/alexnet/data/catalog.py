"""What each dataset is, by name, before any of it is read: shape, classes, normalisation, where it
comes from. Pure data: checking a configuration (``alexnet train --nproc`` before torchrun starts)
reads it without importing torchvision or the decoders."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import AlexNetError

# Normalisation constants, per channel on the 0..1 scale.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """What a training run needs to know about a dataset before reading any of it."""

    name: str
    input_shape: tuple[int, int, int] | None  # (C, H, W) as stored; None: streaming, sizes vary
    num_classes: int | None  # None: a folder's class count is known only once it is listed
    mean: tuple[float, ...]  # per channel, 0..1 scale
    std: tuple[float, ...]
    normalization_source: str  # where mean and std come from
    in_memory: bool  # True: the whole set fits in memory as uint8 (InMemoryLoader)
    default_val_size: int  # images held out of the training set for validation (0: own val split)
    url: str  # the official source
    files: str  # what to put in a data directory to use it offline


_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,),
            "computed over the 60,000 training images (0.28604, 0.35302)",
            True, 5_000, "https://github.com/zalandoresearch/fashion-mnist",
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz in <dir>/fashion-mnist/",
        ),
        DatasetInfo(
            "mnist", (1, 28, 28), 10, (0.1307,), (0.3081,),
            "computed over the 60,000 training images (the constants of PyTorch's MNIST example)",
            True, 5_000, "https://yann.lecun.com/exdb/mnist/",
            "the four IDX files (train-images-idx3-ubyte, ...) in <dir>/MNIST/raw/",
        ),
        DatasetInfo(
            "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
            "per-pixel statistics of the 50,000 training images",
            True, 5_000, "https://www.cs.toronto.edu/~kriz/cifar.html",
            "the extracted cifar-10-batches-py/ folder in <dir>/",
        ),
        DatasetInfo(
            "cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
            "per-pixel statistics of the 50,000 training images",
            True, 5_000, "https://www.cs.toronto.edu/~kriz/cifar.html",
            "the extracted cifar-100-python/ folder in <dir>/",
        ),
        DatasetInfo(
            "flowers17", (3, 256, 256), 17, _IMAGENET_MEAN, _IMAGENET_STD,
            "ImageNet's (torchvision's pretrained-weights constants): natural photographs",
            True, 170, "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/",
            "the extracted 17flowers.tgz (jpg/image_0001.jpg ... image_1360.jpg) in <dir>/flowers17/",
        ),
        DatasetInfo(
            "imagenet", None, 1000, _IMAGENET_MEAN, _IMAGENET_STD,
            "ImageNet training set (torchvision's pretrained-weights constants)",
            False, 0, "https://image-net.org/challenges/LSVRC/2012/",
            "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG in <dir>/imagenet/ (LOC_synset_mapping.txt "
            "beside them gives readable class names)",
        ),
        DatasetInfo(
            "folder", None, None, _IMAGENET_MEAN, _IMAGENET_STD,
            "ImageNet's, assuming natural photographs",
            False, 0, "",
            "one sub-folder of images per class (optionally under train/ val/ test/)",
        ),
    )
}


def list_datasets() -> list[str]:
    """Names of every dataset, the default (Fashion-MNIST) first."""
    return list(_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name``; an unknown name lists the known ones."""
    try:
        return _INFOS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _INFOS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AlexNetError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(_INFOS)}") from None
