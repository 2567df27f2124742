"""Runs trained side by side, each in a worker process of its own, and the signals that stop them.

A task is anything with a ``name`` that pickles; the work done on it is a module-level function,
so that a spawned interpreter can import it by name.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable

from ..processes import STOP_GRACE_SECONDS, STOP_SIGNALS, ForwardedSignals, signals_blocked, start_child


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM (and Ctrl-C) outside training, while a run is measured, stops the experiment as a
    Ctrl-C does, with its message and exit status, instead of killing it without a word. (Training
    puts its own handlers in place while it runs: it saves first.)"""
    from ..training.loop import Interrupted

    def interrupt(signum: int, frame) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {each: signal.signal(each, interrupt) for each in STOP_SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def run_in_workers(tasks: list, jobs: int, work: Callable[[object], dict | str],
                   record: Callable[[object, dict | str], None]) -> None:
    """``work`` done on each task in ``jobs`` worker processes at a time (a fresh interpreter each, in a
    session of its own; see ``alexnet.processes``), each outcome passed to ``record``: what ``work``
    returned, or a message when the process ended without an answer. A Ctrl-C or SIGTERM is passed on
    to the running workers, which save their position; no new one starts, and the ones running are
    waited for (killed after ``STOP_GRACE_SECONDS``) before ``Interrupted`` is raised: nothing of ours
    outlives the experiment."""
    from ..training.loop import Interrupted

    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
    waiting = list(reversed(tasks))
    running: dict = {}  # the receiving end of a worker's pipe -> (process, task)

    def children() -> list[int]:
        return [process.pid for process, _ in running.values() if process.pid]

    with ForwardedSignals.installed(children) as forward:
        stopped_at = None
        while (waiting and forward.signum is None) or running:
            while waiting and forward.signum is None and len(running) < jobs:
                task = waiting.pop()
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(work, task, sender, os.getpid()),
                                          name=f"alexnet {task.name}")
                with signals_blocked():
                    process.start()
                sender.close()
                running[receiver] = (process, task)
            if forward.signum is not None and stopped_at is None:
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_SECONDS:
                for process, _ in running.values():
                    process.kill()
            for receiver in multiprocessing.connection.wait(list(running), timeout=1.0):
                process, task = running.pop(receiver)
                try:
                    outcome = receiver.recv()
                except (EOFError, OSError):  # the worker died before it could answer
                    outcome = None
                receiver.close()
                process.join()
                if outcome is None and forward.signum is None:
                    code = process.exitcode
                    cause = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
                    outcome = f"its process ended without an answer ({cause}; out of memory?)"
                if outcome is not None:
                    record(task, outcome)
        if forward.signum is not None:
            raise Interrupted(forward.signum)


def _worker(work: Callable[[object], dict | str], task, sender, parent: int) -> None:
    """A worker process: one task, its outcome sent back; None when a signal stopped it."""
    try:
        with stop_on_signals():
            start_child(parent, new_session=True)
            outcome = work(task)
    except KeyboardInterrupt:
        outcome = None
    with contextlib.suppress(OSError):
        sender.send(outcome)
    sender.close()

