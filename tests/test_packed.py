"""Packed data: a folder the test writes (real JPEGs) packed as WebDataset shards and read back,
every image once per epoch across ranks and DataLoader workers."""

import io
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from image_files import jpeg_bytes  # tests/ is on the path (pytest's prepend import mode)

from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.data import LoaderOptions, build_eval_loader, build_loaders, num_classes, parse_augment
from alexnet.data.loaders import pack_folder
from alexnet.data.packed import (INDEX_FILE, PackedIndex, _read_pieces, _shuffled, from_jpeg, from_stored, ppm_bytes,
                                 ranges_of, split_range)

CLASSES = 3
PER_CLASS = 14


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A flat tree of 3 class folders of 14 JPEGs each, 120x90, each class its own brightness, and
    one file that is no image."""
    root = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(0)
    for label in range(CLASSES):
        (root / f"class{label}").mkdir()
        for i in range(PER_CLASS):
            image = (torch.rand(3, 90, 120, generator=generator) * 60 + 80 * label).to(torch.uint8)
            (root / f"class{label}" / f"{i}.jpg").write_bytes(jpeg_bytes(image))
    (root / "class1" / "notes.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def packed(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "shards"
    index = pack_folder(folder, out, size=40, val_size=6, workers=1)
    return out, index


# webdataset's reader leaves each tar file it opened to the garbage collector to close
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_pack_writes_webdataset_shards_of_resized_images(packed):
    out, index = packed
    import webdataset

    assert index.classes == ["class0", "class1", "class2"] and index.size == 40 and index.skipped == 1
    # a flat tree: validation (6 asked for) and a test split apart from it (10%, stratified), the rest trained on
    assert index.images("val") == 6 and index.images("test") == 3
    assert index.images("train") + index.images("val") + index.images("test") == CLASSES * PER_CLASS
    assert "notes.jpg" in json.loads((out / INDEX_FILE).read_text())["skipped_files"][0]
    # webdataset's own reader reads the shards: the format is WebDataset's, not ours
    urls = [str(out / file) for file, _ in index.splits["train"]]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert len(samples) == index.images("train")
    for sample in samples:
        image = from_jpeg(sample["jpg"])
        assert min(image.shape[1:]) == 40 and image.shape[1:] == (40, 53)  # 120x90 -> 53x40
        label = int(sample["cls"])
        # the class is in the pixels: the brightness each class was written with survived packing
        assert 80 * label + 10 < image.float().mean() < 80 * label + 50
    assert index.pca is not None and index.pca.eigenvalues.shape == (3,)
    # on the 0..1 scale: the classes' brightness (40 to 200 of 255) varies by about 0.07 (was 255 x 255 times less)
    assert 0.02 < index.pca.eigenvalues[0] < 0.2
    # a folder packed in format 1, whose eigenvalues were 255 x 255 times too small, reads as this one
    values = json.loads((out / INDEX_FILE).read_text())
    old = dict(values, format=1, pca=dict(values["pca"], eigenvalues=[v / 255**2 for v in values["pca"]["eigenvalues"]]))
    (out / INDEX_FILE).write_text(json.dumps(old))
    try:
        torch.testing.assert_close(PackedIndex.read(out).pca.eigenvalues, index.pca.eigenvalues)
    finally:
        (out / INDEX_FILE).write_text(json.dumps(values))


def test_pack_refuses_a_folder_that_is_not_empty(folder, packed):
    out, _ = packed
    with pytest.raises(AlexNetError, match="not an empty folder"):
        pack_folder(folder, out, size=40)
    with pytest.raises(AlexNetError, match="no packed.json"):
        PackedIndex.read(out.parent)
    # nor a place inside the folder being packed, nor one that cannot be made
    with pytest.raises(AlexNetError, match="is inside .*, the folder being packed"):
        pack_folder(folder, folder / "class0" / "packed", size=40)
    assert not (folder / "class0" / "packed").exists()
    (out.parent / "a-file").write_text("not a folder")
    with pytest.raises(AlexNetError, match=r"cannot create .*a-file/packed \(Not a directory\); choose another place"):
        pack_folder(folder, out.parent / "a-file" / "packed", size=40)


def test_read_pieces_takes_exactly_the_range_asked(packed, tmp_path):
    out, index = packed
    shards = [(str(out / file), count) for file, count in index.splits["train"]]
    everything = [key for key, _, _ in _read_pieces(ranges_of(shards, 0, index.images("train")))]
    assert len(everything) == index.images("train") == len(set(everything))
    for start, stop in ((0, 5), (3, 17), (10, 36)):
        got = [key for key, _, _ in _read_pieces(ranges_of(shards, start, stop))]
        assert got == everything[start:stop]
    assert split_range(0, 10, 3) == [(0, 4), (4, 7), (7, 10)]


def _keys_of_epoch(loader) -> list[str]:
    """The keys of the images ``loader`` reads this epoch, over all its workers."""
    shards, start, stop = loader.rank_range()
    keys = []
    for low, high in split_range(start, stop, max(1, loader.num_workers)):
        keys += [key for key, _, _ in _read_pieces(ranges_of(shards, low, high))]
    return keys


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_each_image_is_read_once_per_epoch_across_ranks_and_workers(packed, world_size):
    out, index = packed
    total = index.images("train")
    for epoch in (0, 1):
        keys, lengths = [], set()
        for rank in range(world_size):
            loaders = build_loaders("folder", LoaderOptions(data_dir=out, batch_size=4, output_shape=(3, 32, 32),
                                                            rank=rank, world_size=world_size, num_workers=2, seed=1))
            loaders.train.set_epoch(epoch)
            keys += _keys_of_epoch(loaders.train)
            lengths.add(len(loaders.train))
        assert len(keys) == len(set(keys)) == total - total % world_size  # at most world-1 left out
        assert len(lengths) == 1  # every rank takes as many steps: DDP's all-reduces stay in step


def test_training_batches_from_packed_shards(packed):
    out, index = packed
    loaders = build_loaders("folder", LoaderOptions(data_dir=out, batch_size=8, output_shape=(3, 32, 32),
                                                    augment=parse_augment("paper"), num_workers=2, seed=0))
    assert num_classes("folder", out) == CLASSES and loaders.classes == index.classes
    seen = []
    for images, labels in loaders.train:
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last)
        seen += labels.tolist()
    assert len(seen) == len(loaders.train) * 8 == index.images("train") // 8 * 8
    # the replayed epoch is the same epoch, bit for bit
    first = next(iter(loaders.train))
    loaders.train.set_epoch(0)
    again = next(iter(loaders.train))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    # evaluation covers every held-out image once, in the last batch too
    val, classes, _ = build_eval_loader("folder", "val", LoaderOptions(data_dir=out, batch_size=4,
                                                                       output_shape=(3, 32, 32)))
    assert sum(len(labels) for _, labels in val) == index.images("val") == 6


@pytest.fixture(scope="module")
def packed_raw(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "raw"
    return out, pack_folder(folder, out, size=40, val_size=6, workers=1, encoding="raw")


# webdataset's reader leaves each tar file it opened to the garbage collector to close
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_raw_shards_hold_ppm_images_that_train_as_the_jpeg_ones(packed, packed_raw):
    import webdataset
    from PIL import Image

    (out, index), (raw, raw_index) = packed, packed_raw
    assert raw_index.encoding == "raw" and index.encoding == "jpeg" and raw_index.splits == index.splits
    sample = next(iter(webdataset.WebDataset([str(raw / raw_index.splits["train"][0][0])], shardshuffle=False)))
    assert set(sample) >= {"ppm", "cls"} and "jpg" not in sample
    # a standard PPM file: Pillow reads it as the same pixels the loader views without decoding
    image = from_stored(sample["ppm"])
    pillow = torch.from_numpy(np.array(Image.open(io.BytesIO(sample["ppm"])))).permute(2, 0, 1)
    assert image.shape == (3, 40, 53) and torch.equal(image, pillow)
    # the same images in the same order, so the same batches but for JPEG's rounding
    options = LoaderOptions(batch_size=8, output_shape=(3, 32, 32), augment=parse_augment("paper"), num_workers=2)
    jpeg_batch, jpeg_labels = next(iter(build_loaders("folder", replace(options, data_dir=out)).train))
    raw_batch, raw_labels = next(iter(build_loaders("folder", replace(options, data_dir=raw)).train))
    assert torch.equal(jpeg_labels, raw_labels)
    assert (jpeg_batch - raw_batch).abs().mean() < 0.1  # normalised units: about 1.5 levels of 255


def test_a_damaged_shard_says_so(packed_raw, tmp_path):
    import shutil

    raw, index = packed_raw
    damaged = tmp_path / "damaged"
    shutil.copytree(raw, damaged)
    shard = damaged / index.splits["train"][0][0]
    data = bytearray(shard.read_bytes())
    header = b"P6\n53 40\n255\n"  # every image is 53x40 (120x90 at 40); the first now claims 99x40
    start = data.index(header)
    data[start:start + len(header)] = b"P6\n99 40\n255\n"
    shard.write_bytes(bytes(data))
    loader = build_loaders("folder", LoaderOptions(data_dir=damaged, batch_size=4, output_shape=(3, 32, 32),
                                                   num_workers=0)).train
    with pytest.raises(AlexNetError, match="cannot be read .* pack the folder again"):
        list(loader)


def test_the_shuffle_buffer_is_bounded_by_count_and_by_bytes():
    items = [(str(i), bytearray(10), i) for i in range(50)]

    def first_out_after(size, max_bytes):  # how many items were read before the first came out
        consumed = []
        source = (consumed.append(item) or item for item in items)
        shuffled = _shuffled(source, size, torch.Generator().manual_seed(0), max_bytes)
        first = next(shuffled)
        read = len(consumed)
        assert sorted(item[2] for item in [first, *shuffled]) == list(range(50))  # each once
        return read

    assert first_out_after(20, None) == 21
    assert first_out_after(20, 35) == 4  # three items of 10 bytes fit in 35
    assert first_out_after(20, 5) == 2  # one is always held


def test_ppm_round_trips_and_a_truncated_one_is_refused():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    data = ppm_bytes(image)
    assert data.startswith(b"P6\n7 5\n255\n") and torch.equal(from_stored(data), image)
    with pytest.raises(ValueError, match="7x5"):
        from_stored(data[:-3])


def test_subset_takes_a_fraction_of_every_shard(packed):
    out, index = packed
    loaders = build_loaders("folder", LoaderOptions(data_dir=out, batch_size=2, output_shape=(3, 32, 32), subset=0.5,
                                                    num_workers=0))
    assert loaders.train.num_images == sum(round(count * 0.5) for _, count in index.splits["train"])


def test_data_pack_command(folder, tmp_path, capsys):
    out = tmp_path / "packed"
    assert main(["data", "pack", str(folder), "--out", str(out), "--size", "36", "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "train 34 images" in printed and "val 4 images" in printed and "test 4 images" in printed
    assert "--data-dir" in printed
    # two decoding processes (the default is one per CPU this process may use: one per test worker)
    assert main(["data", "pack", str(folder), "--out", str(tmp_path / "no-test"), "--test-size", "0",
                 "--workers", "2"]) == 0
    printed = capsys.readouterr()
    assert "train 38 images" in printed.out
    # its progress, to a file (not a terminal): whole lines, no redraws
    assert "\r" not in printed.err and "train: 39/39 images\n" in printed.err  # the unreadable file counted
    assert all(tarfile.is_tarfile(path) for path in out.glob("*.tar"))
    assert main(["data", "pack", str(folder), "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["data", "pack", str(folder), "--out", str(tmp_path / "raw"), "--encoding", "raw", "--workers", "1",
                 "--quiet"]) == 0
    assert "raw" in capsys.readouterr().out and list((tmp_path / "raw").glob("*.tar"))


@pytest.mark.slow
@pytest.mark.parametrize("shards", ["packed", "packed_raw"])
def test_train_reads_packed_shards(shards, request, tmp_path):
    out, _ = request.getfixturevalue(shards)
    assert main(["train", "--dataset", "folder", "--data-dir", str(out), "--model", "alexnet_small32",
                 "--epochs", "1", "--batch-size", "8", "--precision", "fp32", "--out", str(tmp_path),
                 "--name", "packed", "--quiet", "--no-report"]) == 0
    assert (tmp_path / "packed" / "model.safetensors").is_file()


def test_augment_preview_reads_packed_shards(packed, tmp_path):
    out, index = packed
    from PIL import Image

    from alexnet.data import preview

    images, names, pca = preview._samples("folder", out, 3)
    assert names == index.classes and images.shape == (3, 3, preview.PREVIEW_SIZE, preview.PREVIEW_SIZE)
    # the training images' colour PCA, as packed
    assert torch.equal(pca.eigenvalues, index.pca.eigenvalues) and torch.equal(pca.eigenvectors, index.pca.eigenvectors)
    path = preview.augment_preview("folder", tmp_path / "preview.png", data_dir=out, count=3, augment="hflip")
    with Image.open(path) as picture:
        assert picture.width > 3 * 64 and picture.height > 3 * 64


def test_pack_refuses_sizes_and_workers_out_of_range_and_leaves_nothing_when_stopped(folder, tmp_path, capsys):
    for flags, message in ((["--size", "20000"], "16 to 4,096 pixels (the paper's: 256); got 20,000"),
                           (["--size", "8"], "got 8"), (["--workers", "0"], "--workers must be at least 1")):
        assert main(["data", "pack", str(folder), "--out", str(tmp_path / "refused"), *flags]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()  # refused before any work

    def stopped(split, done, total):
        if done:
            raise KeyboardInterrupt

    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with pytest.raises(KeyboardInterrupt):
            pack_folder(folder, out, size=40, workers=1, progress=stopped)
        assert (not out.exists()) if out.name == "new" else list(out.iterdir()) == []  # as it was before
        assert pack_folder(folder, out, size=40, workers=1).images("train") > 0  # so the next try is taken
