"""What several commands share: the one check of an output path, ``CxHxW`` shapes, the model switches."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..errors import AlexNetError

PICTURE_SUFFIXES = (".png", ".svg", ".pdf")  # what matplotlib draws and a browser shows


def check_output_path(path: str | Path | None, flag: str, *, inputs: Sequence = (), picture: bool = False,
                      folder: bool = False) -> None:
    """Refuse, before any work is done (not after), an output a user named with ``flag`` that cannot be
    written; None (the flag not given) passes. A file goes through ``runs.check_output`` (a folder in
    its way, one of the command's ``inputs``, a run's own file, a place that cannot be written); with
    ``picture`` its name must also end in a format a figure is saved in. A ``folder`` is made when it
    is missing and refused when a file is in its way."""
    from ..runs import check_output

    if path is None:
        return
    target = Path(path)
    if folder:
        if target.exists() and not target.is_dir():
            raise AlexNetError(f"{flag} {target} is a file; give a folder")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AlexNetError(f"cannot create {target} ({error.strerror or error}); choose another place") from None
        return
    if picture:
        if target.is_dir():
            raise AlexNetError(f"{flag} {path} is a folder; give a file name")
        if target.suffix.lower() not in PICTURE_SUFFIXES:
            raise AlexNetError(f"{flag} {path}: {target.suffix or 'no suffix'} is not a picture format; end the name "
                               f"in {', '.join(PICTURE_SUFFIXES)}")
        path = target
    check_output(path, flag, inputs=tuple(inputs))


def parse_shape(text: str) -> tuple[int, int, int]:
    """``3x227x227`` -> (3, 227, 227), for ``--input``."""
    try:
        channels, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x227x227, got {text[:40]!r}") from None
    if min(channels, height, width) < 1:
        raise argparse.ArgumentTypeError(f"each of C, H and W must be a positive integer, got {text[:40]!r}")
    return channels, height, width


def add_model_switches(parser: argparse.ArgumentParser) -> None:
    """One flag per switch of the model's own table (``models.SWITCHES``), each filling ``model_options``."""
    from ..models import SWITCHES

    for name, (kind, choices, text) in SWITCHES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, choices=choices,
                            default=argparse.SUPPRESS, help=f"model switch: {text}")
