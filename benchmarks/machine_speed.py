"""How fast this machine is right now: 40 training steps of ``alexnet_small28`` on one core.

A virtual machine's speed drifts with its neighbours' load, and the test suite's time with it. Run
this before and after each of two runs to be compared (``taskset -c 0`` pins it to one core); a
probe that moved between them says by how much the machine did.

    taskset -c 0 .venv/bin/python benchmarks/machine_speed.py
"""

from __future__ import annotations

import platform
import time

import torch
from torch import nn

from alexnet import build_model
from alexnet.data.augment import normalize, to_float
from alexnet.data.datasets import load_tensors
from alexnet.perf import autocast_context, prepare_model, resolve_precision, to_channels_last

STEPS = 40
BATCH = 64


def main() -> None:
    torch.set_num_threads(1)
    train = load_tensors("fashion-mnist", "train")
    torch.manual_seed(0)
    model = prepare_model(build_model("alexnet_small28", init="default"), channels_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    precision = resolve_precision("auto", "cpu")
    start = time.perf_counter()
    for _ in range(STEPS):
        chosen = torch.randint(0, len(train), (BATCH,), generator=generator)
        images = to_channels_last(normalize(to_float(train.images[chosen]), train.mean, train.std))
        optimizer.zero_grad()
        with autocast_context("cpu", precision):
            loss = nn.functional.cross_entropy(model(images), train.labels[chosen])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    print(f"{STEPS} training steps of alexnet_small28 (batch {BATCH}, one thread, "
          f"{precision or torch.float32}): {seconds:.1f} s on {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
