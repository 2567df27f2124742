"""Fixtures shared by several test files, and the split of the machine between pytest-xdist workers."""

import os

import pytest
import torchvision

from test_data import write_cifar  # tests/ is on the path (pytest's prepend import mode)


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), worker i runs on every N-th CPU this process may use, and
    ``alexnet.perf.set_threads`` (one thread per physical core it may run on) gives torch as many
    threads: N workers with all the cores each would oversubscribe them N times over, several times
    slower on a CPU than sharing them out."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if count > len(cpus):
        return
    os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % count::count])
    from alexnet.perf import set_threads

    set_threads()


# The files that take longest (seconds of one worker, full suite, 2-core Xeon), run first: with
# ``--dist loadfile`` a file stays on one worker, each worker is pinned to its own CPU, and a long
# file started last keeps one CPU busy while the other has nothing left. Longest first evens the
# workers' ends out (the greedy longest-processing-time rule).
LONGEST_FIRST = (
    "test_distributed.py",  # ~110 s: torchrun runs
    "test_processes.py",  # ~105 s: experiment --jobs and train --nproc stopped by signals, resumed
    "test_export.py",  # ~100 s: every model and switch in three formats
    "test_training.py",  # ~55 s
    "test_fast_paths.py",  # ~55 s with torch.compile's cache empty, ~25 s with it warm
    "test_perf.py",  # ~50 s with the cache empty
    "test_serve.py",  # ~50 s: a real browser, a load test
    "test_robustness_training.py",  # ~40 s
    "test_finetune.py",  # ~35 s
    "test_tutorials.py",  # ~25 s
)


def pytest_collection_modifyitems(items):
    """Run ``LONGEST_FIRST``'s files first, in that order; the rest after, as collected."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    order = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches, small (200 training images, 40 test), under ``<returned>/cifar10``."""
    tv_class = torchvision.datasets.CIFAR10  # these small files have no official md5
    monkeypatch.setattr(tv_class, "train_list", [[name, None] for name, _ in tv_class.train_list])
    monkeypatch.setattr(tv_class, "test_list", [[name, None] for name, _ in tv_class.test_list])
    monkeypatch.setattr(tv_class, "meta", {**tv_class.meta, "md5": None})
    write_cifar(tmp_path / "data" / "cifar10", tv_class, per_batch=40)
    return tmp_path / "data"
