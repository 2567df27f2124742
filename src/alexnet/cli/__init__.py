"""The ``alexnet`` command: a thin layer that parses arguments, calls the library and prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AlexNetError
from .data import add_augment_preview_command, add_data_command
from .evaluate import add_evaluate_command, add_report_command
from .explain import add_explain_command
from .network import add_benchmark_command, add_export_command, add_models_command, add_summary_command
from .predict import add_predict_command, add_weights_command
from .serve import add_serve_command
from .train import add_experiment_command, add_lr_find_command, add_train_command


def build_parser() -> argparse.ArgumentParser:
    """``alexnet``'s parser: one subcommand per command, in the order ``alexnet --help`` lists them."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="alexnet", description="AlexNet (Krizhevsky, Sutskever and Hinton, 2012) and its variants: train, "
        "evaluate, explain, export and serve them; rerun the paper's claims. `alexnet COMMAND --help` for each.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (add_models_command, add_summary_command, add_export_command, add_train_command,
                        add_lr_find_command, add_evaluate_command, add_augment_preview_command, add_report_command,
                        add_benchmark_command, add_data_command, add_experiment_command, add_predict_command,
                        add_weights_command, add_explain_command, add_serve_command):
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``alexnet`` on ``argv`` (default: the process's arguments); returns the exit status: 0, an
    ``AlexNetError``'s own with its message on one line, or 128 + the signal that stopped it."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (caf\xe9.png) is printed as the bytes it is, as ls prints it,
        # instead of raising UnicodeEncodeError halfway through the output.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would show the top-level usage; the command's own says what it does take
        _refuse_unknown(_command_parser(parser, args), unknown)
    if args.command in ("train", "benchmark", "evaluate", "report", "experiment"):
        from ..perf import reuse_freed_memory

        reuse_freed_memory()  # the process is the command's: it may keep its peak memory (see perf.py)
    try:
        _check_data_dir(args)
        code = args.run(args)
        sys.stdout.flush()  # a reader that went away is found here, not in the flush at exit
        return code
    except BrokenPipeError:
        if not _stdout_closed():  # another pipe (a worker's): not ours to hide
            raise
        # The reader stopped early (alexnet models | head): end quietly, as other commands do, with
        # the status of a process SIGPIPE stopped; what is still buffered goes nowhere.
        import os
        import signal

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except AlexNetError as error:
        print(f"alexnet: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM during training (which saved first)
        import signal

        signum = getattr(interrupt, "signum", signal.SIGINT)
        print(f"alexnet: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


def _check_data_dir(args: argparse.Namespace) -> None:
    """A --data-dir that does not exist is a mistyped path: data found elsewhere instead (the search goes
    on to $ALEXNET_DATA, the cache and system copies) would be tested on without a word. With
    --download it is where the data goes, and is made."""
    data_dir = getattr(args, "data_dir", None)
    if data_dir and not getattr(args, "download", False) and not Path(data_dir).expanduser().exists():
        raise AlexNetError(f"--data-dir {data_dir}: no such folder; give the folder that holds the data, or leave "
                           f"--data-dir out to look in $ALEXNET_DATA, ~/.cache/alexnet and the system copies")


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command ``args`` ran, an action's (``data pack``) where the command has actions
    (argparse keeps subparsers in their action's choices, under its ``dest``)."""
    while True:
        chosen = [action.choices[getattr(args, action.dest)] for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None)]
        if not chosen:
            return parser
        parser = chosen[0]


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit as argparse does (status 2, the usage of the command), naming the closest flag a mistyped one meant."""
    import difflib

    flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    hints = []
    for argument in unknown:
        close = difflib.get_close_matches(argument.split("=", 1)[0], flags, n=1) if argument.startswith("--") else []
        if close:
            hints.append(f"{argument}: did you mean {close[0]}?")
    parser.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else ""))


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has closed it (Linux and macOS: poll says POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no real file behind stdout
        return False
