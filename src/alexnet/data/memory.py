"""The in-memory path: a whole dataset as uint8 on the training device, a batch at a time.

Shuffling is one ``randperm`` per epoch; a batch is one index of the uint8 tensor followed by the
batch augmentations of ``augment.py``; no per-sample Python and no worker processes (airbench's
approach). 60,000 Fashion-MNIST images take 47 MB, CIFAR's 50,000 take 154 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F

from .augment import augment_batch, compute_pca, epoch_generator, photometric, random_crop, resize, to_float
from .augment_spec import AugmentConfig
from .base import BatchLoader, shard_indices
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


def with_flipped_copies(data: ImageTensors) -> ImageTensors:
    """``data`` followed by all its images mirrored left to right, then all upside down: three times
    the images, each label three times (the PyTorch Fashion-MNIST tutorial's experiment, which adds the flipped copies to its
    training set instead of flipping at random). Made once, in uint8; the mean, std and colour PCA
    stay, as flips move pixels without changing their values."""
    images = torch.cat([data.images, data.images.flip(-1), data.images.flip(-2)])  # (3N, C, H, W)
    return replace(data, images=images, labels=data.labels.repeat(3))


class InMemoryLoader(BatchLoader):
    """Batches of (images, labels) from uint8 tensors held on ``device``; the ``BatchLoader`` contract.

    Images are resized on the device and converted 1 <-> 3 channels when the model wants another
    ``output_shape`` than the data's natural one.

    Args:
        data: the split, on any device; its classes, mean, std and colour PCA are the loader's.
        output_shape: (C, H, W) the model takes; None: the data's own.
        device: where the uint8 images live and batches are made.
        The others: see ``BatchLoader``.
    """

    def __init__(
        self, data: ImageTensors, batch_size: int, *, train: bool, augment: AugmentConfig | None = None,
        output_shape: tuple[int, int, int] | None = None, device: torch.device | str = "cpu", seed: int = 0,
        drop_last: bool | None = None, rank: int = 0, world_size: int = 1, channels_last: bool = True,
    ) -> None:
        super().__init__(
            data.classes, batch_size, train=train, mean=data.mean, std=data.std,
            output_shape=output_shape or tuple(data.images.shape[1:]), augment=augment, device=device, seed=seed,
            drop_last=drop_last, rank=rank, world_size=world_size, channels_last=channels_last, pca=data.pca,
        )
        self.images = data.images.to(self.device)  # (N, C, H, W) uint8, possibly resized and padded below
        self.labels = data.labels.to(self.device)
        if train and self.augment.pca_lighting_std and self.pca is None:
            self.pca = compute_pca(data.images)

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

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def indices(self) -> torch.Tensor:
        """This rank's image indices for the current epoch, in batch order (on the CPU)."""
        n = len(self.labels)
        if self.train and self.balanced:
            order = self.balanced_order(self.labels.cpu())
        elif self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch, "cpu", "shuffle"))
        else:
            order = torch.arange(n)
        return shard_indices(order, self.rank, self.world_size, drop_remainder=self.train)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices().to(self.device)
        generator = self.augment_generator()
        height, width = self.output_shape[1:]
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
            yield self.finish(images), self.labels[index]
