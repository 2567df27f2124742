"""Training and evaluation: learning on real data, exact resume, the NaN guard, metrics, configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alexnet import AlexNetError, list_models
from alexnet.cli import main
from alexnet.cli.evaluate import format_metrics
from alexnet.evaluation import MetricAccumulator, evaluate
from alexnet.perf import precision_name, resolve_precision
from alexnet.training import TrainConfig, train
from alexnet.training import early_stopping, loop, optim
from alexnet.weights import read_metadata
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")

# ~1,100 training images, 500 validation images: seconds per epoch on two cores.
# The final test on 1,000 test images (tests/fashion_small.py), on the image alone: the whole test
# set, mirrored, was 7 of a tiny run's 8.6 s on one core (fp32); what these tests check does not need it.
TINY = dict(subset=0.02, val_size=500, epochs=2, batch_size=64, quiet=True, eval_batch_size=500,
            flip_test=False, data_dir=fashion_small_test())


def tiny_config(tmp_path, name, **overrides):
    return TrainConfig(**{**TINY, "out": str(tmp_path), "name": name, **overrides})


def final_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "model.safetensors"))


@pytest.mark.slow
@needs_fashion
def test_short_run_learns_and_evaluate_reproduces_it(tmp_path, capsys):
    # tested as a run is by default: each image and its mirror
    run = train(tiny_config(tmp_path, "learn", subset=0.1, epochs=2, batch_size=128, flip_test=True))
    # 10 classes: chance is 10%. Two epochs on 5,500 images reach well above 70%.
    assert run.test_metrics.top1 > 0.70
    assert run.test_metrics.top5 > 0.95
    rows = [json.loads(line) for line in (run.directory / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert {"train_loss", "val_top1", "val_top5", "lr", "images_per_second", "epoch_seconds"} <= set(rows[0])
    saved = json.loads((run.directory / "evaluation.json").read_text())
    assert saved["top1"] == pytest.approx(run.test_metrics.top1)
    config = TrainConfig.from_yaml(run.directory / "config.yaml")
    assert config.recipe == "fast" and config.epochs == 2 and config.model_options["norm"] == "batch"
    # `auto` precision is settled at the start and recorded, so resume and evaluate compute alike.
    assert config.precision == precision_name(resolve_precision("auto", "cpu"))
    assert read_metadata(run.weights_path).precision == config.precision
    # `alexnet evaluate --json` prints what the run's evaluation.json holds, and --out writes the same
    capsys.readouterr()
    assert main(["evaluate", str(run.directory), "--json", "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == json.loads((tmp_path / "again.json").read_text())
    assert set(again) == set(saved) and {key: again[key] for key in ("split", "dataset", "views", "epochs")} == {
        "split": "test", "dataset": "fashion-mnist", "views": "mirror", "epochs": 2}
    assert again["top1"] == pytest.approx(run.test_metrics.top1, abs=1e-6)
    assert again["confusion_matrix"] == run.test_metrics.confusion_matrix == saved["confusion_matrix"]
    # --split val: the last epoch's validation numbers, as training measured them (the images alone)
    validation = evaluate(run.directory, split="val")
    assert (validation.top1, validation.loss) == pytest.approx((rows[-1]["val_top1"], rows[-1]["val_loss"]), abs=1e-6)


@pytest.mark.slow
@needs_fashion
def test_interrupt_mid_epoch_then_resume_gives_identical_weights(tmp_path, monkeypatch):
    reference = train(tiny_config(tmp_path, "reference"))

    original = loop._Trainer._optimizer_step
    calls = {"n": 0}

    def interrupted(self, batches):
        calls["n"] += 1
        if calls["n"] == 25:  # in the second epoch (18 steps per epoch)
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(loop._Trainer, "_optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path, "interrupted"))
    monkeypatch.setattr(loop._Trainer, "_optimizer_step", original)
    state = torch.load(tmp_path / "interrupted" / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 6)
    resumed = train(resume=tmp_path / "interrupted")
    for name, tensor in final_weights(reference.directory).items():
        assert torch.equal(tensor, final_weights(resumed.directory)[name]), name
    timing = {"images_per_second", "epoch_seconds"}
    strip = lambda rows: [{k: v for k, v in row.items() if k not in timing} for row in rows]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)
    assert resumed.test_metrics.top1 == reference.test_metrics.top1


@needs_fashion
@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    """The real thing: a process killed with SIGKILL mid-epoch, resumed from its last checkpoint."""
    # One precision for both processes (`auto` is measured in each, and a close call could differ);
    # fp32, the precision every machine computes natively. Bit-for-bit equality holds in bf16 too.
    precision = "fp32"
    args = ["--subset", "0.02", "--val-size", "500", "--epochs", "3", "--batch-size", "64", "--quiet", "--no-report",
            "--no-flip-test", "--data-dir", fashion_small_test(), "--precision", precision, "--out", str(tmp_path)]
    command = [sys.executable, "-m", "alexnet", "train", *args]
    assert main(["train", *args, "--name", "whole"]) == 0  # the reference, uninterrupted, in this process
    process = subprocess.Popen([*command, "--name", "killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "killed too late to test anything"
    # resumed in this process: all a resume reads is on disk (torchrun's new processes resuming a
    # killed run: test_distributed.py)
    assert main(["train", "--resume", str(tmp_path / "killed"), "--no-report"]) == 0
    whole, killed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed")
    assert all(torch.equal(whole[name], killed[name]) for name in whole)


@pytest.mark.slow
@needs_fashion
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    original = loop._Trainer._optimizer_step
    calls = {"n": 0}

    def poisoned(self, batches):
        calls["n"] += 1
        loss, correct, count = original(self, batches)
        return (loss * float("nan") if calls["n"] >= 20 else loss), correct, count

    monkeypatch.setattr(loop._Trainer, "_optimizer_step", poisoned)
    with pytest.raises(AlexNetError, match=r"epoch 2, step 2.*at a lower rate"):
        train(tiny_config(tmp_path, "nan"))
    run_dir = tmp_path / "nan"
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert "epoch   1/2" in (run_dir / "log.txt").read_text()


def test_metrics_on_a_hand_made_confusion_case():
    # 3 classes; true labels and predictions chosen so every count is known:
    # class 0: 2 of 3 right (one predicted as 1); class 1: 1 of 1 right; class 2: 1 of 2 (one as 0).
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    predictions = torch.tensor([0, 0, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predictions, 3).float() * 5
    accumulator = MetricAccumulator(["a", "b", "c"])
    accumulator.update(logits, labels)
    metrics = accumulator.compute()
    assert metrics.confusion_matrix == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert metrics.top1 == pytest.approx(4 / 6)
    assert metrics.top5 == 1.0  # top-k with k = min(5, classes) covers every class
    assert metrics.precision == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert metrics.recall == pytest.approx([2 / 3, 1.0, 1 / 2])
    f1 = [2 / 3, 2 / 3, 2 / 3]
    assert metrics.f1 == pytest.approx(f1)
    assert metrics.macro_f1 == pytest.approx(2 / 3)
    assert metrics.weighted_f1 == pytest.approx((3 * f1[0] + 1 * f1[1] + 2 * f1[2]) / 6)
    expected_loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert metrics.loss == pytest.approx(expected_loss)
    # a class with no images that nothing is predicted as scores 0 and is left out of the macro average
    four = MetricAccumulator(["a", "b", "c", "d"])
    four.update(torch.cat([logits, torch.full((6, 1), -5.0)], 1), labels)
    assert four.compute().f1 == pytest.approx(f1 + [0.0]) and four.compute().macro_f1 == pytest.approx(2 / 3)
    table = format_metrics(four.compute())  # `alexnet evaluate`'s: the class shown without scores, and why
    assert "note: 1 of 4 classes have no images here (d): balanced accuracy leaves them out" in table
    assert "\nd                     -       -       -       0\n" in table
    assert "\na                0.6667  0.6667  0.6667       3\n" in table
    with pytest.raises(ValueError, match=r"labels must be class indices 0..2, got 3..3"):
        accumulator.update(logits[:1], torch.tensor([3]))


@pytest.mark.parametrize(
    "values,message",
    [
        ({"epochs": 2, "learning_rate": 0.1}, "unknown configuration key.*learning_rate.*valid keys"),
        ({"epochs": "ten"}, "'epochs' should be"),
        ({"model": "vgg16"}, "unknown model 'vgg16'.*alexnet_paper"),
        ({"dataset": "svhn"}, "unknown dataset 'svhn'.*fashion-mnist"),
        ({"model": "alexnet_smal28"}, "unknown model 'alexnet_smal28'. Did you mean 'alexnet_small28'?"),
        ({"dataset": "cifar-10"}, "unknown dataset 'cifar-10'. Did you mean 'cifar10'?"),
        ({"recipe": "adam"}, "unknown recipe 'adam'.*paper, tutorial, fast"),
        ({"precision": "fp8"}, "precision must be one of auto, fp32, bf16, fp16"),
        ({"subset": 1.5}, "subset must be a fraction"),
        ({"epochs": 0}, "epochs must be a positive integer"),
    ],
)
def test_bad_configuration_is_refused(values, message):
    with pytest.raises(AlexNetError, match=message):
        TrainConfig.from_dict(values).resolved()


def test_yaml_configuration_and_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nbatch: 64\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown configuration key(s) batch" in err and "batch_size" in err and "Traceback" not in err
    assert main(["train", "--model", "alexnet_nope"]) == 2
    assert "alexnet_small28" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "no weights file" in capsys.readouterr().err
    # a --data-dir that does not exist is refused, not passed over for a copy found elsewhere
    for command in (["evaluate", str(tmp_path / "missing")], ["train"], ["augment-preview"]):
        assert main([*command, "--data-dir", str(tmp_path / "nope")]) == 2
        assert f"--data-dir {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    # a mistyped flag: the command's own usage, and the flag it meant
    for argv, usage, hint in ((["train", "--epochz", "3"], "usage: alexnet train", "(--epochz: did you mean --epochs?)"),
                              (["models", "extra"], "usage: alexnet models [-h]\n", "unrecognized arguments: extra"),
                              (["data", "pack", "x", "--out", "y", "--sise", "3"], "usage: alexnet data pack",
                               "(--sise: did you mean --size?)")):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and err.startswith(usage) and hint in err, err


def test_yaml_configuration_reads_as_written(tmp_path):
    def read(text: str) -> TrainConfig:
        (tmp_path / "c.yaml").write_text(text)
        return TrainConfig.from_yaml(tmp_path / "c.yaml")

    # 1e-3 is a number, as in Python (YAML 1.1 reads a float only with a dot: it was the text '1e-3')
    assert read("lr: 1e-3\nweight_decay: 5E-4\n").lr == 0.001 and read("weight_decay: 5E-4").weight_decay == 5e-4
    assert read("name: 1e3run\n").name == "1e3run"  # text that is no number stays text
    with pytest.raises(AlexNetError, match="'epochs' is given twice"):
        read("epochs: 1\nepochs: 2\n")
    with pytest.raises(AlexNetError, match=r"epocs \(did you mean 'epochs'\?\)"):
        read("epocs: 1\n")
    with pytest.raises(AlexNetError, match=r"takes no option 'nrom'. Did you mean 'norm'\? Its switches: activation"):
        read("model_options: {nrom: batch}\n").resolved()


def test_recipes_fill_what_the_user_left_unset():
    config = TrainConfig(recipe="paper", lr=0.02).resolved()
    assert (config.batch_size, config.lr, config.weight_decay) == (128, 0.02, 5e-4)
    assert config.ten_crop is True  # Section 4.1's test-time views
    assert TrainConfig(recipe="paper", ten_crop=False).resolved().ten_crop is False
    tutorial = TrainConfig(recipe="seed", model="alexnet_tutorial28").resolved()
    assert (tutorial.recipe, tutorial.batch_size, tutorial.lr) == ("tutorial", 64, 1e-3)
    assert tutorial.ten_crop is False
    assert TrainConfig().resolved().flip_test is True  # the fast recipe tests on the mirror too
    assert TrainConfig(flip_test=False).resolved().flip_test is False


def test_ten_views_only_follow_training_crops():
    # Trained on whole images (mirrors only), the paper recipe keeps the two of its ten views that
    # still apply, the image and its mirror; asking for ten crops anyway is refused.
    whole = TrainConfig(recipe="paper", augment="flip").resolved()
    assert (whole.ten_crop, whole.flip_test) == (False, True)
    assert TrainConfig(recipe="paper", augment="flip", flip_test=False).resolved().flip_test is False
    with pytest.raises(AlexNetError, match="--no-ten-crop"):
        TrainConfig(recipe="paper", augment="flip", ten_crop=True).resolved()
    # never trained on mirrors (no augmentation; digits, which are not mirrored): no mirrored test
    assert TrainConfig(recipe="paper", augment="none").resolved().flip_test is False
    assert TrainConfig(recipe="paper", augment="flip", dataset="mnist").resolved().flip_test is False
    assert TrainConfig(dataset="mnist").resolved().flip_test is False  # nor does the fast recipe's
    digits = TrainConfig(recipe="paper", dataset="mnist").resolved()  # crops, but no mirrors
    assert (digits.ten_crop, digits.flip_test) == (False, False)
    with pytest.raises(AlexNetError, match="never mirrors"):
        TrainConfig(recipe="paper", dataset="mnist", ten_crop=True).resolved()
    crops = TrainConfig(recipe="paper").resolved()
    assert (crops.ten_crop, crops.flip_test) == (True, False)


@pytest.mark.slow
@needs_fashion
def test_evaluate_reproduces_a_run_trained_on_crops(tmp_path):
    # The paper's augmentation trains on 224/256 crops, so its test images are centre crops too:
    # evaluating the full image instead would show the network objects at another scale.
    run = train(tiny_config(tmp_path, "paper", recipe="paper", epochs=1, ten_crop=False))
    again = evaluate(run.directory)
    assert again.top1 == pytest.approx(run.test_metrics.top1, abs=1e-6)
    assert again.confusion_matrix == run.test_metrics.confusion_matrix


@pytest.mark.slow
@needs_fashion
def test_evaluate_tests_as_the_run_did_ten_crops_included(tmp_path):
    from alexnet.models import build_model
    from alexnet.weights import WeightsMetadata, save_weights

    torch.manual_seed(0)
    path = save_weights(  # what a paper-recipe run writes; 1% of the training images keeps this quick
        tmp_path / "model.safetensors", build_model("alexnet_small28"), WeightsMetadata(
            model="alexnet_small28", model_options={}, class_names=tuple(str(i) for i in range(10)),
            input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), dataset="fashion-mnist", val_size=500,
            test_views={"crop_fraction": 1.0, "views": "ten"}),
    )
    # (the validation split is measured on the image alone, as training validates: split="train" here)
    as_run = evaluate(path, split="train", subset=0.01)
    assert as_run.loss == evaluate(path, split="train", subset=0.01, ten_crop=True).loss
    assert as_run.loss != evaluate(path, split="train", subset=0.01, ten_crop=False).loss
    assert evaluate(path, split="val").loss == evaluate(path, split="val", ten_crop=False, flip=False).loss


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(TrainConfig().to_yaml())
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AlexNetError, match="truncated or corrupt"):
        train(resume=run_dir)


def test_paper_schedule_divides_by_ten_when_validation_error_stops_improving():
    config = TrainConfig(recipe="paper", lr=0.01, epochs=30).resolved()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = optim.make_scheduler(optimizer, config, steps_per_epoch=10)
    # validation error per epoch: a real gain, then gains under 0.2% (noise on 5,000 images)
    for error in (0.12, 0.10, 0.099, 0.0985):
        scheduler.step(error)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # two epochs without progress
    scheduler.step(0.098)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # the third: divided by 10


def test_test_views_follow_the_training_recipe_and_travel_with_the_weights():
    from alexnet.inference import TestViews
    from alexnet.weights import WeightsMetadata

    paper, fast = TestViews.from_config(TrainConfig(recipe="paper").resolved()), TestViews.from_config(TrainConfig().resolved())
    assert (paper.views, paper.crop_fraction) == ("ten", 224 / 256)  # Section 4.1, from the 224/256 crops
    assert (fast.views, fast.crop_fraction) == ("mirror", 1.0)
    assert TestViews.from_config(TrainConfig(recipe="tutorial").resolved()).views == "centre"
    assert paper.choose(ten_crop=False) == TestViews(224 / 256, "centre")
    assert fast.choose(flip=False).views == "centre" and paper.choose(flip=True).views == "ten"
    assert paper.loader_shape((1, 28, 28)) == (1, 32, 32) and fast.loader_shape((1, 28, 28)) == (1, 28, 28)
    # weights written before the views were stored carry the preset and switches they come from
    written = WeightsMetadata(model="alexnet_small28", model_options={}, class_names=("a", "b"), input_size=(1, 28, 28),
                              mean=(0.5,), std=(0.5,), dataset="fashion-mnist").to_dict()
    assert "test_views" in written and not {"augment", "ten_crop", "flip_test"} & set(written)
    legacy = {**written, "test_views": None, "augment": "paper", "ten_crop": True, "flip_test": False}
    assert TestViews.from_metadata(WeightsMetadata.from_dict(legacy)) == paper
    stored = WeightsMetadata.from_dict({**legacy, "test_views": fast.to_dict()})  # stored views win
    assert TestViews.from_metadata(stored) == fast
    with pytest.raises(AlexNetError, match="test views must be one of centre, mirror, ten"):
        TestViews(1.0, "five")


def test_the_resolved_configuration_holds_every_recipe_value():
    config = TrainConfig(recipe="paper").resolved()
    assert (config.optimizer, config.momentum, config.nesterov, config.schedule) == ("sgd", 0.9, False, "plateau")
    assert (config.plateau_factor, config.plateau_patience, config.decay_norm_and_bias) == (0.1, 2, True)
    fast = TrainConfig(momentum=0.8).resolved()
    assert (fast.schedule, fast.warmup_fraction, fast.nesterov, fast.momentum) == ("onecycle", 0.25, True, 0.8)
    from alexnet.training.config import RECIPE_FIELDS

    resolved = TrainConfig(recipe="tutorial").resolved()
    assert all(getattr(resolved, name) is not None for name in RECIPE_FIELDS)  # the loop reads nothing else


@pytest.mark.slow
@needs_fashion
def test_a_run_written_before_its_config_held_the_recipe_still_resumes(tmp_path):
    import yaml

    run = train(tiny_config(tmp_path, "old", epochs=1, precision="fp32"))
    newer = ("optimizer", "momentum", "nesterov", "decay_norm_and_bias", "schedule", "warmup_fraction",
             "plateau_factor", "plateau_patience", "plateau_threshold")
    last = run.directory / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["config"] = {k: v for k, v in state["config"].items() if k not in newer}
    torch.save(state, last)
    config = yaml.safe_load((run.directory / "config.yaml").read_text())
    (run.directory / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in newer}))
    longer = train(resume=run.directory, overrides={"epochs": 2})
    assert [row["epoch"] for row in longer.history] == [1, 2] and longer.config.schedule == "onecycle"


@pytest.mark.parametrize("model", list_models())
def test_every_model_trains_as_itself_or_says_what_its_recipe_changed(model):
    from alexnet.models import build_model

    config = TrainConfig(model=model).resolved()
    with torch.device("meta"):
        own, trained = build_model(model).options, build_model(model, **config.model_options).options
    changed = {key for key in own if own[key] != trained[key]}
    said = {change.split()[0] for change in config.recipe_changes()}
    assert changed == said, f"{model}: recipe {config.recipe} changes {changed} but says {said}"
    header = config.to_yaml().splitlines()[0]
    assert (header.startswith(f"# recipe {config.recipe} changes {model}: ") if changed else not header.startswith("#"))


def test_the_papers_network_trains_with_the_papers_recipe_by_default():
    config = TrainConfig(model="alexnet_paper").resolved()
    assert (config.recipe, config.optimizer, config.lr, config.batch_size, config.schedule) == ("paper", "sgd", 0.01, 128, "plateau")
    assert config.recipe_changes() == []  # LRN, dropout 0.5 and the paper's init stay
    assert TrainConfig(model="alexnet_tutorial28").resolved().recipe == "tutorial"
    assert TrainConfig().resolved().recipe == "fast"  # the main job


def test_the_step_schedule_divides_the_rate_every_step_epochs_and_round_trips(tmp_path):
    config = TrainConfig(schedule="step", step_epochs=2, step_factor=0.1, lr=0.1).resolved()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = optim.make_scheduler(optimizer, config, steps_per_epoch=10)
    rates = []
    for _ in range(45):  # 4.5 epochs of 10 steps
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[18] == pytest.approx(0.1) and rates[19] == pytest.approx(0.01) and rates[39] == pytest.approx(0.001)
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    again = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert (again.schedule, again.step_epochs, again.step_factor) == ("step", 2, 0.1)
    with pytest.raises(AlexNetError, match="schedule must be one of plateau, onecycle, cosine, step, constant"):
        TrainConfig(schedule="exponential").resolved()


def test_early_stopping_rule_on_hand_made_histories():
    rows = lambda *tops: [{"val_top1": top} for top in tops]  # noqa: E731
    assert early_stopping.best_epoch(rows(0.5, 0.7, 0.7, 0.6)) == 2  # the first of equal bests
    assert not early_stopping.stops_early(rows(0.5, 0.7, 0.6), 2)  # one epoch since the best
    assert early_stopping.stops_early(rows(0.5, 0.7, 0.6, 0.7), 2)  # equal is not better
    assert not early_stopping.stops_early(rows(0.5, 0.7, 0.6, 0.71), 2)
    assert not early_stopping.stops_early(rows(0.9, 0.1, 0.1), 0)  # 0: never
    assert not early_stopping.stops_early([], 1)


@pytest.mark.slow
@needs_fashion
def test_early_stopping_stops_records_and_goes_on_when_asked(tmp_path):
    # A rate of 1e-12 moves no fp32 weight (the steps are below their rounding), and without batch
    # norm or dropout nothing else changes: validation top-1 is the same every epoch, so a patience
    # of 1 stops after epoch 2.
    config = tiny_config(tmp_path, "early", epochs=5, lr=1e-12, early_stopping=1, precision="fp32",
                         model_options={"norm": "none"})
    run = train(config)
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert "early stopping after epoch 2 of 5" in (run.directory / "log.txt").read_text()
    assert json.loads((run.directory / "evaluation.json").read_text())["epochs"] == 2
    assert TrainConfig.from_yaml(run.directory / "config.yaml").early_stopping == 1
    with pytest.raises(AlexNetError, match=r"stopped early after epoch 2.*--early-stopping 0"):
        train(resume=run.directory)
    longer = train(resume=run.directory, overrides={"early_stopping": 0})
    assert [row["epoch"] for row in longer.history] == [1, 2, 3, 4, 5]
