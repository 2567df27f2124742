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


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches, small (200 training images, 40 test), under ``<returned>/cifar10``."""
    tv_class = torchvision.datasets.CIFAR10  # these small files have no official md5
    monkeypatch.setattr(tv_class, "train_list", [[name, None] for name, _ in tv_class.train_list])
    monkeypatch.setattr(tv_class, "test_list", [[name, None] for name, _ in tv_class.test_list])
    monkeypatch.setattr(tv_class, "meta", {**tv_class.meta, "md5": None})
    write_cifar(tmp_path / "data" / "cifar10", tv_class, per_batch=40)
    return tmp_path / "data"
