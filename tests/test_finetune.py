"""Fine-tuning: trained weights in, the classifier replaced where the classes differ, frozen layers
that do not move (weights and batch norm statistics), and architectures that do not fit refused."""

from pathlib import Path

import pytest
import torch
from image_files import png_bytes  # tests/ is on the path (pytest's prepend import mode)
from safetensors.torch import load_file

from alexnet import AlexNetError
from alexnet.models import build_model
from alexnet.training import TrainConfig, train
from alexnet.training.finetune import freeze, load_pretrained
from alexnet.weights import WeightsMetadata, save_weights
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
# The final test on 1,000 test images (tests/fashion_small.py), on the image alone: the whole test
# set, mirrored, was 7 of a tiny run's 8.6 s on one core (fp32); what these tests check does not need it.
TINY = dict(subset=0.02, val_size=500, epochs=1, batch_size=64, quiet=True, eval_batch_size=500, precision="fp32",
            flip_test=False, data_dir=fashion_small_test())


def weights(path: Path, **options) -> Path:
    torch.manual_seed(1)
    model = build_model("alexnet_small28", **options)
    return save_weights(path, model, WeightsMetadata(
        model="alexnet_small28", model_options={k: v for k, v in options.items() if k != "num_classes"},
        class_names=tuple(f"c{i}" for i in range(model.num_classes)), input_size=(1, 28, 28), mean=(0.5,), std=(0.25,),
        dataset="fashion-mnist"))


def test_the_classifier_is_replaced_where_the_classes_differ_and_other_mismatches_are_named(tmp_path):
    source = weights(tmp_path / "five.safetensors", num_classes=5, norm="batch")
    torch.manual_seed(2)
    model = build_model("alexnet_small28", norm="batch")
    fresh_head = model.get_classifier().weight.detach().clone()
    loaded = load_pretrained(model, source)
    assert loaded.replaced == ["classifier.6.weight", "classifier.6.bias"]
    trained = load_file(str(source))
    assert torch.equal(model.features[0].weight, trained["features.0.weight"])
    assert torch.equal(model.get_classifier().weight, fresh_head)  # the new head keeps its initialisation
    assert "features.1.running_mean" in loaded.loaded  # batch norm statistics come along
    with pytest.raises(AlexNetError, match=r"another architecture: features\.4\.weight is \(64, 16, 3, 3\) there, \(64, 32, 3, 3\) here"):
        load_pretrained(build_model("alexnet_small28", towers=1), weights(tmp_path / "two.safetensors"))
    with pytest.raises(AlexNetError, match=r"another architecture: it has no features\.1\.weight"):
        load_pretrained(build_model("alexnet_small28", norm="batch"), weights(tmp_path / "lrn.safetensors", norm="lrn"))


def test_freeze_names_the_layers_up_to_the_nth_convolution():
    model = build_model("alexnet_small28", norm="batch")
    names = freeze(model, "conv1-2")
    assert names[0] == "features.0.weight" and "features.5.weight" in names  # conv2's batch norm too
    assert not any(name.startswith(("features.8", "classifier")) for name in names)  # conv3 on: trainable
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in names)
    with pytest.raises(AlexNetError, match=r"freeze must be"):
        freeze(build_model("alexnet_small28"), "conv1-9")


@pytest.mark.slow
@needs_fashion
def test_fine_tuning_keeps_frozen_layers_bit_identical_and_their_statistics_still(tmp_path):
    base = train(TrainConfig(**TINY, out=str(tmp_path), name="base"))
    tuned = train(TrainConfig(**TINY, out=str(tmp_path), name="tuned", init_from=str(base.directory),
                              freeze="features", backbone_lr_scale=0.1, seed=3))
    before, after = load_file(str(base.weights_path)), load_file(str(tuned.weights_path))
    features = [name for name in before if name.startswith("features.")]
    assert any("running_mean" in name for name in features)  # the fast recipe's batch norm
    assert all(torch.equal(before[name], after[name]) for name in features)  # weights and statistics
    assert not torch.equal(before["classifier.6.weight"], after["classifier.6.weight"])
    log = (tuned.directory / "log.txt").read_text()
    assert f"started from {base.weights_path}: " in log and "frozen: features." in log
    assert "pretrained layers learn at 0.1x the rate" in log
    with pytest.raises(AlexNetError, match="--freeze, --backbone-lr-scale, --keep-head and --new-head apply to"):
        TrainConfig(freeze="features").resolved()


def test_the_optimiser_holds_only_trainable_parameters_at_their_rates(tmp_path):
    from alexnet.training.optim import make_optimizer

    model = build_model("alexnet_small28", norm="batch")
    freeze(model, "features")
    source = weights(tmp_path / "w.safetensors", norm="batch")
    config = TrainConfig(init_from=str(source), freeze="features", backbone_lr_scale=0.1, lr=0.1).resolved()
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    held = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert set(held) == {id(p) for p in trainable}
    assert held[id(model.get_classifier().weight)] == 0.1 and held[id(model.classifier[0].weight)] == pytest.approx(0.01)


def test_weights_of_a_grey_model_trained_on_rgb_files_keep_the_files_constants(tmp_path):
    # a folder of PNGs is read as RGB and turned grey after normalising: its constants are RGB's
    model = build_model("alexnet_small28")
    path = save_weights(tmp_path / "w.safetensors", model, WeightsMetadata(
        model="alexnet_small28", model_options={}, class_names=tuple("abcdefghij"), input_size=(1, 28, 28),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), dataset="folder"))
    assert load_pretrained(build_model("alexnet_small28"), path).metadata.mean == (0.485, 0.456, 0.406)


def test_a_grey_model_with_rgb_constants_predicts_and_exports(tmp_path):
    # what a 1-channel model trained on a folder of PNGs (read as RGB) writes: both once broke on it
    from alexnet.export import export
    from alexnet.predict import predict

    path = save_weights(tmp_path / "w.safetensors", build_model("alexnet_small28"), WeightsMetadata(
        model="alexnet_small28", model_options={}, class_names=tuple("abcdefghij"), input_size=(1, 28, 28),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), dataset="folder", precision="fp32"))
    (prediction,) = predict(path, [Path(__file__).with_name("data") / "chelsea.png"], top_k=3)
    assert len(prediction.classes) == 3 and sum(prediction.probabilities) <= 1.0
    result = export(path, "torchscript", out=tmp_path / "w.pt")
    assert result.top1_agreement == 1.0 and result.max_abs_diff <= result.tolerance


def test_init_from_trains_with_the_fine_tuning_recipe_and_the_weights_switches(tmp_path):
    source = weights(tmp_path / "w.safetensors", norm="batch", dropout=0.0)
    config = TrainConfig(init_from=str(source)).resolved()
    assert config.recipe == "finetune" and config.warmup_fraction == 0.1 and config.backbone_lr_scale == 0.1
    assert config.model_options["norm"] == "batch" and config.model_options["dropout"] == 0.0
    assert "recipe: finetune" in config.to_yaml()
    named = TrainConfig(init_from=str(source), recipe="fast", backbone_lr_scale=0.5).resolved()
    assert named.recipe == "fast" and named.lr == 0.1 and named.backbone_lr_scale == 0.5
    assert TrainConfig().resolved().backbone_lr_scale == 1.0  # from scratch: one rate


def test_the_classifier_is_kept_for_the_same_class_names_and_replaced_for_other_names(tmp_path):
    from alexnet.training.finetune import head_choice

    source = weights(tmp_path / "w.safetensors")  # classes c0..c9
    trained = load_file(str(source))["classifier.6.weight"]
    same = [f"c{i}" for i in range(10)]
    digits = [str(i) for i in range(10)]
    kept = load_pretrained(build_model("alexnet_small28"), source, same)
    assert kept.replaced == [] and "the same 10 classes" in kept.describe()
    model = build_model("alexnet_small28")
    replaced = load_pretrained(model, source, digits)
    assert replaced.replaced == ["classifier.6.weight", "classifier.6.bias"]
    assert not torch.equal(model.get_classifier().weight, trained)
    assert "the classes differ (c0, c1, c2, ... there, 0, 1, 2, ... here)" in replaced.describe()
    model = build_model("alexnet_small28")
    assert load_pretrained(model, source, digits, head="keep").replaced == []
    assert torch.equal(model.get_classifier().weight, trained)
    assert load_pretrained(build_model("alexnet_small28"), source, same, head="new").replaced
    assert head_choice(same, same[:5], "auto")[0]
    with pytest.raises(AlexNetError, match="--keep-head: the weights' classifier has 10 classes, the data 5"):
        head_choice(same, same[:5], "keep")
    with pytest.raises(AlexNetError, match="apply to fine-tuning"):
        TrainConfig(head="keep").resolved()


def test_keep_head_and_new_head_flags_set_the_head():
    from alexnet.cli import build_parser

    assert build_parser().parse_args(["train", "--keep-head"]).head == "keep"
    assert build_parser().parse_args(["train", "--new-head"]).head == "new"
    with pytest.raises(SystemExit):  # both: refused, not the last one taken
        build_parser().parse_args(["train", "--keep-head", "--new-head"])


def write_task(root: Path, classes: tuple[int, ...], train_count: int, val_count: int, test_count: int) -> Path:
    """Fashion-MNIST's ``classes`` as train/ val/ test/ folders of PNGs: a dataset of its own."""
    from alexnet.data import load_tensors

    train_set, test_set = load_tensors("fashion-mnist", "train"), load_tensors("fashion-mnist", "test")
    for label in classes:
        name = train_set.classes[label].replace("/", "-")
        pool = torch.nonzero(train_set.labels == label).squeeze(1)
        chosen = {"train": (train_set, pool[:train_count]), "val": (train_set, pool[train_count:train_count + val_count]),
                  "test": (test_set, torch.nonzero(test_set.labels == label).squeeze(1)[:test_count])}
        for split, (data, indices) in chosen.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in indices.tolist():
                (folder / f"{index}.png").write_bytes(png_bytes(data.images[index]))
    return root


@needs_fashion
@pytest.mark.slow
def test_fine_tuning_with_default_flags_beats_scratch_and_a_frozen_backbone_learns(tmp_path):
    # Task A: tops and dresses (5 classes); task B, a second dataset: footwear, bags and shirts from
    # 20 images a class. Same epochs and batch for every arm on B. Measured (fp32, seed 0): scratch
    # 57.4%, fine-tuned 73.8%, frozen 60.2%; one epoch on A already reaches 82%.
    task_a = write_task(tmp_path / "a", (0, 1, 2, 3, 4), 1000, 50, 50)
    task_b = write_task(tmp_path / "b", (5, 6, 7, 8, 9), 20, 20, 100)
    common = dict(dataset="folder", quiet=True, precision="fp32", out=str(tmp_path / "runs"))
    pretrained = train(TrainConfig(**common, data_dir=str(task_a), epochs=1, batch_size=64, name="a"))
    small = dict(common, data_dir=str(task_b), epochs=10, batch_size=32)
    scratch = train(TrainConfig(**small, name="scratch"))
    tuned = train(TrainConfig(**small, name="tuned", init_from=str(pretrained.directory)))
    frozen = train(TrainConfig(**small, name="frozen", init_from=str(pretrained.directory), freeze="features"))
    assert tuned.config.recipe == "finetune" and scratch.config.recipe == "fast"
    assert tuned.test_metrics.top1 > scratch.test_metrics.top1
    assert frozen.test_metrics.top1 >= 0.2 + 0.2  # chance is 1 in 5
    log = (tuned.directory / "log.txt").read_text()
    assert "recipe finetune" in log and "classifier.6.weight, classifier.6.bias replaced (the classes differ" in log
