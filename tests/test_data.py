"""Datasets, loaders and augmentation: real Fashion-MNIST where Debian installed it, and small files
written here in each dataset's own format (IDX, CIFAR's pickled batches, Flowers-17's archive, an
image folder with a corrupt JPEG and a text file)."""

import functools
import io
import math
import os
import pickle
import shutil
import struct
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision

from alexnet import AlexNetError
from alexnet.data import (
    AugmentConfig, BatchLoader, ImageTensors, InMemoryLoader, StreamingLoader, augment_batch, build_loaders,
    compute_pca, dataset_info, list_datasets, load_tensors, pca_lighting, random_crop, shard_indices,
    split_validation, stratified_subset, ten_crop,
)
from alexnet.data import LoaderOptions, build_eval_loader, datasets, flowers17, parse_augment
from alexnet.data import loaders as loaders_module
from alexnet.data.streaming import readable_class_names
from image_files import jpeg_bytes, png_bytes  # tests/ is on the path (pytest's prepend import mode)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), reason="Debian's dataset-fashion-mnist is not installed"
)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Decoded tensors go to a cache of the test session, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        patch.delenv(datasets.DATA_DIR_ENV, raising=False)
        yield


# --- writers of each dataset's own format ----------------------------------------------------


def write_idx(path: Path, array: torch.Tensor) -> None:
    """IDX: magic (0, 0, type 0x08 = ubyte, number of dimensions), big-endian sizes, the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def write_idx_dataset(root: Path, folder: str, train: int, test: int, level: int) -> Path:
    """An MNIST-format dataset's IDX files in torchvision's layout, <root>/<folder>/raw/, which it
    returns; image i is of class i % 10 and all of value ``level`` times its class."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = torch.arange(count) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", (labels * level).view(-1, 1, 1).expand(count, 28, 28))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_cifar(root: Path, tv_class, per_batch: int) -> dict:
    """CIFAR's pickled batches: rows of 3072 bytes (red plane, green plane, blue plane)."""
    folder = root / tv_class.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if tv_class is torchvision.datasets.CIFAR10 else "fine_labels"
    num_classes = 10 if label_key == "labels" else 100
    written = {}
    for index, (name, _) in enumerate(tv_class.train_list + tv_class.test_list):
        labels = [(index * per_batch + i) % num_classes for i in range(per_batch)]
        images = torch.zeros(per_batch, 3, 32, 32, dtype=torch.uint8)
        for i, label in enumerate(labels):
            for channel in range(3):
                images[i, channel] = label + 100 * channel  # channel c of an image of class y is y + 100c
        entry = {"data": images.view(per_batch, 3072).numpy(), label_key: labels}
        (folder / name).write_bytes(pickle.dumps(entry))
        written[name] = labels
    names = [f"class{i}" for i in range(num_classes)]
    (folder / tv_class.meta["filename"]).write_bytes(pickle.dumps({tv_class.meta["key"]: names}))
    return written


def solid_image(colour, size=(24, 20)) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, *size).contiguous()


# --- the dataset registry and real Fashion-MNIST ---------------------------------------------


def test_names_and_unknown_dataset():
    assert list_datasets() == ["fashion-mnist", "mnist", "cifar10", "cifar100", "flowers17", "imagenet", "folder"]
    with pytest.raises(AlexNetError, match="Known datasets: fashion-mnist, mnist"):
        dataset_info("fashion_mnist")
    info = dataset_info("cifar10")
    assert info.input_shape == (3, 32, 32) and info.num_classes == 10 and info.in_memory
    assert not dataset_info("imagenet").in_memory and dataset_info("imagenet").input_shape is None


@needs_fashion_mnist
def test_a_data_dir_without_the_data_says_where_it_was_found(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="alexnet.data.datasets"):
        found = datasets.locate("fashion-mnist", tmp_path)
        datasets.locate("fashion-mnist", tmp_path)  # said once, not once a split
    assert [record.getMessage() for record in caplog.records] == [
        f"fashion-mnist is not in {tmp_path}; using the copy found at {found} (the search goes on to "
        f"$ALEXNET_DATA, ~/.cache/alexnet and the system copies)"]


@needs_fashion_mnist
def test_real_fashion_mnist():
    train = load_tensors("fashion-mnist", "train")
    test = load_tensors("fashion-mnist", "test")
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 1, 28, 28) and test.labels.dtype == torch.int64
    assert train.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert torch.bincount(train.labels).tolist() == [6_000] * 10
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    assert train.labels[0] == 9 and test.labels[0] == 9  # both files start with an ankle boot
    # the normalisation constants of DatasetInfo are the training set's
    pixels = train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(train.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(train.std[0], abs=1e-4)
    assert train.pca.eigenvalues.item() == pytest.approx(pixels.var().item(), rel=1e-3)
    # the second load comes from the cache, identical
    again = load_tensors("fashion-mnist", "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert len(list((datasets.user_cache_dir() / "tensors").glob("fashion-mnist-*.pt"))) == 2


def test_the_tensor_cache_keeps_its_budget_evicting_the_least_recently_used(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "tensors"
    megabyte = torch.zeros(2**20, dtype=torch.uint8)  # each entry a little over 1 MB on disk
    for age, name in enumerate(("oldest", "used", "newer")):
        datasets.save_cache({"images": megabyte}, folder / f"{name}.pt")
        os.utime(folder / f"{name}.pt", ns=(10**18 + age * 10**9,) * 2)
    assert datasets.load_cache(folder / "used.pt")["images"].numel() == 2**20  # a hit: used just now
    monkeypatch.setenv("ALEXNET_CACHE_MB", "2.5")
    datasets.save_cache({"images": megabyte}, folder / "new.pt")  # 4 entries of ~1 MB: two must go
    assert sorted(path.name for path in folder.glob("*.pt")) == ["new.pt", "used.pt"]
    # the entry just written stays even when it alone is over the budget
    monkeypatch.setenv("ALEXNET_CACHE_MB", "0.5")
    datasets.save_cache({"images": megabyte}, folder / "big.pt")
    assert [path.name for path in folder.glob("*.pt")] == ["big.pt"]
    # a partial file left by a process stopped mid-write goes once it is an hour old
    stale, fresh = folder / "big.123.tmp", folder / "big.456.tmp"
    stale.write_bytes(b"x"), fresh.write_bytes(b"x")
    os.utime(stale, (0, 0))
    datasets.evict_least_used(folder)
    assert not stale.exists() and fresh.exists()
    monkeypatch.setenv("ALEXNET_CACHE_MB", "inf")  # no bound
    assert datasets.evict_least_used(folder) == [] and datasets.cache_budget() == math.inf
    for wrong in ("lots", "nan", "-1"):  # said, and the default budget kept: a cache never fails a run
        monkeypatch.setenv("ALEXNET_CACHE_MB", wrong)
        with caplog.at_level("WARNING"):
            assert datasets.cache_budget() == datasets.CACHE_MB * 2**20
        assert f"$ALEXNET_CACHE_MB must be a number of megabytes (inf: no bound), not {wrong!r}" in caplog.text


def test_the_two_splits_cached_together_are_both_kept(tmp_path, monkeypatch):
    # a budget smaller than both splits keeps both of the dataset just decoded, not the second alone
    write_idx_dataset(tmp_path / "data", "MNIST", train=60, test=20, level=3)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ALEXNET_CACHE_MB", "0")
    load_tensors("mnist", "train", data_dir=tmp_path / "data")
    cached = sorted(path.name.split("-")[1] for path in (tmp_path / "cache" / "alexnet" / "tensors").glob("*.pt"))
    assert cached == ["test", "train"]


@needs_fashion_mnist
def test_build_loaders_on_fashion_mnist():
    loaders = build_loaders("fashion-mnist", LoaderOptions(batch_size=8, output_shape=(3, 227, 227),
                                                           augment=parse_augment("paper"), seed=1))
    assert len(loaders.val.labels) == 5_000 and torch.bincount(loaders.val.labels).tolist() == [500] * 10
    assert len(loaders.train.labels) == 55_000 and len(loaders.test.labels) == 10_000
    assert loaders.classes[9] == "Ankle boot" and loaders.info.name == "fashion-mnist"
    images, labels = next(iter(loaders.train))
    assert images.shape == (8, 3, 227, 227) and images.dtype == torch.float32 and labels.shape == (8,)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images[:, 0], images[:, 2])  # grey repeated into three channels
    subset = build_loaders("fashion-mnist", LoaderOptions(batch_size=100, subset=0.1, val_size=0, seed=0))
    assert len(subset.train.labels) == 6_000 and subset.val is not subset.test  # val_size=0: val is the test set
    assert torch.equal(subset.val.labels, subset.test.labels)


# --- the other datasets, from small files in their own formats -------------------------------


def test_mnist_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 30), ("t10k", 10)):
        labels = torch.arange(count) % 10
        images = (labels * 20).view(-1, 1, 1).expand(count, 28, 28)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    train = load_tensors("mnist", "train", data_dir=tmp_path)
    assert train.images.shape == (30, 1, 28, 28) and train.classes[3] == "3 - three"
    assert torch.equal(train.images[:, 0, 5, 7], (train.labels * 20).to(torch.uint8))
    assert len(load_tensors("mnist", "test", data_dir=tmp_path)) == 10


@pytest.mark.parametrize("tv_class", [torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100])
def test_cifar_pickled_batches(tmp_path, monkeypatch, tv_class):
    # torchvision checks each file's md5 against the real CIFAR files: these small ones have none
    monkeypatch.setattr(tv_class, "train_list", [[name, None] for name, _ in tv_class.train_list])
    monkeypatch.setattr(tv_class, "test_list", [[name, None] for name, _ in tv_class.test_list])
    monkeypatch.setattr(tv_class, "meta", {**tv_class.meta, "md5": None})
    name = "cifar10" if tv_class is torchvision.datasets.CIFAR10 else "cifar100"
    written = write_cifar(tmp_path / name, tv_class, per_batch=4)  # in <dir>/<name>/, found there
    train = load_tensors(name, "train", data_dir=tmp_path)
    test = load_tensors(name, "test", data_dir=tmp_path)
    expected = [label for file, _ in tv_class.train_list for label in written[file]]
    assert train.labels.tolist() == expected and len(test) == 4
    assert train.images.shape == (4 * len(tv_class.train_list), 3, 32, 32)
    for channel in range(3):  # the planes land in the right channels
        assert torch.equal(train.images[:, channel, 9, 3].long(), train.labels + 100 * channel)
    assert train.classes[:2] == ["class0", "class1"] and len(train.classes) == (10 if name == "cifar10" else 100)


def test_flowers17_archive(tmp_path, monkeypatch):
    colours = [((37 * c) % 256, (91 * c + 40) % 256, (53 * c + 200) % 256) for c in range(17)]
    archive = tmp_path / "17flowers.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for index in range(1, flowers17.NUM_IMAGES + 1):
            data = jpeg_bytes(solid_image(colours[(index - 1) // 80]), quality=95)
            member = tarfile.TarInfo(f"jpg/image_{index:04d}.jpg")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        member = tarfile.TarInfo("jpg/files.txt")
        tar.addfile(member, io.BytesIO(b""))
    # served over HTTP on this machine and fetched by torchvision's downloader
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(flowers17, "URL", f"http://127.0.0.1:{server.server_port}/17flowers.tgz")
    monkeypatch.setattr(flowers17, "STORED_SIZE", 16)
    data_dir = tmp_path / "data"
    with pytest.raises(AlexNetError, match="not found"):
        load_tensors("flowers17", "train", data_dir=data_dir)
    try:
        train = load_tensors("flowers17", "train", data_dir=data_dir, download=True)
    finally:
        server.shutdown()
        server.server_close()
    test = load_tensors("flowers17", "test", data_dir=data_dir)
    assert train.images.shape == (1_020, 3, 16, 16) and len(test) == 340
    assert torch.bincount(train.labels).tolist() == [60] * 17 and torch.bincount(test.labels).tolist() == [20] * 17
    assert train.classes[0] == "Daffodil" and train.classes[16] == "Pansy"
    expected = torch.tensor(colours, dtype=torch.float)[test.labels]  # (N, 3)
    assert (test.images[:, :, 8, 8].float() - expected).abs().max() <= 4  # JPEG of a solid colour
    assert not set(flowers17.split_indices("train").tolist()) & set(flowers17.split_indices("test").tolist())


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
    with pytest.raises(AlexNetError) as error:
        load_tensors("fashion-mnist", "train", data_dir=tmp_path / "given")
    message = str(error.value)
    for place in ("given", "env", "cache/alexnet/datasets", "system"):
        assert str(tmp_path / place) in message
    assert "apt install dataset-fashion-mnist" in message and "--download" in message
    assert "train-images-idx3-ubyte.gz" in message
    # a download that cannot reach the server ends in the same message, no traceback to read
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(AlexNetError, match="download failed") as error:
        load_tensors("fashion-mnist", "train", data_dir=tmp_path / "given", download=True)
    assert "apt install dataset-fashion-mnist" in str(error.value)


def test_cli_prints_missing_data_without_traceback(tmp_path, monkeypatch, capsys):
    from alexnet.cli import main

    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIRS", ())
    assert main(["augment-preview", "--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet: error: dataset 'cifar10' not found") and "Traceback" not in err


# --- splits --------------------------------------------------------------------------------


def _toy(counts=(60, 30, 10), size=8, channels=1, seed=0) -> ImageTensors:
    labels = torch.cat([torch.full((count,), label) for label, count in enumerate(counts)])
    images = torch.randint(0, 256, (len(labels), channels, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels)).to(torch.uint8)  # an id to follow each image
    return ImageTensors(images, labels, [f"c{i}" for i in range(len(counts))], (0.5,) * channels, (0.25,) * channels)


def test_validation_split_is_stratified_and_deterministic():
    data = _toy()
    train, val = split_validation(data, 10, seed=3)
    assert torch.bincount(val.labels).tolist() == [6, 3, 1]
    assert len(train) == 90 and torch.bincount(train.labels).tolist() == [54, 27, 9]
    ids = lambda part: set(part.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(train) | ids(val) == set(range(100)) and not ids(train) & ids(val)
    assert ids(split_validation(data, 10, seed=3)[1]) == ids(val)
    assert ids(split_validation(data, 10, seed=4)[1]) != ids(val)
    subset = stratified_subset(data, 0.5, seed=0)
    assert torch.bincount(subset.labels).tolist() == [30, 15, 5]
    assert torch.bincount(stratified_subset(data, 0.25, seed=0).labels).sum() == 25  # 15 + 7.5 + 2.5, rounded to 25


# --- augmentation --------------------------------------------------------------------------


def test_pca_of_known_covariance_and_lighting_spread():
    axes, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    variances = torch.tensor([0.01, 0.0025, 0.0004], dtype=torch.float64)  # stds 0.1, 0.05, 0.02
    z = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pixels = 0.5 + (z * variances.sqrt()) @ axes.T  # within 0.5 +- 4 sigma: never clipped
    images = (pixels * 255).round().clamp(0, 255).to(torch.uint8).T.reshape(3, 200, 1000).permute(1, 0, 2).reshape(200, 3, 1, 1000)
    pca = compute_pca(images)
    # uint8 rounding adds 1/(12 * 255^2) = 1.3e-6 of variance to every axis
    assert torch.allclose(pca.eigenvalues.double(), variances + 1.3e-6, rtol=0.02)
    assert (pca.eigenvectors.double().T @ axes).abs().diagonal().min() > 0.999
    # the same images on the 0..1 scale give the same decomposition (not one 255 x 255 times smaller)
    torch.testing.assert_close(compute_pca(images.double() / 255).eigenvalues, pca.eigenvalues)
    # the shift along axis i has standard deviation 0.1 * sqrt(lambda_i), the same on every pixel
    base = torch.zeros(50_000, 3, 2, 2)
    shifted = pca_lighting(base, pca, 0.1, torch.Generator().manual_seed(2))
    assert torch.equal(shifted, shifted[:, :, :1, :1].expand_as(shifted))
    along = shifted[:, :, 0, 0] @ pca.eigenvectors  # (B, 3) coordinates on the principal axes
    assert torch.allclose(along.std(0), 0.1 * pca.eigenvalues.sqrt(), rtol=0.03)
    assert along.mean(0).abs().max() < 4 * 0.1 * pca.eigenvalues.sqrt().max() / math.sqrt(50_000)


def test_ten_crop_is_the_papers_ten_views():
    from alexnet.inference import ten_crop_logits

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    views = ten_crop(images, (5, 5))
    assert views.shape == (2, 10, 3, 5, 5)
    corners = [images[..., :5, :5], images[..., :5, 3:], images[..., 3:, :5], images[..., 3:, 3:], images[..., 2:7, 2:7]]
    for i, crop in enumerate(corners):
        assert torch.equal(views[:, i], crop) and torch.equal(views[:, i + 5], crop.flip(-1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(75, 4))
    expected = torch.stack([model(views[:, i]).softmax(-1) for i in range(10)], 1).mean(1).log()
    assert torch.allclose(ten_crop_logits(model, images, (5, 5)), expected, atol=1e-6)


def test_random_crop_is_a_shift_with_zero_fill_or_its_mirror():
    images = torch.randint(1, 256, (64, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_crop(images, (6, 6), torch.Generator().manual_seed(1), padding=2, horizontal_flip=True)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    mirrored = 0
    for b in range(64):
        candidates = {(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                      if torch.equal(out[b], (padded[b].flip(-1) if flip else padded[b])[:, dy : dy + 6, dx : dx + 6])}
        assert candidates, f"image {b} is not a crop of its padded original"
        mirrored += all(flip for _, _, flip in candidates)
    assert 16 < mirrored < 48  # about half the images are mirrored


def test_presets():
    assert AugmentConfig.preset("light") == AugmentConfig(crop_padding=4, horizontal_flip=True)
    paper = AugmentConfig.preset("paper")
    assert paper.crop_fraction == 224 / 256 and paper.pca_lighting_std == 0.1 and paper.horizontal_flip
    assert not AugmentConfig.preset("light", dataset="mnist").horizontal_flip  # mirrored digits are not digits
    with pytest.raises(AlexNetError, match="Known presets"):
        AugmentConfig.preset("fancy")
    batch = _toy(size=32, channels=3).images[:16]
    for name in ("none", "light", "paper", "tutorial"):
        out = augment_batch(batch, AugmentConfig.preset(name), train=True, output_size=(28, 28),
                            generator=torch.Generator().manual_seed(0), pca=compute_pca(batch))
        assert out.shape == (16, 3, 28, 28) and out.dtype == torch.float32 and torch.isfinite(out).all()


# --- the in-memory loader ------------------------------------------------------------------


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("preset", ["light", "paper", "tutorial"])
def test_in_memory_loader_replays_epochs_exactly(preset):
    data = _toy(size=12, channels=3)
    make = lambda: InMemoryLoader(data, 16, train=True, augment=AugmentConfig.preset(preset), output_shape=(3, 20, 20), seed=7)  # noqa: E731
    loader = make()
    assert len(loader) == 6  # 100 // 16, the last partial batch dropped
    first, replay, resumed = _batches(loader, 3), _batches(loader, 3), _batches(make(), 3)
    for (x1, y1), (x2, y2), (x3, y3) in zip(first, replay, resumed):
        assert torch.equal(x1, x2) and torch.equal(x1, x3) and torch.equal(y1, y2) and torch.equal(y1, y3)
    assert first[0][0].shape == (16, 3, 20, 20) and first[0][0].is_contiguous(memory_format=torch.channels_last)
    other = _batches(loader, 4)
    assert not torch.equal(first[0][1], other[0][1]) and not torch.equal(first[0][0], other[0][0])


def test_in_memory_evaluation_is_exact_normalisation():
    data = _toy(counts=(7, 6), size=8)
    loader = InMemoryLoader(data, 5, train=False, augment=AugmentConfig.preset("paper"), output_shape=(1, 7, 7), channels_last=False)
    assert len(loader) == 3  # 13 images, the last batch of 3 kept
    images = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(labels, data.labels)
    expected = (data.images[:, :, :7, :7].float() / 255 - 0.5) / 0.25  # centre 7/8 crop (round(8 * 0.875) = 7) at offset 0
    assert torch.allclose(images, expected, atol=1e-6)


def test_sharding_by_rank_is_disjoint_and_covering():
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    shares = [shard_indices(order, rank, 4, drop_remainder=True) for rank in range(4)]
    assert all(len(share) == 25 for share in shares)
    union = torch.cat(shares)
    assert len(set(union.tolist())) == 100 and set(union.tolist()) == set(order[:100].tolist())
    shares = [shard_indices(order, rank, 4, drop_remainder=False) for rank in range(4)]
    assert sorted(torch.cat(shares).tolist()) == list(range(103))
    # through the loader: the ranks of one epoch see disjoint images, as many batches each
    data = _toy(counts=(50, 50))
    seen = []
    for rank in range(3):
        loader = InMemoryLoader(data, 8, train=True, augment=None, seed=5, rank=rank, world_size=3, channels_last=False)
        loader.set_epoch(2)
        assert len(loader) == 4  # 100 // 3 = 33 images, 4 whole batches of 8
        seen.append({int(i) for i in loader.indices()})
    assert all(len(s) == 33 for s in seen) and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])



@pytest.mark.parametrize("count", [9, 10, 11])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("train", [True, False])
def test_both_loaders_count_batches_as_they_draw_them(count, world_size, train):
    """``BatchLoader``'s one count of images per rank matches what each path's sampler yields."""
    data = _toy(counts=(count - count // 2, count // 2))
    samples = [(f"{i}.png", label) for i, label in enumerate(data.labels.tolist())]
    for rank in range(world_size):
        in_memory = InMemoryLoader(data, 2, train=train, rank=rank, world_size=world_size)
        streaming = StreamingLoader(samples, data.classes, 2, train=train, mean=(0.5,), std=(0.5,), rank=rank,
                                    world_size=world_size, num_workers=0)
        for loader, drawn in ((in_memory, in_memory.indices()), (streaming, list(streaming._sampler()))):
            assert isinstance(loader, BatchLoader) and loader.num_images == count
            assert loader.num_samples() == len(drawn)
            expected = len(drawn) // 2 if train else math.ceil(len(drawn) / 2)  # drop_last when training
            assert len(loader) == expected
        assert in_memory.skipped == streaming.skipped == 0 and in_memory.skipped_files == []

# --- the streaming path --------------------------------------------------------------------


def _image_folder(root: Path) -> None:
    """train/ and val/ with JPEG and PNG images of two classes, one corrupt JPEG and one text file."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 4), ("val", 2)):
        for label, name in enumerate(("n02084071", "n02121808")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = torch.randint(0, 256, (3, 30 + 4 * i, 40), dtype=torch.uint8, generator=generator)
                if i % 2:
                    (folder / f"{i}.png").write_bytes(png_bytes(image))
                else:
                    (folder / f"{i}.JPEG").write_bytes(jpeg_bytes(image))
    good = (root / "train" / "n02084071" / "0.JPEG").read_bytes()
    (root / "train" / "n02084071" / "broken.JPEG").write_bytes(good[: len(good) // 2])  # truncated
    (root / "train" / "n02121808" / "notes.txt").write_text("not an image")
    (root / "LOC_synset_mapping.txt").write_text("n02084071 dog, domestic dog\nn02121808 domestic cat, house cat\n")


def test_streaming_skips_and_counts_unreadable_files(tmp_path):
    _image_folder(tmp_path / "imagenet")
    loaders = build_loaders(
        "imagenet", LoaderOptions(data_dir=tmp_path, batch_size=5, eval_batch_size=4, output_shape=(3, 24, 24),
                                  augment=parse_augment("paper"), num_workers=2, seed=0))
    assert loaders.classes == ["dog", "domestic cat"]
    batches = list(loaders.train)
    assert loaders.train.skipped == 2
    assert sorted(Path(f.split(" ")[0]).name for f in loaders.train.skipped_files) == ["broken.JPEG", "notes.txt"]
    assert sum(len(y) for _, y in batches) == 8 and len(loaders.train) == 2
    images, labels = batches[0]
    assert images.dtype == torch.float32 and images.shape[1:] == (3, 24, 24) and labels.dtype == torch.int64
    val = list(loaders.val)
    assert loaders.val.skipped == 0 and torch.cat([y for _, y in val]).tolist() == [0, 0, 1, 1]
    assert loaders.test is loaders.val  # ImageNet's test labels are not public
    # the same epoch replays exactly, whichever worker decodes which image
    again = list(loaders.train)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(batches, again))
    strict = build_loaders("imagenet", LoaderOptions(data_dir=tmp_path, batch_size=4, output_shape=(3, 24, 24),
                                                     num_workers=0, strict=True))
    with pytest.raises(AlexNetError, match=r"(broken\.JPEG|notes\.txt)"):
        list(strict.train)


def test_folder_without_splits_and_class_names(tmp_path):
    _image_folder(tmp_path)
    loaders = build_loaders("folder", LoaderOptions(data_dir=tmp_path / "train", batch_size=3, output_shape=(1, 16, 16),
                                                    val_size=4, num_workers=0))
    assert loaders.classes == ["n02084071", "n02121808"]  # a plain folder keeps its directory names
    assert len(loaders.val.samples) == 4 and len(loaders.test.samples) == 1 and len(loaders.train.samples) == 5
    batches = list(loaders.val)
    assert all(x.shape[1:] == (1, 16, 16) for x, _ in batches)  # RGB files to a one-channel model
    assert sum(len(y) for _, y in batches) + loaders.val.skipped == 4
    assert readable_class_names(tmp_path / "nowhere" / "x", ["n1"]) == ["n1"]
    with pytest.raises(AlexNetError, match="--data-dir"):
        build_loaders("folder")



# --- one evaluation split alone ----------------------------------------------------------------


def _same_batches(one, other) -> None:
    pairs = list(zip(one, other, strict=True))
    assert pairs and len(one) == len(other)
    for (images, labels), (expected_images, expected_labels) in pairs:
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


@needs_fashion_mnist
def test_eval_loader_on_fashion_mnist_equals_build_loaders(monkeypatch):
    options = dict(output_shape=(3, 24, 24), augment=parse_augment("paper"), seed=3, normalization=((0.5,), (0.25,)))
    loaders = build_loaders("fashion-mnist", LoaderOptions(batch_size=100, eval_batch_size=1000, val_size=2_000,
                                                           **options))
    loaded = []
    real_load = loaders_module.load_tensors

    def load_tensors(name, split, **kwargs):
        loaded.append(split)
        return real_load(name, split, **kwargs)

    monkeypatch.setattr(loaders_module, "load_tensors", load_tensors)

    test, classes, info = build_eval_loader("fashion-mnist", "test", LoaderOptions(batch_size=1000, val_size=2_000,
                                                                                   **options))
    assert loaded == ["test"]  # the training set is neither loaded nor moved to the device
    assert classes == loaders.classes and info == loaders.info and test.num_images == 10_000
    _same_batches(test, loaders.test)

    loaded.clear()
    val, classes, _ = build_eval_loader("fashion-mnist", "val", LoaderOptions(batch_size=1000, val_size=2_000,
                                                                              **options))
    assert loaded == ["train"] and classes == loaders.classes
    assert len(val.labels) == 2_000 and val.images.shape[0] == 2_000  # only the held-out images are held
    _same_batches(val, loaders.val)

    loaded.clear()
    without, _, _ = build_eval_loader("fashion-mnist", "val", LoaderOptions(batch_size=1000, val_size=0, **options))
    assert loaded == ["test"]  # val_size=0: validation is the test split, as in build_loaders
    _same_batches(without, loaders.test)
    with pytest.raises(AlexNetError, match="split must be test, val or train"):
        build_eval_loader("fashion-mnist", "training", LoaderOptions(batch_size=10))
    # "train": the training images training took (after the validation split, then the subset), in order
    loader, _, _ = build_eval_loader("fashion-mnist", "train", LoaderOptions(batch_size=1000, val_size=5000, subset=0.1,
                                                                             seed=3, augment=parse_augment("none"),
                                                                             channels_last=False))
    trained = build_loaders("fashion-mnist", LoaderOptions(batch_size=1000, val_size=5000, subset=0.1, seed=3,
                                                           augment=parse_augment("none"), channels_last=False)).train
    assert loader.num_images == trained.num_images == 5_500
    seen = torch.cat([labels for _, labels in loader])
    assert torch.equal(seen, trained.labels.cpu())  # every training image once, in order: none dropped
    assert torch.equal(loader.images, trained.images)


@pytest.mark.parametrize("layout", ["train-val", "train-val-test", "flat"])
def test_eval_loader_on_a_folder_equals_build_loaders(tmp_path, monkeypatch, layout):
    _image_folder(tmp_path / "data")
    root = tmp_path / "data"
    if layout == "train-val-test":  # a test split of its own: the validation images but one
        shutil.copytree(root / "val", root / "test")
        (root / "test" / "n02084071" / "0.JPEG").unlink()
    if layout == "flat":
        root = root / "train"
    options = dict(data_dir=root, output_shape=(3, 24, 24), augment=parse_augment("paper"), val_size=4, seed=1,
                   num_workers=0)
    loaders = build_loaders("folder", LoaderOptions(batch_size=3, eval_batch_size=3, **options))
    listed = []
    real_index = loaders_module.index_folder

    def index_folder(folder, *args):
        listed.append(folder.name)
        return real_index(folder, *args)

    monkeypatch.setattr(loaders_module, "index_folder", index_folder)
    for split, expected in (("test", loaders.test), ("val", loaders.val)):
        listed.clear()
        loader, classes, info = build_eval_loader("folder", split, LoaderOptions(batch_size=3, **options))
        assert classes == loaders.classes == ["n02084071", "n02121808"] and info.name == "folder"
        assert loader.samples == expected.samples
        if layout != "flat":
            assert "train" not in listed  # the training files are not listed
        _same_batches(loader, expected)
    if layout == "train-val-test":
        assert loaders.test.num_images == 3 and loaders.val.num_images == 4

# --- the package's shape -------------------------------------------------------------------


def test_data_modules_import_one_way():
    """Each module of alexnet.data imports its siblings at the top, and those imports form no circle.

    A circle would have to be hidden by an import inside a function; only heavy optional libraries
    (matplotlib) are imported there.
    """
    import ast

    import alexnet.data

    folder = Path(alexnet.data.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        module = path.stem
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                graph[module] |= {name.split(".")[0] for name in names}
        for function in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.level >= 1:
                    what = node.module or ", ".join(alias.name for alias in node.names)
                    pytest.fail(f"{module}.{function.name} imports {what} inside a function")
    graph.pop("__init__")

    def visit(module, trail):
        assert module not in trail, f"import circle: {' -> '.join((*trail, module))}"
        for imported in graph.get(module, ()):
            visit(imported, (*trail, module))

    for module in graph:
        visit(module, ())
