"""Bad input to the data and report paths: unreadable, empty, linked and looping folders, 16-bit and
oversized images, read-only caches, broken run folders, and fuzzed dataset files. Each must end in
``AlexNetError`` (or be accepted as valid), never in another exception, a hang or a huge allocation."""

import contextlib
import json
import os
import pickle
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet import AlexNetError
from alexnet.data import LoaderOptions, StreamingLoader, build_loaders, index_folder, load_tensors, parse_augment
from alexnet.data.images import decode

from test_data import write_idx_dataset
from image_files import jpeg_bytes, png_bytes  # tests/ is on the path (pytest's prepend import mode)

NOBODY = 65534


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Decoded tensors and colour PCAs go to this test's cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ALEXNET_DATA", raising=False)


# --- writers ----------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, *, bit_depth: int, colour_type: int, row: bytes) -> None:
    """A PNG whose every row (after the filter byte 0) is ``row``, compressed as it is streamed: a
    30,000 x 30,000 image costs a fraction of a second and a few hundred KB on disk."""
    compressor = zlib.compressobj(9)
    line = b"\x00" + row
    data = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
                     + png_chunk(b"IEND", b""))


def solid_png(path: Path, colour, size=(24, 20)) -> None:
    image = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, *size).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image))


def class_tree(root: Path, classes=("cat", "dog"), per_class: int = 3) -> None:
    for label, name in enumerate(classes):
        for index in range(per_class):
            solid_png(root / name / f"{index}.png", (60 * label + 10 * index, 100, 200))


@pytest.fixture
def open_tmp():
    """A temporary folder every user may enter: pytest's own is private to root."""
    path = Path(tempfile.mkdtemp(prefix="alexnet-robust-"))
    path.chmod(0o755)
    yield path
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path)


def as_nobody(function, *args) -> tuple[str, str]:
    """Run ``function(*args)`` in a forked child that dropped root for ``nobody``, whom file modes
    bind (root reads any folder whatever its mode); returns (outcome, message)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                function(*args)
                result = ("ok", "")
            except Exception as error:
                result = (type(error).__name__, str(error))
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(data))


def index_outcome(root: Path) -> tuple[str, str]:
    if os.geteuid() == 0:
        return as_nobody(index_folder, root)
    try:
        index_folder(root)
    except AlexNetError as error:
        return ("AlexNetError", str(error))
    return ("ok", "")


# --- class folders: unreadable, empty, linked ------------------------------------------------


@pytest.mark.parametrize("unreadable", ["dog", "dog/nested"])
def test_an_unreadable_folder_is_an_error_not_zero_images(open_tmp, unreadable):
    class_tree(open_tmp)
    solid_png(open_tmp / "dog" / "nested" / "deep.png", (1, 2, 3))
    assert index_outcome(open_tmp) == ("ok", "")  # the same tree, readable, as the same user
    (open_tmp / unreadable).chmod(0o000)
    outcome, message = index_outcome(open_tmp)
    assert outcome == "AlexNetError"
    assert f"cannot list folder {open_tmp / unreadable} (Permission denied)" in message and "chmod" in message


def test_an_empty_training_class_is_an_error(tmp_path):
    class_tree(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("hidden files are no images")
    with pytest.raises(AlexNetError, match=f"class folder {tmp_path / 'empty'} has no files"):
        index_folder(tmp_path)
    # a validation folder may lack images of a class: it is indexed with the training classes
    samples, classes = index_folder(tmp_path, ["cat", "dog", "empty"])
    assert classes == ["cat", "dog", "empty"] and sorted({label for _, label in samples}) == [0, 1]


def test_one_class_is_refused_before_training(tmp_path):
    class_tree(tmp_path / "train", classes=("cat",), per_class=4)
    class_tree(tmp_path / "val", classes=("cat",), per_class=2)
    with pytest.raises(AlexNetError, match=re.escape(f"{tmp_path / 'train'}: one class folder ('cat'); a classifier needs at least 2")):
        build_loaders("folder", LoaderOptions(data_dir=tmp_path, batch_size=2, output_shape=(3, 16, 16), num_workers=0))
    with pytest.raises(AlexNetError, match="at least 2 classes"):
        build_loaders("folder", LoaderOptions(data_dir=tmp_path / "train", batch_size=2, output_shape=(3, 16, 16),
                                              num_workers=0))


def test_links_are_followed_but_not_to_the_root_or_in_loops(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    class_tree(data)
    class_tree(elsewhere, classes=("bird",), per_class=2)
    (data / "bird").symlink_to(elsewhere / "bird")  # datasets assembled from links are fine
    (data / "cat" / "more").symlink_to(elsewhere / "bird")
    samples, classes = index_folder(data)
    assert classes == ["bird", "cat", "dog"]
    assert [Path(path).relative_to(data).as_posix() for path, label in samples if label == 1] == [
        "cat/0.png", "cat/1.png", "cat/2.png", "cat/more/0.png", "cat/more/1.png"]

    for link, target, expected in (
        (data / "root", Path("/"), f"leads to /, the data folder {data} or a folder above it"),
        (data / "dog" / "everything", Path("/"), "leads to /, the data folder"),
        (data / "dog" / "up", tmp_path, f"leads to {tmp_path}, the data folder"),
        (data / "dog" / "self", data, f"leads to {data}, the data folder"),
        (data / "dog" / "loop", data / "dog", f"leads back to {data / 'dog'}, a folder it is inside of"),
        (data / "dog" / "a" / "loop", data / "dog", "a symbolic link loop"),
    ):
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(target)
        with pytest.raises(AlexNetError, match=f"^{re.escape(str(link))} ") as error:
            index_folder(data)
        assert expected in str(error.value)
        link.unlink()
    # a loop between two folders outside the data folder, entered through a link
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "to-y").symlink_to(tmp_path / "y")
    (tmp_path / "y" / "to-x").symlink_to(tmp_path / "x")
    (data / "dog" / "x").symlink_to(tmp_path / "x")
    with pytest.raises(AlexNetError, match="symbolic link loop"):
        index_folder(data)


# --- image files: 16-bit, oversized -----------------------------------------------------------


def test_16_bit_pngs_are_scaled_to_8_bits_and_batch_with_8_bit_ones(tmp_path):
    grey = np.full((24, 20), 0xABCD, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")  # Pillow's mode "I;16"
    with Image.open(tmp_path / "grey16.png") as grey16:
        assert grey16.mode == "I;16"
    # RGB at 16 bits per channel (Pillow cannot write it): red 0xFFFF, green 0x8000, blue 0x0100
    write_png(tmp_path / "rgb16.png", 20, 24, bit_depth=16, colour_type=2, row=bytes.fromhex("ffff80000100") * 20)
    solid_png(tmp_path / "rgb8.png", (7, 8, 9))
    expected = {"grey16.png": (0xAB, 0xAB, 0xAB), "rgb16.png": (0xFF, 0x80, 0x01), "rgb8.png": (7, 8, 9)}
    for name, colour in expected.items():
        image = decode(str(tmp_path / name))
        assert image.dtype == torch.uint8 and image.shape == (3, 24, 20)
        assert image[:, 5, 5].tolist() == list(colour)

    samples = [(str(tmp_path / name), 0) for name in expected]
    for subset in (samples, samples[:2]):  # mixed in one batch; and 16-bit files only
        loader = StreamingLoader(subset, ["a"], 3, train=False, mean=(0, 0, 0), std=(1, 1, 1),
                                 output_shape=(3, 16, 16), num_workers=0)
        (images, labels), = list(loader)
        assert loader.skipped == 0 and len(labels) == len(subset)
        centre = (images[:, :, 8, 8] * 255).round().long().tolist()
        assert centre == [list(expected[Path(path).name]) for path, _ in subset]


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    # The report's file: 30,000 x 30,000 pixels (2.7 GB as RGB) in a few hundred KB.
    bomb = tmp_path / "bomb.png"
    write_png(bomb, 30_000, 30_000, bit_depth=1, colour_type=0, row=bytes(30_000 // 8))
    assert bomb.stat().st_size < 1_000_000
    # 100 frames of 1,000 x 1,000: torchvision decodes every frame of a GIF (300 MB)
    frames = [Image.new("P", (1000, 1000), index % 2) for index in range(100)]
    frames[0].save(tmp_path / "frames.gif", save_all=True, append_images=frames[1:])
    solid_png(tmp_path / "good.png", (1, 2, 3))
    samples = [(str(tmp_path / name), 0) for name in ("good.png", "bomb.png", "frames.gif")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    loader = StreamingLoader(samples, ["a"], 3, train=False, mean=(0, 0, 0), std=(1, 1, 1),
                             output_shape=(3, 16, 16), num_workers=0)
    (images, labels), = list(loader)
    assert len(labels) == 1 and loader.skipped == 2
    assert loader.skipped_files[0].startswith(f"{bomb} (900,000,000 pixels is over the limit of 89,478,485")
    assert "1000x1000 pixels x 100 frames is over the limit" in loader.skipped_files[1]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # nothing near 2.7 GB
    strict = StreamingLoader(samples, ["a"], 3, train=False, mean=(0, 0, 0), std=(1, 1, 1),
                             output_shape=(3, 16, 16), num_workers=0, strict=True)
    with pytest.raises(AlexNetError, match="cannot read image .*bomb.png .900,000,000 pixels is over the limit"):
        list(strict)


# --- caches that cannot be written ------------------------------------------------------------


def mnist_raw(root: Path, train: int = 30, test: int = 10) -> Path:
    """Small IDX files in torchvision's layout, <root>/MNIST/raw/; image i of class y is all 20y."""
    return write_idx_dataset(root, "MNIST", train, test, level=20)


def test_a_cache_folder_that_cannot_be_written_costs_only_time(tmp_path, monkeypatch, caplog):
    # As root no file mode stops a write, but nothing makes a folder under a regular file.
    (tmp_path / "afile").write_text("a file where the cache folder's parent should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile" / "cache"))
    mnist_raw(tmp_path / "data")
    for _ in range(2):  # nothing was cached, so the second load decodes again
        train = load_tensors("mnist", "train", data_dir=tmp_path / "data")
        assert len(train) == 30 and train.pca is not None
        assert torch.equal(train.images[:, 0, 3, 3], (train.labels * 20).to(torch.uint8))
    assert "not caching" in caplog.text
    class_tree(tmp_path / "folder", per_class=4)  # the colour PCA of streamed images is cached too
    loaders = build_loaders("folder", LoaderOptions(data_dir=tmp_path / "folder", augment=parse_augment("paper"),
                                                    batch_size=2, output_shape=(3, 16, 16), num_workers=0, val_size=2,
                                                    test_size=0))
    assert loaders.train.pca is not None and sum(len(y) for _, y in loaders.train) == 6
    assert not list(tmp_path.glob("afile*/**/*.tmp")) and (tmp_path / "afile").is_file()


# --- the report of a small folder run, and of damaged run folders -----------------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """One epoch of the 32x32 model on 36 images in three class folders: far fewer than one batch
    (500) of the report's nearest-neighbour pool."""
    from alexnet.report import build_report
    from alexnet.training import TrainConfig, train

    base = tmp_path_factory.mktemp("folder-run")
    generator = torch.Generator().manual_seed(0)
    for label in range(3):
        for index in range(12):
            image = (torch.rand(3, 40, 40, generator=generator) * 60 + 80 * label).to(torch.uint8)
            path = base / "data" / f"class{label}" / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(image))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(base / "cache"))
        # no test split apart from validation (test_size 0): 32 training images, 4 held out
        run = train(TrainConfig(model="alexnet_small32", dataset="folder", data_dir=str(base / "data"), epochs=1,
                                test_size=0, batch_size=8, eval_batch_size=16, quiet=True, out=str(base / "runs"),
                                name="tiny"))
        build_report(run.directory)  # as `alexnet train` does when training returns
    return run.directory


def page_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_report_of_a_folder_run_smaller_than_one_batch(folder_run):
    # the report written at the end of training has every figure, neighbours from the 32 training images
    page = page_text(folder_run / "report.html")
    assert 'id="figure-neighbours"' in page and "among 32 training images" in page
    assert "Not in this report" not in page
    with Image.open(folder_run / "figures" / "neighbours.png") as image:
        assert min(image.size) > 100


def damaged_copy(run: Path, target: Path, **files: bytes | str) -> Path:
    """The run folder without its weights (no model figures: fast), with ``files`` replaced."""
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("model.safetensors", "checkpoints", "figures",
                                                                 "report.html"))
    config = yaml.safe_load((target / "config.yaml").read_text())
    config.pop("dataset")  # no augmentation preview either
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    for name, content in files.items():
        path = target / name.replace("_", ".", 1)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return target


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n" for level in range(8))
MERGE_BOMB = "m0: &m0 {k: 0}\n" + "".join(f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}]}}\n"
                                        for level in range(1, 40))


@pytest.mark.parametrize("content, message", [
    (b"\x00\xff\xfe\x00binary", "is not text (binary or damaged)"),
    ("model: [unclosed\n", "is not valid YAML"),
    ("- a list\n- of things\n", "holds ['a list', 'of things'], not the run's settings"),
    ("dataset: [" + "x" * 100_000 + "]\n", "dataset is ['xxxxxx"),
    ("seed: true\n", "seed is True, not an integer"),
    (BILLION_LAUGHS, "expands to more than 10,000 values"),
    (MERGE_BOMB, "expands to more than 10,000 values"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ("a: 1\n---\nb: 2\n", "is not valid YAML"),
])
def test_report_names_a_damaged_config(folder_run, tmp_path, content, message):
    from alexnet.report import build_report

    run = damaged_copy(folder_run, tmp_path / "run", config_yaml=content)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AlexNetError, match=re.escape(message)) as error:
        build_report(run)
    assert str(error.value).startswith(str(run / "config.yaml")) and len(str(error.value)) < 400
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # KiB


def test_report_leaves_out_unreadable_metrics_and_evaluation(folder_run, tmp_path):
    from alexnet.report import build_report

    good = (folder_run / "metrics.jsonl").read_text().strip()
    metrics = "\n".join([good, "not json", "[1, 2]", '{"epoch": "one"}', '{"epoch": 1e999, "train_loss": 1}',
                         good.replace('"epoch": 1', '"epoch": 2')])
    run = damaged_copy(folder_run, tmp_path / "run", metrics_jsonl=metrics, evaluation_json="{\"class_names\": [")
    page = page_text(build_report(run))
    assert "4 of 6 lines of metrics.jsonl are unreadable and left out (line 2: not JSON; line 3: not an object" in page
    assert "evaluation.json is unreadable (not JSON), so it is left out" in page
    assert 'id="figure-training_curves"' in page and 'data-key="epochs" data-value="2"' in page

    wrong_shapes = json.loads((folder_run / "evaluation.json").read_text())
    wrong_shapes["confusion_matrix"] = [[1, 2], [3, 4]]  # three classes
    for name, content in (("metrics.jsonl", b"\xff\xfe\x00\x01" * 100), ("evaluation.json", json.dumps(wrong_shapes))):
        (run / name).write_bytes(content) if isinstance(content, bytes) else (run / name).write_text(content)
    page = page_text(build_report(run))
    assert "metrics.jsonl is unreadable (not text: binary or damaged), so it is left out" in page
    assert "evaluation.json is unreadable (no 3x3 confusion matrix of counts)" in page


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.fixed_dictionaries({}, optional={key: JSON_VALUES | st.floats() for key in (
        "epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "epoch_seconds")}), max_size=3),
    evaluation=st.fixed_dictionaries({}, optional={
        "class_names": st.lists(st.text(max_size=4), max_size=3) | JSON_VALUES,
        "confusion_matrix": st.lists(st.lists(st.integers(-1, 3), min_size=2, max_size=2), min_size=2, max_size=2)
        | JSON_VALUES,
        **{key: st.lists(st.floats(), min_size=2, max_size=2) | JSON_VALUES for key in ("precision", "recall", "f1")},
        **{key: st.floats() | JSON_VALUES for key in ("count", "top1", "loss", "macro_f1")},
    }),
)
def test_fuzzed_metrics_and_evaluation_are_shown_or_left_out(folder_run, tmp_path, rows, evaluation):
    from alexnet.report import html

    run = tmp_path / "fuzzed"
    if not run.exists():
        damaged_copy(folder_run, run)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    files = html.read_run(run)
    dropped = len(rows) - len(files.history)
    assert (f"{dropped} of {len(rows)} lines of metrics.jsonl are unreadable" in " ".join(files.missing)) == (dropped > 0)
    html.final_metrics(files)
    html._metrics_table(files)
    if files.evaluation is not None:
        html._per_class_table(files.evaluation)


# --- the augmentation preview's arguments -----------------------------------------------------


@pytest.mark.slow
def test_preview_refuses_bad_arguments_before_loading_anything(tmp_path, monkeypatch):
    from alexnet.data import preview

    class_tree(tmp_path / "data")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir.png").mkdir()
    real_samples = preview._samples

    def no_work(*args):
        raise AssertionError("loaded images before refusing the arguments")

    monkeypatch.setattr(preview, "_samples", no_work)
    for arguments, message in (
        (dict(count=0), "count must be a positive number of images (rows), got 0"),
        (dict(count=-3), "got -3"),
        (dict(count=2.5), "got 2.5"),
        (dict(count=True), "got True"),
        (dict(out=tmp_path / "x.txt"), ".txt is not an image format; end the name in .png"),
        (dict(out=tmp_path / "x"), "no suffix is not an image format"),
        (dict(out=tmp_path / "x.rgba"), ".rgba is not an image format"),
        (dict(out=tmp_path / "adir.png"), "is a folder; give a file name"),
        # a missing folder is made, as for every output (runs.check_output); a file in its way is refused
        (dict(out=tmp_path / "afile" / "x.png"), f"cannot create the folder {tmp_path / 'afile'}"),
    ):
        options = {"out": tmp_path / "ok.png", "count": 2, **arguments}
        with pytest.raises(AlexNetError, match=re.escape(message)):
            preview.augment_preview("folder", data_dir=tmp_path / "data", **options)
    monkeypatch.setattr(preview, "_samples", real_samples)
    for name in ("ok.png", "ok.JPG", "ok.svg"):
        path = preview.augment_preview("folder", tmp_path / name, data_dir=tmp_path / "data", count=2)
        assert path == tmp_path / name and path.stat().st_size > 1000
    with Image.open(tmp_path / "ok.png") as image:
        assert image.format == "PNG"


# --- summaries of any input shape -------------------------------------------------------------


@pytest.mark.slow
def test_summary_judges_the_input_shape_without_allocating_it():
    from alexnet import build_model, summarize

    paper, adaptive = build_model("alexnet_paper"), build_model("alexnet_owt")
    before = {name: tensor.clone() for name, tensor in paper.state_dict().items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # 16,000 x 16,000: 3 GB as one float image, a 3x3x256 grid of maps at the end, nothing allocated
    large = summarize(adaptive, (3, 16_000, 16_000))
    assert large.rows[0].output_shape == (64, 3999, 3999) and large.parameters == 61_100_840
    assert large.macs > 200 * 714_188_480  # about (16000 / 224)^2 times the 224x224 count
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB
    for model, shape, message in (
        (paper, (3, 20_000, 20_000), "input 20000x20000 is over 16,384 pixels a side"),
        (paper, (3, -5, 10), "input shape (3, -5, 10) has a side below 1"),
        (paper, (3, 0, 227), "has a side below 1"),
        (paper, (3, 227), "input shape must be three whole numbers (channels, height, width), got (3, 227)"),
        (paper, (3, 227.0, 227), "three whole numbers"),
        (paper, (1, 227, 227), "this model takes 3-channel images, got an input shape of 1 channel (give --input 3x227x227"),
        (paper, (3, 200, 200), "this model takes 227x227 images, got 200x200"),  # the model's own check
        (adaptive, (3, 30, 30), "input (30, 30) is too small for this model"),
        (torch.nn.Conv2d(3, 4, 5), (3, 2, 2), "input 3x2x2 does not fit Conv2d (Calculated padded input size"),
    ):
        with pytest.raises(AlexNetError, match=re.escape(message)):
            summarize(model, shape)
    # the model itself is untouched: same device, same weights, still runs
    assert all(torch.equal(before[name], tensor) for name, tensor in paper.state_dict().items())
    assert paper.eval()(torch.zeros(1, 3, 227, 227)).shape == (1, 1000)


# --- fuzzed dataset files ---------------------------------------------------------------------
# Each example starts from valid files, damages one, and loads it: the load succeeds with data of
# the right shape, or ends in AlexNetError; any other exception fails the test. Every example gets
# an empty cache, so that nothing decoded earlier is served instead of the damaged files.


@contextlib.contextmanager
def fresh_cache(patch: pytest.MonkeyPatch):
    """An empty ``XDG_CACHE_HOME`` for one example, removed after it."""
    with tempfile.TemporaryDirectory(prefix="alexnet-fuzz-cache-") as cache:
        patch.setenv("XDG_CACHE_HOME", cache)
        yield


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_DAMAGE = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 15), st.integers(0, 255)),  # magic, type, dimensions, sizes
    st.tuples(st.just("dimension"), st.integers(0, 2), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("length"), st.integers(-40, 40), st.just(0)),  # cut short or grown
    st.tuples(st.just("replace"), st.binary(max_size=64), st.just(0)),
)


@settings(max_examples=100, deadline=None)
@given(file=st.sampled_from(IDX_NAMES), damage=IDX_DAMAGE)
def test_fuzzed_idx_files_load_or_raise(file, damage):
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch, fresh_cache(patch):
        path = mnist_raw(Path(tmp)) / file
        data = bytearray(path.read_bytes())
        kind, where, value = damage
        if kind == "byte":
            data[min(where, len(data) - 1)] = value
        elif kind == "dimension":
            dims = data[3]
            data[4 + 4 * min(where, dims - 1): 8 + 4 * min(where, dims - 1)] = struct.pack(">I", value)
        elif kind == "length":
            data = data[:where] if where < 0 else data + bytes(where)
        else:
            data = bytearray(where)
        path.write_bytes(bytes(data))
        try:
            train = load_tensors("mnist", "train", data_dir=tmp)
        except AlexNetError as error:
            assert str(Path(tmp)) in str(error) and "get the dataset again" in str(error)
            return
        # accepted: only a change that keeps the files valid (a pixel, a label within 0..9)
        assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
        assert len(train) == len(train.labels) and int(train.labels.max()) < 10


@pytest.mark.parametrize("tv_class_name", ["CIFAR10", "CIFAR100"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.binary(max_size=4096) | st.builds(lambda entry: pickle.dumps(entry), JSON_VALUES))
def test_fuzzed_cifar_batches_are_refused_before_unpickling(monkeypatch, tv_class_name, batch):
    import torchvision.datasets.cifar as cifar

    def unpickled(*args, **kwargs):
        raise AssertionError("a batch file was unpickled before its md5 was checked")

    monkeypatch.setattr(cifar.pickle, "load", unpickled)
    tv_class = getattr(cifar, tv_class_name)
    name = tv_class_name.lower()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name / tv_class.base_folder
        folder.mkdir(parents=True)
        for file, _ in (*tv_class.train_list, *tv_class.test_list, (tv_class.meta["filename"], None)):
            (folder / file).write_bytes(batch)
        with fresh_cache(monkeypatch), pytest.raises(
                AlexNetError, match=re.escape(f"{folder}: files missing or damaged, their md5 sums")):
            load_tensors(name, "train", data_dir=tmp)


@pytest.fixture(scope="module")
def flowers_folder(tmp_path_factory) -> Path:
    """All 1,360 files of Flowers-17, each an 8x8 JPEG."""
    from alexnet.data import flowers17
    jpg = tmp_path_factory.mktemp("flowers") / "flowers17" / "jpg"
    jpg.mkdir(parents=True)
    small = jpeg_bytes(torch.full((3, 8, 8), 100, dtype=torch.uint8))
    for index in range(1, flowers17.NUM_IMAGES + 1):
        (jpg / f"image_{index:04d}.jpg").write_bytes(small)
    return jpg


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=2048) | st.binary(max_size=512).map(lambda tail: b"\xff\xd8\xff\xe0" + tail))
def test_fuzzed_flowers17_file_is_named(flowers_folder, content):
    from alexnet.data import flowers17

    first = flowers_folder / f"image_{int(flowers17.split_indices('train')[0]) + 1:04d}.jpg"  # decoded first
    original = first.read_bytes()
    first.write_bytes(content)
    try:
        with pytest.MonkeyPatch.context() as patch, fresh_cache(patch):
            with pytest.raises(AlexNetError, match=re.escape(f"{first}: cannot decode")):
                load_tensors("flowers17", "train", data_dir=flowers_folder.parent.parent)
    finally:
        first.write_bytes(original)


def _damaged_images():
    good_png = png_bytes(torch.full((3, 12, 10), 50, dtype=torch.uint8))

    good_jpeg = jpeg_bytes(torch.full((3, 12, 10), 50, dtype=torch.uint8))
    return st.one_of(
        st.just(b""),
        st.binary(max_size=1024),
        st.sampled_from([good_png, good_jpeg]).flatmap(lambda good: st.integers(0, len(good) - 1).map(lambda n: good[:n])),
        st.tuples(st.sampled_from([good_png, good_jpeg]), st.integers(0, 200), st.integers(0, 255)).map(
            lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1:]),  # one byte changed
        # a PNG header declaring any size, without the pixels
        st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)).map(
            lambda size: good_png[:16] + struct.pack(">II", *size) + good_png[24:]),
    )


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(_damaged_images(), min_size=1, max_size=4))
def test_fuzzed_images_in_a_folder_are_skipped_and_counted(tmp_path, blobs):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    good = []
    for index in range(3):
        solid_png(folder / f"good{index}.png", (10, 20, 30 * index))
        good.append(str(folder / f"good{index}.png"))
    damaged = []
    for index, blob in enumerate(blobs):
        (folder / f"fuzzed{index}.png").write_bytes(blob)
        damaged.append(str(folder / f"fuzzed{index}.png"))
    samples = [(path, 0) for path in sorted(good + damaged)]
    options = dict(train=False, mean=(0, 0, 0), std=(1, 1, 1), output_shape=(3, 8, 8), num_workers=0)
    loader = StreamingLoader(samples, ["a"], 4, **options)
    decoded = sum(len(labels) for _, labels in loader)
    skipped = [failure.split(" (")[0] for failure in loader.skipped_files]
    assert decoded + loader.skipped == len(samples) and set(skipped) <= set(damaged)
    strict = StreamingLoader(samples, ["a"], 4, strict=True, **options)
    if skipped:
        with pytest.raises(AlexNetError, match="cannot read image .*fuzzed"):
            list(strict)
    else:
        assert sum(len(labels) for _, labels in strict) == len(samples)


@pytest.mark.slow
def test_a_png_with_damaged_pixels_is_skipped_not_a_crash(tmp_path):
    # torchvision 0.29's decode_png dies with SIGSEGV on these; the loader must skip and count them.
    good = png_bytes(torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8))
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF  # inside the compressed pixels: the chunk's CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(damaged))
    start = good.index(b"IDAT") - 4
    length = struct.unpack(">I", good[start:start + 4])[0]
    body = bytes(damaged[start + 8:start + 8 + length])  # the same damage behind a correct CRC
    (tmp_path / "zlib.png").write_bytes(good[:start] + png_chunk(b"IDAT", body) + good[start + 12 + length:])
    (tmp_path / "good.png").write_bytes(good)
    script = (
        "import sys; from alexnet.data import StreamingLoader\n"
        "samples = [(f'{sys.argv[1]}/{name}.png', 0) for name in ('good', 'crc', 'zlib')]\n"
        "loader = StreamingLoader(samples, ['a'], 3, train=False, mean=(0, 0, 0), std=(1, 1, 1),\n"
        "                         output_shape=(3, 8, 8), num_workers=0)\n"
        "print(sum(len(labels) for _, labels in loader), loader.skipped)\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]  # -11 where torchvision decoded them
    assert result.stdout.split() == ["1", "2"]
