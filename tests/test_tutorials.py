"""Each tutorial's one command, run on small files in its dataset's own format (CIFAR-10's pickled
batches, Flowers-17's images as its archive unpacks, Fashion-MNIST's IDX files): the network trains
as its source does.

The runs take the default precision (auto), as a user's command does: bf16 where this CPU or GPU
runs it faster (these 224-pixel networks train two to three times faster on a CPU with AMX), fp32
elsewhere. What they check (the recipe each tutorial sets up, one epoch trained and tested) does not
depend on it."""

import json
from pathlib import Path

import pytest
import yaml

from alexnet.cli import main
from alexnet.data import flowers17
from image_files import jpeg_bytes  # tests/ is on the path (pytest's prepend import mode)




def trained(out: Path, name: str) -> tuple[dict, dict, list[dict]]:
    folder = out / name
    config = yaml.safe_load((folder / "config.yaml").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return config, json.loads((folder / "evaluation.json").read_text()), rows


@pytest.mark.slow
@pytest.mark.parametrize("model, recipe, batch, extra", [
    ("alexnet_keras_cifar", "keras_cifar", 32, []),  # the Keras CIFAR-10 notebook, as it is
    ("alexnet_twotower_bn", "twotower_bn", 1, ["--subset", "0.2"]),  # the Keras two-tower tutorial: 224 px, batch 1
])
def test_cifar_tutorials_train_as_their_sources(fake_cifar10, tmp_path, model, recipe, batch, extra):
    out = tmp_path / "runs"
    argv = ["train", "--model", model, "--dataset", "cifar10", "--data-dir", str(fake_cifar10), "--val-size", "40",
            "--epochs", "1", "--out", str(out), "--name", model, "--quiet", "--no-report", *extra]
    assert main(argv) == 0
    config, evaluation, rows = trained(out, model)
    assert (config["recipe"], config["batch_size"], config["augment"]) == (recipe, batch, "none")
    assert len(rows) == 1 and evaluation["epochs"] == 1 and 0 <= evaluation["top1"] <= 1


@pytest.mark.slow
def test_flowers_tutorial_trains_as_its_source(tmp_path, monkeypatch):
    from test_data import solid_image

    jpg = tmp_path / "data" / "flowers17" / "jpg"  # the archive as it unpacks
    jpg.mkdir(parents=True)
    for index in range(1, flowers17.NUM_IMAGES + 1):
        colour = ((37 * ((index - 1) // 80)) % 256, 90, 200)  # one colour per class of 80
        (jpg / f"image_{index:04d}.jpg").write_bytes(jpeg_bytes(solid_image(colour), quality=90))
    monkeypatch.setattr(flowers17, "STORED_SIZE", 16)
    out = tmp_path / "runs"
    # the Keras Flowers-17 article: Adam at batch 64 for one epoch, a fifth held out (validation_split=0.2: 204 of 1,020)
    argv = ["train", "--model", "alexnet_flowers_bn", "--dataset", "flowers17", "--data-dir", str(tmp_path / "data"),
            "--val-size", "204", "--subset", "0.1", "--out", str(out), "--name", "flowers", "--quiet",
            "--no-report"]
    assert main(argv) == 0
    config, evaluation, rows = trained(out, "flowers")
    assert (config["recipe"], config["optimizer"], config["batch_size"], config["epochs"]) == ("flowers_bn", "adam", 64, 1)
    assert len(evaluation["class_names"]) == 17


def write_fashion_mnist(root: Path, train: int = 300, test: int = 40) -> Path:
    """Fashion-MNIST's IDX files, small, in torchvision's layout under ``root``; returns ``root``."""
    from test_data import write_idx_dataset

    write_idx_dataset(root, "FashionMNIST", train, test, level=25)
    return root


@pytest.mark.slow
def test_seed_000s_experiment(tmp_path):
    data = write_fashion_mnist(tmp_path / "data", train=1040)
    out = tmp_path / "runs"
    # the PyTorch Fashion-MNIST tutorial: 10% of the training set, with flipped copies added: 3x the images (100 -> 300)
    argv = ["train", "--model", "alexnet_tutorial28", "--data-dir", str(data), "--val-size", "40", "--subset", "0.1",
            "--epochs", "1", "--flipped-copies", "--out", str(out), "--name", "copies", "--quiet", "--no-report"]
    assert main(argv) == 0
    config, evaluation, rows = trained(out, "copies")
    assert config["flipped_copies"] and config["recipe"] == "tutorial" and config["subset"] == 0.1
    assert len(rows) == 1 and evaluation["count"] == 40


@pytest.mark.slow
def test_d2l_trains_on_fashion_mnist_files_resized_to_224(tmp_path):
    write_fashion_mnist(tmp_path / "data")
    out = tmp_path / "runs"
    argv = ["train", "--model", "alexnet_d2l", "--data-dir", str(tmp_path / "data"), "--val-size", "40",
            "--epochs", "1", "--out", str(out), "--name", "d2l", "--quiet", "--no-report"]
    assert main(argv) == 0
    config, evaluation, rows = trained(out, "d2l")
    assert (config["optimizer"], config["lr"], config["momentum"], config["batch_size"]) == ("sgd", 0.01, 0.0, 128)
    assert config["epochs"] == 1 and rows[0]["epoch"] == 1
