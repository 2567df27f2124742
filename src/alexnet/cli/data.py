"""``alexnet augment-preview`` and ``alexnet data pack``: the commands that show or prepare a dataset."""

from __future__ import annotations

import argparse
import sys


def add_augment_preview_command(commands) -> argparse.ArgumentParser:
    """Add ``augment-preview`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    preview = commands.add_parser(
        "augment-preview", help="a PNG grid of images under each augmentation alone, then combined")
    preview.add_argument("--augment", "--preset", metavar="SPEC",
                         help="a preset or operations, e.g. paper,noise=0.02: each operation alone, then all "
                              "combined (default: every operation and the presets)")
    preview.add_argument("--image", action="append", metavar="PATH",
                         help="your own image instead of the dataset's samples (repeat for more rows)")
    preview.add_argument("--dataset", default="fashion-mnist",
                         help="whose training images to show (with --image: whose rules apply, e.g. mnist's no flips)")
    preview.add_argument("--out", default="augment-preview.png", metavar="FILE.png")
    preview.add_argument("--data-dir")
    preview.add_argument("--count", type=int, default=6, help="sample images (rows), one per class")
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(run=_cmd_augment_preview)
    return preview


def add_data_command(commands) -> argparse.ArgumentParser:
    """Add ``data pack`` to ``commands``; returns the ``pack`` parser."""
    data = commands.add_parser("data", help="data tools: pack a folder of images into shards").add_subparsers(
        dest="data_command", required=True, metavar="ACTION", title="actions")
    pack = data.add_parser("pack", help="write a folder of class folders once as WebDataset tar shards, resized, "
                                        "for fast sequential reading (train with --dataset folder --data-dir OUT)")
    pack.add_argument("folder", metavar="FOLDER", help="class folders, or train/ and val/ (and test/) of them")
    pack.add_argument("--out", required=True, help="a new folder for the shards and packed.json")
    pack.add_argument("--size", type=int, default=256, help="shorter side images are stored at (default: 256)")
    pack.add_argument("--val-size", type=int, default=None, help="a flat tree: images held out (default: 10%%)")
    pack.add_argument("--test-size", type=int, default=None,
                      help="a flat tree: images held out for the test, apart from validation (default: 10%%; 0: none)")
    pack.add_argument("--seed", type=int, default=0, help="the held-out images and the stored order")
    pack.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU this process may use)")
    pack.add_argument("--encoding", choices=("jpeg", "raw"), default="jpeg",
                      help="how images are stored: jpeg (quality 90; the default) or raw pixels (PPM: read "
                           "without decoding, 2x faster than jpeg, at about 10x the disk)")
    pack.add_argument("--quiet", action="store_true")
    pack.set_defaults(run=_cmd_data_pack)
    return pack


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from ..data.preview import augment_preview

    path = augment_preview(args.dataset, args.out, data_dir=args.data_dir, count=args.count, seed=args.seed,
                           augment=args.augment, images=args.image)
    print(f"wrote {path}")
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    from ..data.loaders import pack_folder

    redraw = sys.stderr.isatty()  # to a file or a pipe: a line for each tenth of a split, not redraws
    printed: dict[str, int] = {}  # split -> the last tenth printed

    def progress(split: str, done: int, total: int) -> None:
        if redraw:
            print(f"\r{split}: {done:,}/{total:,} images", end="\n" if done == total else "", file=sys.stderr,
                  flush=True)
        elif done * 10 // max(total, 1) > printed.get(split, -1):
            printed[split] = done * 10 // max(total, 1)
            print(f"{split}: {done:,}/{total:,} images", file=sys.stderr, flush=True)

    index = pack_folder(args.folder, args.out, size=args.size, val_size=args.val_size, test_size=args.test_size,
                        seed=args.seed, workers=args.workers, encoding=args.encoding,
                        progress=None if args.quiet else progress)
    splits = ", ".join(f"{split} {index.images(split):,} images in {len(shards)} shards"
                       for split, shards in index.splits.items())
    skipped = f"; {index.skipped} unreadable files left out (named in packed.json)" if index.skipped else ""
    print(f"wrote {args.out}: {splits}, {len(index.classes)} classes, shorter side {index.size}, "
          f"{index.encoding}{skipped}\ntrain on it: alexnet train --dataset folder --data-dir {args.out}")
    return 0
