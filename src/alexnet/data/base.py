"""What a loader promises whichever path reads its images: ``BatchLoader``, and each rank's share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

from ..errors import AlexNetError
from .augment import ColourPCA, epoch_generator, normalize, normalize_bytes, photometric, to_float
from .augment_spec import AugmentConfig


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


class BatchLoader(ABC):
    """Batches of (images, labels) of one split for one rank: the contract of both loading paths.

    Iterating yields float32 images normalised with ``mean`` and ``std`` (per channel, 0..1 scale) at
    ``output_shape`` (C, H, W), in channels-last memory format when ``channels_last``, on ``device``; and
    int64 labels. Every random number (shuffle and augmentation) comes from generators seeded by
    (seed, epoch): ``set_epoch(e)`` and iterate to replay epoch ``e`` bit for bit, as after a resume.

    ``len(loader)`` is the number of batches this rank takes per epoch. ``num_images`` is what the
    loader draws from, all ranks together. ``skipped`` / ``skipped_files`` count and name the files
    left out of the last (or current) epoch because they could not be read (streaming only; in
    memory they stay 0 and empty).

    Args:
        classes: the class names, index = label.
        batch_size: images per batch on this rank.
        train: shuffle and augment (else: fixed order, centre crop or ten views).
        mean, std: the normalisation constants.
        output_shape: (C, H, W) the model takes.
        augment: the augmentation switches; None: none.
        device: where batches are made.
        seed: the run's seed.
        drop_last: drop a last, smaller batch (default: when training).
        rank, world_size: this process's share in data-parallel training (see ``shard_indices``);
            training shares drop the remainder so every rank takes as many steps, evaluation shares
            cover every image once.
        channels_last: NHWC memory format (faster convolutions with cuDNN and on CPU).
        pca: the training set's colour PCA, for PCA lighting.
    """

    def __init__(
        self, classes: list[str], batch_size: int, *, train: bool, mean: tuple[float, ...], std: tuple[float, ...],
        output_shape: tuple[int, int, int], augment: AugmentConfig | None = None, device: torch.device | str = "cpu",
        seed: int = 0, drop_last: bool | None = None, rank: int = 0, world_size: int = 1, channels_last: bool = True,
        pca: ColourPCA | None = None,
    ) -> None:
        if batch_size < 1:
            raise AlexNetError(f"batch size must be positive, got {batch_size}")
        shard_indices(torch.arange(0), rank, world_size, drop_remainder=train)  # validates rank
        self.classes = classes
        self.batch_size = batch_size
        self.train = train
        self.mean, self.std = mean, std
        self.output_shape = tuple(output_shape)
        self.augment = augment or AugmentConfig()
        self.device = torch.device(device)
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.pca = pca
        self.epoch = 0
        self.skipped = 0
        self.skipped_files: list[str] = []
        self.balanced = False  # training draws each class equally often (balance_classes)

    @property
    @abstractmethod
    def num_images(self) -> int:
        """The images this loader draws from, all ranks together."""

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def balance_classes(self) -> None:
        """Draw the training images with replacement, each with probability 1 / (its class's count):
        every class comes up equally often, an epoch still takes ``num_images`` (PyTorch's
        ``WeightedRandomSampler`` scheme, seeded per epoch like the shuffle)."""
        self.balanced = True

    def balanced_order(self, labels: torch.Tensor) -> torch.Tensor:
        """The current epoch's draw of ``len(labels)`` indices, classes equally likely (on the CPU)."""
        counts = torch.bincount(labels)
        weights = 1.0 / counts[labels].double()
        generator = epoch_generator(self.seed, self.epoch, "cpu", "balanced")
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def num_samples(self) -> int:
        """The images this rank takes per epoch (``shard_indices``' share of ``num_images``)."""
        if self.train:
            return self.num_images // self.world_size
        return len(range(self.rank, self.num_images, self.world_size))

    def __len__(self) -> int:
        samples = self.num_samples()
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def augment_generator(self) -> torch.Generator | None:
        """The current epoch's generator of augmentation parameters on the device (None: evaluation).

        One stream per rank, so that data-parallel ranks augment their shares independently.
        """
        if not self.train:
            return None
        return epoch_generator(self.seed, self.epoch, self.device, f"augment:{self.rank}")

    def finish_bytes(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 images (on the device, geometry done) -> the batch yielded: photometric augmentation
        when training, normalised, in the memory format. The layout is changed in uint8 (a quarter
        of the bytes); for training without colour work or a change of channels, 0..255 becomes
        normalised values in one pass after the conversion (``normalize_bytes``): 1.8x faster for a
        batch of 64 at 224, equal within float32 rounding."""
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        if not self.train or self.augment.photometric or images.shape[-3] != self.output_shape[0]:
            # evaluation keeps to_float and normalize: exactly what predict computes for an image
            return self.finish(photometric(to_float(images), self.augment, generator, self.pca)
                               if self.train else to_float(images))
        return normalize_bytes(images, self.mean, self.std)

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """Float 0..1 images -> the batch yielded: normalised, at the model's channels, in its memory format."""
        images = normalize(images, self.mean, self.std, self.output_shape[0])
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images.contiguous()
