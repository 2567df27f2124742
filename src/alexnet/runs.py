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
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import AlexNetError

try:
    import fcntl
except ImportError:  # Windows: no flock; the owner file alone is checked
    fcntl = None


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
        for path in (self.config, self.lock_file, self.directory / "torchelastic_run_id"):
            path.unlink(missing_ok=True)
        for folder in (self.checkpoints, self.directory):
            try:
                folder.rmdir()  # only when empty: never anything a user put there
            except OSError:
                pass

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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, atomically."""
    atomic_write(path, lambda file: file.write(text.encode()))


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (metrics.jsonl, log.txt)."""
    try:
        with open(path, "a") as file:
            file.write(text)
    except OSError as error:
        raise write_error(Path(path), error) from None
