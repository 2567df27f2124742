"""Processes that start processes: every one of ours stops when its parent is told to stop, or dies.

``alexnet experiment --jobs N`` trains its runs in worker processes and ``alexnet train --nproc N``
runs torchrun, which starts the ranks. Each child runs in a session of its own, so that a Ctrl-C
at the terminal reaches the parent alone and each child gets exactly one signal, the one its parent
passes on (``ForwardedSignals``): two would make a training process stop at once instead of after
its step, and make torchrun abandon the shutdown of its ranks halfway. Each child also asks the
kernel to send it SIGTERM when its parent dies however it dies (``stop_with_parent``), so that a
``kill -9`` of the parent leaves no orphan training on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

# How long a parent waits, after passing a signal on, for its children to save and end before it
# kills them: a training step and a checkpoint write. torchrun's own wait for its ranks is 30 s.
STOP_GRACE_SECONDS = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have the kernel send this process ``signum`` when its parent dies (Linux; elsewhere nothing).

    Called first thing in a child. ``parent``: the pid the parent had when it started this child;
    if the parent is no longer that (a ``kill -9`` before the kernel was asked), the child stops
    itself the same way. (Without it, only a death during the call is noticed: a parent of pid 1,
    torchrun in a container, is a parent like any other.)"""
    if not sys.platform.startswith("linux"):
        return
    before = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (a libc without it): the parent's own forwarding still holds
        return
    if os.getppid() != (before if parent is None else parent):
        os.kill(os.getpid(), signum)


def start_child(parent: int, new_session: bool = False) -> None:
    """First thing in a child we started (``parent``: the starter's pid): its own session
    (``new_session``, where the parent could not give it one), stopping with its parent, and the
    stop signals the parent blocked while starting it unblocked (one sent meanwhile is delivered
    now, not lost)."""
    if new_session:
        own_session()
    stop_with_parent(parent=parent)
    if hasattr(signal, "pthread_sigmask"):  # (not on Windows)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """The stop signals held back while a child is started: it inherits the mask, and a signal sent
    before it has its own session and handlers waits for them instead of killing it half-started."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def own_session() -> None:
    """Leave the parent's session and process group: a Ctrl-C at the terminal no longer reaches this
    process directly, only through the parent (``ForwardedSignals``)."""
    with contextlib.suppress(OSError):  # already a session leader
        os.setsid()


class ForwardedSignals:
    """While installed, SIGINT and SIGTERM are recorded (``signum``) and passed on to ``children()``,
    each signal once: the children stop as they would on their own (a training process saves its
    position first). A second Ctrl-C is passed on too (a training process then stops at once)."""

    def __init__(self, children: Callable[[], list[int]]) -> None:
        self.children = children
        self.signum: int | None = None
        self.count = 0

    def __call__(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif signum != signal.SIGINT:
            return  # a SIGTERM after the first signal changes nothing: the children are stopping
        self.count += 1
        for pid in self.children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    @classmethod
    @contextlib.contextmanager
    def installed(cls, children: Callable[[], list[int]]) -> Iterator["ForwardedSignals"]:
        forward = cls(children)
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield forward
            return
        previous = {each: signal.signal(each, forward) for each in STOP_SIGNALS}
        try:
            yield forward
        finally:
            for each, handler in previous.items():
                signal.signal(each, handler)
