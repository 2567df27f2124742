"""Fixtures shared by several test files."""

import pytest
import torchvision

from test_data import write_cifar  # tests/ is on the path (pytest's prepend import mode)


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches, small (200 training images, 40 test), under ``<returned>/cifar10``."""
    tv_class = torchvision.datasets.CIFAR10  # these small files have no official md5
    monkeypatch.setattr(tv_class, "train_list", [[name, None] for name, _ in tv_class.train_list])
    monkeypatch.setattr(tv_class, "test_list", [[name, None] for name, _ in tv_class.test_list])
    monkeypatch.setattr(tv_class, "meta", {**tv_class.meta, "md5": None})
    write_cifar(tmp_path / "data" / "cifar10", tv_class, per_batch=40)
    return tmp_path / "data"
