"""`alexnet experiment`: the statistics on hand-made numbers, every claim's arms, and a real run."""

import json
import math
from pathlib import Path

import pytest

from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.experiments import CLAIMS, ExperimentOptions, run_experiment
from alexnet.experiments.runner import arm_configs
from alexnet.experiments.stats import epochs_to_converge, epochs_to_error, paired_interval, t_quantile, verdict
from alexnet.experiments.tables import summarise
from alexnet.models import build_model
from alexnet.report import build_experiment_report
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


# -- the arithmetic -------------------------------------------------------------------------------


def test_paired_interval_is_students_t_by_hand():
    # differences 1, 2, 3: mean 2, sample sd 1, t(0.975, 2 df) = 4.303, half-width 4.303 / sqrt(3)
    mean, low, high = paired_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert (low, high) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    assert paired_interval([0.5]) is None  # one seed: no spread to measure
    assert t_quantile(1) == pytest.approx(12.706) and t_quantile(35) == pytest.approx(2.042)  # df 30's: wider
    assert t_quantile(100) == pytest.approx(2.000) and t_quantile(10_000) == pytest.approx(1.96)


def test_verdict_rule_on_hand_made_intervals():
    assert verdict((1.0, 0.2, 1.8), +1) == "agrees"
    assert verdict((1.0, 0.2, 1.8), -1) == "disagrees"
    assert verdict((0.5, -0.2, 1.2), +1) == "inconclusive"  # the interval holds zero
    assert verdict((-1.0, -1.5, -0.5), +1) == "disagrees"
    assert verdict(None, +1) == "inconclusive"


def test_epochs_to_error_interpolates_between_epoch_ends():
    # chance 0.9 before training; an epoch's average error stands for its middle: 0.5 at 0.5 epochs,
    # 0.2 at 1.5, so 25% is crossed 5/6 of the way from 0.5 to 1.5
    assert epochs_to_error([0.5, 0.2], 0.25, 0.9) == pytest.approx(0.5 + (0.5 - 0.25) / (0.5 - 0.2))
    assert epochs_to_error([0.1], 0.25, 0.9) == pytest.approx(0.5 * (0.9 - 0.25) / (0.9 - 0.1))
    assert epochs_to_error([0.5, 0.4], 0.25, 0.9) is None  # never reached
    assert epochs_to_converge([0.30, 0.12, 0.104, 0.10], 0.005) == 3


def _run(seed, train_errors, top1_error, val_errors=None, train_error=None):
    val_errors = val_errors or [top1_error] * len(train_errors)
    return {"run": f"r{seed}", "seed": seed, "epochs": len(train_errors), "test_top1_error": top1_error,
            "test_top5_error": top1_error / 4, "train_errors": train_errors, "val_errors": val_errors,
            "num_classes": 10, "train_error": train_error, "re_evaluations": {}}


def test_summary_of_hand_made_runs_applies_the_rule():
    claim, options = CLAIMS["lrn"], ExperimentOptions(seeds=3)
    # no normalisation is worse by 1.0, 1.2 and 0.8 points in the three seeds: agrees
    measured = {f"lrn-seed{s}": _run(s, [0.3], 0.10 + 0.001 * s) for s in range(3)}
    measured |= {f"none-seed{s}": _run(s, [0.3], 0.10 + 0.001 * s + d) for s, d in enumerate((0.010, 0.012, 0.008))}
    results = summarise(claim, options, measured)
    top1 = results["comparisons"][0]
    assert top1["measure"] == "test_top1_error" and top1["differences"] == pytest.approx([0.010, 0.012, 0.008])
    assert top1["verdict"] == "agrees" and results["verdict"] == "agrees"
    assert results["arms"]["lrn"]["measures"]["test_top1_error"]["mean"] == pytest.approx(0.101)
    # the other way round, it disagrees; mixed signs are inconclusive
    flipped = {f"{'none' if name.startswith('lrn') else 'lrn'}-seed{name[-1]}": run for name, run in measured.items()}
    assert summarise(claim, options, flipped)["verdict"] == "disagrees"
    mixed = dict(measured) | {"none-seed2": _run(2, [0.3], 0.090)}
    assert summarise(claim, options, mixed)["verdict"] == "inconclusive"


def test_relu_counts_epochs_and_a_slow_arm_is_a_lower_bound():
    claim, options = CLAIMS["relu"], ExperimentOptions(seeds=2)
    measured = {f"relu-seed{s}": _run(s, [0.3, 0.2, 0.1], 0.1) for s in range(2)}
    measured |= {"tanh-seed0": _run(0, [0.6, 0.4, 0.3], 0.2), "tanh-seed1": _run(1, [0.6, 0.5, 0.35], 0.2)}
    results = summarise(claim, options, measured)
    comparison = results["comparisons"][0]
    relu_epochs = 0.5 + (0.3 - 0.25) / (0.3 - 0.2)  # between the middles of epochs 1 and 2
    assert comparison["differences"] == pytest.approx([3 - relu_epochs] * 2)  # tanh censored at the 3 trained
    assert comparison["lower_bound"] and comparison["ratio"] == pytest.approx(3 / relu_epochs)
    assert comparison["verdict"] == "agrees"  # a lower bound above the reference still shows tanh slower
    swapped = {name.replace("relu", "x").replace("tanh", "relu").replace("x", "tanh"): run
               for name, run in measured.items()}
    # ReLU censored instead: its true value is larger still, so tanh faster stands
    assert summarise(claim, options, swapped)["comparisons"][0]["verdict"] == "disagrees"
    assert results["arms"]["tanh"]["measures"]["epochs_to_error"]["censored"] == [True, True]


# -- every claim's arms ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name in CLAIMS if not CLAIMS[name].needs_colour])
def test_every_claims_arms_differ_only_in_their_switch_and_build(name, tmp_path):
    claim = CLAIMS[name]
    configs = arm_configs(claim, ExperimentOptions(seeds=2, out=str(tmp_path)))
    assert set(configs) == {arm.name for arm in claim.arms}
    for arm in claim.arms:
        seeds = [config.seed for config in configs[arm.name]]
        assert seeds == [0, 1]
        for config in configs[arm.name]:
            resolved = config.resolved()  # builds the model on the meta device: its options are valid
            assert resolved.recipe == "paper" and resolved.epochs == claim.epochs
    reference = configs[claim.reference.name][0].resolved()
    for other in claim.others:
        changed = {key for key, value in vars(configs[other.name][0].resolved()).items()
                   if value != getattr(reference, key) and key != "name"}
        assert changed <= {"model_options", "augment", "flipped_copies", "ten_crop"}, changed


def test_towers_compares_against_one_tower_with_half_the_kernels_of_conv1_to_4():
    configs = arm_configs(CLAIMS["towers"], ExperimentOptions(seeds=1))
    one = build_model("alexnet_small28", **configs["one-tower-half"][0].model_options)
    two = build_model("alexnet_small28", **configs["two-towers"][0].model_options)
    widths = lambda model: [m.out_channels for m in model.features if hasattr(m, "out_channels")]  # noqa: E731
    assert widths(two) == [32, 64, 128, 128, 96]
    assert widths(one) == [16, 32, 64, 64, 96]  # footnote 2: the last convolution keeps its kernels
    assert one.towers == 1 and two.towers == 2


def test_depth_removes_one_middle_convolution():
    configs = arm_configs(CLAIMS["depth"], ExperimentOptions(seeds=1))
    convs = lambda options: sum(hasattr(m, "out_channels") for m in build_model("alexnet_small28", **options).features)  # noqa: E731
    assert convs(configs["five-convs"][0].model_options) == 5
    for index in (2, 3, 4):
        assert convs(configs[f"without-conv{index}"][0].model_options) == 4


def test_a_colour_claim_on_grey_data_says_what_to_pass(tmp_path):
    with pytest.raises(AlexNetError, match=r"pca needs colour images.*--dataset cifar10"):
        run_experiment("pca", ExperimentOptions(out=str(tmp_path)))
    assert main(["experiment", "pca", "--out", str(tmp_path)]) == 2


# -- a real experiment ----------------------------------------------------------------------------


@needs_fashion
@pytest.mark.slow
def test_relu_experiment_writes_results_that_equal_its_runs(tmp_path, capsys):
    # the default precision (auto): what is checked is bookkeeping, the same in any precision; 500
    # validation images, not the default 5,000 (which were half of this test's time)
    argv = ["experiment", "relu", "--epochs", "2", "--seeds", "2", "--subset", "0.03", "--val-size", "500",
            "--out", str(tmp_path), "--data-dir", fashion_small_test()]
    assert main(argv) == 0
    folder = tmp_path / "relu"
    results = json.loads((folder / "results.json").read_text())
    for arm in ("relu", "tanh"):
        for seed, run_dir in enumerate(results["arms"][arm]["runs"]):
            rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
            assert results["arms"][arm]["curves"]["train_errors"][seed] == pytest.approx(
                [1 - row["train_top1"] for row in rows])
            evaluation = json.loads((Path(run_dir) / "evaluation.json").read_text())
            assert results["arms"][arm]["measures"]["test_top1_error"]["values"][seed] == pytest.approx(
                1 - evaluation["top1"])
    assert results["verdict"] in ("agrees", "disagrees", "inconclusive")
    assert "Verdict" in (folder / "results.md").read_text()
    assert (folder / "report.html").is_file() and (folder / "figures" / "curves.png").is_file()
    capsys.readouterr()
    assert main(argv) == 0  # run again: nothing is retrained
    assert capsys.readouterr().out.count("(already trained)") == 4
    assert build_experiment_report(folder).is_file()


@pytest.mark.slow
def test_pca_runs_on_colour_data_in_cifars_format(fake_cifar10, tmp_path):
    options = ExperimentOptions(dataset="cifar10", data_dir=str(fake_cifar10), val_size=40, seeds=2, epochs=1,
                                subset=1.0, jobs=1, out=str(tmp_path / "experiments"), precision="fp32")
    folder = run_experiment("pca", options, log=lambda line: None)
    results = json.loads((folder / "results.json").read_text())
    assert results["model"] == "alexnet_small32"  # the paper-faithful network for 32x32 colour images
    configs = [json.loads(json.dumps(__import__("yaml").safe_load((Path(run) / "config.yaml").read_text())))
               for arm in results["arms"].values() for run in arm["runs"]]
    assert [config["augment"] for config in configs] == ["paper"] * 2 + ["crop=224/256,hflip"] * 2
    assert len(results["comparisons"]) == 2 and results["verdict"] in ("agrees", "disagrees", "inconclusive")


def test_augment_compares_each_augmentation_against_none():
    assert CLAIMS["augment"].pairs == (("paper", "none"), ("flipped-copies", "none"))
    assert CLAIMS["lrn"].pairs == (("lrn", "none"),)


def test_a_folder_of_another_experiment_is_refused_not_reused(tmp_path):
    from alexnet.experiments.measure import check_same_run

    configs = arm_configs(CLAIMS["lrn"], ExperimentOptions(seeds=1, out=str(tmp_path)))
    written = configs["lrn"][0].resolved()
    other = arm_configs(CLAIMS["lrn"], ExperimentOptions(seeds=1, out=str(tmp_path), subset=0.5))["lrn"][0]
    with pytest.raises(AlexNetError, match=r"holds a run of other settings \(subset: 0.25 there, 0.5 asked"):
        check_same_run(__import__("alexnet").runs.RunFolder(tmp_path), written, other)
    longer = arm_configs(CLAIMS["lrn"], ExperimentOptions(seeds=1, out=str(tmp_path), epochs=12))["lrn"][0]
    check_same_run(__import__("alexnet").runs.RunFolder(tmp_path), written, longer)  # more epochs: the same run
