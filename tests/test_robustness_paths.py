"""Paths and files that are not what they seem: symbolic links, non-UTF-8 names, pipes and FIFOs,
outputs that cannot or must not be written. Each case is made for real (links, FIFOs, names of
Latin-1 bytes) and goes through the command as a user runs it.
"""

import csv
import errno
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.data import images as image_files
from alexnet.models import build_model
from alexnet.predict import predict
from alexnet.runs import RunFolder, atomic_write, check_output
from alexnet.weights import WeightsMetadata, save_weights

DATA = Path(__file__).parent / "data"
LATIN1 = os.fsdecode(b"caf\xe9")  # a name of Latin-1 bytes, as Python holds it (caf\udce9)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Small grey weights whose classes include a name that is not UTF-8."""
    torch.manual_seed(0)
    model = build_model("alexnet_small28").eval()
    classes = (LATIN1, *(f"class {i}" for i in range(1, 10)))
    metadata = WeightsMetadata("alexnet_small28", {}, classes, (1, 28, 28), (0.2860,), (0.3530,),
                               dataset="fashion-mnist", precision="fp32")
    return save_weights(tmp_path_factory.mktemp("weights") / "small.safetensors", model, metadata)


def a_png(path: Path, shade: int = 120) -> Path:
    Image.new("RGB", (40, 30), (shade, 30, 200)).save(path)
    return path


# -- item 5: one guarded folder walker ---------------------------------------------------------------


@pytest.mark.parametrize("link, target, message", [
    ("self", ".", "leads to {folder}, the folder {folder} or a folder above it"),
    ("everything", "/", "leads to /, the folder {folder} or a folder above it"),
    ("a/up", "../..", "the folder {folder} or a folder above it"),
    ("a/b/loop", "..", "leads back to {folder}/a, a folder it is inside of (a symbolic link loop)"),
])
def test_predict_walks_folders_with_the_checks_training_has(weights, tmp_path, link, target, message):
    folder = tmp_path / "photos"
    (folder / "a" / "b").mkdir(parents=True)
    a_png(folder / "a" / "one.png")
    (folder / link).symlink_to(target)
    with pytest.raises(AlexNetError, match=message.format(folder=folder).replace("(", r"\(").replace(")", r"\)")):
        predict(weights, [folder], precision="fp32")


def test_predict_two_link_loop_ends_and_safe_links_are_followed(weights, tmp_path):
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    (folder / "c").mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    a_png(shared / "linked.png")
    a_png(folder / "a" / "one.png")
    (folder / "linked").symlink_to(shared)  # a link elsewhere: followed, as training follows it
    predictions = predict(weights, [folder], precision="fp32")
    assert [Path(p.source).name for p in predictions] == ["one.png", "linked.png"]
    (folder / "a" / "to-c").symlink_to("../c")  # a two-link loop: a -> c -> a
    (folder / "c" / "to-a").symlink_to("../a")
    with pytest.raises(AlexNetError, match="a symbolic link loop"):
        predict(weights, [folder], precision="fp32")


# -- item 6: names that are not UTF-8 ---------------------------------------------------------------


def test_a_non_utf8_file_and_class_name_go_to_the_csv_as_their_bytes(weights, tmp_path):
    image = a_png(tmp_path / f"{LATIN1}.png")
    table = tmp_path / "table.csv"
    assert main(["predict", str(weights), str(image), "--csv", str(table), "--top-k", "10",
                 "--precision", "fp32"]) == 0
    raw = table.read_bytes()
    assert raw.count(b"caf\xe9.png") == 10 and b"caf\xe9," in raw  # the file, and the class
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8", "surrogateescape"))))
    assert len(rows) == 11 and rows[1][0] == str(image)


def test_a_non_utf8_file_name_is_printed_as_its_bytes(weights, tmp_path):
    image = a_png(tmp_path / f"{LATIN1}.png")
    result = subprocess.run([sys.executable, "-m", "alexnet", "predict", str(weights), image, "--top-k", "1",
                             "--precision", "fp32"], capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert os.fsencode(image) + b"\n" in result.stdout


def test_output_to_a_reader_that_stops_early_ends_quietly():
    # `alexnet models | head -1`: the reader is gone before the listing is written
    read, write = os.pipe()
    os.close(read)
    result = subprocess.run([sys.executable, "-m", "alexnet", "models"], stdout=write, stderr=subprocess.PIPE,
                            text=True, timeout=120)
    os.close(write)
    assert result.returncode == 141 and result.stderr == ""  # as a process SIGPIPE stops, without a traceback


def test_a_non_utf8_run_name_is_refused_before_the_folder_is_made(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--name", LATIN1, "--epochs", "1"]) == 2
    assert "name 'caf?' is not UTF-8 text" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- item 7: pipes and FIFOs -------------------------------------------------------------------------


def test_an_image_through_a_pipe_is_predicted_as_its_file(weights, tmp_path):
    image = a_png(tmp_path / "piped.png")
    read, write = os.pipe()

    def writer() -> None:
        with os.fdopen(write, "wb") as end:
            end.write(image.read_bytes())

    thread = threading.Thread(target=writer)
    thread.start()
    try:  # what `alexnet predict W <(cat piped.png)` passes: /dev/fd/N, a pipe
        piped = predict(weights, [f"/proc/self/fd/{read}"], precision="fp32")
    finally:
        thread.join()
        os.close(read)
    assert not piped.skipped and len(piped) == 1
    direct = predict(weights, [image], precision="fp32")[0]
    assert piped[0].indices == direct.indices and piped[0].probabilities == direct.probabilities


def test_a_fifo_without_a_writer_is_skipped_not_waited_on_for_ever(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "STREAM_WAIT_SECONDS", 0.5)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    result = predict(weights, [fifo, a_png(tmp_path / "real.png")], precision="fp32")
    assert [Path(p.source).name for p in result] == ["real.png"]
    assert result.skipped[0].source == str(fifo) and "nothing was written to it" in result.skipped[0].reason
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "another.png")  # in a folder: no regular file, never opened
    a_png(folder / "image.png")
    assert [Path(p.source).name for p in predict(weights, [folder], precision="fp32")] == ["image.png"]


def test_a_device_that_never_ends_is_refused_by_size(monkeypatch):
    monkeypatch.setattr(image_files, "STREAM_BYTES", 1 << 20)
    with pytest.raises(ValueError, match="more than 1 MB"):
        image_files.decode("/dev/zero")


# -- item 8: outputs checked before the work, written whole or not at all -------------------------------


@pytest.mark.parametrize("argv", [
    ["evaluate", "{missing}", "--out", "/proc/x.json"],
    ["report", "{missing}", "--out", "/proc/r.html"],
    ["summary", "alexnet_small28", "--plot", "/proc/net.png"],
    ["experiment", "lrn", "--out", "/proc/experiments"],
])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, argv):
    assert main([part.format(missing=tmp_path / "nothing") for part in argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("alexnet: error: --") and "/proc" in error and error.count("\n") == 1, error
    assert "nothing" not in error  # refused before the missing input was even looked at


def test_a_folder_named_as_an_output_file_is_called_a_folder(weights, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for argv in (["summary", "alexnet_small28", "--plot", str(folder)], ["lr-find", "--plot", str(folder)],
                 ["export", str(weights), "--format", "onnx", "--out", str(folder)]):
        assert main(argv) == 2
        assert f"{folder} is a folder; give a file name" in capsys.readouterr().err  # not "no suffix"


def test_a_full_disk_leaves_no_empty_file_and_the_old_one_whole(weights, tmp_path, capsys, monkeypatch):
    from alexnet import runs

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "old.csv").write_text("kept\n")
    monkeypatch.setattr(runs._RecordingFile, "write", full)
    for argv, written in (
        (["predict", str(weights), str(a_png(tmp_path / "a.png")), "--csv", str(tmp_path / "old.csv")], "old.csv"),
        (["summary", "alexnet_small28", "--plot", str(tmp_path / "net.png")], "net.png"),
        (["augment-preview", "--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "grid.png")], "grid.png"),
    ):
        assert main(argv) == 2
        assert f"no space left on device writing {tmp_path / written}" in capsys.readouterr().err
    assert (tmp_path / "old.csv").read_text() == "kept\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "old.csv"]  # no 0-byte file, no temporary


# -- item 9: what must not be overwritten ---------------------------------------------------------------


def test_outputs_never_replace_an_input_or_a_runs_own_files(weights, tmp_path, capsys):
    victim = a_png(tmp_path / "victim.png")
    before = victim.read_bytes()
    assert main(["predict", str(weights), str(victim), "--csv", str(victim)]) == 2
    assert f"--csv {victim} is one of the inputs" in capsys.readouterr().err
    folder = tmp_path / "photos"
    folder.mkdir()
    a_png(folder / "inside.png")
    with pytest.raises(AlexNetError, match="is one of the inputs"):
        check_output(folder / "inside.png", "--csv", inputs=(folder,))
    assert victim.read_bytes() == before

    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("model: alexnet_small28\n")
    for target in (run.weights, run.last, run.config):
        assert main(["weights", "import", "torchvision", "--file", str(tmp_path / "x.pth"), "--out", str(target)]) == 2
        assert f"is a file of the run folder {run.directory}" in capsys.readouterr().err
    assert not run.weights.exists()


def test_export_writes_its_own_format_and_nothing_that_fails_its_check(weights, tmp_path, capsys, monkeypatch):
    assert main(["export", str(weights), "--format", "pt2", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--out" in (error := capsys.readouterr().err) and ".onnx does not name this format; end the name in .pt2" in error
    from alexnet import export

    monkeypatch.setattr(export, "RELATIVE_TOLERANCE", -1.0)  # every export now fails its check
    (tmp_path / "good.pt").write_bytes(b"a previous export")
    assert main(["export", str(weights), "--format", "torchscript", "--out", str(tmp_path / "good.pt")]) == 2
    assert "differs from PyTorch's" in capsys.readouterr().err
    assert (tmp_path / "good.pt").read_bytes() == b"a previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["good.pt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda file: (file.write(b"half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]
