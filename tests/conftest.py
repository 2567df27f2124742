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


# Seconds each test file takes on one worker (full suite, torch.compile's cache empty, 2-core Xeon
# with AMX). Files run longest first: with ``--dist loadfile`` a file stays on one worker, each
# worker is pinned to its own CPU, and a long file started last keeps one CPU busy while the other
# has nothing left. Longest first evens the workers' ends out (the greedy longest-processing-time
# rule); a file not listed runs last, as a short one.
SECONDS = {
    "test_distributed.py": 95,  # torchrun runs
    "test_processes.py": 95,  # experiment --jobs and train --nproc stopped by signals, resumed
    "test_export.py": 75,  # every model and switch in three formats
    "test_training.py": 48,
    "test_fast_paths.py": 45,  # ~20 s of it compiling; ~20 s less with the compile cache warm
    "test_serve.py": 45,  # a real browser, a load test
    "test_perf.py": 40,  # as test_fast_paths.py
    "test_robustness_training.py": 34,
    "test_finetune.py": 30,
    "test_tutorials.py": 25,
    "test_predict.py": 20,
    "test_divergence.py": 19,
    "test_explain.py": 16,
    "test_robustness_data.py": 16,
    "test_models.py": 16,
    "test_tutorial_models.py": 15,
    "test_experiments.py": 12,
    "test_packed.py": 11,
    "test_report.py": 10,
    "test_robustness_runs.py": 8,
    "test_robustness_paths.py": 7,
    "test_data.py": 5,
}


def pytest_collection_modifyitems(items):
    """Test files in the order of ``SECONDS``, longest first; within a file, as collected."""
    order = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (-SECONDS.get(item.path.name, 0), order[id(item)]))


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches, small (200 training images, 40 test), under ``<returned>/cifar10``."""
    tv_class = torchvision.datasets.CIFAR10  # these small files have no official md5
    monkeypatch.setattr(tv_class, "train_list", [[name, None] for name, _ in tv_class.train_list])
    monkeypatch.setattr(tv_class, "test_list", [[name, None] for name, _ in tv_class.test_list])
    monkeypatch.setattr(tv_class, "meta", {**tv_class.meta, "md5": None})
    write_cifar(tmp_path / "data" / "cifar10", tv_class, per_batch=40)
    return tmp_path / "data"
