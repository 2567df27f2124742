"""Decoded-and-augmented images per second per core: the streaming loader against torchvision's way.

Both pipelines read the same folder of 500x375 JPEG files (ImageNet's typical size), cut from the
four photos in tests/data at random places and scales, and produce normalised 3x224x224 training
batches with the paper's augmentation (a random 224/256 crop of the image resized so its shorter side
is 256, mirrored half the time). The baseline is what torchvision's references and most tutorials
write: ``ImageFolder`` (PIL decoding) + ``transforms.v2`` (Resize 256, RandomCrop 224,
RandomHorizontalFlip, ToImage, ToDtype, Normalize) and a ``DataLoader`` of batch 64. Ours is
``alexnet.data.build_loaders("folder", ...)`` with the ``paper`` augmentation without its PCA
lighting (the baseline has none). Both run in this process (no workers) on one thread, with freed
memory kept for reuse as ``alexnet train`` runs: images/s per core, which is what DataLoader
workers multiply.

    .venv/bin/python benchmarks/streaming.py [--images 256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.io import decode_image, encode_jpeg
from torchvision.transforms import v2

from alexnet.data import LoaderOptions, build_loaders, dataset_info, parse_augment
from alexnet.data.images import decode
from alexnet.perf import reuse_freed_memory

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data"


def make_folder(root: Path, count: int, seed: int = 0) -> None:
    """``count`` 500x375 JPEGs (quality 90) in one class folder per source photo (a flat tree)."""
    generator = torch.Generator().manual_seed(seed)
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    sources = [decode_image(str(p), mode=torchvision.io.ImageReadMode.RGB) for p in photos]
    for index in range(count):
        label = index % len(sources)
        image = sources[label]
        height, width = image.shape[1:]
        scale = 0.6 + 0.4 * torch.rand((), generator=generator).item()
        crop_h, crop_w = int(height * scale), int(min(width, height * scale * 4 / 3))
        top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
        left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
        patch = v2.functional.resize(image[:, top:top + crop_h, left:left + crop_w], [375, 500], antialias=True)
        folder = root / photos[label].stem
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:05d}.jpg").write_bytes(encode_jpeg(patch, quality=90).numpy().tobytes())


def rate(loader, seconds: float) -> float:
    if len(loader) < 2:
        raise SystemExit("too few images for two batches of 64: pass a larger --images")
    return rate_of(lambda: iter(loader), seconds)


def rate_of(iterator_of, seconds: float) -> float:
    """Images/s of the batches ``iterator_of()`` yields (restarted when it ends) over ``seconds``,
    after one batch of warm-up."""
    count, start, iterator = 0, None, iterator_of()
    while True:
        try:
            images, _ = next(iterator)
        except StopIteration:
            iterator = iterator_of()
            continue
        if start is None:  # the first batch warms up
            start = time.perf_counter()
            continue
        count += len(images)
        if time.perf_counter() - start >= seconds:
            return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reuse_freed_memory()  # as `alexnet train` does; for both pipelines
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"# {cpu}; torch {torch.__version__}, torchvision {torchvision.__version__}; one thread, no workers; "
          f"load average {os.getloadavg()[0]:.1f}")
    info = dataset_info("imagenet")
    with tempfile.TemporaryDirectory() as tmp:
        make_folder(Path(tmp), args.images)
        transform = v2.Compose([
            v2.Resize(256, antialias=True), v2.RandomCrop(224), v2.RandomHorizontalFlip(), v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std),
        ])
        baseline = DataLoader(torchvision.datasets.ImageFolder(tmp, transform=transform),
                              batch_size=64, shuffle=True, num_workers=0, drop_last=True)
        theirs = rate(baseline, args.seconds)
        options = LoaderOptions(data_dir=tmp, batch_size=64, output_shape=(3, 224, 224),
                                augment=parse_augment("crop=224/256,hflip"), val_size=4, num_workers=0)
        ours_loader = build_loaders("folder", options).train
        ours = rate(ours_loader, args.seconds)
        files = sorted(Path(tmp).rglob("*.jpg"))
        start = time.perf_counter()
        decoded = [decode(str(path)) for path in files]
        decoding = (time.perf_counter() - start) / len(files)
        start = time.perf_counter()
        for image in decoded:
            v2.functional.resize(image, [256], antialias=True)
        resizing = (time.perf_counter() - start) / len(files)
    print("| pipeline | images/s per core | ratio |\n|---|---:|---:|")
    print(f"| ImageFolder + PIL + transforms.v2 | {theirs:.1f} | 1.00x |")
    print(f"| alexnet streaming loader | {ours:.1f} | {ours / theirs:.2f}x |")
    print(f"\nper image, in ours: JPEG decoding {decoding * 1000:.2f} ms, resizing to 256 {resizing * 1000:.2f} ms")


if __name__ == "__main__":
    main()
