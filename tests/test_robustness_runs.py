"""Weights, runs and experiments a user has damaged, moved or run twice: non-finite weights, a
fine-tuned run whose source is gone, experiments with zero budgets, failed reruns, and two at once.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.experiments import ExperimentOptions, run_experiment
from alexnet.models import build_model
from alexnet.predict import predict
from alexnet.pretrained import import_torchvision
from alexnet.runs import RunFolder, RunLock
from alexnet.training import TrainConfig, train
from alexnet.weights import WeightsMetadata, save_weights

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
TINY = dict(subset=0.02, val_size=500, epochs=1, batch_size=64, quiet=True, eval_batch_size=500, precision="fp32")


# -- item 10: non-finite weights ------------------------------------------------------------------------


def test_weights_with_a_nan_are_refused_on_import_and_on_load_naming_the_tensor(tmp_path, capsys):
    state = torchvision.models.alexnet(weights=None).state_dict()
    state["classifier.6.bias"][3] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(AlexNetError, match=r"nan.pth: tensor 'classifier.6.bias' holds 1 NaN or infinite value of 1,000"):
        import_torchvision(tmp_path / "nan.pth", out=tmp_path / "imported.safetensors")
    assert not (tmp_path / "imported.safetensors").exists()

    model = build_model("alexnet_small28")
    with torch.no_grad():
        model.get_classifier().weight[0, :2] = float("inf")
    metadata = WeightsMetadata("alexnet_small28", {}, tuple(map(str, range(10))), (1, 28, 28), (0.5,), (0.5,))
    path = save_weights(tmp_path / "inf.safetensors", model, metadata)
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    with pytest.raises(AlexNetError, match=r"tensor '.*weight' holds 2 NaN or infinite values"):
        predict(path, [image], precision="fp32")
    assert main(["predict", str(path), str(Path(__file__).parent / "data" / "chelsea.png")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err


# -- item 11: a fine-tuned run continues without its --init-from source ---------------------------------


@needs_fashion
@pytest.mark.slow
def test_a_fine_tuned_run_resumes_after_its_source_is_gone(tmp_path):
    source = train(TrainConfig(**TINY, out=str(tmp_path / "sources"), name="source"))
    tuned = train(TrainConfig(**{**TINY, "lr": 0.01}, init_from=str(source.directory), out=str(tmp_path), name="tuned"))
    mean = torch.load(RunFolder(tuned.directory).last, weights_only=True)["normalization"][0]
    shutil.rmtree(tmp_path / "sources")  # the source deleted (or the project moved)
    resumed = train(resume=tuned.directory, overrides={"epochs": 2})
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    from alexnet.weights import read_metadata

    assert list(read_metadata(RunFolder(tuned.directory).weights).mean) == pytest.approx(mean)


# -- item 12: experiments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, message", [
    ("--subset", "--subset must be a fraction in (0, 1], got 0.0 (leave it out for the claim's own)"),
    ("--epochs", "--epochs must be at least 1, got 0 (leave it out for the claim's own)"),
])
def test_experiment_zero_budgets_are_refused_not_replaced(tmp_path, capsys, flag, message):
    assert main(["experiment", "lrn", flag, "0", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


OPTIONS = dict(seeds=1, epochs=1, subset=0.02, jobs=1, val_size=500, precision="fp32", device="cpu")


@needs_fashion
def test_a_failed_rerun_keeps_complete_results_and_two_experiments_cannot_share_a_folder(tmp_path):
    options = ExperimentOptions(**OPTIONS, out=str(tmp_path))
    folder = tmp_path / "lrn"
    runs = folder / "runs"
    for arm in ("lrn", "none"):  # runs of other settings: every arm refuses to take them, without training
        (runs / f"{arm}-seed0").mkdir(parents=True)
        other = TrainConfig(**{**TINY, "lr": 0.123}, out=str(runs), name=f"{arm}-seed0").resolved()
        (runs / f"{arm}-seed0" / "config.yaml").write_text(other.to_yaml())
    complete = {"experiment": "lrn", "runs": 2, "runs_finished": 2, "verdict": "agrees"}
    (folder / "results.json").write_text(json.dumps(complete))
    (folder / "results.md").write_text("# the complete results\n")
    with pytest.raises(AlexNetError, match=r"2 run\(s\) did not finish .*results.md is left as it was"):
        run_experiment("lrn", options, log=lambda line: None)
    assert json.loads((folder / "results.json").read_text()) == complete
    assert (folder / "results.md").read_text() == "# the complete results\n"

    with RunLock(folder / ".lock").acquire():  # another experiment is running in this folder
        with pytest.raises(AlexNetError, match=r"is in use by another `alexnet experiment`.*another --out"):
            run_experiment("lrn", options, log=lambda line: None)
