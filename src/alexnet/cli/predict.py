"""``alexnet predict`` and ``alexnet weights import``: argument wiring and printing over
``alexnet.predict`` and ``alexnet.pretrained``; ``build_parser`` adds them to its commands."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..errors import AlexNetError
from ..perf import PRECISIONS
from ..runs import write_text
from .arguments import check_output_path


def add_predict_command(commands) -> argparse.ArgumentParser:
    """Add ``predict`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    parser = commands.add_parser(
        "predict", help="top-k classes of images (files or folders) with a weights file or a run's weights")
    parser.add_argument("weights", metavar="WEIGHTS|RUN_DIR")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|DIR",
                        help="image files, or folders walked recursively; unreadable files are skipped")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default: 5)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    output.add_argument("--csv", metavar="FILE", help="write rows (path, rank, class, probability) to FILE")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="default: the precision the weights were tested in")
    parser.set_defaults(run=run_predict)
    return parser


def run_predict(args: argparse.Namespace) -> int:
    """Print (or write) the predictions; 0 when at least one image was predicted, else AlexNetError."""
    from ..predict import predict

    if args.csv:
        check_output_path(args.csv, "--csv", inputs=args.inputs)
    predictions = predict(args.weights, args.inputs, top_k=args.top_k, batch_size=args.batch_size,
                          device=args.device, precision=args.precision)
    for skipped in predictions.skipped:
        print(f"skipped {skipped.source} ({skipped.reason})", file=sys.stderr)
    if not predictions:
        count = len(predictions.skipped)
        raise AlexNetError(f"no image could be read ({count} input{'s' * (count != 1)} skipped, listed above); "
                           f"pass image files (JPEG, PNG, WebP, BMP, GIF, TIFF) or folders holding them")
    if args.json:
        print(json.dumps([prediction.to_dict() for prediction in predictions], indent=2))
    elif args.csv:
        write_csv(predictions, args.csv)
        print(f"wrote {args.csv} ({len(predictions)} images)")
    else:
        print(format_predictions(predictions))
    return 0


def format_predictions(predictions) -> str:
    """Each image's path, then one "class  probability" line per class, most probable first."""
    lines = []
    for prediction in predictions:
        width = max(len(name) for name in prediction.classes)
        lines.append(str(prediction.source))
        lines += [f"  {name:<{width}}  {probability:.4f}"
                  for name, probability in zip(prediction.classes, prediction.probabilities)]
    return "\n".join(lines)


def write_csv(predictions, path: str | Path) -> Path:
    """Rows (path, rank, class, probability), rank 1 the most probable; every row names its image."""
    path = Path(path)
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["path", "rank", "class", "probability"])
    for prediction in predictions:
        for rank, (name, probability) in enumerate(zip(prediction.classes, prediction.probabilities), 1):
            writer.writerow([prediction.source, rank, name, f"{probability:.6f}"])
    write_text(path, rows.getvalue())  # whole or not at all; names that are not UTF-8 as their bytes
    return path


def add_weights_command(commands) -> argparse.ArgumentParser:
    """Add ``weights import torchvision`` to ``commands``; returns the ``weights`` parser."""
    parser = commands.add_parser("weights", help="bring published weights into alexnet's format")
    actions = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    importer = actions.add_parser(
        "import", help="torchvision's ImageNet AlexNet (AlexNet_Weights.IMAGENET1K_V1) as alexnet_owt weights")
    importer.add_argument("source", choices=("torchvision",))
    importer.add_argument("--file", metavar="PATH",
                          help="the .pth you have (default: torch's hub cache, where torchvision keeps it)")
    importer.add_argument("--download", action="store_true",
                          help="fetch it through torchvision when it is not in the cache (needs internet)")
    importer.add_argument("--out", default="imagenet-alexnet.safetensors", metavar="FILE",
                          help="the weights file to write (default: imagenet-alexnet.safetensors)")
    importer.set_defaults(run=run_weights_import)
    return parser


def run_weights_import(args: argparse.Namespace) -> int:
    from ..pretrained import import_torchvision, published_hash
    from ..weights import read_metadata

    check_output_path(args.out, "--out", inputs=(args.file,) if args.file else ())
    if Path(args.out).suffix.lower() != ".safetensors":  # what every command that reads weights looks for
        raise AlexNetError(f"--out {args.out}: the weights are written as safetensors; end the name in .safetensors")
    path = import_torchvision(args.file, download=args.download, out=args.out)
    metadata = read_metadata(path)
    accuracy = (f"published top-1 {metadata.test_top1:.2%}, top-5 {metadata.test_top5:.2%} (ImageNet val, centre "
                f"crop)" if metadata.test_top1 is not None else
                f"not the file torchvision publishes (its SHA-256 does not start with {published_hash()}), so its "
                f"accuracy is not known: measure it with alexnet evaluate {path} --data-dir IMAGENET")
    print(f"wrote {path}: {metadata.model}, {metadata.num_classes} ImageNet classes, "
          f"input {'x'.join(map(str, metadata.input_size))}; {accuracy}")
    return 0
