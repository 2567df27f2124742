"""The Fashion-MNIST tutorial's training loop against the same model and recipe on our fast path.

Both train ``alexnet_tutorial28`` (the tutorial's AlexNetFashionMNIST: 3x3 kernels, 2x2 pools,
4096-1024 classifier) with Adam at lr 1e-3 on batches of 64 Fashion-MNIST training images, for the
same number of steps, in one run:

- the tutorial: torchvision's ``FashionMNIST`` dataset (one PIL image per sample) with
  ``ToTensor()`` + ``Normalize`` behind a ``DataLoader``, eager fp32, NCHW, ``Adam`` as constructed
  by default, torch's default threads, ``loss.item()`` every step;
- ours: the uint8 images held in memory and batched whole (``alexnet.data.InMemoryLoader``),
  channels_last, the best precision for the hardware, a fused Adam step, one thread per physical
  core, freed memory reused (``alexnet.perf``).

    .venv/bin/python benchmarks/tutorial_loop.py               # 60 timed steps each
    .venv/bin/python benchmarks/tutorial_loop.py --steps 200

Prints images/s of both and their ratio, with the machine and library versions.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from alexnet import build_model
from alexnet.benchmark import machine_description
from alexnet.data import InMemoryLoader, dataset_info, load_tensors, locate
from alexnet.perf import (
    autocast_context, optimizer_options, precision_name, prepare_model, resolve_precision,
    reuse_freed_memory, set_threads,
)

MODEL = "alexnet_tutorial28"
BATCH_SIZE = 64  # the tutorial's
LEARNING_RATE = 1e-3  # the tutorial's Adam


def tutorial_loader(raw_gz: Path, root: Path) -> DataLoader:
    """torchvision's FashionMNIST + ToTensor + Normalize, shuffled batches of 64, as the tutorial."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for file in raw_gz.glob("*-ubyte.gz"):  # torchvision reads the unpacked IDX files
        with gzip.open(file) as packed, open(raw / file.stem, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    info = dataset_info("fashion-mnist")
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, transform=transform)
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)


def time_steps(step, batches, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` training steps (data loading included) after ``warmup`` untimed ones."""
    iterator = iter(batches)
    for _ in range(warmup):
        step(*next(iterator))
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(iterator))
    return time.perf_counter() - start


def tutorial_step(model: nn.Module, optimizer: torch.optim.Optimizer):
    losses = []

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # the tutorial's running loss: a host sync per step

    return step


def fast_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, dtype):
    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, dtype):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each loop")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="cpu", help="of our loop (the tutorial's runs on the CPU)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    found = locate("fashion-mnist", args.data_dir)
    if found is None or found.name == "raw":
        parser.error("needs the gzipped Fashion-MNIST files (/usr/share/datasets/fashion-mnist or --data-dir)")

    torch.manual_seed(0)
    tutorial_model = build_model(MODEL)
    initial = {k: v.clone() for k, v in tutorial_model.state_dict().items()}
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as root:
        optimizer = torch.optim.Adam(tutorial_model.parameters(), lr=LEARNING_RATE)
        tutorial_seconds = time_steps(tutorial_step(tutorial_model.train(), optimizer),
                                      tutorial_loader(found, Path(root)), args.warmup, args.steps)
    del tutorial_model, optimizer

    threads = set_threads()
    reuse_freed_memory()
    dtype = resolve_precision(args.precision, device)
    model = build_model(MODEL)
    model.load_state_dict(initial)  # the same starting point
    model = prepare_model(model, device, channels_last=True).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, **optimizer_options(device))
    train = load_tensors("fashion-mnist", "train", data_dir=args.data_dir)
    loader = InMemoryLoader(train, BATCH_SIZE, train=True, device=device, seed=0, channels_last=True)
    fast_seconds = time_steps(fast_step(model, optimizer, device, dtype), loader, args.warmup, args.steps)

    machine = machine_description()
    tutorial_rate = args.steps * BATCH_SIZE / tutorial_seconds
    fast_rate = args.steps * BATCH_SIZE / fast_seconds
    print(f"machine: {machine['cpu']}; torch {machine['torch']}, torchvision {machine['torchvision']}, "
          f"python {machine['python']}")
    print(f"{MODEL}, Adam lr {LEARNING_RATE:g}, batch {BATCH_SIZE}, {args.steps} timed steps each after "
          f"{args.warmup} warm-up steps, data loading included\n")
    print("| loop | images/s | ratio |\n|---|---:|---:|")
    print(f"| tutorial: per-sample DataLoader, fp32, NCHW, {default_threads} threads | {tutorial_rate:.0f} | 1.00x |")
    print(f"| ours: in-memory batches, {precision_name(dtype)}, channels_last, fused Adam, {threads} threads, "
          f"{device.type} | {fast_rate:.0f} | {fast_rate / tutorial_rate:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
