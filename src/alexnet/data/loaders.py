"""From a dataset name to train, validation and test loaders: what a training run calls."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import AlexNetError
from .augment import AugmentConfig, resolve_augment
from .base import BatchLoader
from .datasets import (
    DatasetInfo, ImageTensors, dataset_info, load_tensors, locate, not_found_error, search_dirs, split_validation,
    stratified_indices, stratified_subset,
)
from .memory import InMemoryLoader, with_flipped_copies
from .streaming import StreamingLoader, class_folders, index_folder, readable_class_names

# Streamed images are cropped to the paper's 224x224 unless the model asks for another size.
DEFAULT_STREAMING_SHAPE = (3, 224, 224)
# A folder of class folders without its own val/ split holds out this fraction for validation.
FOLDER_VAL_FRACTION = 0.1
# Names a folder dataset's validation split may have, in the order they are looked for.
VAL_FOLDERS = ("val", "valid", "validation")

Samples = list[tuple[str, int]]


@dataclass
class Loaders:
    """The loaders of one run; ``val`` is ``test`` when no validation split was held out."""

    train: BatchLoader
    val: BatchLoader
    test: BatchLoader
    classes: list[str]
    info: DatasetInfo


@dataclass(frozen=True)
class LoaderOptions:
    """How every loader of a run is made, whatever its split, batch size or loading path."""

    device: torch.device | str = "cpu"  # where batches are made (and in-memory images are held)
    seed: int = 0  # shuffles, augmentation, and which images validation holds out
    rank: int = 0  # this process's share in data-parallel training
    world_size: int = 1
    channels_last: bool = True  # NHWC batches: faster convolutions with cuDNN and on CPU
    # (mean, std) replacing the dataset's constants, e.g. what a trained model's weights were trained with
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    num_workers: int | None = None  # streaming: decoding processes; None: the CPUs it may use, at most 8
    strict: bool = False  # streaming: an unreadable file raises instead of being skipped and counted


def build_loaders(
    name: str, *, data_dir: str | Path | None = None, download: bool = False, batch_size: int = 128,
    eval_batch_size: int | None = None, output_shape: tuple[int, int, int] | None = None,
    augment: AugmentConfig | str | None = None, val_size: int | None = None, subset: float = 1.0, seed: int = 0,
    device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, channels_last: bool = True,
    strict: bool = False, num_workers: int | None = None,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None, flipped_copies: bool = False,
) -> Loaders:
    """Train, validation and test loaders for dataset ``name``.

    In-memory sets: validation is ``val_size`` images (default ``info.default_val_size``) held out of
    the training split, stratified, from ``seed``; ``val_size=0`` evaluates on the test split instead.
    ``subset`` (0 < f <= 1) trains on a stratified fraction of what remains. Streaming sets use the
    folder's ``val/`` (ImageNet: also as test, its test labels are not public), or hold out
    ``val_size`` (default 10%) of a flat class-folder tree. ``augment`` is a config or a spec
    (``parse_augment``: a preset name, or operations such as ``hflip,rotate=15``). ``flipped_copies``
    (in-memory sets only) adds every training image mirrored and every one upside down, once, after
    ``subset``: three times the training images, validation and test untouched.
    ``num_workers`` (streaming only) defaults to the CPUs the process may use, at most 8. ``normalization``
    (mean, std) replaces the dataset's constants, e.g. the paper's mean subtraction on the 0..255
    scale (std 1/255), or whatever a trained model's weights say they were trained with.
    """
    options = LoaderOptions(
        device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last,
        normalization=normalization, num_workers=num_workers, strict=strict,
    )
    config = resolve_augment(augment, name)
    eval_batch_size = eval_batch_size or batch_size
    if dataset_info(name).in_memory:
        return in_memory_loaders(
            name, options, data_dir=data_dir, download=download, batch_size=batch_size,
            eval_batch_size=eval_batch_size, output_shape=output_shape, augment=config, val_size=val_size,
            subset=subset, flipped_copies=flipped_copies,
        )
    if flipped_copies:
        # The copies would be decoded from the files again each epoch: three times the decoding
        # for what flipping each image as it is decoded gives for free.
        raise AlexNetError(
            f"flipped copies are made of training images held in memory; {name} is streamed from files. "
            f"Flip them as they are read instead: --augment hflip,vflip (or add them to your augmentation)"
        )
    return streaming_loaders(  # folders are never downloaded
        name, options, data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
        output_shape=output_shape, augment=config, val_size=val_size, subset=subset,
    )


def build_eval_loader(
    name: str, split: str, *, data_dir: str | Path | None = None, batch_size: int,
    output_shape: tuple[int, int, int] | None = None, augment: AugmentConfig | str | None = None,
    val_size: int | None = None, seed: int = 0, device: torch.device | str = "cpu", rank: int = 0,
    world_size: int = 1, channels_last: bool = True,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None, num_workers: int | None = None,
    strict: bool = False, subset: float = 1.0,
) -> tuple[BatchLoader, list[str], DatasetInfo]:
    """(loader, class names, dataset info) of one evaluation ``split`` ("test" or "val") of ``name``;
    or of the training images themselves ("train": what remains after the validation split, of which
    ``subset``, as training took them), unshuffled and unaugmented, to measure how well they are fitted.

    Yields the same batches as ``build_loaders(...).test`` or ``.val`` with the same arguments, but
    builds only what the split needs: an in-memory test split never loads the training set; an
    in-memory validation split holds ``val_size`` images out of the training tensors on the CPU and
    moves only those to ``device`` (``val_size=0``: the test split, as ``build_loaders``); a folder
    with ``train/`` lists only the split's files (a flat tree of class folders is listed whole, as
    the held-out files are drawn from all of it).
    """
    if split not in ("test", "val", "train"):
        raise AlexNetError(f"split must be test, val or train, got {split!r}")
    info = dataset_info(name)
    config = resolve_augment(augment, name)
    options = LoaderOptions(
        device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last,
        normalization=normalization, num_workers=num_workers, strict=strict,
    )
    if info.in_memory:
        val_size = _in_memory_val_size(info, val_size)
        if split == "train":
            data = load_tensors(name, "train", data_dir=data_dir)
            data = stratified_subset(split_validation(data, val_size, seed)[0] if val_size else data, subset, seed)
        elif split == "val" and val_size:
            data = split_validation(load_tensors(name, "train", data_dir=data_dir), val_size, seed)[1]
        else:
            data = load_tensors(name, "test", data_dir=data_dir)
        loader = _in_memory_loader(data, batch_size, train=False, augment=config, output_shape=output_shape,
                                   options=options)
        return loader, data.classes, info
    root = _folder_root(name, data_dir)
    classes, splits = _folder_splits(root, (split,), val_size, seed)
    classes = _shown_class_names(name, root, classes)
    samples = splits[split]
    if split == "train" and subset < 1:  # the files streaming_loaders trains on
        labels = torch.tensor([label for _, label in samples])
        samples = [samples[i] for i in stratified_indices(labels, round(subset * len(samples)), seed).tolist()]
    loader = _streaming_loader(samples, classes, batch_size, train=False, info=info, augment=config,
                               output_shape=output_shape, options=options)
    return loader, classes, info

# --- in memory --------------------------------------------------------------------------------


def in_memory_loaders(
    name: str, options: LoaderOptions, *, data_dir: str | Path | None, download: bool, batch_size: int,
    eval_batch_size: int, output_shape: tuple[int, int, int] | None, augment: AugmentConfig, val_size: int | None,
    subset: float, flipped_copies: bool = False,
) -> Loaders:
    """``build_loaders`` for a dataset held in memory: both splits loaded, validation held out of train
    (and the training images' flipped copies added, after the subset is drawn)."""
    info = dataset_info(name)
    train = load_tensors(name, "train", data_dir=data_dir, download=download)
    test = load_tensors(name, "test", data_dir=data_dir, download=download)
    val_size = _in_memory_val_size(info, val_size)
    train, val = split_validation(train, val_size, options.seed) if val_size else (train, test)
    train = stratified_subset(train, subset, options.seed)
    if flipped_copies:
        train = with_flipped_copies(train)

    def make(data: ImageTensors, size: int, is_train: bool) -> InMemoryLoader:
        return _in_memory_loader(data, size, train=is_train, augment=augment, output_shape=output_shape,
                                 options=options)

    return Loaders(
        make(train, batch_size, True), make(val, eval_batch_size, False), make(test, eval_batch_size, False),
        train.classes, info,
    )


def _in_memory_val_size(info: DatasetInfo, val_size: int | None) -> int:
    return info.default_val_size if val_size is None else val_size


def _in_memory_loader(
    data: ImageTensors, batch_size: int, *, train: bool, augment: AugmentConfig,
    output_shape: tuple[int, int, int] | None, options: LoaderOptions,
) -> InMemoryLoader:
    if options.normalization is not None:
        mean, std = options.normalization
        data = replace(data, mean=tuple(mean), std=tuple(std))
    return InMemoryLoader(
        data, batch_size, train=train, augment=augment, output_shape=output_shape, device=options.device,
        seed=options.seed, rank=options.rank, world_size=options.world_size, channels_last=options.channels_last,
    )


# --- streamed from a folder -------------------------------------------------------------------


def streaming_loaders(
    name: str, options: LoaderOptions, *, data_dir: str | Path | None, batch_size: int, eval_batch_size: int,
    output_shape: tuple[int, int, int] | None, augment: AugmentConfig, val_size: int | None, subset: float,
) -> Loaders:
    """``build_loaders`` for a dataset streamed from a folder: every split's files listed."""
    info = dataset_info(name)
    root = _folder_root(name, data_dir)
    classes, splits = _folder_splits(root, ("train", "val", "test"), val_size, options.seed)
    train = splits["train"]
    if subset < 1:
        labels = torch.tensor([label for _, label in train])
        keep = stratified_indices(labels, round(subset * len(train)), options.seed).tolist()
        train = [train[i] for i in keep]
    classes = _shown_class_names(name, root, classes)

    def make(samples: Samples, size: int, is_train: bool) -> StreamingLoader:
        return _streaming_loader(samples, classes, size, train=is_train, info=info, augment=augment,
                                 output_shape=output_shape, options=options)

    val = make(splits["val"], eval_batch_size, False)
    test = val if splits["test"] is splits["val"] else make(splits["test"], eval_batch_size, False)
    return Loaders(make(train, batch_size, True), val, test, classes, info)


def num_classes(name: str, data_dir: str | Path | None = None) -> int:
    """How many classes dataset ``name`` has, without reading its images: a folder's are its class
    folders (those of ``train/`` where there is one), so a model can be built for them first."""
    info = dataset_info(name)
    if info.num_classes:
        return info.num_classes
    root = _folder_root(name, data_dir)
    return len(class_folders(root / "train" if (root / "train").is_dir() else root))


def _folder_root(name: str, data_dir: str | Path | None) -> Path:
    """Where the streamed dataset ``name`` is, or the error that says how to point at it."""
    root = locate(name, data_dir)
    if root is None:
        if name == "folder" and not data_dir:
            raise AlexNetError("the folder dataset needs --data-dir pointing at a tree of <class>/<image> folders")
        raise not_found_error(name, [Path(data_dir)] if name == "folder" else search_dirs(data_dir))
    return root


def _folder_splits(
    root: Path, wanted: Collection[str], val_size: int | None, seed: int,
) -> tuple[list[str], dict[str, Samples]]:
    """The class names and the files of each ``wanted`` split ("train", "val", "test") of ``root``.

    A folder with ``train/`` uses its ``val/`` (or ``valid/``, ``validation/``) and its ``test/``,
    else its ``val/`` as test; only the wanted folders are listed (the class names are the training
    folder's sub-folders either way). A flat tree of class folders holds out ``val_size`` files
    (default 10%), stratified, from ``seed``, as both val and test. When test is val, the two are the
    same list object.
    """
    splits: dict[str, Samples] = {}
    if (root / "train").is_dir():
        if "train" in wanted:
            splits["train"], classes = index_folder(root / "train")
        else:
            classes = class_folders(root / "train")
        has_test = (root / "test").is_dir()
        if "val" in wanted or ("test" in wanted and not has_test):
            val_root = next((root / split for split in VAL_FOLDERS if (root / split).is_dir()), None)
            if val_root is None:
                raise AlexNetError(f"{root}: has train/ but no val/ folder")
            splits["val"], _ = index_folder(val_root, classes)
        if "test" in wanted:
            splits["test"] = index_folder(root / "test", classes)[0] if has_test else splits["val"]
    else:
        samples, classes = index_folder(root)
        labels = torch.tensor([label for _, label in samples])
        held = stratified_indices(labels, val_size or max(1, round(FOLDER_VAL_FRACTION * len(samples))), seed)
        is_val = torch.zeros(len(samples), dtype=torch.bool)
        is_val[held] = True
        splits["train"] = [s for s, v in zip(samples, is_val.tolist()) if not v]
        splits["val"] = splits["test"] = [s for s, v in zip(samples, is_val.tolist()) if v]
    if len(classes) < 2:
        # Training would run a whole epoch before anything failed, and one class teaches nothing.
        folder = root / "train" if (root / "train").is_dir() else root
        raise AlexNetError(
            f"{folder}: one class folder ({classes[0]!r}); a classifier needs at least 2 classes, one "
            f"sub-folder of images each"
        )
    return classes, splits


def _shown_class_names(name: str, root: Path, classes: list[str]) -> list[str]:
    """ImageNet's wnids as readable names; any other folder keeps its directory names."""
    return readable_class_names(root, classes) if name == "imagenet" else classes


def _streaming_loader(
    samples: Samples, classes: list[str], batch_size: int, *, train: bool, info: DatasetInfo,
    augment: AugmentConfig, output_shape: tuple[int, int, int] | None, options: LoaderOptions,
) -> StreamingLoader:
    mean, std = options.normalization if options.normalization is not None else (info.mean, info.std)
    workers = min(8, _usable_cpus()) if options.num_workers is None else options.num_workers
    return StreamingLoader(
        samples, classes, batch_size, train=train, mean=mean, std=std, augment=augment,
        output_shape=output_shape or DEFAULT_STREAMING_SHAPE, device=options.device, seed=options.seed,
        rank=options.rank, world_size=options.world_size, channels_last=options.channels_last,
        num_workers=workers, strict=options.strict,
    )


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a job's share), as torch's
    DataLoader counts them when it warns of more workers than CPUs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
