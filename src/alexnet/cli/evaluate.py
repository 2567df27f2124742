"""``alexnet evaluate`` and ``alexnet report``: a run's numbers as text tables or JSON, and its report
pages (one run, several compared, an experiment)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..perf import PRECISIONS
from .arguments import check_output_path


def add_evaluate_command(commands) -> argparse.ArgumentParser:
    """Add ``evaluate`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    evaluate = commands.add_parser("evaluate", help="top-1/top-5, per-class scores, confusion matrix")
    evaluate.add_argument("source", metavar="RUN_DIR|WEIGHTS")
    evaluate.add_argument("--dataset", help="default: the one the weights were trained on")
    evaluate.add_argument("--split", choices=("test", "val"), default="test",
                          help="val: the held-out validation images, each alone unless --flip or --ten-crop "
                               "says otherwise, as training validated them")
    evaluate.add_argument("--ten-crop", action=argparse.BooleanOptionalAction, default=None,
                          help="average the paper's ten views (default: as the run did)")
    evaluate.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                          help="average with mirrored images (default: as in training)")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--precision", default=None, choices=PRECISIONS,
                          help="default: the precision the run trained and tested in")
    evaluate.add_argument("--batch-size", type=int, default=1000)
    evaluate.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                          help="torch.compile the model, weights frozen in (default: when the pass is long "
                               "enough to pay for compiling, e.g. ImageNet's validation set; never one image)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of tables")
    evaluate.add_argument("--out", help="also write the metrics to this JSON file")
    evaluate.set_defaults(run=_cmd_evaluate)
    return evaluate


def add_report_command(commands) -> argparse.ArgumentParser:
    """Add ``report`` to ``commands``; returns its parser."""
    report = commands.add_parser(
        "report", help="report.html of a run (figures, metrics, how to use the weights), or several runs compared")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", metavar="FILE.html",
                        help="one run: also copy its report here; several: default comparison.html")
    report.add_argument("--data-dir", help="where the run's dataset is (default: the run's, then the usual places)")
    report.add_argument("--device", default="auto")
    report.set_defaults(run=_cmd_report)
    return report


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..evaluation import evaluate_weights

    check_output_path(args.out, "--out")
    evaluation = evaluate_weights(args.source, dataset=args.dataset, split=args.split, ten_crop=args.ten_crop,
                                  flip=args.flip, data_dir=args.data_dir, device=args.device,
                                  precision=args.precision, batch_size=args.batch_size, compile=args.compile)
    if args.json:  # the layout of a run's evaluation.json
        print(json.dumps(evaluation.to_dict(), indent=2))
    else:
        print(format_metrics(evaluation.metrics))
    if args.out:
        from ..runs import write_text

        write_text(Path(args.out), json.dumps(evaluation.to_dict(), indent=2))
    return 0


def format_metrics(metrics) -> str:
    """The metrics as text tables: headline numbers, per-class scores, the confusion matrix."""
    lines = [
        f"images {metrics.count}   top-1 {metrics.top1:.2%} (error {metrics.top1_error:.2%})   "
        f"top-5 {metrics.top5:.2%} (error {metrics.top5_error:.2%})   loss {metrics.loss:.4f}",
        f"balanced accuracy {metrics.balanced_accuracy:.2%}   macro F1 {metrics.macro_f1:.4f}   "
        f"weighted F1 {metrics.weighted_f1:.4f}",
        "",
    ]
    support = [sum(row) for row in metrics.confusion_matrix]
    predicted = [sum(column) for column in zip(*metrics.confusion_matrix)]
    absent = [name for name, count in zip(metrics.class_names, support) if count == 0]
    if absent:  # their recall and F1 are not zero but undefined; the averages leave them out
        lines[-1:-1] = [f"note: {len(absent)} of {len(support)} classes have no images here "
                        f"({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}): balanced accuracy leaves them "
                        f"out, and macro F1 where nothing was predicted as them"]
    width = max(12, *(len(name) for name in metrics.class_names))
    lines.append(f"{'class':<{width}}  precision  recall     F1  images")
    for name, p, r, f, count, guessed in zip(metrics.class_names, metrics.precision, metrics.recall, metrics.f1,
                                             support, predicted):
        # a score of no images (recall) or of no predictions (precision) is undefined, not 0: shown as -
        precision = f"{p:9.4f}" if guessed else f"{'-':>9}"
        scores = f"{r:6.4f}  {f:6.4f}" if count else f"{'-':>6}  {'-':>6}"
        lines.append(f"{name:<{width}}  {precision}  {scores}  {count:6d}")
    if len(metrics.class_names) <= 20:
        lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
        cell = max(5, len(str(max(max(row) for row in metrics.confusion_matrix))) + 1)
        lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(metrics.class_names))))
        for i, (name, row) in enumerate(zip(metrics.class_names, metrics.confusion_matrix)):
            lines.append(f"{name[:width]:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import build_comparison, build_experiment_report, build_report, is_experiment_folder
    from ..runs import RunFolder, atomic_write

    own_report = (len(args.run_dirs) == 1 and args.out is not None
                  and _same_path(args.out, RunFolder(args.run_dirs[0]).report))
    if not own_report:  # the run's own report.html is where `report RUN_DIR` writes anyway
        check_output_path(args.out, "--out")
    if len(args.run_dirs) == 1 and is_experiment_folder(args.run_dirs[0]):
        print(f"wrote {build_experiment_report(args.run_dirs[0])}")
        return 0
    if len(args.run_dirs) == 1 and (args.out is None or own_report):
        path = build_report(args.run_dirs[0], data_dir=args.data_dir, device=args.device)
    elif len(args.run_dirs) == 1:
        page = build_report(args.run_dirs[0], data_dir=args.data_dir, device=args.device).read_bytes()
        path = Path(args.out)
        atomic_write(path, lambda file: file.write(page))
    else:
        path = build_comparison(args.run_dirs, args.out or "comparison.html")
    print(f"wrote {path}")
    return 0


def _same_path(first: str | Path, second: str | Path) -> bool:
    import os

    return os.path.realpath(first) == os.path.realpath(second)
