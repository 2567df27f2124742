"""How the main job's network and recipe were chosen: the `fast` recipe with one thing swapped.

Trains ``alexnet_small28`` on full Fashion-MNIST with the ``fast`` recipe, except for what the flags
change: the five convolution widths and conv2's kernel (the earlier design was 32-64-96-96-64 with
a 5x5 conv2), the FC widths, the pixel shift of the augmentation (0: mirrors only, the ``flip``
preset; 4: the ``light`` preset), dropout, epochs, towers and initialisation. Prints the test top-1. Each row of the
README's table "How the fast recipe and the small variant got there" is one invocation:

    .venv/bin/python benchmarks/small_variant_search.py --widths 32,64,96,96,64 --conv2 5 --shift 4 --dropout 0.25 --epochs 8
    .venv/bin/python benchmarks/small_variant_search.py --shift 2 --dropout 0.25 --epochs 8
    .venv/bin/python benchmarks/small_variant_search.py --shift 2
    .venv/bin/python benchmarks/small_variant_search.py --shift 2 --hidden 1024
    .venv/bin/python benchmarks/small_variant_search.py             # = make run: mirrors only

One run is 8-10 minutes on two cores; ``--threads 1`` lets two run side by side (float rounding
then differs a little from a 2-thread run, so the same flags give a slightly different figure).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import alexnet.models.variants as variants
import alexnet.report
from alexnet.data import augment_spec
from alexnet.training import TrainConfig, train


def small_architecture(widths: tuple[int, ...], conv2: int, hidden: int):
    """alexnet_small28's layout with other widths and conv2 kernel; everything else as registered."""
    convs = tuple(replace(layer, channels=width) for layer, width in zip(variants.SMALL.convs, widths))
    convs = (convs[0], replace(convs[1], kernel_size=conv2, padding=conv2 // 2), *convs[2:])
    return replace(variants.SMALL, convs=convs, hidden=(hidden, hidden))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,64,128,128,96", help="the five convolution widths")
    parser.add_argument("--conv2", type=int, default=3, help="conv2's kernel size (3 or 5)")
    parser.add_argument("--hidden", type=int, default=512, help="width of FC6 and FC7")
    parser.add_argument("--shift", type=int, default=0, help="random shift in pixels (0: mirrors only)")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--towers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--init", default="default", choices=("default", "kaiming"))
    parser.add_argument("--threads", type=int, default=None, help="default: one per physical core")
    parser.add_argument("--out", default="runs/search")
    args = parser.parse_args()

    widths = tuple(int(width) for width in args.widths.split(","))
    if len(widths) != 5:
        parser.error("--widths takes five numbers, e.g. 32,64,128,128,96")
    # The builder reads the module-level layout and the preset table when it runs.
    variants.SMALL = small_architecture(widths, args.conv2, args.hidden)
    augment_spec.PRESETS["flip"] = augment_spec.AugmentConfig(crop_padding=args.shift, horizontal_flip=True)
    alexnet.report.build_report = lambda directory, **_: Path(directory) / "report.html (not built)"

    name = (f"w{args.widths.replace(',', '-')}-k{args.conv2}-h{args.hidden}-s{args.shift}-d{args.dropout}"
            f"-e{args.epochs}-t{args.towers}-{args.init}")
    run = train(TrainConfig(recipe="fast", epochs=args.epochs, out=args.out, name=name, quiet=True, threads=args.threads,
                            model_options={"norm": "batch", "init": args.init, "dropout": args.dropout,
                                           "towers": args.towers}))
    top1 = json.loads((run.directory / "evaluation.json").read_text())["top1"]
    print(f"{name}: test top-1 {top1:.2%}")


if __name__ == "__main__":
    main()
