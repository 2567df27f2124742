"""Datasets by name: what each one is, where its files are looked for, and its decoded tensors.

Each name's ``DatasetInfo`` (catalog.py) holds the facts a training run needs (shape, classes,
normalisation constants and where they come from). The in-memory sets are decoded once by torchvision's own dataset
classes (their parsers, download code and checksums) and cached as uint8 tensors, so that a second
load of Fashion-MNIST takes well under a second.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import logging
import math
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torchvision
from torchvision.datasets.utils import check_integrity

from ..errors import AlexNetError
from . import flowers17
from .augment import ColourPCA, compute_pca
from .catalog import dataset_info

CACHE_BUDGET_ENV = "ALEXNET_CACHE_MB"
# Decoded datasets kept in the user cache: CIFAR-10 and -100 (each about 180 MB), MNIST and
# Fashion-MNIST (55 MB each) and Oxford Flowers-17 at 256 px fit several times over.
CACHE_MB = 2048
STALE_PARTIAL_SECONDS = 3600  # a cache file still being written after this was left by a stopped process
DATA_DIR_ENV = "ALEXNET_DATA"  # a directory holding datasets, searched after an explicit --data-dir
# Read-only copies installed by the system; Debian's ``dataset-fashion-mnist`` package puts the four
# IDX files in /usr/share/datasets/fashion-mnist/ and records their md5 sums for dpkg.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
DPKG_INFO_DIR = Path("/var/lib/dpkg/info")

SPLITS = ("train", "test")

log = logging.getLogger(__name__)

@dataclass
class ImageTensors:
    """A whole split in memory: uint8 images, int64 labels and what they mean."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    mean: tuple[float, ...]  # per channel, 0..1 scale
    std: tuple[float, ...]
    pca: ColourPCA | None = field(default=None, repr=False)  # of the training split, for PCA lighting

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: torch.Tensor) -> ImageTensors:
        """The images at ``indices``, same classes and constants."""
        return replace(self, images=self.images[indices], labels=self.labels[indices])


# --- where data is looked for ---------------------------------------------------------------


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``: downloads and decoded tensors."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alexnet"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where datasets are looked for, in order: ``data_dir``, ``$ALEXNET_DATA``, the user cache, system copies.

    A dataset is found in one of these directories or in its sub-folder named after the dataset.
    """
    dirs = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    dirs.append(user_cache_dir() / "datasets")
    dirs.extend(SYSTEM_DATA_DIRS)
    return dirs


def not_found_error(name: str, looked: list[Path], reason: str = "") -> AlexNetError:
    """The one message for missing data: where we looked and the two ways to get it."""
    info = dataset_info(name)
    ways = []
    if name == "fashion-mnist":
        ways.append("install Debian's package: sudo apt install dataset-fashion-mnist")
    if info.url and name not in ("imagenet", "folder"):
        ways.append(f"download it with --download (from {info.url}; needs internet)")
    elif info.url:
        ways.append(f"get it from {info.url}")
    if name == "folder":  # its own folder is the data directory: no <dir> to search
        ways.append(f"pass --data-dir a folder holding {info.files}")
    else:
        ways.append(f"put {info.files}, where <dir> is --data-dir, ${DATA_DIR_ENV} or "
                    f"{user_cache_dir() / 'datasets'}")
    places = "\n".join(f"  {path}" for path in looked)
    steps = "\n".join(f"  - {way}" for way in ways)
    detail = f" ({reason})" if reason else ""
    return AlexNetError(f"dataset {name!r} not found{detail}. Looked in:\n{places}\nTo get it:\n{steps}")


def _candidates(name: str, data_dir: str | Path | None) -> list[Path]:
    """Each search directory and its sub-folder named after the dataset."""
    return [path for root in search_dirs(data_dir) for path in (root / name, root)]


# --- the MNIST family: torchvision's parsers, Debian's gzipped copy ----------------------------

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _dpkg_md5sums() -> dict[Path, str]:
    """md5 sums dpkg recorded for installed files: how a system copy is verified."""
    sums = {}
    for listing in DPKG_INFO_DIR.glob("dataset-*.md5sums"):
        for line in listing.read_text().splitlines():
            digest, _, path = line.partition("  ")
            sums[Path("/") / path] = digest
    return sums


def _verify_gz(path: Path, official_md5: str) -> None:
    """A gzipped IDX file must match the official md5 or the one dpkg recorded (Debian recompresses)."""
    if check_integrity(str(path), official_md5):
        return
    recorded = _dpkg_md5sums().get(path.resolve())
    if recorded and check_integrity(str(path), recorded):
        return
    raise AlexNetError(
        f"checksum mismatch for {path}: it is damaged or not the official file; delete it and get it again"
    )


def _locate_idx(name: str, tv_class: type, data_dir) -> Path | None:
    for path in _candidates(name, data_dir):
        if all((path / tv_class.__name__ / "raw" / file).is_file() for file in _IDX_FILES):
            return path / tv_class.__name__ / "raw"
        # a plain folder of the gzipped files (Debian's layout, or the official download) is accepted
        # only under the dataset's own name: MNIST and Fashion-MNIST share their file names.
        if path.name == name and all((path / f"{file}.gz").is_file() for file in _IDX_FILES):
            return path
    return None


def _check_idx(images: Path, labels: Path) -> None:
    """Refuse a pair of IDX files unless they are 28x28 uint8 images and as many labels 0..9.

    torchvision's own layout (``<dir>/MNIST/raw/``) is read without a checksum, and its parser
    asserts, or allocates what the header claims; so the headers and sizes are checked here first.
    IDX: two zero bytes, a type code (0x08: unsigned bytes), the number of dimensions, each as a
    big-endian uint32, then the values.
    """
    counts = []
    for path, dims_expected, what in ((images, 3, "images"), (labels, 1, "labels")):
        def damaged(reason: str) -> AlexNetError:
            return AlexNetError(
                f"{path} is not an IDX file of {what} ({reason}); it is damaged: delete it and get the "
                f"dataset again (--download)"
            )

        size = path.stat().st_size
        with open(path, "rb") as file:
            header = file.read(4 + 4 * dims_expected)
        if len(header) < 4 or header[:2] != b"\0\0":
            raise damaged("no IDX magic number")
        if header[2] != 0x08:
            raise damaged(f"type code 0x{header[2]:02x}, not 0x08 for unsigned bytes")
        if header[3] != dims_expected:
            raise damaged(f"{header[3]} dimensions, not {dims_expected}")
        if len(header) < 4 + 4 * dims_expected:
            raise damaged("the header is cut short")
        dims = struct.unpack(f">{dims_expected}I", header[4:])
        expected = len(header) + math.prod(dims)
        if size != expected:
            raise damaged(f"{size:,} bytes where its header {dims} implies {expected:,}")
        if what == "images" and dims[1:] != (28, 28):
            raise damaged(f"{dims[1]}x{dims[2]} images, not 28x28")
        if dims[0] < 1:
            raise damaged(f"no {what}")
        counts.append(dims[0])
    if counts[0] != counts[1]:
        raise AlexNetError(f"{images} holds {counts[0]:,} images but {labels} {counts[1]:,} labels; one of them is "
                           f"damaged: delete them and get the dataset again (--download)")
    with open(labels, "rb") as file:
        largest = max(file.read()[8:])
    if largest > 9:
        raise AlexNetError(f"{labels} has label {largest}, outside 0..9; it is damaged: delete it and get the "
                           f"dataset again (--download)")


def _read_idx(name: str, tv_class: type, found: Path) -> dict[str, tuple]:
    def parse(root: Path, raw: Path) -> dict:
        for prefix in ("train", "t10k"):
            _check_idx(raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte")
        try:
            return {split: tv_class(str(root), train=split == "train") for split in SPLITS}
        except Exception as error:  # checked above; this is for what torchvision reads besides (processed/)
            raise AlexNetError(f"{raw}: torchvision cannot read these files ({error}); delete them and get the "
                               f"dataset again (--download)") from error

    if found.name == "raw":  # torchvision's own layout
        splits = parse(found.parent.parent, found)
    else:
        md5s = dict(tv_class.resources)
        with tempfile.TemporaryDirectory(prefix="alexnet-idx-") as tmp:
            raw = Path(tmp) / tv_class.__name__ / "raw"
            raw.mkdir(parents=True)
            for file in _IDX_FILES:
                _verify_gz(found / f"{file}.gz", md5s[f"{file}.gz"])
                with gzip.open(found / f"{file}.gz", "rb") as src, open(raw / file, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            splits = parse(Path(tmp), raw)
    return {
        split: (dataset.data.unsqueeze(1).contiguous(), dataset.targets.long(), list(tv_class.classes))
        for split, dataset in splits.items()
    }


# --- CIFAR: torchvision's pickled batches -----------------------------------------------------


def _locate_cifar(name: str, tv_class: type, data_dir) -> Path | None:
    for path in _candidates(name, data_dir):
        if (path / tv_class.base_folder).is_dir():
            return path
    return None


def _read_cifar(name: str, tv_class: type, found: Path) -> dict[str, tuple]:
    splits = {}
    for split in SPLITS:
        # The batches are pickles, and unpickling can run any code: torchvision reads them only after
        # every file's md5 matched the published one (CIFAR10._check_integrity and _load_meta), so a
        # damaged or foreign file is refused here before a byte of it is unpickled.
        try:
            dataset = tv_class(str(found), train=split == "train")
        except RuntimeError as error:
            raise AlexNetError(
                f"{found / tv_class.base_folder}: files missing or damaged, their md5 sums do not match CIFAR's "
                f"published ones, so none was read ({error}); delete the folder and get it again (--download)"
            ) from None
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> (N, 3, 32, 32)
        splits[split] = (images, torch.tensor(dataset.targets, dtype=torch.long), list(dataset.classes))
    return splits


_TORCHVISION = {
    "fashion-mnist": (torchvision.datasets.FashionMNIST, _locate_idx, _read_idx),
    "mnist": (torchvision.datasets.MNIST, _locate_idx, _read_idx),
    "cifar10": (torchvision.datasets.CIFAR10, _locate_cifar, _read_cifar),
    "cifar100": (torchvision.datasets.CIFAR100, _locate_cifar, _read_cifar),
}


# --- finding, downloading, caching ------------------------------------------------------------


def _locate_folder(name: str, candidates: list[Path]) -> Path | None:
    """ImageNet: the first candidate with a ``train/`` folder. A folder dataset: one with class folders."""
    for path in candidates:
        if name == "imagenet" and (path / "train").is_dir():
            return path
        if name == "folder" and path.is_dir() and any(child.is_dir() for child in path.iterdir()):
            return path
    return None


def locate(name: str, data_dir: str | Path | None = None) -> Path | None:
    """Where ``name`` is found on this machine, following the search order; None when nowhere."""
    dataset_info(name)
    if name in _TORCHVISION:
        tv_class, locate_fn, _ = _TORCHVISION[name]
        found = locate_fn(name, tv_class, data_dir)
    elif name == "flowers17":
        found = flowers17.locate(_candidates(name, data_dir))
    elif name == "folder":  # any tree of class folders: only where the caller points
        return _locate_folder(name, [Path(data_dir).expanduser()] if data_dir else [])
    else:
        found = _locate_folder(name, _candidates(name, data_dir))
    if found is not None and data_dir and not found.is_relative_to(Path(data_dir).expanduser()):
        _found_elsewhere(name, str(data_dir), str(found))
    return found


@functools.cache  # once a process: a run reads its splits one by one
def _found_elsewhere(name: str, data_dir: str, found: str) -> None:
    """Say that ``data_dir``, given, holds no ``name``, and the search went on to ``found``."""
    log.warning("%s is not in %s; using the copy found at %s (the search goes on to $%s, ~/.cache/alexnet and "
                "the system copies)", name, data_dir, found, DATA_DIR_ENV)


def download_dir(data_dir: str | Path | None = None) -> Path:
    """Where a download goes: the first writable search directory (never a system copy)."""
    return search_dirs(data_dir)[0]


def _download(name: str, data_dir) -> None:
    target = download_dir(data_dir) / name
    try:
        target.mkdir(parents=True, exist_ok=True)
        if name in _TORCHVISION:
            tv_class = _TORCHVISION[name][0]
            tv_class(str(target), train=True, download=True)  # fetches and checks both splits
        elif name == "flowers17":
            flowers17.download(target)
        else:
            raise AlexNetError(f"{name} cannot be downloaded automatically")
    except (OSError, RuntimeError) as error:  # URLError is an OSError; torchvision raises RuntimeError
        raise not_found_error(name, search_dirs(data_dir), f"download failed: {error}") from None


def _cache_path(name: str, split: str, found: Path) -> Path:
    stamp = f"{found.resolve()}:{found.stat().st_mtime_ns}"
    digest = hashlib.sha1(stamp.encode()).hexdigest()[:12]
    return user_cache_dir() / "tensors" / f"{name}-{split}-{digest}.pt"


def load_cache(path: Path):
    """What ``save_cache`` wrote to ``path``, or None when it is absent or unreadable. A hit marks the
    entry as just used (its modification time), so that ``save_cache`` evicts the others first."""
    try:
        value = torch.load(path, weights_only=True)
    except Exception:  # absent, or written by an interrupted or older run: decode again
        return None
    with contextlib.suppress(OSError):
        os.utime(path)
    return value


def save_cache(value, path: Path, also_keep: Collection[Path] = ()) -> None:
    """Save ``value`` to ``path`` if the cache folder can be written; a cache is never worth failing a run.

    A read-only home, a full disk or an ``XDG_CACHE_HOME`` that is no folder only costs decoding again.
    The folder is then brought back within its budget (``evict_least_used``), keeping ``path`` and
    ``also_keep`` (entries written with it, such as the other split of the same dataset).
    """
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value, partial)
        partial.replace(path)  # atomic: a concurrent reader sees no file or the whole new one
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as RuntimeError
        log.warning("not caching %s (%s); the data is decoded again next time", path, error)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return
    evict_least_used(path.parent, keep=(path, *also_keep))


def cache_budget() -> float:
    """Bytes one cache folder may hold: ``$ALEXNET_CACHE_MB`` megabytes (``inf``: no bound), default
    ``CACHE_MB``. A value that is no size is warned of and the default kept."""
    given = os.environ.get(CACHE_BUDGET_ENV)
    if given is None:
        return CACHE_MB * 2**20
    try:
        megabytes = float(given)
    except ValueError:
        megabytes = math.nan
    if math.isnan(megabytes) or megabytes < 0:  # a cache is never worth failing a run
        log.warning("$%s must be a number of megabytes (inf: no bound), not %r; keeping %d MB",
                    CACHE_BUDGET_ENV, given, CACHE_MB)
        megabytes = CACHE_MB
    return megabytes * 2**20


def evict_least_used(folder: Path, keep: Collection[Path] = ()) -> list[Path]:
    """Remove the entries of ``folder`` used longest ago until it holds ``cache_budget()`` bytes or
    less, never those in ``keep`` (just written); returns what was removed. Each entry is keyed by
    its source's path and modification time, so a dataset moved or extracted again leaves its old
    entry behind, never read again: without a bound the cache would grow by one for every such
    copy. Partial files that a process stopped mid-write left behind (over an hour old) go too."""
    budget, kept, entries = cache_budget(), set(keep), []
    for entry in folder.glob("*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - entry.stat().st_mtime > STALE_PARTIAL_SECONDS:
                entry.unlink()
    for entry in folder.glob("*.pt"):
        with contextlib.suppress(OSError):  # removed meanwhile by another process
            status = entry.stat()
            entries.append((status.st_mtime_ns, status.st_size, entry))
    total, removed = sum(size for _, size, _ in entries), []
    for _, size, entry in sorted(entries):  # least recently used first
        if total <= budget:
            break
        if entry in kept:
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
        total -= size
    return removed


def load_tensors(name: str, split: str, *, data_dir: str | Path | None = None, download: bool = False) -> ImageTensors:
    """The whole ``split`` ("train" or "test") of an in-memory dataset as uint8 tensors on the CPU.

    Looks for the files in ``search_dirs(data_dir)``; downloads them (checked by md5) when absent and
    ``download`` is true; otherwise raises ``AlexNetError`` saying where it looked and how to get them.
    Decoded tensors are cached in the user cache directory, with the training split's colour PCA.
    """
    info = dataset_info(name)
    if not info.in_memory:
        raise AlexNetError(f"{name} is streamed from files, not loaded into memory; use build_loaders")
    if split not in SPLITS:
        raise AlexNetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    found = locate(name, data_dir)
    if found is None and download:
        _download(name, data_dir)
        found = locate(name, data_dir)
    if found is None:
        raise not_found_error(name, search_dirs(data_dir))

    saved = load_cache(_cache_path(name, split, found))
    if isinstance(saved, dict) and {"images", "labels", "classes"} <= saved.keys():
        pca = ColourPCA(*saved["pca"]) if "pca" in saved else None
        return ImageTensors(saved["images"], saved["labels"], saved["classes"], info.mean, info.std, pca)

    # both splits are decoded together (the parsers want all files present) and cached separately
    if name == "flowers17":
        decoded = {each: flowers17.read(found, each) for each in SPLITS}
    else:
        tv_class, _, read_fn = _TORCHVISION[name]
        decoded = read_fn(name, tv_class, found)
    results, written = {}, []
    for each, (images, labels, classes) in decoded.items():
        saved = {"images": images, "labels": labels, "classes": classes}
        pca = None
        if each == "train":
            pca = compute_pca(images)
            saved["pca"] = list(pca)
        written.append(_cache_path(name, each, found))
        save_cache(saved, written[-1], also_keep=written[:-1])  # the other split, just written, stays
        results[each] = ImageTensors(images, labels, classes, info.mean, info.std, pca)
    return results[split]


# --- validation split and subsets -------------------------------------------------------------


def stratified_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """``size`` indices drawn from every class in proportion to its count, sorted; deterministic in ``seed``.

    Each class gets floor(size * share) and the remainder goes to the classes with the largest
    fractional parts (Hamilton's method), so the total is exactly ``size``.
    """
    n = len(labels)
    if not 0 <= size <= n:
        raise AlexNetError(f"cannot hold out {size} of {n} images")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    shuffled = labels[order]
    num_classes = int(labels.max()) + 1 if n else 0
    counts = torch.bincount(labels, minlength=num_classes)
    exact = counts.double() * size / max(n, 1)
    quota = exact.floor().long()
    remainder = size - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:remainder]] += 1
    # rank of each shuffled image within its class: stable sort by class keeps the random order
    by_class = torch.sort(shuffled, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[by_class.indices] = torch.arange(n) - starts[by_class.values]
    chosen = order[rank < quota[shuffled]]
    return chosen.sort().values


def split_validation(data: ImageTensors, size: int, seed: int) -> tuple[ImageTensors, ImageTensors]:
    """(train, validation): ``size`` images held out of ``data``, stratified by class, from ``seed``.

    Both keep the dataset's order; the same seed always holds out the same images.
    """
    held = torch.zeros(len(data), dtype=torch.bool)
    held[stratified_indices(data.labels, size, seed)] = True
    return data.select(torch.nonzero(~held).squeeze(1)), data.select(torch.nonzero(held).squeeze(1))


def stratified_subset(data: ImageTensors, fraction: float, seed: int) -> ImageTensors:
    """``fraction`` of ``data`` (0 < fraction <= 1), every class in proportion, from ``seed``."""
    if not 0 < fraction <= 1:
        raise AlexNetError(f"subset fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return data
    return data.select(stratified_indices(data.labels, round(fraction * len(data)), seed))
