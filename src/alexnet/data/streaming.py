"""The streaming path for folders too big for memory (ImageNet): DataLoader workers decode and crop.

Workers decode with ``data.images.decode`` (Pillow) and apply the geometric part of the ``AugmentConfig`` with
``transforms.v2``, one image at a time; the main process moves the uint8 batch to the device and
applies the photometric part and normalisation with the same batch functions as the in-memory path.

A file that cannot be read or decoded (corrupt, truncated, not an image) never kills an epoch: it is
left out of its batch (which is then smaller), counted in ``loader.skipped`` and named in
``loader.skipped_files`` for the epoch; with ``strict=True`` it raises ``AlexNetError`` naming it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2

from ..errors import AlexNetError
from .augment import ColourPCA, compute_pca, derive_seed, epoch_generator
from .augment_spec import AugmentConfig
from .base import BatchLoader, shard_indices
from .datasets import load_cache, save_cache, user_cache_dir
from .images import decode, decode_problem
from .test_time import ResizeShorterSide

# Files that map wnids (n01440764) to readable names: Kaggle's ILSVRC copy ships
# LOC_synset_mapping.txt, Caffe's ilsvrc12 tools synset_words.txt; both are "wnid name, synonym, ...".
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")


def index_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """Every file under ``root/<class>/`` (recursively, hidden files aside) with its class index.

    Classes are the sorted sub-folder names (torchvision's ``find_classes``) unless given, as a
    validation folder must use the training folder's. Files are not filtered by extension: one that
    is not an image is skipped, and counted, when it fails to decode.

    A folder that cannot be listed is an error, never a class of 0 images (which would make the
    run's accuracy meaningless); so is a training class folder without files. Symbolic links are
    followed, as datasets are often assembled from links, but one that leads to ``/``, to the data
    folder or above it, or back into a folder it is inside of is refused: walking it would list the
    whole filesystem, or never end.
    """
    training = classes is None
    if classes is None:
        classes = class_folders(root)
    samples = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():  # a validation or test folder may lack a class
            continue
        files = files_under(folder, root)
        if training and not files:
            raise AlexNetError(
                f"class folder {folder} has no files; put its images there, or remove the folder if it is no class"
            )
        samples += [(path, label) for path in files]
    if not samples:
        raise AlexNetError(f"{root}: no files in class folders; expected <class>/<image> files")
    return samples, list(classes)


def class_folders(root: Path) -> list[str]:
    """The class names of a folder of class folders: its sub-folders, sorted; no file is listed."""
    try:
        return find_classes(str(root))[0]
    except FileNotFoundError:  # also find_classes' "Couldn't find any class folder"
        raise AlexNetError(f"{root}: no class folders; expected one sub-folder of images per class") from None
    except OSError as error:
        raise AlexNetError(f"cannot list {root} ({error.strerror or error}); make it readable") from None


def files_under(folder: Path, root: Path, *, root_name: str = "the data folder") -> list[str]:
    """Every regular file under ``folder`` (hidden files and folders aside), in ``sorted(folder.rglob("*"))``
    order, following symbolic links that are safe: the one folder walker of training data and of
    ``predict``.

    A link that leads to ``root`` (``root_name`` in the message), to a folder above it, or back to
    a folder it is inside of is refused with an ``AlexNetError``: walking it would read the whole
    filesystem, or never end. ``root`` itself, as given, may be ``folder``. A FIFO, socket or
    device is no file here: reading one as an image would block or never end."""
    files = []
    root_real = os.path.realpath(root)
    # Each folder still to list, with the real paths of the folders it is inside of: a link to one
    # of those is a loop. An explicit stack, as a deep tree must not hit Python's recursion limit.
    pending = [(str(folder), ())]
    while pending:
        directory, inside = pending.pop()
        real = os.path.realpath(directory)
        if directory != str(root) and (real == root_real or root_real.startswith(real.rstrip(os.sep) + os.sep)):
            raise AlexNetError(
                f"{directory} leads to {real}, {root_name} {root} or a folder above it: the whole "
                f"filesystem would be read as images; point the link at the images themselves"
            )
        if real in inside:
            raise AlexNetError(
                f"{directory} leads back to {real}, a folder it is inside of (a symbolic link loop); remove the link"
            )
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            raise AlexNetError(
                f"cannot list folder {directory} ({error.strerror or error}): its images would be "
                f"missing from the run; make it readable (chmod -R a+rX) or remove it"
            ) from None
        for entry in entries:
            if _is_dir(entry):
                if not entry.name.startswith("."):  # .git, .ipynb_checkpoints: no images of the set
                    pending.append((entry.path, (*inside, real)))
            elif not entry.name.startswith(".") and _is_file(entry):
                files.append(entry.path)
    files.sort(key=lambda path: path.split(os.sep))  # pathlib's order: part by part
    return files


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    # Regular files only (links followed): reading a FIFO or device as an image would block the epoch.
    try:
        return entry.is_file()
    except OSError:
        return False


def readable_class_names(root: Path, wnids: list[str]) -> list[str]:
    """ImageNet's readable class names from a synset mapping file beside ``root``, else the wnids.

    The first synonym is used ("n01440764 tench, Tinca tinca" -> "tench"); the few names ImageNet
    uses twice ("crane", "maillot") get their wnid appended so that names stay unique.
    """
    for folder in (root, root.parent):
        for file in SYNSET_FILES:
            if (folder / file).is_file():
                mapping = {}
                for line in (folder / file).read_text().splitlines():
                    wnid, _, names = line.strip().partition(" ")
                    mapping[wnid] = names.split(",")[0].strip() or wnid
                names = [mapping.get(wnid, wnid) for wnid in wnids]
                return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]
    return list(wnids)


def sample_transform(config: AugmentConfig, *, train: bool, output_size: tuple[int, int]) -> v2.Transform:
    """The per-image geometric part of ``config`` as ``transforms.v2`` on uint8 tensors."""
    height, width = output_size
    resized = round(min(height, width) / config.crop_fraction)  # shorter side before cropping: 256 for 224
    if not train:  # (the paper's ten views are cut from whole images by inference.predict_logits)
        return v2.Compose([ResizeShorterSide(resized), v2.CenterCrop(output_size)])
    steps: list[v2.Transform] = []
    if config.random_resized_crop:
        steps.append(v2.RandomResizedCrop(output_size, scale=config.random_resized_crop, antialias=True))
        if config.crop_padding:
            steps.append(v2.RandomCrop(output_size, padding=config.crop_padding))
    else:
        steps += [v2.Resize(resized, antialias=True), v2.RandomCrop(output_size, padding=config.crop_padding or None)]
    if config.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if config.vertical_flip:
        steps.append(v2.RandomVerticalFlip())
    if config.rotation_degrees or config.translate or config.zoom_range:
        translate = (config.translate, config.translate) if config.translate else None
        steps.append(v2.RandomAffine(degrees=config.rotation_degrees, translate=translate, scale=config.zoom_range))
    return v2.Compose(steps)


class StreamingDataset(Dataset):
    """Decoded, geometrically augmented images of a file list; unreadable ones come back as None."""

    def __init__(self, samples: list[tuple[str, int]], transform: v2.Transform, seed: int = 0) -> None:
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        path, label = self.samples[index]
        try:
            image = decode(path)
        except Exception as error:  # corrupt, truncated, not an image, unreadable
            return None, label, f"{path} ({decode_problem(error)})"
        # transforms.v2 draw from the global generator: seed it per (seed, epoch, image) so that an
        # epoch replays exactly whichever worker decodes the image, without touching the caller's RNG.
        # Only the CPU generator: torch.manual_seed would also queue a CUDA seeding, formatting a
        # stack trace each time on a CUDA build (a quarter of the loader's time per image).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, self.epoch, f"image:{index}"))
            image = self.transform(image)
        return image, label, None


def _collate(items):
    good = [(image, label) for image, label, failure in items if failure is None]
    failures = [failure for _, _, failure in items if failure is not None]
    images = torch.stack([image for image, _ in good]) if good else torch.empty(0, dtype=torch.uint8)
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    return images, labels, failures


class StreamingLoader(BatchLoader):
    """Batches of (images, labels) decoded from files by DataLoader workers; the ``BatchLoader`` contract.

    ``skipped`` / ``skipped_files``: the files left out during the last (or current) epoch.
    With ``world_size > 1`` a ``DistributedSampler`` shards the training files (dropping the
    remainder so every rank takes as many steps) and is re-seeded by ``set_epoch``; evaluation
    shards are disjoint and cover every file once (their lengths differ by at most one).

    Args:
        samples: (path, label) of every file of the split.
        num_workers: DataLoader worker processes decoding files (0: in this process).
        strict: raise ``AlexNetError`` naming the first unreadable file instead of skipping it.
        pca: the training set's colour PCA; None: estimated from the files when PCA lighting needs it.
        The others: see ``BatchLoader``.
    """

    def __init__(
        self, samples: list[tuple[str, int]], classes: list[str], batch_size: int, *, train: bool,
        mean: tuple[float, ...], std: tuple[float, ...], augment: AugmentConfig | None = None,
        output_shape: tuple[int, int, int] = (3, 224, 224), device: torch.device | str = "cpu", seed: int = 0,
        drop_last: bool | None = None, rank: int = 0, world_size: int = 1, channels_last: bool = True,
        num_workers: int = 4, strict: bool = False, pca: ColourPCA | None = None,
    ) -> None:
        super().__init__(
            classes, batch_size, train=train, mean=mean, std=std, output_shape=output_shape, augment=augment,
            device=device, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size,
            channels_last=channels_last, pca=pca,
        )
        self.samples = samples
        self.num_workers = num_workers
        self.strict = strict
        transform = sample_transform(self.augment, train=train, output_size=self.output_shape[1:])
        self.dataset = StreamingDataset(samples, transform, seed)
        if train and self.augment.pca_lighting_std and pca is None:
            self.pca = sampled_pca(samples)

    @property
    def num_images(self) -> int:
        return len(self.samples)

    def _sampler(self):
        if self.train and self.balanced:  # each rank its share of one draw for all
            labels = torch.tensor([label for _, label in self.samples], dtype=torch.long)
            return shard_indices(self.balanced_order(labels), self.rank, self.world_size, drop_remainder=True).tolist()
        if self.world_size > 1 and not self.train:
            # DistributedSampler would pad the shares to equal length with repeated files, and the
            # repeats would count twice in the all-reduced metrics: every file exactly once instead.
            return shard_indices(torch.arange(len(self.dataset)), self.rank, self.world_size,
                                 drop_remainder=False).tolist()
        if self.world_size > 1:
            sampler = DistributedSampler(
                self.dataset, num_replicas=self.world_size, rank=self.rank, shuffle=self.train, seed=self.seed,
                drop_last=self.train,
            )
            sampler.set_epoch(self.epoch)
            return sampler
        if self.train:
            return RandomSampler(self.dataset, generator=epoch_generator(self.seed, self.epoch, "cpu", "shuffle"))
        return SequentialSampler(self.dataset)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.dataset.epoch = self.epoch
        self.skipped, self.skipped_files = 0, []
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=self._sampler(), num_workers=self.num_workers,
            collate_fn=_collate, drop_last=self.drop_last, pin_memory=self.device.type == "cuda",
            generator=epoch_generator(self.seed, self.epoch, "cpu", "workers"),
        )
        generator = self.augment_generator()
        for images, labels, failures in loader:
            if failures:
                if self.strict:
                    raise AlexNetError(
                        f"cannot read image {failures[0]}; fix or remove it, or run without --strict to skip such files"
                    )
                self.skipped += len(failures)
                self.skipped_files += failures
            if not len(labels):
                continue
            images = self.finish_bytes(images.to(self.device, non_blocking=True), generator)
            yield images, labels.to(self.device, non_blocking=True)


def sampled_pca(samples: list[tuple[str, int]], count: int = 500, size: int = 64) -> ColourPCA:
    """Colour PCA of ``count`` evenly spaced training images at ``size`` px, cached on disk by file list.

    500 images estimate a 3x3 covariance closely; decoding all of ImageNet for it would take an hour.
    """
    chosen = samples[:: max(1, len(samples) // count)][:count]
    key = hashlib.sha1("\n".join(path for path, _ in chosen).encode()).hexdigest()[:16]
    cache = user_cache_dir() / "pca" / f"{key}.pt"
    saved = load_cache(cache)
    if isinstance(saved, list) and len(saved) == 2:  # (eigenvalues, eigenvectors), as saved below
        return ColourPCA(*saved)
    resize = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    images = []
    for path, _ in chosen:
        try:
            images.append(resize(decode(path)))
        except Exception:  # unreadable files are the epoch's business, not the PCA's
            continue
    if not images:
        raise AlexNetError("no readable training image to compute the colour PCA from")
    pca = compute_pca(torch.stack(images))
    save_cache(list(pca), cache)
    return pca
