"""The in-memory path: a whole dataset as uint8 on the training device, a batch at a time.

Shuffling is one ``randperm`` per epoch; a batch is one index of the uint8 tensor followed by the
batch augmentations of ``augment.py``; no per-sample Python and no worker processes (airbench's
approach). 60,000 Fashion-MNIST images take 47 MB, CIFAR's 50,000 take 154 MB.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..errors import AlexNetError
from .augment import (
    AugmentConfig, augment_batch, compute_pca, epoch_generator, normalize, photometric, random_crop, resize, to_float,
)
from .datasets import ImageTensors

# The paper resizes every image once (shorter side to 256) and only crops per batch. We do the same
# (resize once to output / crop_fraction, on the device) when the resized set takes at most this many
# times the memory of the original: Fashion-MNIST 28 -> 32 px for 28 px crops costs 1.3x. Beyond it
# (28 -> 259 px for 227 px crops would be 85x, 4 GB) every batch is resized on the device instead.
PRE_RESIZE_LIMIT = 4.0


def resize_uint8(images: torch.Tensor, size: tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    """Resize a whole uint8 set (antialiased bilinear, rounded back to uint8), a chunk at a time."""
    out = torch.empty(*images.shape[:2], *size, dtype=torch.uint8, device=images.device)
    for start in range(0, len(images), chunk):
        part = resize(images[start : start + chunk].float(), size)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def shard_indices(order: torch.Tensor, rank: int, world_size: int, *, drop_remainder: bool) -> torch.Tensor:
    """Rank ``rank``'s share of ``order``: every ``world_size``-th index starting at ``rank``.

    Shares are disjoint. With ``drop_remainder`` (training) the last ``len(order) % world_size``
    indices of the epoch's permutation are left out so every rank gets as many, which DDP needs to
    keep its gradient all-reduces in step; the permutation changes every epoch, so no image is left
    out for good. Without it (evaluation) the shares cover every index exactly once and their
    lengths differ by at most one.
    """
    if not 0 <= rank < world_size:
        raise AlexNetError(f"rank {rank} is outside a world of size {world_size}")
    if drop_remainder:
        order = order[: len(order) - len(order) % world_size]
    return order[rank::world_size]


class InMemoryLoader:
    """Batches of (images, labels) from uint8 tensors held on ``device``.

    Yields float32 images normalised with the dataset's mean and std, at ``output_shape`` (C, H, W)
    (resized on the device and converted 1 <-> 3 channels when the model wants something else than
    the data's natural shape), in channels-last memory format when ``channels_last``; and int64 labels.
    Every random number (shuffle and augmentation) comes from generators seeded by (seed, epoch):
    ``set_epoch(e)`` and iterate to replay epoch ``e`` bit for bit, as after a resume.

    Args:
        data: the split, on any device.
        batch_size: images per batch on this rank.
        train: shuffle and augment (else: fixed order, centre crop or ten views).
        augment: the augmentation switches; None: none.
        output_shape: (C, H, W) the model takes; None: the data's own.
        device: where the uint8 images live and batches are made.
        seed: the run's seed.
        drop_last: drop a last, smaller batch (default: when training).
        rank, world_size: this process's share in data-parallel training (see ``shard_indices``).
        channels_last: NHWC memory format (faster convolutions with cuDNN and on CPU).
    """

    def __init__(
        self, data: ImageTensors, batch_size: int, *, train: bool, augment: AugmentConfig | None = None,
        output_shape: tuple[int, int, int] | None = None, device: torch.device | str = "cpu", seed: int = 0,
        drop_last: bool | None = None, rank: int = 0, world_size: int = 1, channels_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise AlexNetError(f"batch size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)  # (N, C, H, W) uint8, possibly resized and padded below
        self.labels = data.labels.to(self.device)
        self.classes = data.classes
        self.mean, self.std = data.mean, data.std
        self.batch_size = batch_size
        self.train = train
        self.augment = augment or AugmentConfig()
        self.output_shape = tuple(output_shape) if output_shape else tuple(data.images.shape[1:])
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.epoch = 0
        self.skipped = 0  # in-memory data has no unreadable files; kept for the streaming contract
        self.pca = data.pca
        if train and self.augment.pca_lighting_std and self.pca is None:
            self.pca = compute_pca(data.images)
        shard_indices(torch.arange(0), rank, world_size, drop_remainder=train)  # validates rank

        config = self.augment
        height, width = self.output_shape[1:]
        natural = self.images.shape[-2:]
        stored = (round(height / config.crop_fraction), round(width / config.crop_fraction))
        affine = train and config.geometric_affine
        affordable = stored[0] * stored[1] <= PRE_RESIZE_LIMIT * natural[0] * natural[1]
        if not affine and stored != tuple(natural) and affordable:
            self.images = resize_uint8(self.images, stored)
        # training crops come straight out of the stored set: pad it once, not every batch (airbench)
        self.integer_crops = train and not affine
        self.crop = tuple(round(side * config.crop_fraction) for side in self.images.shape[-2:])
        if self.integer_crops and config.crop_padding:
            self.images = F.pad(self.images, (config.crop_padding,) * 4)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def _num_samples(self) -> int:
        n = len(self.labels)
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        samples = self._num_samples()
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's image indices for the current epoch, in batch order (on the CPU)."""
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch, "cpu", "shuffle"))
        else:
            order = torch.arange(n)
        return shard_indices(order, self.rank, self.world_size, drop_remainder=self.train)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices().to(self.device)
        generator = epoch_generator(self.seed, self.epoch, self.device, f"augment:{self.rank}") if self.train else None
        channels, height, width = self.output_shape
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            if self.integer_crops:
                images = random_crop(
                    self.images, self.crop, generator, indices=index,
                    horizontal_flip=self.augment.horizontal_flip, vertical_flip=self.augment.vertical_flip,
                )  # (B, C, *crop) uint8
                images = photometric(resize(to_float(images), (height, width)), self.augment, generator, self.pca)
            else:
                images = augment_batch(
                    self.images[index], self.augment, train=self.train, output_size=(height, width),
                    generator=generator, pca=self.pca,
                )
            images = normalize(images, self.mean, self.std, channels)
            if self.channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            else:
                images = images.contiguous()
            yield images, self.labels[index]
