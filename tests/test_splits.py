"""Honest numbers: a flat folder's test images are apart from validation and training; imbalanced
folders are warned about and can be balanced; balanced accuracy beside top-1."""

import json
from pathlib import Path

import pytest
import torch
from image_files import png_bytes  # tests/ is on the path (pytest's prepend import mode)

from alexnet import AlexNetError
from alexnet.data import LoaderOptions, build_eval_loader, build_loaders, load_tensors
from alexnet.evaluation import MetricAccumulator, evaluate
from alexnet.training import TrainConfig, train
from alexnet.weights import read_metadata

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


def write_folder(root: Path, per_class: dict[int, int]) -> Path:
    """A flat folder of class folders of Fashion-MNIST PNGs: ``per_class`` {label: images}."""
    data = load_tensors("fashion-mnist", "test")
    for label, count in per_class.items():
        folder = root / data.classes[label].replace("/", "-")
        folder.mkdir(parents=True)
        for index in torch.nonzero(data.labels == label).squeeze(1)[:count].tolist():
            (folder / f"{index}.png").write_bytes(png_bytes(data.images[index]))
    return root


@needs_fashion
def test_a_flat_folder_holds_out_a_stratified_test_apart_from_validation(tmp_path):
    root = write_folder(tmp_path / "three", {0: 40, 1: 40, 7: 40})
    loaders = build_loaders("folder", LoaderOptions(data_dir=root, batch_size=8, output_shape=(1, 28, 28),
                                                    num_workers=0, seed=2))
    train_files, val_files, test_files = ({path for path, _ in loader.samples}
                                          for loader in (loaders.train, loaders.val, loaders.test))
    assert len(val_files) == len(test_files) == 12 and len(train_files) == 96  # 10% and 10% of 120
    assert not (train_files & val_files or train_files & test_files or val_files & test_files)
    assert [label for _, label in loaders.test.samples].count(2) == 4  # stratified: 4 of each class
    assert not loaders.test_is_val and loaders.test_size == 12 and loaders.class_counts == [32, 32, 32]
    evaluated, _, _ = build_eval_loader("folder", "test", LoaderOptions(data_dir=root, batch_size=8,
                                                                        output_shape=(1, 28, 28), num_workers=0,
                                                                        seed=2))
    assert evaluated.samples == loaders.test.samples  # evaluate tests on the same files
    none = build_loaders("folder", LoaderOptions(data_dir=root, batch_size=8, output_shape=(1, 28, 28), num_workers=0,
                                                 seed=2, test_size=0))
    assert none.test is none.val and none.test_is_val and {p for p, _ in none.val.samples} == val_files
    with pytest.raises(AlexNetError, match="cannot hold out 12 for validation and 200 for the test"):
        build_loaders("folder", LoaderOptions(data_dir=root, batch_size=8, num_workers=0, test_size=200))
    with pytest.raises(AlexNetError, match="--test-size applies to a folder"):
        build_loaders("fashion-mnist", LoaderOptions(batch_size=8, test_size=10))


@needs_fashion
def test_a_flat_folder_run_tests_on_unseen_images_or_says_validation(tmp_path):
    root = write_folder(tmp_path / "three", {0: 40, 1: 40, 7: 40})
    settings = dict(dataset="folder", data_dir=str(root), recipe="tutorial", epochs=1, batch_size=16, quiet=True,
                    precision="fp32", out=str(tmp_path / "runs"))
    run = train(TrainConfig(**settings, name="tested"))
    evaluation = json.loads((run.directory / "evaluation.json").read_text())
    assert evaluation["split"] == "test" and evaluation["count"] == 12
    assert "\ntest: top-1" in (run.directory / "log.txt").read_text()
    assert read_metadata(run.weights_path).test_size == 12
    assert evaluate(run.directory, precision="fp32").top1 == pytest.approx(run.test_metrics.top1)
    extra = next((root / "Trouser").iterdir())
    extra.with_name("added.png").write_bytes(extra.read_bytes())  # the folder changes after training
    with pytest.raises(AlexNetError, match="have changed since .* its held-out test split would now hold other images"):
        evaluate(run.directory, precision="fp32")
    extra.with_name("added.png").unlink()
    untested = train(TrainConfig(**settings, name="untested", test_size=0))
    log = (untested.directory / "log.txt").read_text()
    assert "\nvalidation: top-1" in log and "\ntest:" not in log
    assert json.loads((untested.directory / "evaluation.json").read_text())["split"] == "val"


@needs_fashion
def test_imbalance_is_warned_about_and_balanced_sampling_draws_classes_alike(tmp_path):
    root = write_folder(tmp_path / "skewed", {0: 100, 1: 10})
    loaders = build_loaders("folder", LoaderOptions(data_dir=root, batch_size=8, output_shape=(1, 28, 28),
                                                    num_workers=0, sampler="balanced", test_size=0))
    drawn = [loaders.train.samples[index][1] for index in loaders.train._sampler()]
    assert loaders.class_counts == [90, 9] and len(drawn) == 99
    assert 0.35 < drawn.count(1) / len(drawn) < 0.65  # 9% of the images, about half the draws
    run = train(TrainConfig(dataset="folder", data_dir=str(root), recipe="tutorial", epochs=1, batch_size=16,
                            quiet=True, precision="fp32", out=str(tmp_path), name="weighted", class_weights="balanced"))
    log = (run.directory / "log.txt").read_text()
    assert "warning: the training classes are imbalanced" in log and "(10x)" in log
    assert "the loss is balanced" in log


def test_balanced_accuracy_is_the_mean_recall():
    labels = torch.tensor([0] * 8 + [1] * 2)
    logits = torch.zeros(10, 2)
    logits[:, 0] = 1  # always class 0: top-1 80%, balanced 50%
    accumulator = MetricAccumulator(["a", "b"])
    accumulator.update(logits, labels)
    metrics = accumulator.compute()
    assert metrics.top1 == pytest.approx(0.8) and metrics.balanced_accuracy == pytest.approx(0.5)
    from alexnet.evaluation import Metrics

    older = {key: value for key, value in metrics.to_dict().items() if key != "balanced_accuracy"}
    assert Metrics.from_dict(older).top1 == pytest.approx(0.8)  # evaluation.json written before it


def test_evaluate_refuses_ten_views_for_a_run_not_trained_on_crops_and_mirrors(tmp_path):
    from alexnet.models import build_model
    from alexnet.weights import WeightsMetadata, save_weights

    def saved(augment: str | None, dataset: str, crop_fraction: float) -> Path:
        """A run folder (its config.yaml names the augmentation), or a bare weights file for None."""
        folder = tmp_path / f"{augment}-{dataset}"
        folder.mkdir()
        if augment is not None:
            (folder / "config.yaml").write_text(f"augment: {augment}\ndataset: {dataset}\n")
        return save_weights(folder / "model.safetensors", build_model("alexnet_small28"), WeightsMetadata(
            model="alexnet_small28", model_options={}, class_names=tuple(str(i) for i in range(10)),
            input_size=(1, 28, 28), mean=(0.5,), std=(0.5,), dataset=dataset,
            test_views={"crop_fraction": crop_fraction, "views": "mirror"})).parent

    with pytest.raises(AlexNetError, match="augmentation 'flip' on fashion-mnist trains on whole images"):
        evaluate(saved("flip", "fashion-mnist", 1.0), ten_crop=True)
    with pytest.raises(AlexNetError, match="on mnist never mirrors the training images"):
        evaluate(saved("paper", "mnist", 224 / 256), ten_crop=True)
    with pytest.raises(AlexNetError, match="training of these weights on fashion-mnist trains on whole images"):
        evaluate(saved(None, "fashion-mnist", 1.0) / "model.safetensors", ten_crop=True)
