"""``alexnet export`` and ``alexnet summary``: the subcommands that look at a network rather than train
it. ``cli.build_parser`` adds them with ``add_export_command(commands)`` and
``add_summary_command(commands)``; like the rest of the command line they parse, call the
library and print."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import AlexNetError

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def add_export_command(commands) -> argparse.ArgumentParser:
    """``alexnet export WEIGHTS|RUN_DIR --format onnx|torchscript|pt2 [--out FILE] [--dynamic-batch]``."""
    from .export import FORMATS

    parser = commands.add_parser(
        "export", help="the trained network as ONNX, TorchScript or torch.export (.pt2), checked against PyTorch")
    parser.add_argument("source", metavar="WEIGHTS|RUN_DIR")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS),
                        help="onnx (needs: pip install alexnet[export]), torchscript (.pt), pt2 (torch.export)")
    parser.add_argument("--out", metavar="FILE", help="default: next to the weights, same name, .onnx/.pt/.pt2")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="any batch size (default: one image at a time)")
    parser.set_defaults(run=_cmd_export)
    return parser


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    print(export(args.source, args.format, args.out, dynamic_batch=args.dynamic_batch).describe())
    return 0


def add_summary_command(commands) -> argparse.ArgumentParser:
    """``alexnet summary [MODEL|WEIGHTS|RUN_DIR] [--input CxHxW] [--format ...] [switches] [--plot FILE]``."""
    from .models import SWITCHES

    parser = commands.add_parser("summary", help="per-layer shapes, parameters and multiply-accumulates")
    parser.add_argument("model", nargs="?", default="alexnet_paper", metavar="MODEL|WEIGHTS|RUN_DIR",
                        help="a registered model (default: alexnet_paper), a weights file or a run folder")
    parser.add_argument("--input", type=parse_shape, default=None, help="CxHxW (default: the model's own)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    parser.add_argument("--plot", metavar="FILE.png|svg", help="also draw the network (like the paper's Figure 2)")
    for name, (kind, choices, text) in SWITCHES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, choices=choices,
                            default=argparse.SUPPRESS, help=f"model switch: {text}")
    parser.set_defaults(run=_cmd_summary)
    return parser


def _cmd_summary(args: argparse.Namespace) -> int:
    from .models import SWITCHES
    from .summary import format_summary, summarize

    if args.plot is not None:
        _check_plot_path(args.plot)
    switches = {name: getattr(args, name) for name in SWITCHES if hasattr(args, name)}
    model, name = build_for_summary(args.model, switches)
    summary = summarize(model, args.input, name=name)
    print(format_summary(summary, args.format))
    if args.plot is not None:
        from .diagram import draw_network

        print(f"wrote {draw_network(summary, args.plot, towers=getattr(model, 'towers', 1))}")
    return 0


def build_for_summary(source: str, switches: dict):
    """(model on the meta device, its title): a registered model's name, or a weights file or run
    folder, whose metadata names the model and its options (no tensor is read); ``switches``
    override either."""
    import torch

    from .inference import read_trained_metadata
    from .models import build_model

    path = Path(source)
    if path.is_dir() or path.is_file():
        metadata = read_trained_metadata(path)
        options = {**metadata.model_options, "num_classes": metadata.num_classes,
                   "in_chans": metadata.input_size[0], **switches}
        name = metadata.model
    elif path.suffix or len(path.parts) > 1:
        raise AlexNetError(f"no weights file or run folder at {source}")
    else:
        options, name = dict(switches), source
    with torch.device("meta"):  # shapes only: no memory for 60M parameters, no initialisation
        model = build_model(name, **options)
    title = " ".join([name, *(f"--{key} {value}" for key, value in switches.items())])
    return model, title


def _check_plot_path(path: str) -> None:
    """Refuse a --plot name that cannot be drawn or written before any work."""
    from .runs import check_output

    target = Path(path)
    if target.suffix.lower() not in PLOT_SUFFIXES:
        raise AlexNetError(f"--plot {path}: {target.suffix or 'no suffix'} is not a picture format; end the name in "
                           f"{', '.join(PLOT_SUFFIXES)}")
    check_output(target, "--plot")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``3x227x227`` -> (3, 227, 227), for ``--input``."""
    try:
        channels, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x227x227, got {text[:40]!r}") from None
    if min(channels, height, width) < 1:
        raise argparse.ArgumentTypeError(f"each of C, H and W must be a positive integer, got {text[:40]!r}")
    return channels, height, width
