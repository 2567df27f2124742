"""From a dataset name to train, validation and test loaders: what a training run calls."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import AlexNetError
from ..perf import usable_cpus
from .augment_spec import AugmentConfig
from .base import BatchLoader
from .catalog import DatasetInfo, dataset_info
from .datasets import (
    ImageTensors, load_tensors, locate, not_found_error, search_dirs, split_validation, stratified_indices,
    stratified_subset,
)
from .memory import InMemoryLoader, with_flipped_copies
from .packed import PackedIndex, PackedLoader, is_packed, pack_splits
from .streaming import StreamingLoader, class_folders, index_folder, readable_class_names, sample_transform

# Streamed images are cropped to the paper's 224x224 unless the model asks for another size.
DEFAULT_STREAMING_SHAPE = (3, 224, 224)
# A folder of class folders without its own val/ split holds out this fraction for validation, and
# as much again for the test, apart from it: a test that early stopping or the plateau schedule has
# watched is no test.
FOLDER_VAL_FRACTION = 0.1
FOLDER_TEST_FRACTION = 0.1
# Names a folder dataset's validation split may have, in the order they are looked for.
VAL_FOLDERS = ("val", "valid", "validation")

Samples = list[tuple[str, int]]


@dataclass
class Loaders:
    """The loaders of one run. ``test_is_val`` when the two are the same images (no test split
    apart from validation: a folder without test/, ImageNet, ``val_size=0``): its figures are then
    validation figures, which the run's choices have seen."""

    train: BatchLoader
    val: BatchLoader
    test: BatchLoader
    classes: list[str]
    info: DatasetInfo
    test_is_val: bool = False
    test_size: int | None = None  # a flat folder's held-out test images (0: none)
    class_counts: list[int] | None = None  # training images per class


@dataclass(frozen=True)
class LoaderOptions:
    """How the loaders of one dataset are made: which of its images, batched and augmented how, and
    where the batches go. ``build_loaders`` and ``build_eval_loader`` take one; a training run makes
    its own from its configuration (``TrainConfig.loader_options``)."""

    # which images
    data_dir: str | Path | None = None  # where the dataset lives; None searches the usual places
    download: bool = False  # fetch a missing in-memory dataset (official URLs); folders are never downloaded
    val_size: int | None = None  # images held out of training for validation; None: the dataset's default
    test_size: int | None = None  # a flat folder: images held out for the test; None: 10%, 0: none
    subset: float = 1.0  # stratified fraction of the training images
    flipped_copies: bool = False  # in memory: every training image added mirrored and upside down, once
    sampler: str = "shuffle"  # shuffle | balanced: draw training images with replacement, each class equally often
    seed: int = 0  # shuffles, augmentation, and which images validation holds out
    # how they are batched and seen
    batch_size: int = 128  # training images per batch on this process
    eval_batch_size: int | None = None  # validation and test images per batch; None: batch_size
    output_shape: tuple[int, int, int] | None = None  # (C, H, W) the model takes; None: the dataset's (streamed: 3x224x224)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # parsed once from a spec (``parse_augment``); no augmentation by default
    # (mean, std) replacing the dataset's constants, e.g. what a trained model's weights were trained with
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # where they go
    device: torch.device | str = "cpu"  # where batches are made (and in-memory images are held)
    rank: int = 0  # this process's share in data-parallel training
    world_size: int = 1
    channels_last: bool = True  # NHWC batches: faster convolutions with cuDNN and on CPU
    num_workers: int | None = None  # streaming: decoding processes; None: the CPUs it may use, at most 8
    strict: bool = False  # streaming: an unreadable file raises instead of being skipped and counted

    @property
    def evaluation_batch_size(self) -> int:
        """Images per validation and test batch."""
        return self.eval_batch_size or self.batch_size


def build_loaders(name: str, options: LoaderOptions = LoaderOptions()) -> Loaders:
    """Train, validation and test loaders for dataset ``name``, made as ``options`` say.

    In-memory sets: validation is ``val_size`` images (default ``info.default_val_size``) held out of
    the training split, stratified, from ``seed``; ``val_size=0`` evaluates on the test split instead.
    ``subset`` (0 < f <= 1) trains on a stratified fraction of what remains. Streaming sets use the
    folder's ``val/`` (ImageNet: also as test, its test labels are not public), or hold out
    ``val_size`` (default 10%) of a flat class-folder tree for validation and ``test_size`` (default
    10%; 0: none, and the test is the validation) for the test, both stratified and disjoint.
    ``sampler="balanced"`` draws training images with replacement, each class equally often.
    ``flipped_copies`` (in-memory sets only) adds every training image mirrored and every one upside
    down, once, after ``subset``: three times the training images, validation and test untouched.
    ``num_workers`` (streaming only) defaults to the CPUs the process may use, at most 8. ``normalization``
    (mean, std) replaces the dataset's constants, e.g. the paper's mean subtraction on the 0..255
    scale (std 1/255), or whatever a trained model's weights say they were trained with.
    """
    if dataset_info(name).in_memory:
        if options.test_size:
            raise AlexNetError(f"{name} has its own test split; --test-size applies to a folder of class "
                               f"folders without test/")
        loaders = in_memory_loaders(name, options)
        if options.sampler == "balanced":
            loaders.train.balance_classes()
        return loaders
    if options.flipped_copies:
        # The copies would be decoded from the files again each epoch: three times the decoding
        # for what flipping each image as it is decoded gives for free.
        raise AlexNetError(
            f"flipped copies are made of training images held in memory; {name} is streamed from files. "
            f"Flip them as they are read instead: --augment hflip,vflip (or add them to your augmentation)"
        )
    return streaming_loaders(name, options)  # folders are never downloaded


def build_eval_loader(
    name: str, split: str, options: LoaderOptions = LoaderOptions(),
) -> tuple[BatchLoader, list[str], DatasetInfo]:
    """(loader, class names, dataset info) of one evaluation ``split`` ("test" or "val") of ``name``;
    or of the training images themselves ("train": what remains after the validation split, of which
    ``subset``, as training took them), unshuffled and unaugmented, to measure how well they are fitted.
    Batches hold ``options.evaluation_batch_size`` images.

    Yields the same batches as ``build_loaders(name, options).test`` or ``.val``, but builds only
    what the split needs: an in-memory test split never loads the training set; an in-memory
    validation split holds ``val_size`` images out of the training tensors on the CPU and moves only
    those to ``device`` (``val_size=0``: the test split, as ``build_loaders``); a folder with
    ``train/`` lists only the split's files (a flat tree of class folders is listed whole, as the
    held-out files are drawn from all of it).
    """
    if split not in ("test", "val", "train"):
        raise AlexNetError(f"split must be test, val or train, got {split!r}")
    info = dataset_info(name)
    data_dir, seed, subset, batch_size = options.data_dir, options.seed, options.subset, options.evaluation_batch_size
    if info.in_memory:
        val_size = _in_memory_val_size(info, options.val_size)
        if split == "train":
            data = load_tensors(name, "train", data_dir=data_dir)
            data = stratified_subset(split_validation(data, val_size, seed)[0] if val_size else data, subset, seed)
        elif split == "val" and val_size:
            data = split_validation(load_tensors(name, "train", data_dir=data_dir), val_size, seed)[1]
        else:
            data = load_tensors(name, "test", data_dir=data_dir)
        return _in_memory_loader(data, batch_size, train=False, options=options), data.classes, info
    root = _folder_root(name, data_dir)
    if is_packed(root):
        index = PackedIndex.read(root)
        loader = _packed_loader(index, split, batch_size, train=False, info=info, options=options,
                                subset=subset if split == "train" else 1)
        return loader, index.classes, info
    classes, splits = _folder_splits(root, (split,), options.val_size, seed, options.test_size)
    classes = _shown_class_names(name, root, classes)
    samples = splits[split]
    if split == "train" and subset < 1:  # the files streaming_loaders trains on
        labels = torch.tensor([label for _, label in samples])
        samples = [samples[i] for i in stratified_indices(labels, round(subset * len(samples)), seed).tolist()]
    loader = _streaming_loader(samples, classes, batch_size, train=False, info=info, options=options)
    return loader, classes, info

# --- in memory --------------------------------------------------------------------------------


def in_memory_loaders(name: str, options: LoaderOptions) -> Loaders:
    """``build_loaders`` for a dataset held in memory: both splits loaded, validation held out of train
    (and the training images' flipped copies added, after the subset is drawn)."""
    info = dataset_info(name)
    train = load_tensors(name, "train", data_dir=options.data_dir, download=options.download)
    test = load_tensors(name, "test", data_dir=options.data_dir, download=options.download)
    val_size = _in_memory_val_size(info, options.val_size)
    train, val = split_validation(train, val_size, options.seed) if val_size else (train, test)
    train = stratified_subset(train, options.subset, options.seed)
    if options.flipped_copies:
        train = with_flipped_copies(train)

    def make(data: ImageTensors, size: int, is_train: bool) -> InMemoryLoader:
        return _in_memory_loader(data, size, train=is_train, options=options)

    evaluation = options.evaluation_batch_size
    return Loaders(
        make(train, options.batch_size, True), make(val, evaluation, False), make(test, evaluation, False),
        train.classes, info, test_is_val=not val_size,
        class_counts=torch.bincount(train.labels, minlength=len(train.classes)).tolist(),
    )


def _in_memory_val_size(info: DatasetInfo, val_size: int | None) -> int:
    return info.default_val_size if val_size is None else val_size


def _in_memory_loader(data: ImageTensors, batch_size: int, *, train: bool, options: LoaderOptions) -> InMemoryLoader:
    if options.normalization is not None:
        mean, std = options.normalization
        data = replace(data, mean=tuple(mean), std=tuple(std))
    return InMemoryLoader(
        data, batch_size, train=train, augment=options.augment, output_shape=options.output_shape, device=options.device,
        seed=options.seed, rank=options.rank, world_size=options.world_size, channels_last=options.channels_last,
    )


# --- streamed from a folder -------------------------------------------------------------------


def streaming_loaders(name: str, options: LoaderOptions) -> Loaders:
    """``build_loaders`` for a dataset streamed from a folder: every split's files listed."""
    info = dataset_info(name)
    root = _folder_root(name, options.data_dir)
    if is_packed(root):
        return packed_loaders(PackedIndex.read(root), options, info=info)
    classes, splits = _folder_splits(root, ("train", "val", "test"), options.val_size, options.seed,
                                     options.test_size)
    train = splits["train"]
    if options.subset < 1:
        labels = torch.tensor([label for _, label in train])
        keep = stratified_indices(labels, round(options.subset * len(train)), options.seed).tolist()
        train = [train[i] for i in keep]
    classes = _shown_class_names(name, root, classes)

    def make(samples: Samples, size: int, is_train: bool) -> StreamingLoader:
        return _streaming_loader(samples, classes, size, train=is_train, info=info, options=options)

    val = make(splits["val"], options.evaluation_batch_size, False)
    test = val if splits["test"] is splits["val"] else make(splits["test"], options.evaluation_batch_size, False)
    counts = torch.bincount(torch.tensor([label for _, label in train], dtype=torch.long),
                            minlength=len(classes)).tolist()
    training = make(train, options.batch_size, True)
    if options.sampler == "balanced":
        training.balance_classes()
    flat = not (root / "train").is_dir()
    return Loaders(training, val, test, classes, info, test_is_val=test is val,
                   test_size=(len(splits["test"]) if test is not val else 0) if flat else None,
                   class_counts=counts)


def files_digest(samples: Samples, root: str | Path) -> str:
    """A fingerprint of a split's files (their paths under ``root``, and labels): recorded with a
    run's weights, it tells whether a folder still splits into the files the run was tested on."""
    import hashlib

    lines = sorted(f"{os.path.relpath(path, root)}\t{label}" for path, label in samples)
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def num_classes(name: str, data_dir: str | Path | None = None) -> int:
    """How many classes dataset ``name`` has, without reading its images: a folder's are its class
    folders (those of ``train/`` where there is one), so a model can be built for them first."""
    info = dataset_info(name)
    if info.num_classes:
        return info.num_classes
    root = _folder_root(name, data_dir)
    if is_packed(root):
        return len(PackedIndex.read(root).classes)
    return len(class_folders(root / "train" if (root / "train").is_dir() else root))


def _folder_root(name: str, data_dir: str | Path | None) -> Path:
    """Where the streamed dataset ``name`` is, or the error that says how to point at it."""
    if data_dir and is_packed(Path(data_dir).expanduser()):  # written by pack_folder: shards, no class folders
        return Path(data_dir).expanduser()
    root = locate(name, data_dir)
    if root is None:
        if name == "folder" and not data_dir:
            raise AlexNetError("the folder dataset needs --data-dir pointing at a tree of <class>/<image> folders")
        raise not_found_error(name, [Path(data_dir)] if name == "folder" else search_dirs(data_dir))
    return root


def _folder_splits(
    root: Path, wanted: Collection[str], val_size: int | None, seed: int, test_size: int | None = None,
) -> tuple[list[str], dict[str, Samples]]:
    """The class names and the files of each ``wanted`` split ("train", "val", "test") of ``root``.

    A folder with ``train/`` uses its ``val/`` (or ``valid/``, ``validation/``) and its ``test/``,
    else its ``val/`` as test; only the wanted folders are listed (the class names are the training
    folder's sub-folders either way). A flat tree of class folders holds out ``val_size`` files
    (default 10%) for validation, then ``test_size`` of the others (default 10% of all; 0: none, and
    the test is the validation) for the test, each stratified, from ``seed``: disjoint, and the
    validation files are those a run before the test split held out. When test is val, the two are
    the same list object.
    """
    splits: dict[str, Samples] = {}
    if test_size and (root / "train").is_dir():
        raise AlexNetError(f"{root} has train/: its test is its test/ folder (or val/); --test-size applies to a "
                           f"flat folder of class folders")
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
        split = torch.zeros(len(samples), dtype=torch.long)  # 0 train, 1 validation, 2 test
        split[held] = 1
        tests = max(1, round(FOLDER_TEST_FRACTION * len(samples))) if test_size is None else test_size
        if tests:
            rest = torch.nonzero(split == 0).squeeze(1)
            if tests >= len(rest):
                raise AlexNetError(f"{root}: {len(samples)} images cannot hold out {len(held)} for validation and "
                                   f"{tests} for the test with any left to train on; use a smaller --val-size "
                                   f"or --test-size (0: test on the validation images)")
            split[rest[stratified_indices(labels[rest], tests, seed + 1)]] = 2
        splits["train"] = [s for s, k in zip(samples, split.tolist()) if k == 0]
        splits["val"] = [s for s, k in zip(samples, split.tolist()) if k == 1]
        splits["test"] = [s for s, k in zip(samples, split.tolist()) if k == 2] if tests else splits["val"]
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
    samples: Samples, classes: list[str], batch_size: int, *, train: bool, info: DatasetInfo, options: LoaderOptions,
) -> StreamingLoader:
    mean, std = options.normalization if options.normalization is not None else (info.mean, info.std)
    workers = min(8, usable_cpus()) if options.num_workers is None else options.num_workers
    return StreamingLoader(
        samples, classes, batch_size, train=train, mean=mean, std=std, augment=options.augment,
        output_shape=options.output_shape or DEFAULT_STREAMING_SHAPE, device=options.device, seed=options.seed,
        rank=options.rank, world_size=options.world_size, channels_last=options.channels_last,
        num_workers=workers, strict=options.strict,
    )


# --- packed shards ----------------------------------------------------------------------------


def pack_folder(
    folder: str | Path, out: str | Path, *, size: int = 256, val_size: int | None = None,
    test_size: int | None = None, seed: int = 0, workers: int | None = None, encoding: str = "jpeg", progress=None,
) -> PackedIndex:
    """Pack a folder dataset (``train/`` and ``val/``, or a flat tree of class folders) into WebDataset
    shards under ``out`` (``data.packed``): its splits as a streamed run would take them (a flat tree
    holds out ``val_size``, default 10%, then ``test_size``, default 10%, from ``seed``), each image's
    shorter side resized to ``size`` and stored as ``encoding`` (JPEG, or raw pixels: read without
    decoding, several times the disk). Train on it with ``--dataset folder --data-dir OUT``."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AlexNetError(f"{root} is not a folder; pack a folder of class folders (or of train/ and val/)")
    if Path(out).expanduser().resolve().is_relative_to(root.resolve()):
        raise AlexNetError(f"{out} is inside {root}, the folder being packed: its shards would become part of "
                           f"the data; choose a folder outside it")
    classes, splits = _folder_splits(root, ("train", "val", "test"), val_size, seed, test_size)
    wanted = {"train": splits["train"], "val": splits["val"]}
    if splits["test"] is not splits["val"]:
        wanted["test"] = splits["test"]
    return pack_splits(wanted, classes, out, size=size, seed=seed, workers=workers, encoding=encoding,
                       progress=progress)


def packed_loaders(index: PackedIndex, options: LoaderOptions, *, info: DatasetInfo) -> Loaders:
    """``build_loaders`` for a packed folder: its train, val and (else val) test shards."""

    def make(split: str, size: int, is_train: bool) -> PackedLoader:
        return _packed_loader(index, split, size, train=is_train, info=info, options=options,
                              subset=options.subset if is_train else 1)

    val = make("val", options.evaluation_batch_size, False)
    test = make("test", options.evaluation_batch_size, False) if "test" in index.splits else val
    return Loaders(make("train", options.batch_size, True), val, test, list(index.classes), info)


def _packed_loader(
    index: PackedIndex, split: str, batch_size: int, *, train: bool, info: DatasetInfo, options: LoaderOptions,
    subset: float = 1.0,
) -> PackedLoader:
    split = split if split in index.splits else "val"  # a folder without test/ tests on val/, as streamed
    # --subset takes the first fraction of every shard: shards hold their images in random order
    shards = [(path, round(count * subset)) for path, count in index.shards(split)]
    mean, std = options.normalization if options.normalization is not None else (info.mean, info.std)
    output_shape = tuple(options.output_shape or DEFAULT_STREAMING_SHAPE)
    workers = min(8, usable_cpus()) if options.num_workers is None else options.num_workers
    return PackedLoader(
        shards, list(index.classes), batch_size, train=train, mean=mean, std=std,
        transform=sample_transform(options.augment, train=train, output_size=output_shape[1:]), augment=options.augment,
        output_shape=output_shape, device=options.device, seed=options.seed, rank=options.rank,
        world_size=options.world_size, channels_last=options.channels_last, num_workers=workers, pca=index.pca,
    )
