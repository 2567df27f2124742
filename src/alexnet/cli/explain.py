"""``alexnet explain``: argument wiring and printing over ``alexnet.explain``; ``build_parser`` adds
it to its commands."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..errors import AlexNetError
from .arguments import check_output_path


def add_explain_command(commands) -> argparse.ArgumentParser:
    """Add ``explain`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    from ..explain import METHODS

    parser = commands.add_parser(
        "explain", help="why an image got its class (Grad-CAM, saliency, occlusion, integrated gradients), "
                        "each layer's maps, or the image patches that drive each filter")
    parser.add_argument("weights", metavar="WEIGHTS|RUN_DIR")
    parser.add_argument("inputs", nargs="*", metavar="IMAGE|DIR",
                        help="image files, or folders walked recursively; unreadable files are skipped")
    parser.add_argument("--method", choices=METHODS, default="gradcam")
    parser.add_argument("--layer", metavar="conv1..conv5",
                        help="Grad-CAM's layer (default: the last convolution); with --filters, whose filters "
                             "(default: conv5)")
    parser.add_argument("--class", dest="target", default="top", metavar="NAME|INDEX|top",
                        help="the class to explain (default: top, each image's predicted class)")
    parser.add_argument("--feature-maps", action="store_true",
                        help="instead: each convolution's maps for each image, strongest first")
    parser.add_argument("--filters", action="store_true",
                        help="instead: per filter of --layer, the dataset patches that activate it most "
                             "(no images needed: the weights' own test set is streamed once)")
    parser.add_argument("--top", type=int, default=9, help="--filters: patches per filter (default: 9)")
    parser.add_argument("--images", type=int, default=None, metavar="N",
                        help="--filters: search the first N test images (default: all)")
    parser.add_argument("--show", type=int, default=16, metavar="N",
                        help="--filters: filters drawn, those with the strongest patches first (default: 16; "
                             "the .npz holds all)")
    parser.add_argument("--out", default="explanations", metavar="DIR", help="where pictures and arrays go")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    parser.add_argument("--data-dir",
                        help="--filters: where the dataset is (default: the run's, then the usual places)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                        help="default: the precision the weights were tested in (maps are computed in fp32)")
    parser.set_defaults(run=run_explain)
    return parser


def run_explain(args: argparse.Namespace) -> int:
    """Write the pictures and arrays under ``--out`` and print what was written (or JSON)."""
    if args.filters and args.feature_maps:
        raise AlexNetError("--filters and --feature-maps are two different views; pass one")
    if args.filters and args.inputs:
        raise AlexNetError("--filters searches the weights' own dataset: pass the weights alone, no images")
    if not args.filters and not args.inputs:
        raise AlexNetError("pass image files or folders to explain (or --filters to search the dataset)")
    out = Path(args.out)
    check_output_path(out, "--out", folder=True)
    if args.filters:
        return _run_filters(args, out)
    if args.feature_maps:
        return _run_feature_maps(args, out)
    return _run_attributions(args, out)


def _stem(position: int, source) -> str:
    """A file name for the ``position``-th image: its number, then its name (two files of one name differ)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(source)).stem) if isinstance(source, str) else "tensor"
    return f"{position:03d}-{name}"


def _report_skipped(skipped, explained: int) -> None:
    for item in skipped:
        print(f"skipped {item.source} ({item.reason})", file=sys.stderr)
    if not explained:
        count = len(skipped)
        raise AlexNetError(f"no image could be read ({count} input{'s' * (count != 1)} skipped, listed above); "
                           f"pass image files (JPEG, PNG, WebP, BMP, GIF, TIFF) or folders holding them")


def _run_attributions(args: argparse.Namespace, out: Path) -> int:
    import numpy as np

    from ..explain import explain
    from ..explain.pictures import explanation_figure, save_figure

    explained = explain(args.weights, args.inputs, method=args.method, layer=args.layer, target=args.target,
                        batch_size=args.batch_size, device=args.device, precision=args.precision)
    _report_skipped(explained.skipped, len(explained))
    rows = []
    for position, item in enumerate(explained):
        # the method, its layer and the class attributed in the name: another --layer or --class writes beside it
        stem = (f"{_stem(position, item.source)}-{item.method}" + (f"-{item.layer}" if item.layer else "")
                + f"-class{item.class_index}")
        picture = save_figure(explanation_figure(item), out / f"{stem}.png")
        array = out / f"{stem}.npy"
        np.save(array, item.attribution)
        rows.append({**item.to_dict(), "picture": str(picture), "attribution": str(array)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        asked = "" if row["index"] == row["predicted_index"] else f" (predicted {row['predicted_class']} " \
                                                                 f"{row['predicted_probability']:.4f})"
        print(f"{row['source']}\n  {row['class']}  {row['probability']:.4f}{asked}\n  wrote {row['picture']}, "
              f"{row['attribution']}")
    if rows and rows[0]["note"]:
        print(f"note: {rows[0]['note']}")
    return 0


def _run_feature_maps(args: argparse.Namespace, out: Path) -> int:
    import numpy as np

    from ..explain import feature_maps
    from ..explain.pictures import feature_maps_figure, save_figure
    from ..inference import open_trained
    from ..predict import read_images

    trained = open_trained(args.weights, device=args.device, precision=args.precision)
    skipped, rows = [], []
    for position, (source, image) in enumerate(read_images(args.inputs, skipped)):
        maps = feature_maps(trained, image, source)
        stem = f"{_stem(position, source)}-feature-maps"
        picture = save_figure(feature_maps_figure(maps), out / f"{stem}.png")
        arrays = out / f"{stem}.npz"
        np.savez_compressed(arrays, **maps.layers, **{f"{name}_channels": order for name, order in maps.order.items()})
        rows.append({"source": source, "picture": str(picture), "arrays": str(arrays),
                     "layers": {name: list(stack.shape) for name, stack in maps.layers.items()}})
    _report_skipped(skipped, len(rows))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['source']}\n  wrote {row['picture']}, {row['arrays']}")
    return 0


def _run_filters(args: argparse.Namespace, out: Path) -> int:
    from ..explain import dataset_batches, top_patches
    from ..explain.pictures import save_figure, top_patches_figure
    from ..inference import open_trained

    layer = args.layer or "conv5"
    if args.images is not None and args.images < 1:
        raise AlexNetError(f"--images must be at least 1, got {args.images}")
    trained = open_trained(args.weights, device=args.device, precision=args.precision)
    batches = dataset_batches(trained, data_dir=args.data_dir)
    result = top_patches(trained, batches, layer, top=args.top, limit=args.images)
    strongest = result.values[:, 0].argsort()[::-1][: max(1, args.show)]
    shown = sorted(strongest.tolist()) if layer == "conv1" else strongest.tolist()
    picture = save_figure(top_patches_figure(result, filters=shown, class_names=trained.class_names),
                          out / f"filters-{layer}.png")
    arrays = result.save(out / f"filters-{layer}.npz")
    summary = {"layer": layer, "filters": int(result.values.shape[0]), "top": int(result.values.shape[1]),
               "images_searched": result.images_seen, "receptive_field": result.field.size,
               "picture": str(picture), "arrays": str(arrays)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{layer}: the top {summary['top']} of {result.images_seen:,} test images for each of its "
              f"{summary['filters']} filters (receptive field {result.field.size}x{result.field.size} px)\n"
              f"wrote {picture}, {arrays}")
    return 0
