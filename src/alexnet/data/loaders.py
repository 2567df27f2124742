"""From a dataset name to train, validation and test loaders: what a training run calls."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import AlexNetError
from .augment import AugmentConfig, resolve_augment
from .datasets import (
    DatasetInfo, stratified_indices, dataset_info, load_tensors, locate, not_found_error, search_dirs,
    split_validation, stratified_subset,
)
from .base import BatchLoader
from .memory import InMemoryLoader
from .streaming import StreamingLoader, index_folder, readable_class_names

# Streamed images are cropped to the paper's 224x224 unless the model asks for another size.
DEFAULT_STREAMING_SHAPE = (3, 224, 224)
# A folder of class folders without its own val/ split holds out this fraction for validation.
FOLDER_VAL_FRACTION = 0.1


@dataclass
class Loaders:
    """The loaders of one run; ``val`` is ``test`` when no validation split was held out."""

    train: BatchLoader
    val: BatchLoader
    test: BatchLoader
    classes: list[str]
    info: DatasetInfo


def build_loaders(
    name: str, *, data_dir: str | Path | None = None, download: bool = False, batch_size: int = 128,
    eval_batch_size: int | None = None, output_shape: tuple[int, int, int] | None = None,
    augment: AugmentConfig | str | None = None, val_size: int | None = None, subset: float = 1.0, seed: int = 0,
    device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, channels_last: bool = True,
    strict: bool = False, num_workers: int | None = None,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Loaders:
    """Train, validation and test loaders for dataset ``name``.

    In-memory sets: validation is ``val_size`` images (default ``info.default_val_size``) held out of
    the training split, stratified, from ``seed``; ``val_size=0`` evaluates on the test split instead.
    ``subset`` (0 < f <= 1) trains on a stratified fraction of what remains. Streaming sets use the
    folder's ``val/`` (ImageNet: also as test, its test labels are not public), or hold out
    ``val_size`` (default 10%) of a flat class-folder tree. ``augment`` is a config or a preset name;
    ``num_workers`` (streaming only) defaults to the CPU count, at most 8. ``normalization``
    (mean, std) replaces the dataset's constants, e.g. the paper's mean subtraction on the 0..255
    scale (std 1/255), or whatever a trained model's weights say they were trained with.
    """
    info = dataset_info(name)
    config = resolve_augment(augment, name)
    eval_batch_size = eval_batch_size or batch_size
    common = dict(device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last)
    if info.in_memory:
        train = load_tensors(name, "train", data_dir=data_dir, download=download)
        test = load_tensors(name, "test", data_dir=data_dir, download=download)
        val_size = info.default_val_size if val_size is None else val_size
        train, val = split_validation(train, val_size, seed) if val_size else (train, test)
        train = stratified_subset(train, subset, seed)
        if normalization is not None:
            train, val, test = (replace(d, mean=tuple(normalization[0]), std=tuple(normalization[1]))
                                for d in (train, val, test))
        make = lambda data, size, is_train: InMemoryLoader(  # noqa: E731
            data, size, train=is_train, augment=config, output_shape=output_shape, **common,
        )
        return Loaders(
            make(train, batch_size, True), make(val, eval_batch_size, False), make(test, eval_batch_size, False),
            train.classes, info,
        )

    root = locate(name, data_dir)
    if root is None:
        if name == "folder" and not data_dir:
            raise AlexNetError("the folder dataset needs --data-dir pointing at a tree of <class>/<image> folders")
        raise not_found_error(name, [Path(data_dir)] if name == "folder" else search_dirs(data_dir))
    if (root / "train").is_dir():
        train_samples, classes = index_folder(root / "train")
        val_root = next((root / split for split in ("val", "valid", "validation") if (root / split).is_dir()), None)
        if val_root is None:
            raise AlexNetError(f"{root}: has train/ but no val/ folder")
        val_samples, _ = index_folder(val_root, classes)
        test_samples = index_folder(root / "test", classes)[0] if (root / "test").is_dir() else val_samples
    else:
        samples, classes = index_folder(root)
        labels = torch.tensor([label for _, label in samples])
        held = stratified_indices(labels, val_size or max(1, round(FOLDER_VAL_FRACTION * len(samples))), seed)
        is_val = torch.zeros(len(samples), dtype=torch.bool)
        is_val[held] = True
        train_samples = [s for s, v in zip(samples, is_val.tolist()) if not v]
        val_samples = test_samples = [s for s, v in zip(samples, is_val.tolist()) if v]
    if len(classes) < 2:
        # Training would run a whole epoch before anything failed, and one class teaches nothing.
        folder = root / "train" if (root / "train").is_dir() else root
        raise AlexNetError(
            f"{folder}: one class folder ({classes[0]!r}); a classifier needs at least 2 classes, one "
            f"sub-folder of images each"
        )
    if subset < 1:
        labels = torch.tensor([label for _, label in train_samples])
        keep = stratified_indices(labels, round(subset * len(train_samples)), seed).tolist()
        train_samples = [train_samples[i] for i in keep]
    if name == "imagenet":
        classes = readable_class_names(root, classes)
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    mean, std = normalization if normalization is not None else (info.mean, info.std)
    shape = output_shape or DEFAULT_STREAMING_SHAPE
    make = lambda samples, size, is_train: StreamingLoader(  # noqa: E731
        samples, classes, size, train=is_train, mean=mean, std=std, augment=config, output_shape=shape,
        num_workers=workers, strict=strict, **common,
    )
    train_loader = make(train_samples, batch_size, True)
    val_loader = make(val_samples, eval_batch_size, False)
    test_loader = val_loader if test_samples is val_samples else make(test_samples, eval_batch_size, False)
    return Loaders(train_loader, val_loader, test_loader, classes, info)
