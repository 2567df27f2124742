"""The run folder: where each file of a training run lives, who may write it, and how it is written.

::

    config.yaml          the fully resolved configuration
    metrics.jsonl        one line per epoch: losses, accuracies, learning rate, images/s
    log.txt              what was printed
    checkpoints/last.pt  model, optimiser, scheduler, position, random states (resume from here)
    checkpoints/best.pt  the same, at the best validation top-1
    model.safetensors    final weights with their metadata (model, classes, input size, mean/std)
    evaluation.json      final test metrics
    report.html          the run's report (figures/ holds each of its pictures as a PNG)
    .lock                who is training in this folder now (process id and host)

One process writes a run folder at a time: ``RunFolder.lock`` takes an exclusive ``flock`` on
``.lock``, which the operating system releases when the process ends however it ends (Ctrl-C,
SIGKILL, a crash), so a lock left by a dead process never blocks anyone. Writes go through
``write_text``/``append_text``/``atomic_write``, which turn a full disk or a read-only folder into
one ``AlexNetError`` that names the file and says what to do.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import AlexNetError, quote

try:
    import fcntl
except ImportError:  # Windows: no flock; the owner file alone is checked
    fcntl = None


ELASTIC_RUN_ID_FILE = "torchelastic_run_id"


@dataclass(frozen=True)
class RunFolder:
    """Every path of one run folder."""

    directory: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))

    config = property(lambda self: self.directory / "config.yaml")
    metrics = property(lambda self: self.directory / "metrics.jsonl")
    log = property(lambda self: self.directory / "log.txt")
    checkpoints = property(lambda self: self.directory / "checkpoints")
    last = property(lambda self: self.directory / "checkpoints" / "last.pt")
    best = property(lambda self: self.directory / "checkpoints" / "best.pt")
    weights = property(lambda self: self.directory / "model.safetensors")
    evaluation = property(lambda self: self.directory / "evaluation.json")
    report = property(lambda self: self.directory / "report.html")
    lock_file = property(lambda self: self.directory / ".lock")
    # the torchrun job that started the run (TORCHELASTIC_RUN_ID), for a restarted group to find it
    elastic_run_id = property(lambda self: self.directory / ELASTIC_RUN_ID_FILE)

    def holds_run(self) -> bool:
        """Whether a run was started here (its configuration, metrics or a checkpoint exist)."""
        return any(path.exists() for path in (self.config, self.metrics, self.last, self.best))

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the half-written ``.*.tmp`` files a process killed during a write left behind.

        Only the lock's holder calls this: nobody else can be writing them."""
        removed = []
        for folder in (self.directory, self.checkpoints):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def remove_unstarted(self) -> None:
        """Remove what starting a run wrote (its config, lock, empty folders) when it was refused
        before training anything, so that the same command can be run again once fixed."""
        if self.metrics.exists() or self.last.exists() or self.best.exists():
            return
        for path in (self.config, self.lock_file, self.elastic_run_id):
            path.unlink(missing_ok=True)
        for folder in (self.checkpoints, self.directory):
            try:
                folder.rmdir()  # only when empty: never anything a user put there
            except OSError:
                pass

    def read_config(self) -> dict:
        """The settings in ``config.yaml``; an ``AlexNetError`` naming it when they cannot be read."""
        if not self.config.is_file():
            if not self.directory.exists():
                raise AlexNetError(f"{self.directory}: no such folder; pass the run folder that `alexnet train` "
                                   f"printed")
            raise AlexNetError(f"{self.directory} is not a run folder (no config.yaml); pass the folder that "
                               f"`alexnet train` printed")
        return read_config(self.config)

    def read_history(self) -> tuple[list[dict], str]:
        """The usable rows of ``metrics.jsonl``, and a note on any left out ("" if none)."""
        return read_history(self.metrics)

    def read_evaluation(self) -> tuple[dict | None, str]:
        """The final test metrics, or None and why they cannot be used ("no evaluation.json" when absent)."""
        if not self.evaluation.is_file():
            return None, "no evaluation.json"
        return read_evaluation(self.evaluation)

    def lock(self) -> "RunLock":
        """Take the folder for this process, or raise ``AlexNetError`` naming the process that has it."""
        return RunLock(self.lock_file).acquire()


class RunLock:
    """An exclusive lock on a run folder, held until ``release`` or the end of the process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.handle: int | None = None

    def acquire(self) -> "RunLock":
        try:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise write_error(self.path, error) from None
        owner = _read_owner(handle)
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif owner and _alive(owner):
                raise BlockingIOError
        except BlockingIOError:
            os.close(handle)
            folder = self.path.parent
            raise AlexNetError(
                f"{folder} is in use by another training process ({_describe(owner)}); wait for "
                f"it to finish, or stop it (Ctrl-C saves its position) and continue it with "
                f"--resume {folder}"
            ) from None
        except OSError:  # a filesystem without flock (some network mounts): trust the owner file
            if owner and _alive(owner) and owner.get("pid") != os.getpid():
                os.close(handle)
                raise AlexNetError(f"{self.path.parent} is in use by another training process "
                                   f"({_describe(owner)})") from None
        record = f"pid {os.getpid()} host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(handle, 0)
        os.pwrite(handle, record.encode(), 0)
        self.handle = handle
        return self

    def release(self) -> None:
        """Let the folder go (the file stays: removing it would let two processes lock two files)."""
        if self.handle is not None:
            if fcntl is not None:
                fcntl.flock(self.handle, fcntl.LOCK_UN)
            os.close(self.handle)
            self.handle = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(handle: int) -> dict | None:
    """The ``pid N host H since T`` record of the lock's last holder, as a dict; None when empty."""
    text = os.pread(handle, 200, 0).decode(errors="replace").split()
    if len(text) < 4 or text[0] != "pid" or not text[1].isdigit():
        return None
    return {"pid": int(text[1]), "host": text[3], "since": " ".join(text[5:7])}


def _describe(owner: dict | None) -> str:
    if owner is None:
        return "its process id is not recorded yet"
    return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"


def _alive(owner: dict) -> bool:
    """Whether the owner is a live process on this host (another host's cannot be checked: assume so)."""
    if owner["host"] != socket.gethostname():
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- writing ----------------------------------------------------------------------------------


class WriteError(AlexNetError):
    """A file could not be written: the disk is full, the folder read-only, or a file is in the way."""


def write_error(path: Path, error: OSError) -> WriteError:
    """One message for a write that failed: full disk, read-only or missing folder, a file in the way."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(f"no space left on device writing {path}: free some space first")
    return WriteError(f"cannot write {path}: {error.strerror or error}")


class _RecordingFile:
    """A file wrapper that remembers the OSError of a failed write: ``torch.save`` reports a full
    disk only as "unexpected pos" from its zip writer, and the real cause is what the user needs."""

    def __init__(self, file) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name):
        return getattr(self.file, name)


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``:
    a reader (or a resumed run) sees the old file or the new one, never half of one. A failed
    write (a full disk, say) leaves the old file as it was and raises ``AlexNetError``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise write_error(path, error) from None
    recording = None
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would hide the run from its group
        with os.fdopen(handle, "wb") as file:
            recording = _RecordingFile(file)
            write(recording)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        cause = error if isinstance(error, OSError) else getattr(recording, "error", None)
        if cause is not None:
            raise write_error(path, cause) from None
        raise


RUN_FILES = ("config.yaml", "metrics.jsonl", "log.txt", "model.safetensors", "evaluation.json", "report.html",
             ".lock", ELASTIC_RUN_ID_FILE)


def check_output(path: str | os.PathLike, flag: str, *, inputs: tuple = (), suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output file a user named (``flag`` in the messages) that cannot
    or must not be written: a wrong suffix (``suffixes``, when given), a folder, a folder that cannot
    be made or written to (tried with a temporary file there: permissions, a read-only mount,
    /proc), one of the command's ``inputs`` or a file inside an input folder, a file of a run folder
    (its weights, checkpoints, settings). The missing folder is created. Returns the path; write it
    with ``atomic_write``/``write_text``, which leave the old file whole when the write fails."""
    target = Path(path)
    if target.is_dir():  # first: a folder's name has no suffix, and that is not what is wrong with it
        raise AlexNetError(f"{flag} {path} is a folder; give a file name")
    if suffixes and target.suffix.lower() not in suffixes:
        raise AlexNetError(f"{flag} {path}: {target.suffix or 'no suffix'} does not name this format; end the name "
                           f"in {' or '.join(suffixes)}")
    if target.exists() and not target.is_file():
        raise AlexNetError(f"{flag} {path} is not a regular file (a pipe or a device?); give a file name")
    for item in inputs:
        source = Path(item)
        if target.exists() and source.exists() and (
                os.path.samefile(target, source) or (source.is_dir() and _inside(target, source))):
            raise AlexNetError(f"{flag} {path} is one of the inputs ({item}); writing it would destroy it. "
                               f"Choose another name")
    run = _run_folder_of(target)
    if run is not None:
        raise AlexNetError(f"{flag} {path} is a file of the run folder {run}; writing it would replace the run's "
                           f"own. Choose a name outside the run folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AlexNetError(f"{flag} {path}: cannot create the folder {target.parent} "
                           f"({error.strerror or error}); choose another place") from None
    try:  # what a write would meet: permissions, a read-only mount, a filesystem of no files (/proc)
        handle, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise AlexNetError(f"{flag} {path}: cannot write in {target.parent} ({error.strerror or error}); choose "
                           f"another place") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise AlexNetError(f"{flag} {path}: the file is read-only; choose another name")
    return target


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def _run_folder_of(path: Path) -> Path | None:
    """The run folder ``path`` is one of the files of (itself, or under checkpoints/), else None."""
    parent = path.parent
    if path.name in RUN_FILES and RunFolder(parent).config.is_file():
        return parent
    if parent.name == "checkpoints" and RunFolder(parent.parent).config.is_file():
        return parent.parent
    return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, atomically. (Names that are not UTF-8, as Python holds them,
    are written as the bytes they were.)"""
    atomic_write(path, lambda file: file.write(text.encode("utf-8", "surrogateescape")))


def save_figure(figure, path: Path, **options) -> None:
    """A matplotlib figure saved to ``path`` atomically, in the format its suffix names: a full disk
    leaves no empty or half-drawn file, only an ``AlexNetError``."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or None
    atomic_write(path, lambda file: figure.savefig(file, format=kind, **options))


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (metrics.jsonl, log.txt)."""
    try:
        with open(path, "a") as file:
            file.write(text)
    except OSError as error:
        raise write_error(Path(path), error) from None


# --- reading: files of runs a user may have copied, edited or damaged --------------------------

# A run's own config.yaml is about 2 KB and 40 values. YAML aliases let a few hundred bytes stand for
# billions of values ("billion laughs"), and merge keys copy them as they load: the document's nodes
# are counted, aliases expanded, before anything is built from them.
CONFIG_BYTES = 1_000_000
CONFIG_VALUES = 10_000
CONFIG_CHARACTERS = 1_000_000  # of all its strings, aliases expanded: what the page would show
# Settings the report acts on (the others are only shown) and the types it needs them to have.
CONFIG_TYPES: dict[str, type] = {"dataset": str, "data_dir": str, "augment": str, "precision": str, "seed": int}
JSON_BYTES = 64_000_000  # evaluation.json of 1,000 classes is about 5 MB; metrics.jsonl 250 bytes an epoch
# A metrics.jsonl row is used when these are numbers (the training curves and final-metrics table need them).
HISTORY_KEYS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1")
EVALUATION_NUMBERS = ("count", "top1", "top1_error", "top5", "top5_error", "loss", "macro_f1", "weighted_f1")


def read_config(path: Path) -> dict:
    """The settings in a run's ``config.yaml``; an ``AlexNetError`` naming it when they cannot be read."""
    advice = "restore it from a copy of the run, or rerun training"
    if path.stat().st_size > CONFIG_BYTES:
        raise AlexNetError(f"{path} is {path.stat().st_size:,} bytes, not a run's config (about 2 KB); {advice}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AlexNetError(f"{path} is not text (binary or damaged); {advice}") from None
    except OSError as error:
        raise AlexNetError(f"cannot read {path} ({error.strerror or error}); make it readable") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_yaml_size(node, path, advice)
        config = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())[:200]
        raise AlexNetError(f"{path} is not valid YAML ({reason}); {advice}") from None
    except RecursionError:  # PyYAML builds nested collections recursively
        raise AlexNetError(f"{path} is nested too deeply for a run's settings; {advice}") from None
    finally:
        loader.dispose()
    if not isinstance(config, dict):
        raise AlexNetError(f"{path} holds {quote(config)}, not the run's settings (name: value lines); "
                           f"{advice}")
    for key, kind in CONFIG_TYPES.items():
        value = config.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            expected = "an integer" if kind is int else "a string"
            raise AlexNetError(f"{path}: {key} is {quote(value)}, not {expected}; fix that line or rerun "
                               f"training")
    return config


def _check_yaml_size(root: yaml.Node, path: Path, advice: str) -> None:
    values = characters = 0
    pending = [root]
    while pending:  # an alias is the node it names: counted again wherever it is used
        node = pending.pop()
        values += 1
        if isinstance(node, yaml.ScalarNode):
            characters += len(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending += [part for pair in node.value for part in pair]
        else:
            pending += node.value
        if values > CONFIG_VALUES or characters > CONFIG_CHARACTERS:
            raise AlexNetError(
                f"{path} expands to more than {CONFIG_VALUES:,} values or {CONFIG_CHARACTERS:,} characters "
                f"(YAML aliases?), far more than a run's settings; {advice}"
            )


def read_history(path: Path) -> tuple[list[dict], str]:
    """The per-epoch rows of ``metrics.jsonl`` that can be used, and a note on those left out ("" if none)."""
    if not path.is_file():
        return [], ""
    text, problem = _read_text(path)
    if problem:
        return [], f"metrics.jsonl is unreadable ({problem}), so it is left out"
    history, bad = [], []
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    for number, line in lines:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            bad.append(f"line {number}: not JSON")
            continue
        if not isinstance(row, dict):
            bad.append(f"line {number}: not an object")
        elif not all(_is_number(row.get(key)) for key in HISTORY_KEYS):
            bad.append(f"line {number}: lacks {', '.join(HISTORY_KEYS)} as numbers")
        elif not _is_finite(row["epoch"]) or not _is_number(row.get("epoch_seconds", 0.0)):
            bad.append(f"line {number}: epoch or epoch_seconds is not a number")
        else:
            history.append(row)
    if not bad:
        return history, ""
    return history, (f"{len(bad)} of {len(lines)} lines of metrics.jsonl are unreadable and left out "
                     f"({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''})")


def read_evaluation(path: Path) -> tuple[dict | None, str]:
    """The test metrics in ``evaluation.json``, or None and why they cannot be used."""
    text, problem = _read_text(path)
    if problem:
        return None, problem
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None, "not JSON"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    names = data.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        return None, "no list of class names"
    classes = len(names)
    matrix = data.get("confusion_matrix")
    if not (isinstance(matrix, list) and len(matrix) == classes and all(
            isinstance(row, list) and len(row) == classes
            and all(isinstance(count, int) and not isinstance(count, bool) and count >= 0 for count in row)
            for row in matrix)):
        return None, f"no {classes}x{classes} confusion matrix of counts"
    for key in ("precision", "recall", "f1"):
        values = data.get(key)
        if not (isinstance(values, list) and len(values) == classes and all(map(_is_number, values))):
            return None, f"{key} is not {classes} numbers"
    for key in EVALUATION_NUMBERS:
        if key in data and not _is_number(data[key]):
            return None, f"{key} is {quote(data[key])}, not a number"
    if "count" in data and not _is_finite(data["count"]):
        return None, "count is not finite"
    return data, ""


def _read_text(path: Path) -> tuple[str, str]:
    """(text, "") or ("", why it cannot be read)."""
    try:
        if path.stat().st_size > JSON_BYTES:
            return "", f"{path.stat().st_size:,} bytes, more than any run writes"
        return path.read_text(encoding="utf-8"), ""
    except UnicodeDecodeError:
        return "", "not text: binary or damaged"
    except OSError as error:
        return "", error.strerror or str(error)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False
