"""The ``alexnet`` command: a thin layer that parses arguments, calls the library and prints."""

from __future__ import annotations

import argparse
import sys

from .errors import AlexNetError


def _shape(text: str) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x227x227, got {text!r}") from None
    return channels, height, width


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import build_model, get_model_builder, list_models

    for name in list_models():
        model = build_model(name)
        params = sum(p.numel() for p in model.parameters())
        shape = "x".join(map(str, model.input_size))
        doc = (get_model_builder(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<20} {shape:<10} {params:>12,} params  {doc}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from .models import build_model
    from .summary import format_summary, summarize

    model = build_model(args.model)
    print(format_summary(summarize(model, args.input, name=args.model), args.format))
    return 0


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from .data.preview import augment_preview

    path = augment_preview(args.dataset, args.out, data_dir=args.data_dir, count=args.count, seed=args.seed,
                           extra=args.preset)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(run=_cmd_models)

    summary = commands.add_parser("summary", help="per-layer shapes, parameters and multiply-accumulates")
    summary.add_argument("model", nargs="?", default="alexnet_paper")
    summary.add_argument("--input", type=_shape, default=None, help="CxHxW (default: the model's own)")
    summary.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    summary.set_defaults(run=_cmd_summary)
    preview = commands.add_parser("augment-preview", help="a PNG grid of real samples under each augmentation")
    preview.add_argument("--dataset", default="fashion-mnist")
    preview.add_argument("--out", default="augment-preview.png", metavar="FILE.png")
    preview.add_argument("--data-dir")
    preview.add_argument("--count", type=int, default=6, help="sample images (rows)")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--preset", help="add a column for this preset (light, paper, tutorial, none)")
    preview.set_defaults(run=_cmd_augment_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AlexNetError as error:
        print(f"alexnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
