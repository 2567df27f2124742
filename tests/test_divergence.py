"""Runs that notice they fail: a diverging loss or a network stuck at chance stops the run with a
message naming the epoch and the rate; the last good checkpoint is kept and resumable at a lower rate."""

import json
from pathlib import Path

import pytest

from alexnet import AlexNetError
from alexnet.training import TrainConfig, train
from alexnet.training.divergence import Diverged, at_chance
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


def test_chance_is_two_standard_errors_above_one_in_classes():
    assert at_chance(0.10, 10_000, 10) and at_chance(0.105, 10_000, 10)
    assert not at_chance(0.12, 10_000, 10)  # 0.1 + 2 * 0.003 = 0.106
    assert at_chance(0.15, 100, 10) and not at_chance(0.2, 100, 10)  # few images: a wider margin
    assert Diverged.exit_code == 3 and AlexNetError.exit_code == 2


@needs_fashion
@pytest.mark.slow
def test_a_diverging_rate_stops_in_its_first_epoch_and_resumes_at_a_lower_rate(tmp_path):
    settings = dict(lr=0.5, subset=0.05, val_size=500, epochs=1, quiet=True, eval_batch_size=500, precision="fp32",
                    flip_test=False, data_dir=fashion_small_test(), out=str(tmp_path), name="high")
    with pytest.raises(Diverged, match=r"diverged in epoch 1: .* at learning rate 0\.5 .*--resume .* --lr 0\.05"):
        train(TrainConfig(**settings))
    folder = tmp_path / "high"
    assert not (folder / "checkpoints" / "last.pt").exists() and not (folder / "metrics.jsonl").exists()
    resumed = train(resume=folder, overrides={"lr": 0.05})
    assert resumed.config.lr == 0.05 and resumed.test_metrics.top1 > 0.2  # learning: chance is 0.1
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["resumed_with"] == {"lr": [0.5, 0.05]}
    assert "lr 0.5 -> 0.05: starting over" in (folder / "log.txt").read_text()
    with pytest.raises(AlexNetError, match="cannot change batch_size"):
        train(resume=folder, overrides={"batch_size": 32, "epochs": 2})


@needs_fashion
@pytest.mark.slow
def test_a_rate_changed_on_resume_scales_the_schedule_from_the_checkpoint(tmp_path):
    settings = dict(subset=0.02, val_size=500, epochs=1, batch_size=64, quiet=True, eval_batch_size=500,
                    precision="fp32", flip_test=False, data_dir=fashion_small_test(), out=str(tmp_path), name="run",
                    recipe="tutorial")
    first = train(TrainConfig(**settings))
    longer = train(resume=first.directory, overrides={"epochs": 2, "lr": 5e-4})
    assert longer.history[0]["lr"] == pytest.approx(1e-3) and longer.history[1]["lr"] == pytest.approx(5e-4)
    assert longer.history[1]["resumed_with"] == {"lr": [1e-3, 5e-4]} and "resumed_with" not in longer.history[0]
    assert "lr 0.001 -> 0.0005: every rate of the optimiser and the constant schedule scaled by 0.5" in (
        first.directory / "log.txt").read_text()


@needs_fashion
@pytest.mark.slow
def test_no_divergence_check_lets_a_diverging_run_train_on(tmp_path):
    run = train(TrainConfig(lr=0.5, subset=0.05, val_size=500, epochs=1, quiet=True, eval_batch_size=500,
                            precision="fp32", flip_test=False, data_dir=fashion_small_test(), out=str(tmp_path),
                            name="on", divergence_check=False))
    assert run.history[0]["val_loss"] > 4.6 and run.history[0]["val_top1"] < 0.11  # what the check stops


@needs_fashion
def test_lr_find_sweeps_plots_and_suggests_a_rate(tmp_path, capsys):
    import math

    from alexnet.cli import main
    from alexnet.training.lr_find import lr_find

    config = TrainConfig(subset=0.05, val_size=500, batch_size=64, precision="fp32", quiet=True)
    result = lr_find(config, start_lr=1e-4, end_lr=10.0, steps=40)
    assert result.rates[0] == pytest.approx(1e-4) and result.recipe == "fast"
    ratios = [b / a for a, b in zip(result.rates, result.rates[1:])]
    assert all(r == pytest.approx(10 ** (5 / 39)) for r in ratios)  # exponential: 5 decades in 39 steps
    assert 1e-4 < result.suggestion < 10 and math.isfinite(result.minimum_tenth)
    assert min(result.smoothed) < result.smoothed[0]  # the loss fell somewhere in the sweep
    plot = tmp_path / "sweep.png"
    assert main(["lr-find", "--subset", "0.05", "--val-size", "500", "--batch-size", "64", "--precision", "fp32",
                 "--steps", "30", "--start-lr", "1e-3", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "suggested: --lr " in capsys.readouterr().out
    with pytest.raises(AlexNetError, match="from a small rate to a larger one"):
        lr_find(config, start_lr=1.0, end_lr=0.1)
    for start, end in ((0.0, 10.0), (1e-7, float("inf"))):
        with pytest.raises(AlexNetError, match="the sweep's rates must be positive and finite"):
            lr_find(config, start_lr=start, end_lr=end)
    # a plot name in no picture format is refused before the sweep, not after it
    capsys.readouterr()
    assert main(["lr-find", "--plot", str(tmp_path / "sweep.txt")]) == 2
    assert ".txt is not a picture format" in capsys.readouterr().err
