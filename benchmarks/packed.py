"""Training images/s per core from packed shards, against torchvision's ImageFolder way, in one run.

The folder is that of ``benchmarks/streaming.py``: 500x375 JPEGs (ImageNet's typical size) cut from
the photos in tests/data. Three pipelines make the same normalised 3x224x224 training batches of 64
with the same augmentation (a random 224 crop of the image at 256 on its shorter side, mirrored half
the time):

- the baseline: ``ImageFolder`` (PIL decoding) + ``transforms.v2`` (Resize 256, RandomCrop 224,
  RandomHorizontalFlip, ToImage, ToDtype, Normalize) and a ``DataLoader``;
- our streaming loader on the same folder (``build_loaders("folder", ...)``);
- our packed loader on the folder packed once by ``alexnet data pack --size 256`` (packing time is
  printed, not counted: it is paid once, not every epoch), with JPEG shards (the default) and with
  raw shards (``--encoding raw``: pixels stored as PPM, nothing to decode); the disk each takes is
  printed.

All three run in this process (no workers) on one thread, with freed memory kept for reuse as
``alexnet train`` runs: images/s per core, which DataLoader workers multiply. They are timed in
alternating windows (``--rounds`` of each), and the medians compared, so that load from other work
on the machine falls on all three alike.

    .venv/bin/python benchmarks/packed.py [--images 512] [--seconds 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from alexnet.data import LoaderOptions, build_loaders, dataset_info, parse_augment
from alexnet.data.loaders import pack_folder
from alexnet.perf import reuse_freed_memory
from streaming import make_folder, rate_of  # benchmarks/streaming.py: the same 500x375 JPEGs, the same timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=4.0, help="per window")
    parser.add_argument("--rounds", type=int, default=5, help="windows of each pipeline, alternating")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reuse_freed_memory()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"# {cpu}; torch {torch.__version__}, torchvision {torchvision.__version__}; one thread, no workers; "
          f"load average {os.getloadavg()[0]:.1f}")
    info = dataset_info("imagenet")
    with tempfile.TemporaryDirectory() as tmp:
        source, packed, raw = Path(tmp) / "folder", Path(tmp) / "packed", Path(tmp) / "raw"
        make_folder(source, args.images)
        start = time.perf_counter()
        pack_folder(source, packed, size=256, val_size=4, workers=1)
        packing = (time.perf_counter() - start) / args.images
        pack_folder(source, raw, size=256, val_size=4, workers=1, encoding="raw")
        disk = {folder: sum(file.stat().st_size for file in folder.rglob("*")) / 2**20
                for folder in (source, packed, raw)}
        transform = v2.Compose([
            v2.Resize(256, antialias=True), v2.RandomCrop(224), v2.RandomHorizontalFlip(), v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std),
        ])
        baseline = DataLoader(torchvision.datasets.ImageFolder(str(source), transform=transform),
                              batch_size=64, shuffle=True, num_workers=0, drop_last=True)
        options = LoaderOptions(batch_size=64, output_shape=(3, 224, 224), augment=parse_augment("crop=224/256,hflip"),
                                val_size=4, num_workers=0)
        streaming = build_loaders("folder", replace(options, data_dir=source)).train
        packed_loader = build_loaders("folder", replace(options, data_dir=packed)).train
        raw_loader = build_loaders("folder", replace(options, data_dir=raw)).train
        pipelines = {
            "ImageFolder + PIL + transforms.v2": lambda: iter(baseline),
            "alexnet streaming loader (files)": lambda: iter(streaming),
            "alexnet packed loader (JPEG shards at 256)": lambda: iter(packed_loader),
            "alexnet packed loader (raw shards at 256)": lambda: iter(raw_loader),
        }
        rates: dict[str, list[float]] = {name: [] for name in pipelines}
        for _ in range(args.rounds):
            for name, iterator_of in pipelines.items():
                rates[name].append(rate_of(iterator_of, args.seconds))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians["ImageFolder + PIL + transforms.v2"]
    print("| pipeline | images/s per core (median) | range | ratio |\n|---|---:|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {median:.1f} | {min(rates[name]):.0f}-{max(rates[name]):.0f} | {median / base:.2f}x |")
    print(f"\npacking: {packing * 1000:.1f} ms an image, once (one process); on disk: source JPEGs "
          f"{disk[source]:.1f} MB, JPEG shards {disk[packed]:.1f} MB, raw shards {disk[raw]:.1f} MB")


if __name__ == "__main__":
    main()
