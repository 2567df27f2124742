"""Packed data: a folder of images written once as WebDataset tar shards, then read sequentially.

``pack_splits`` decodes every image once, resizes its shorter side to ``size`` (256: the paper's
Section 2 rescaling, from which 224 crops are cut) and writes it re-encoded as JPEG into tar shards
of ``SHARD_IMAGES`` images, with webdataset's ``TarWriter`` (``<key>.jpg`` and ``<key>.cls`` members,
WebDataset's own layout: any WebDataset reader can read the shards). ``encoding="raw"`` stores the
pixels instead, as binary PPM (``<key>.ppm``, a header line and the RGB bytes, which WebDataset and
every image library also read): no decoding when read, at about 10x the disk of JPEG; FFCV's raw
mode makes the same trade. ``packed.json`` lists each
split's shards and their image counts, the class names and the training set's colour PCA; it is
written last, so a folder whose packing was interrupted is refused rather than read half.

``PackedLoader`` reads them: each epoch orders the training shards by a permutation of (seed,
epoch), cuts that sequence of images into one contiguous range per rank of exactly ``N // world``
images (the remainder, fewer than ``world`` images, is left out as ``DistributedSampler`` does),
and each rank's range into one per DataLoader worker. Each image is so read by one worker of one
rank per epoch. A range begins inside a shard by seeking over the members before it (tar headers
only). Within a worker, a shuffle buffer mixes the images of its shards.

Why WebDataset: it is a file format as much as a library (plain POSIX tar, one member per field),
so shards are written, checked and copied with ordinary tools, read sequentially from a disk or an
object store, and need no server or database. MosaicML ``streaming`` and Lightning ``litdata`` add
their own binary formats and an index service for cloud buckets, which a folder on a disk does not
need. webdataset's own ``split_by_node``/``split_by_worker`` hand out whole shards, which cannot
give every rank the same number of images; the ranges above do, so the reading is ours.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from torchvision.transforms import v2

from ..errors import AlexNetError
from ..perf import usable_cpus
from .augment import ColourPCA, compute_pca, derive_seed, epoch_generator
from .augment_spec import AugmentConfig
from .base import BatchLoader
from .images import decode, decode_problem
from .test_time import resize_shorter_side

INDEX_FILE = "packed.json"
FORMAT_VERSION = 2
# Format 1 stored the colour PCA's eigenvalues 255 x 255 times too small (the images were scaled to
# 0..1 twice); its shards are the same, so it is read with the eigenvalues put right.
READABLE_FORMATS = (1, 2)
# ~30 MB a shard at 256 px, JPEG quality 90: large enough to be read at disk speed, small enough
# that ImageNet's 1.28M images make ~1,300 shards to spread across ranks and workers.
SHARD_IMAGES = 1000
MIN_SIZE, MAX_SIZE = 16, 4096  # the stored shorter side: 4096 is 16x the paper's 256, ~50 MB an image raw
JPEG_QUALITY = 90  # re-encoding at 90 changes a pixel by ~1 level on average, below what augmentation moves
# How an image is stored in a shard, and its member's extension there.
ENCODINGS = {"jpeg": "jpg", "raw": "ppm"}
# Images held to shuffle within a worker's ranges: 1,000 (~30 MB of JPEG at 256 px), or fewer
# where they would pass SHUFFLE_BYTES (raw images of 256x341 are ~260 KB: ~380 of them), so that
# eight workers on raw shards hold ~800 MB, not ~2 GB.
SHUFFLE_BUFFER = 1000
SHUFFLE_BYTES = 100 * 2**20
GROUP = 16  # images a worker sends to the main process at a time

Samples = list[tuple[str, int]]


@dataclass(frozen=True)
class PackedIndex:
    """What ``packed.json`` says: the class names, each split's shards (file, images) in order, the
    shorter side the images were resized to, how they are stored (``ENCODINGS``) and the training
    images' colour PCA."""

    root: Path
    classes: list[str]
    size: int
    splits: dict[str, list[tuple[str, int]]]
    pca: ColourPCA | None
    skipped: int  # source files that could not be read when packing
    encoding: str = "jpeg"

    @classmethod
    def read(cls, root: str | Path) -> "PackedIndex":
        root = Path(root)
        try:
            values = json.loads((root / INDEX_FILE).read_text())
            if values.get("format") not in READABLE_FORMATS:
                raise AlexNetError(f"{root} was packed in format {values.get('format')!r}, not "
                                   f"{FORMAT_VERSION}; pack it again with alexnet data pack")
            pca = values.get("pca")
            if pca and values["format"] == 1:
                pca = {**pca, "eigenvalues": [value * 255**2 for value in pca["eigenvalues"]]}
            return cls(
                root, list(values["classes"]), int(values["size"]),
                {split: [(str(file), int(count)) for file, count in shards]
                 for split, shards in values["splits"].items()},
                ColourPCA(torch.tensor(pca["eigenvalues"]), torch.tensor(pca["eigenvectors"])) if pca else None,
                int(values.get("skipped", 0)), str(values.get("encoding", "jpeg")),
            )
        except FileNotFoundError:
            raise AlexNetError(f"{root} holds no {INDEX_FILE}: not a packed dataset, or its packing did not "
                               f"finish; pack it with alexnet data pack FOLDER --out {root}") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise AlexNetError(f"{root / INDEX_FILE} is damaged ({error}); pack the folder again") from None

    def images(self, split: str) -> int:
        return sum(count for _, count in self.splits.get(split, []))

    def shards(self, split: str) -> list[tuple[str, int]]:
        """(path, images) of each shard of ``split``, in order."""
        return [(str(self.root / file), count) for file, count in self.splits.get(split, [])]


def is_packed(root: str | Path) -> bool:
    """Whether ``root`` is a folder written by ``pack_splits`` (it holds ``packed.json``)."""
    return (Path(root) / INDEX_FILE).is_file()


# --- writing ----------------------------------------------------------------------------------


# JPEG in and out with Pillow (libjpeg-turbo, as torchvision's codecs, which 0.29 deprecates).
def jpeg_bytes(image: torch.Tensor, quality: int) -> bytes:
    """The JPEG file of a (3, H, W) uint8 RGB image."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def from_jpeg(data: bytes | bytearray) -> torch.Tensor:
    """A JPEG (or any image) file's bytes as a (3, H, W) uint8 RGB image, with the NHWC strides
    Pillow decodes into (no copy to reorder them)."""
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def ppm_bytes(image: torch.Tensor) -> bytes:
    """The binary PPM file of a (3, H, W) uint8 RGB image: ``P6``, width, height, 255, the pixels."""
    _, height, width = image.shape
    return f"P6\n{width} {height}\n255\n".encode() + image.permute(1, 2, 0).contiguous().numpy().tobytes()


_PPM_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+255\s")


def from_stored(data: bytes | bytearray) -> torch.Tensor:
    """A stored image's bytes as a (3, H, W) uint8 RGB image: PPM as ``ppm_bytes`` writes it by
    viewing its pixels (no decoding; the result has NHWC strides), anything else through Pillow."""
    header = _PPM_HEADER.match(data)
    if header is None:
        return from_jpeg(data)
    width, height = int(header[1]), int(header[2])
    data = data if isinstance(data, bytearray) else bytearray(data)  # writable: no warning, no shared bytes
    pixels = torch.frombuffer(data, dtype=torch.uint8, offset=header.end())
    if pixels.numel() != height * width * 3:
        raise ValueError(f"a PPM image of {width}x{height} holds {pixels.numel()} bytes of pixels")
    return pixels.view(height, width, 3).permute(2, 0, 1)


def _encode(item: tuple[str, int, int, str]) -> tuple[bytes | None, str | None]:
    """(the stored bytes of the file's image with its shorter side resized to ``size``, None), or
    (None, why it could not be read)."""
    path, size, quality, encoding = item
    try:
        image = resize_shorter_side(decode(path), size)
        return (ppm_bytes(image) if encoding == "raw" else jpeg_bytes(image, quality)), None
    except Exception as error:  # corrupt, truncated, not an image: counted, as the streaming path does
        return None, f"{path} ({decode_problem(error)})"


def pack_splits(
    splits: dict[str, Samples], classes: list[str], out: str | Path, *, size: int = 256, seed: int = 0,
    workers: int | None = None, shard_images: int = SHARD_IMAGES, quality: int = JPEG_QUALITY, encoding: str = "jpeg",
    progress: Callable[[str, int, int], None] | None = None,
) -> PackedIndex:
    """Write each split's (path, label) files as WebDataset shards ``<split>-NNNNNN.tar`` under ``out``.

    Images are stored in a seeded random order, so that any run of them mixes the classes; each is
    decoded, resized to ``size`` on its shorter side and re-encoded (``encoding``: JPEG, or raw PPM)
    by ``workers`` processes (default: one per CPU this process may use). A file that cannot be read is left out and
    counted. ``progress(split, done, total)`` is called as images are written. ``out`` must be a new or empty folder."""
    out = Path(out)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise AlexNetError(f"--size is the shorter side images are stored at, {MIN_SIZE} to {MAX_SIZE:,} pixels "
                           f"(the paper's: 256); got {size:,}")
    if workers is not None and workers < 1:
        raise AlexNetError(f"--workers must be at least 1 (leave it out for one per CPU), got {workers}")
    if encoding not in ENCODINGS:
        raise AlexNetError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlexNetError(f"{out} exists and is not an empty folder; choose a new folder to pack into")
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # under a file, in /proc, no permission
        raise AlexNetError(f"cannot create {out} ({error.strerror or error}); choose another place") from None
    try:
        return _pack(splits, classes, out, size=size, seed=seed, workers=workers or usable_cpus(),
                     shard_images=shard_images, quality=quality, encoding=encoding, progress=progress)
    except BaseException:  # an error, Ctrl-C: no half-written folder left to refuse the next try
        for path in out.iterdir():
            path.unlink(missing_ok=True)
        if made:
            out.rmdir()
        raise


def _pack(splits: dict[str, Samples], classes: list[str], out: Path, *, size: int, seed: int, workers: int,
          shard_images: int, quality: int, encoding: str, progress) -> PackedIndex:
    """``pack_splits``'s work, into the empty folder ``out``."""
    mtime = int(time.time())
    written: dict[str, list[tuple[str, int]]] = {}
    failures: list[str] = []
    pca_images: list[torch.Tensor] = []
    # Started, not forked: a fork of a process whose torch thread pool is running can hang in the child.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) if workers > 1 else _InProcess() as pool:
        for split, samples in splits.items():
            order = torch.randperm(len(samples), generator=epoch_generator(seed, 0, "cpu", f"pack:{split}")).tolist()
            items = [(samples[i][0], size, quality, encoding) for i in order]
            pca_every = max(1, len(samples) // 500) if split == "train" else 0
            shards: list[tuple[str, int]] = []
            writer, count, name = None, 0, ""
            for position, (encoded, failure) in enumerate(pool.map(_encode, items, chunksize=8)):
                if progress and position % 100 == 0:
                    progress(split, position, len(items))
                if encoded is None:
                    failures.append(failure)
                    continue
                if writer is None or count == shard_images:
                    if writer is not None:
                        writer.close()
                        shards.append((name, count))
                    name = f"{split}-{len(shards):06d}.tar"
                    writer, count = _ShardWriter(out / name, mtime), 0
                label = samples[order[position]][1]
                writer.write({"__key__": f"{position:09d}", ENCODINGS[encoding]: encoded, "cls": str(label).encode()})
                count += 1
                if pca_every and position % pca_every == 0 and len(pca_images) < 500:
                    pca_images.append(v2.functional.center_crop(resize_shorter_side(
                        from_stored(encoded), 64), [64, 64]))
            if writer is not None:
                writer.close()
                shards.append((name, count))
            written[split] = shards
            if progress:
                progress(split, len(items), len(items))
    if not written.get("train"):
        raise AlexNetError(f"no training image of {out} could be read; check the folder's images")
    pca = compute_pca(torch.stack(pca_images)) if pca_images else None
    index = {
        "format": FORMAT_VERSION, "classes": classes, "size": size, "encoding": encoding, "splits": written,
        "skipped": len(failures),
        "skipped_files": failures[:100],
        "pca": {"eigenvalues": pca.eigenvalues.tolist(), "eigenvectors": pca.eigenvectors.tolist()} if pca else None,
    }
    temporary = out / (INDEX_FILE + ".partial")
    temporary.write_text(json.dumps(index, indent=1))
    temporary.replace(out / INDEX_FILE)  # last: a folder with packed.json is a finished one
    return PackedIndex.read(out)


class _ShardWriter:
    """One shard through webdataset's ``TarWriter`` (fields given as bytes, written as they are)."""

    def __init__(self, path: Path, mtime: int) -> None:
        try:
            import webdataset
        except ImportError:
            raise AlexNetError("packing writes WebDataset shards: pip install alexnet[packed] "
                               "(or: pip install webdataset)") from None
        self.file = open(path, "wb")
        # A whole-second time: a fractional one needs a PAX header for every member, which doubles
        # the headers a reader parses (Python's tarfile: about 0.2 ms an image).
        self.writer = webdataset.TarWriter(self.file, encoder=False, mtime=mtime)

    def write(self, sample: dict) -> None:
        self.writer.write(sample)

    def close(self) -> None:
        self.writer.close()
        self.file.close()


class _InProcess:
    """``ProcessPoolExecutor``'s ``map`` in this process (one worker: no processes to start)."""

    def __enter__(self) -> "_InProcess":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, function, items, chunksize: int = 1):
        return map(function, items)


# --- reading ----------------------------------------------------------------------------------

Piece = tuple[str, int, int]  # (shard path, images to skip, images to take)


def ranges_of(shards: list[tuple[str, int]], start: int, stop: int) -> list[Piece]:
    """The pieces of shards holding images ``start`` to ``stop`` of the sequence ``shards`` make."""
    pieces, offset = [], 0
    for path, count in shards:
        low, high = max(start, offset), min(stop, offset + count)
        if low < high:
            pieces.append((path, low - offset, high - low))
        offset += count
    return pieces


def split_range(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into ``parts`` contiguous ranges whose lengths differ by at most one,
    the longer ones first (as ``range(part, n, parts)`` would share it out)."""
    total = stop - start
    bounds = [start + part * (total // parts) + min(part, total % parts) for part in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


def _read_pieces(pieces: list[Piece]) -> Iterator[tuple[str, bytearray, int]]:
    """(key, stored image bytes, label) of every image of ``pieces``, in order.

    A sample is the tar members sharing a key (``<key>.jpg`` or ``<key>.ppm``, ``<key>.cls``); the archive is opened
    seekable, so the members of skipped samples are passed over by their headers, their data unread."""
    for path, skip, take in pieces:
        with tarfile.open(path, "r:") as archive:
            index, current, fields = -1, None, {}
            for member in archive:
                key, _, extension = member.name.partition(".")
                if key != current:
                    if current is not None and index >= skip:
                        yield current, _image_field(fields), int(fields["cls"])
                    current, fields = key, {}
                    index += 1
                    if index >= skip + take:
                        current = None
                        break
                if index >= skip and extension in _FIELDS:
                    # into a bytearray: writable, so the raw pixels are viewed as a tensor without a copy
                    data = bytearray(member.size)
                    archive.extractfile(member).readinto(data)
                    fields[extension] = data
            if current is not None and skip <= index < skip + take:
                yield current, _image_field(fields), int(fields["cls"])


_FIELDS = (*ENCODINGS.values(), "cls")


def stored_images(index: PackedIndex, split: str) -> Iterator[tuple[bytearray, int]]:
    """(stored bytes, label) of every image of ``split``, in the order packed (``from_stored`` decodes
    them); the shards are read one after another."""
    for _, data, label in _read_pieces(ranges_of(index.shards(split), 0, index.images(split))):
        yield data, label


def _image_field(fields: dict[str, bytearray]) -> bytearray:
    return next(fields[extension] for extension in ENCODINGS.values() if extension in fields)


def _shuffled(items: Iterator, size: int, generator: torch.Generator, max_bytes: int | None = None) -> Iterator:
    """``items`` (key, data, label) through a buffer: each is swapped with a random one already
    held. The buffer fills to ``size`` items, or fewer where the next one's data would pass
    ``max_bytes`` (the first is always held), and keeps that length."""
    buffer = []
    held = 0
    for item in items:
        if len(buffer) < size and (max_bytes is None or not buffer or held + len(item[1]) <= max_bytes):
            buffer.append(item)
            held += len(item[1])
            continue
        size = len(buffer)  # full, by count or by bytes: the buffer keeps this length from here
        chosen = int(torch.randint(len(buffer), (), generator=generator))
        buffer[chosen], item = item, buffer[chosen]
        yield item
    order = torch.randperm(len(buffer), generator=generator).tolist()
    yield from (buffer[i] for i in order)


class PackedDataset(IterableDataset):
    """Decoded, geometrically augmented images of one rank's pieces, in groups of ``GROUP``.

    ``worker_pieces`` (one list of pieces per DataLoader worker; set by the loader each epoch) says
    what each worker reads; it yields (uint8 images (G, C, H, W), labels (G,)) groups."""

    def __init__(self, transform: v2.Transform, seed: int, shuffle: bool) -> None:
        self.transform = transform
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.rank = 0
        self.worker_pieces: list[list[Piece]] = [[]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        pieces = self.worker_pieces[worker]
        items: Iterator = _read_pieces(pieces)
        if self.shuffle:
            items = _shuffled(items, SHUFFLE_BUFFER,
                              epoch_generator(self.seed, self.epoch, "cpu", f"buffer:{self.rank}:{worker}"),
                              SHUFFLE_BYTES)
        images, labels = [], []
        for key, data, label in items:
            try:
                image = from_stored(data)
            except Exception as error:  # a shard damaged after packing (a truncated copy, a bad disk)
                raise AlexNetError(f"packed image {key} cannot be read ({error}); the shards are damaged: "
                                   f"pack the folder again") from None
            # transforms.v2 draw from the global generator: seeded per (seed, epoch, image), as the
            # streaming path does, so an image's augmentation does not depend on who decodes it.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(derive_seed(self.seed, self.epoch, f"image:{key}"))
                images.append(self.transform(image))
            labels.append(label)
            if len(images) == GROUP:
                yield _stack_channels_last(images), torch.tensor(labels)
                images, labels = [], []
        if images:
            yield _stack_channels_last(images), torch.tensor(labels)


def _stack_channels_last(images: list[torch.Tensor]) -> torch.Tensor:
    """(C, H, W) images held in NHWC order (as decoded, cropped and flipped) as one channels-last
    batch: row copies, where ``torch.stack`` would transpose every image into NCHW and the batch
    would be transposed back (two thirds of the reading time of raw shards)."""
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)


class PackedLoader(BatchLoader):
    """Batches of (images, labels) read from packed shards; the ``BatchLoader`` contract.

    Training: the shard order is permuted every epoch and each rank reads its own contiguous
    ``num_images // world_size`` images of it (every rank takes as many steps; each image is read
    once per epoch, all ranks together, but for the remainder). Evaluation: the stored order, the
    ranks' ranges covering every image once (lengths differing by at most one).

    Args:
        shards: (path, images) of the split's shards, in stored order.
        transform: the per-image geometric part (``streaming.sample_transform``).
        num_workers: DataLoader processes decoding (0: in this process).
        The others: see ``BatchLoader``.
    """

    def __init__(
        self, shards: list[tuple[str, int]], classes: list[str], batch_size: int, *, train: bool,
        mean: tuple[float, ...], std: tuple[float, ...], transform: v2.Transform,
        augment: AugmentConfig | None = None, output_shape: tuple[int, int, int] = (3, 224, 224),
        device: torch.device | str = "cpu", seed: int = 0, drop_last: bool | None = None, rank: int = 0,
        world_size: int = 1, channels_last: bool = True, num_workers: int = 4, pca: ColourPCA | None = None,
    ) -> None:
        super().__init__(
            classes, batch_size, train=train, mean=mean, std=std, output_shape=output_shape, augment=augment,
            device=device, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size,
            channels_last=channels_last, pca=pca,
        )
        self.shards = [(path, count) for path, count in shards if count > 0]
        self.num_workers = num_workers
        self.dataset = PackedDataset(transform, seed, shuffle=train)
        self.dataset.rank = rank

    @property
    def num_images(self) -> int:
        return sum(count for _, count in self.shards)

    def rank_range(self) -> tuple[list[tuple[str, int]], int, int]:
        """This epoch's shard order and this rank's [start, stop) of the images it makes."""
        shards = self.shards
        if self.train:
            order = torch.randperm(len(shards), generator=epoch_generator(self.seed, self.epoch, "cpu", "shards"))
            shards = [shards[i] for i in order.tolist()]
            share = self.num_images // self.world_size
            return shards, self.rank * share, (self.rank + 1) * share
        start, stop = split_range(0, self.num_images, self.world_size)[self.rank]
        return shards, start, stop

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shards, start, stop = self.rank_range()
        workers = max(1, self.num_workers)
        self.dataset.epoch = self.epoch
        self.dataset.worker_pieces = [ranges_of(shards, low, high) for low, high in split_range(start, stop, workers)]
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        generator = self.augment_generator()
        pending_images: list[torch.Tensor] = []
        pending_labels: list[torch.Tensor] = []
        held = 0
        batches = len(self)
        made = 0
        for images, labels in loader:
            pending_images.append(images)
            pending_labels.append(labels)
            held += len(labels)
            while held >= self.batch_size and made < batches:
                yield self._batch(pending_images, pending_labels, self.batch_size, generator)
                held -= self.batch_size
                made += 1
        if held and made < batches:  # evaluation's last, smaller batch
            yield self._batch(pending_images, pending_labels, held, generator)

    def _batch(self, images: list[torch.Tensor], labels: list[torch.Tensor], count: int,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` images of the held groups (taken out of them) as a finished batch."""
        batch_images, batch_labels = torch.cat(images), torch.cat(labels)
        images[:] = [batch_images[count:]] if len(batch_images) > count else []
        labels[:] = [batch_labels[count:]] if len(batch_labels) > count else []
        batch = self.finish_bytes(batch_images[:count].to(self.device, non_blocking=True), generator)
        return batch, batch_labels[:count].to(self.device, non_blocking=True)
