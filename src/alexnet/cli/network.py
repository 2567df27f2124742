"""``alexnet models``, ``summary``, ``export`` and ``benchmark``: the commands that look at a network
rather than train it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AlexNetError
from ..perf import PRECISIONS
from .arguments import add_model_switches, check_output_path, parse_shape


def add_models_command(commands) -> argparse.ArgumentParser:
    """Add ``models`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(run=_cmd_models)
    return models


def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    from ..models import build_model, default_recipe, get_model_builder, list_models

    for name in list_models():
        # Counting needs shapes, not values: built on the meta device with PyTorch's own init (the
        # paper's normal_ on meta tensors first loads torch's reference kernels, seconds); a model
        # registered elsewhere that takes no init option, or no meta device, is built as it is.
        try:
            with torch.device("meta"):
                model = build_model(name, init="default")
        except (AlexNetError, TypeError, NotImplementedError, RuntimeError):
            model = build_model(name)
        params = sum(p.numel() for p in model.parameters())
        shape = "x".join(map(str, model.input_size))
        doc = (get_model_builder(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<20} {shape:<10} {params:>12,} params  recipe {default_recipe(name):<11}  {doc}")
    return 0


def add_summary_command(commands) -> argparse.ArgumentParser:
    """``alexnet summary [MODEL|WEIGHTS|RUN_DIR] [--input CxHxW] [--format ...] [switches] [--plot FILE]``."""
    parser = commands.add_parser("summary", help="per-layer shapes, parameters and multiply-accumulates")
    parser.add_argument("model", nargs="?", default="alexnet_paper", metavar="MODEL|WEIGHTS|RUN_DIR",
                        help="a registered model (default: alexnet_paper), a weights file or a run folder")
    parser.add_argument("--input", type=parse_shape, default=None, help="CxHxW (default: the model's own)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    parser.add_argument("--plot", metavar="FILE.png|svg", help="also draw the network (like the paper's Figure 2)")
    add_model_switches(parser)
    parser.set_defaults(run=_cmd_summary)
    return parser


def _cmd_summary(args: argparse.Namespace) -> int:
    from ..models import SWITCHES
    from ..summary import format_summary, summarize

    check_output_path(args.plot, "--plot", picture=True)
    switches = {name: getattr(args, name) for name in SWITCHES if hasattr(args, name)}
    model, name = build_for_summary(args.model, switches)
    summary = summarize(model, args.input, name=name)
    print(format_summary(summary, args.format))
    if args.plot is not None:
        from ..diagram import draw_network

        # on stderr when stdout is data (--format json), which must stay parseable
        print(f"wrote {draw_network(summary, args.plot, towers=getattr(model, 'towers', 1))}",
              file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def build_for_summary(source: str, switches: dict):
    """(model on the meta device, its title): a registered model's name, or a weights file or run
    folder, whose metadata names the model and its options (no tensor is read); ``switches``
    override either."""
    import torch

    from ..inference import read_trained_metadata
    from ..models import build_model

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


def add_export_command(commands) -> argparse.ArgumentParser:
    """``alexnet export WEIGHTS|RUN_DIR --format onnx|torchscript|pt2 [--out FILE] [--dynamic-batch]``."""
    from ..export import FORMATS

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
    from ..export import export

    print(export(args.source, args.format, args.out, dynamic_batch=args.dynamic_batch).describe())
    return 0


def add_benchmark_command(commands) -> argparse.ArgumentParser:
    """Add ``benchmark`` to ``commands``; returns its parser."""
    benchmark = commands.add_parser(
        "benchmark", help="images/s and GFLOP/s of inference and a training step, against torchvision's AlexNet",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    benchmark.add_argument("--model", default="alexnet_owt")
    benchmark.add_argument("--batch-size", type=int, default=32)
    benchmark.add_argument("--precision", default="auto", choices=PRECISIONS,
                           help="auto: bf16 only where the hardware multiplies it natively")
    benchmark.add_argument("--compile", action="store_true", help="torch.compile (also times eager, and compiling)")
    benchmark.add_argument("--input", type=parse_shape, default=None, help="CxHxW (default: the model's own)")
    benchmark.add_argument("--repeats", type=int, default=5, help="timed batches per workload")
    benchmark.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    benchmark.add_argument("--threads", type=int, default=None, help="default: one per physical core")
    benchmark.add_argument("--device", default="cpu", help="cpu or cuda")
    benchmark.add_argument("--no-peers", action="store_true",
                           help="time only ours and the plain baseline, not the peers (torchvision cast, "
                                "ONNX Runtime, OpenVINO)")
    benchmark.set_defaults(run=_cmd_benchmark)
    return benchmark


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark import format_result, run_benchmark

    result = run_benchmark(args.model, batch_size=args.batch_size, precision=args.precision, compile=args.compile,
                           input_shape=args.input, repeats=args.repeats, warmup=args.warmup,
                           device=args.device, threads=args.threads, peers=not args.no_peers)
    print(format_result(result))
    return 0
