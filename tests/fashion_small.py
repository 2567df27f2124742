"""Fashion-MNIST for the tests' short runs: all 60,000 training images and the first 1,000 of the
10,000 test images, real files in torchvision's layout (``<dir>/FashionMNIST/raw/``).

A short run (1,100 training images, one epoch) spent 7 of its 8.6 s on one core in its final test
over the whole test set (fp32), and what those tests check (resuming, signals, refusals, messages)
does not depend on how many test images there are. Tests of the data itself, of evaluation counts
and of distributed sharding keep the whole test set."""

import functools
import gzip
import os
import shutil
import tempfile
from pathlib import Path

FASHION = Path("/usr/share/datasets/fashion-mnist")
TEST_IMAGES = 1_000


@functools.cache
def fashion_small_test() -> str | None:
    """The data dir to pass as ``data_dir``/``--data-dir``; None where Debian's dataset-fashion-mnist
    is not installed (the tests that need it skip).

    Written once per machine to a fixed folder and reused, so that the decoded tensors the toolkit
    caches per data path and modification time are reused too. It appears whole or not at all: it is
    written beside it, then renamed; of two processes writing it at once, the second rename loses and
    its copy is removed."""
    if not FASHION.is_dir():
        return None
    root = Path(tempfile.gettempdir()) / f"alexnet-tests-fashion-mnist-{TEST_IMAGES}-{os.getuid()}"
    if root.is_dir():
        return str(root)
    building = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
    raw = building / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        with gzip.open(FASHION / f"{name}.gz") as source, open(raw / name, "wb") as target:
            shutil.copyfileobj(source, target)
    # IDX: a header of big-endian uint32s (magic, count, then rows and columns for images), then the values
    for name, header, item in (("t10k-images-idx3-ubyte", 16, 28 * 28), ("t10k-labels-idx1-ubyte", 8, 1)):
        data = gzip.decompress((FASHION / f"{name}.gz").read_bytes())
        head = bytearray(data[:header])
        head[4:8] = TEST_IMAGES.to_bytes(4, "big")
        (raw / name).write_bytes(bytes(head) + data[header:header + TEST_IMAGES * item])
    try:
        building.rename(root)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(building, ignore_errors=True)
    return str(root)
