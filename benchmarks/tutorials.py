"""Each tutorial's network trained with its own recipe at a reduced size on real Fashion-MNIST.

The README's "Tutorials" table: every network the tutorials teach, trained as its source trains it
(optimiser, rate, batch, no augmentation), on a fraction of Fashion-MNIST resized to the network's
input (grey repeated to RGB where it takes colour). It shows each one learns: the training loss
falls and the test accuracy is far above the 10% of chance. Full runs are the commands in the
README; CIFAR-10 and Flowers-17 cannot be downloaded here, and their own commands are tested on
small files in their formats (tests/test_tutorials.py).

    .venv/bin/python benchmarks/tutorials.py [--only alexnet_d2l] [--out runs/tutorials]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from alexnet.training import TrainConfig, train

# model -> the reduced run: (subset of the 54,000 training images, epochs, overrides of its recipe)
RUNS = {
    "alexnet_tutorial28": (0.1, 4, {}),  # the PyTorch Fashion-MNIST tutorial's experiment, as it is: 10% of the data, 4 epochs
    "alexnet_tutorial28+copies": (0.1, 4, {"flipped_copies": True}),  # ... with flipped copies added
    "alexnet_keras_cifar": (0.1, 2, {}),  # the Keras CIFAR-10 notebook trains 10 epochs of CIFAR-10
    "alexnet_twotower_bn": (0.02, 1, {}),  # the Keras two-tower tutorial: batch 1, as the tutorial has it
    "alexnet_flowers_bn": (0.1, 1, {}),  # the Keras Flowers-17 article: one epoch, as the tutorial has it
    "alexnet_d2l": (0.2, 1, {}),  # d2l trains 10 epochs of all 60,000
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="one of: " + ", ".join(RUNS))
    parser.add_argument("--out", default="runs/tutorials")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print("| network | command | train loss (first -> last epoch) | test top-1 | minutes |")
    print("|---|---|---|---:|---:|")
    for key in args.only or RUNS:
        subset, epochs, extra = RUNS[key]
        model = key.split("+")[0]
        start = time.perf_counter()
        run = train(TrainConfig(model=model, subset=subset, epochs=epochs, out=args.out, name=key, quiet=True,
                                threads=args.threads, **extra))
        minutes = (time.perf_counter() - start) / 60
        flags = " --flipped-copies" if extra.get("flipped_copies") else ""
        command = f"`alexnet train --model {model} --subset {subset:g} --epochs {epochs}{flags}`"
        losses = f"{run.history[0]['train_loss']:.3f} -> {run.history[-1]['train_loss']:.3f}"
        print(f"| {key} | {command} | {losses} | {run.test_metrics.top1:.2%} | {minutes:.1f} |", flush=True)
        (Path(args.out) / key / "tutorial-row.json").write_text(json.dumps(
            {"command": command, "losses": losses, "top1": run.test_metrics.top1, "minutes": minutes}))


if __name__ == "__main__":
    main()
