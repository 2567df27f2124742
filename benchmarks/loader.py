"""Images per second of the in-memory loader against the conventional per-sample pipeline.

The baseline is what most tutorials write: torchvision's ``FashionMNIST`` dataset with
``ToTensor()`` + ``Normalize`` and a ``DataLoader`` of batch 64. Ours is ``InMemoryLoader`` on the
same training images, with each augmentation preset, measured in the same run on the same machine.

    .venv/bin/python benchmarks/loader.py                     # CPU, natural 1x28x28 batches
    .venv/bin/python benchmarks/loader.py --device cuda --output-shape 3x227x227

On a machine whose cores are busy with other work, torch's OpenMP threads wait for each other and
every tensor operation slows down many times; ``--threads 1`` measures both pipelines without that.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from alexnet.data import AugmentConfig, InMemoryLoader, dataset_info, load_tensors, locate


def images_per_second(batches, seconds: float, synchronize) -> float:
    """Iterate for about ``seconds`` after one warm-up batch; images delivered per second."""
    iterator = iter(batches)
    next(iterator)
    synchronize()
    count, start = 0, time.perf_counter()
    for images, _ in iterator:
        count += len(images)
        if time.perf_counter() - start >= seconds:
            break
    synchronize()
    return count / (time.perf_counter() - start)


def conventional_loader(raw_gz: Path, tmp: Path, workers: int) -> DataLoader:
    """torchvision's FashionMNIST (PIL image per sample) + ToTensor + Normalize, batch 64."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for file in raw_gz.glob("*-ubyte.gz"):
        with gzip.open(file) as src, open(raw / file.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    info = dataset_info("fashion-mnist")
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    dataset = torchvision.datasets.FashionMNIST(str(tmp), train=True, transform=transform)
    return DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers)


def hardware(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = f"CPU {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, load average {load}"
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=512, help="of the in-memory loader")
    parser.add_argument("--output-shape", default=None, help="CxHxW batches for the model (default: 1x28x28)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured per pipeline")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    output_shape = tuple(int(x) for x in args.output_shape.split("x")) if args.output_shape else None
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    found = locate("fashion-mnist", args.data_dir)
    if found is None or found.name == "raw":
        print("needs the gzipped Fashion-MNIST files (Debian's dataset-fashion-mnist or --data-dir)", file=sys.stderr)
        return 1
    train = load_tensors("fashion-mnist", "train", data_dir=args.data_dir)

    print(f"hardware: {hardware(device)}")
    versions = f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    print(f"versions: {versions}")
    print(f"data: Fashion-MNIST train ({len(train):,} images) from {found}; {args.seconds:g} s per pipeline\n")

    with tempfile.TemporaryDirectory() as tmp:
        baseline = images_per_second(conventional_loader(found, Path(tmp), args.workers), args.seconds, lambda: None)
    label = f"conventional (ToTensor+Normalize, DataLoader, batch 64, {args.workers} workers)"
    print(f"{label:<62} {baseline:>12,.0f} img/s   1.0x")

    shape = "x".join(map(str, output_shape or train.images.shape[1:]))
    for preset in ("none", "light", "paper", "tutorial"):
        loader = InMemoryLoader(
            train, args.batch_size, train=True, augment=AugmentConfig.preset(preset), output_shape=output_shape,
            device=device, seed=0, channels_last=True,
        )
        rate = images_per_second(loader, args.seconds, synchronize)
        label = f"in-memory, {preset} augmentation, batch {args.batch_size}, {shape}, {device.type}"
        print(f"{label:<62} {rate:>12,.0f} img/s {rate / baseline:>5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
