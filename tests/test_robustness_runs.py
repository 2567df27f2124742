"""Weights, runs and experiments a user has damaged, moved or run twice: non-finite weights, a
fine-tuned run whose source is gone, experiments with zero budgets, failed reruns, and two at once.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

import alexnet.report.html
from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.experiments import ExperimentOptions, run_experiment
from alexnet.models import build_model
from alexnet.predict import predict
from alexnet.pretrained import import_torchvision
from alexnet.runs import RunFolder, RunLock
from alexnet.training import TrainConfig, train
from alexnet.weights import WeightsMetadata, save_weights
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
# The final test on 1,000 test images (tests/fashion_small.py), on the image alone: the whole test
# set, mirrored, was 7 of a tiny run's 8.6 s on one core (fp32); what these tests check does not need it.
TINY = dict(subset=0.02, val_size=500, epochs=1, batch_size=64, quiet=True, eval_batch_size=500, precision="fp32",
            flip_test=False, data_dir=fashion_small_test())


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
def test_a_fine_tuned_run_resumes_after_its_source_is_gone(tmp_path, monkeypatch):
    source = train(TrainConfig(**TINY, out=str(tmp_path / "sources"), name="source"))
    # killed after its last epoch, before the final test: resuming tests it, and says so
    RunFolder(source.directory).weights.unlink()
    RunFolder(source.directory).evaluation.unlink()
    train(resume=source.directory)
    assert "every epoch trained (1 epoch); testing the weights" in RunFolder(source.directory).log.read_text()
    assert "continuing from epoch 2" not in RunFolder(source.directory).log.read_text()

    tuned = train(TrainConfig(**{**TINY, "lr": 0.01}, init_from=str(source.directory), backbone_lr_scale=0.0,
                              out=str(tmp_path), name="tuned"))
    assert tuned.history[0]["lr"] > 0  # the new classifier's rate, not the still backbone's 0
    mean = torch.load(RunFolder(tuned.directory).last, weights_only=True)["normalization"][0]
    shutil.rmtree(tmp_path / "sources")  # the source deleted (or the project moved)
    resumed = train(resume=tuned.directory, overrides={"epochs": 2})
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    from alexnet.weights import read_metadata

    assert list(read_metadata(RunFolder(tuned.directory).weights).mean) == pytest.approx(mean)
    # its own report.html named as --out: written in place (a SameFileError traceback before). The
    # page without its figures: drawing them is test_report.py's, and takes seconds.
    monkeypatch.setattr(alexnet.report.html, "build_figures", lambda run, **_: ([], []))
    report = RunFolder(tuned.directory).report
    assert main(["report", str(tuned.directory), "--out", str(report)]) == 0
    assert report.read_text().startswith("<!")


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


# -- smaller: wrong formats, runs still training, library messages, TIFFs, tiny training sets ---------------


def test_wrong_format_weights_are_named_with_what_to_pass(tmp_path, capsys):
    from alexnet.inference import weights_path

    torch.save({"weight": torch.zeros(2)}, tmp_path / "state.pth")  # a zip, as torch.save writes
    (tmp_path / "model.onnx").write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(50))  # ir_version first
    (tmp_path / "notes.safetensors").write_text("not weights at all")
    from alexnet.export import export

    small = build_model("alexnet_small28")
    export(small, "torchscript", tmp_path / "model.pt")
    export(small, "pt2", tmp_path / "model.pt2")
    for name, message in (("state.pth", "is a PyTorch file (torch.save), not safetensors"),
                          ("model.onnx", "looks like an ONNX model (an export), not safetensors"),
                          ("model.pt", "is a TorchScript export, not safetensors"),
                          ("model.pt2", "is a torch.export export, not safetensors"),
                          ("notes.safetensors", "is not a safetensors weights file")):
        with pytest.raises(AlexNetError, match=re.escape(message)) as refused:
            weights_path(tmp_path / name)
        assert "header too large" not in str(refused.value)
    assert main(["predict", str(tmp_path / "state.pth"), str(Path(__file__).parent / "data" / "chelsea.png")]) == 2
    assert "alexnet weights import torchvision --file" in capsys.readouterr().err


def test_a_run_still_training_says_so_from_every_command(tmp_path, capsys):
    run = RunFolder(tmp_path / "training")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("model: alexnet_small28\n")
    image = str(Path(__file__).parent / "data" / "chelsea.png")
    for argv in (["evaluate", str(run.directory)], ["summary", str(run.directory)],
                 ["predict", str(run.directory), image], ["export", str(run.directory), "--format", "pt2"]):
        assert main(argv) == 2, argv
        assert "its training has not finished" in capsys.readouterr().err, argv
    with pytest.raises(AlexNetError, match="its training has not finished"):
        train(TrainConfig(**TINY, init_from=str(run.directory), out=str(tmp_path), name="tuned"))


def test_library_refusals_are_shown_without_colour_codes_and_cut_at_a_sentence():
    from alexnet.errors import reason

    long = "\x1b[1mWeights only load failed.\x1b[0m " + "This file can still be loaded. " * 20 + "Do it."
    shown = reason(RuntimeError(long), limit=120)
    assert "\x1b" not in shown and shown.startswith("Weights only load failed. This file")
    assert shown.endswith(". ...") and len(shown) <= 124


def test_a_refused_pickle_is_described_without_colour_codes(tmp_path):
    torch.save({"code": print}, tmp_path / "code.pth")  # a global weights_only refuses
    with pytest.raises(AlexNetError, match="is not a readable PyTorch weights file") as refused:
        import_torchvision(tmp_path / "code.pth", out=tmp_path / "x.safetensors")
    assert "\x1b" not in str(refused.value)


def test_float_and_32_bit_tiffs_keep_their_range(tmp_path):
    import numpy as np
    from PIL import Image

    from alexnet.data.images import decode

    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "float.tif")  # 0..1 intensities
    Image.fromarray((ramp * 1_000_000).astype(np.int32), mode="I").save(tmp_path / "int32.tif")
    for name in ("float.tif", "int32.tif"):
        image = decode(str(tmp_path / name))
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
        assert int(image.min()) == 0 and int(image.max()) >= 200, name  # not black
        assert float((image == 255).float().mean()) < 0.05, name  # not saturated white
        assert 100 < float(image.float().mean()) < 155, name


@needs_fashion
def test_a_val_size_that_leaves_no_training_image_says_to_hold_out_fewer(tmp_path):
    with pytest.raises(AlexNetError, match=r"0 training images are left after --val-size 60000 held out.*smaller "
                                           r"--val-size"):
        train(TrainConfig(val_size=60000, epochs=1, quiet=True, out=str(tmp_path), name="none"))


def test_an_augmentation_is_stored_canonical_bounded_and_compared_by_meaning(tmp_path):
    from alexnet.training.resume import continued_config

    config = TrainConfig(augment=",".join(["hflip"] * 10_000)).resolved()
    assert config.augment == "hflip"  # not 60 KB in config.yaml and the weights
    assert TrainConfig(augment="flip").resolved().augment == "flip"  # a preset keeps its name
    for spec, message in (("crop=1e-300", r"crop takes .* in \(0.05, 1\]"),
                          ("scale=1e-300-1e-300", r"scale takes MIN-MAX with 0.05 < MIN"),
                          ("shift=3000", r"shift takes PIXELS, an integer in \[0, 256\]")):
        with pytest.raises(AlexNetError, match=message):
            TrainConfig(augment=spec).resolved()
    trained = TrainConfig(augment="flip").resolved()
    assert continued_config(trained, trained, {"augment": "hflip"}).augment == "flip"  # the same augmentation
    with pytest.raises(AlexNetError, match="cannot change augment"):
        continued_config(trained, trained, {"augment": "vflip"})


def test_partial_results_say_so():
    from alexnet.experiments.tables import results_markdown, summarise
    from alexnet.experiments import CLAIMS

    options = ExperimentOptions(seeds=2, epochs=2, subset=0.1, model="alexnet_small28")
    run = {"run": "r", "seed": 0, "epochs": 2, "test_top1_error": 0.2, "test_top5_error": 0.01,
           "train_errors": [0.5, 0.3], "val_errors": [0.4, 0.25], "num_classes": 10, "re_evaluations": {}}
    results = {**summarise(CLAIMS["lrn"], options, {"lrn-seed0": run}), "runs": 4, "runs_finished": 1}
    assert "**Partial: 1 of 4 runs finished**" in results_markdown(results)
    assert "Partial" not in results_markdown({**results, "runs_finished": 4})
