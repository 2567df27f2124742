"""Bad input and faults around training, evaluation and weights: each ends in one clear message
(an ``AlexNetError``, printed by the CLI without a traceback) and loses nothing already made.

Tests that start real processes (the lock, SIGTERM, the log file) use the CLI as a user would.
Every comparison here is within one process, or pins fp32 where two processes compute.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet import AlexNetError
from alexnet.cli import main
from alexnet.evaluation import evaluate
from alexnet.models import build_model
from alexnet.runs import RunFolder, atomic_write
from alexnet.training import TrainConfig, train
from alexnet.training import loop
from alexnet.weights import WeightsMetadata, load_weights, read_metadata, save_weights
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
# The final test on 1,000 test images (tests/fashion_small.py), on the image alone: the whole test
# set, mirrored, was 7 of a tiny run's 8.6 s on one core (fp32); what these tests check does not need it.
TINY = dict(subset=0.02, val_size=500, epochs=2, batch_size=64, quiet=True, eval_batch_size=500, precision="fp32",
            flip_test=False, data_dir=fashion_small_test())
CLI = [sys.executable, "-m", "alexnet"]


def tiny(tmp_path, name, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(tmp_path), "name": name, **overrides})


def cli_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


# -- small runs (item 2) -------------------------------------------------------------------------


@pytest.mark.slow
@needs_fashion
def test_a_run_of_a_few_steps_trains_and_one_of_none_is_refused_with_what_works(tmp_path):
    # 1,100 images at the fast recipe's batch of 256: 4 steps, which broke OneCycleLR's phases
    run = train(TrainConfig(subset=0.02, epochs=1, val_size=500, quiet=True, flip_test=False,
                            data_dir=fashion_small_test(), out=str(tmp_path), name="four"))
    assert len(run.history) == 1 and run.history[0]["lr"] == pytest.approx(0.1 / 10 / 100)  # ends the cycle
    with pytest.raises(AlexNetError, match=r"55 training images.*fewer than one step.*--subset of at least 0.005"):
        train(TrainConfig(subset=0.001, epochs=1, quiet=True, out=str(tmp_path), name="none"))
    assert not (tmp_path / "none").exists()  # refused before training: nothing left in the way


# -- the run folder: not overwritten, one owner, signals (items 5, 6, 7, 16, 18) ---------------------


@needs_fashion
def test_an_interrupted_run_is_never_overwritten(tmp_path, monkeypatch):
    original = loop._Trainer._optimizer_step

    def interrupted(self, batches):
        if self.step == 3:  # in epoch 1, before metrics.jsonl exists
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(loop._Trainer, "_optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "r"))
    monkeypatch.setattr(loop._Trainer, "_optimizer_step", original)
    folder = RunFolder(tmp_path / "r")
    assert not folder.metrics.exists()
    config, checkpoint = folder.config.read_text(), folder.last.read_bytes()
    with pytest.raises(AlexNetError, match=r"already holds a run; continue it with --resume"):
        train(tiny(tmp_path, "r", seed=5))
    assert folder.config.read_text() == config and folder.last.read_bytes() == checkpoint


@needs_fashion
@pytest.mark.slow
def test_one_process_owns_a_run_folder_and_sigterm_saves_its_position(tmp_path, capsys):
    # 3,000 images an epoch: about 5 s on one core, so the SIGTERM a second into epoch 2 lands within it
    command = [*CLI, "train", "--subset", "0.05", "--val-size", "500", "--epochs", "2", "--batch-size", "64",
               "--precision", "fp32", "--no-report", "--no-flip-test",
               "--data-dir", fashion_small_test(), "--out", str(tmp_path), "--name", "same"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env())
    folder = RunFolder(tmp_path / "same")
    deadline = time.time() + 120
    while not (folder.config.exists() and folder.lock_file.read_text().startswith("pid")) and time.time() < deadline:
        time.sleep(0.05)
    # a second run of the same name, and a resume of the live run: both refused, naming the owner
    # (here, in this process: the lock is the live process's, wherever the second one runs)
    for other in (command[len(CLI):], ["train", "--resume", str(folder.directory)]):
        assert main(other) == 2
        refused = capsys.readouterr().err
        assert f"in use by another training process (pid {first.pid}" in refused
        assert "Traceback" not in refused
    while not (folder.metrics.exists() and folder.metrics.read_text().count("\n")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    first.send_signal(signal.SIGTERM)  # what a scheduler sends before it kills
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, output
    state = torch.load(folder.last, weights_only=True)
    assert state["epoch"] == 1, output  # the position within epoch 2 (step 0 only if SIGTERM came that early)
    assert f"SIGTERM: stopped in epoch 2 at step {state['step']}; saved." in output
    assert "--resume" in folder.log.read_text()
    # the lock went with the process: the run continues from where SIGTERM stopped it
    assert main(["train", "--resume", str(folder.directory), "--quiet", "--no-report"]) == 0
    assert f"continuing from epoch 2, step {state['step']}" in capsys.readouterr().out or state["step"] == 0
    assert [row["epoch"] for row in map(json.loads, folder.metrics.read_text().splitlines())] == [1, 2]


@needs_fashion
def test_sigterm_during_the_final_test_stops_and_resume_tests(tmp_path, monkeypatch, capsys):
    real = loop._Trainer._finish

    def signalled(self):  # SIGTERM arrives as the final test starts, every epoch trained
        os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(loop._Trainer, "_finish", signalled)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "r", epochs=1))
    folder = RunFolder(tmp_path / "r")
    assert not folder.weights.exists() and not folder.evaluation.exists()  # the promise to stop is kept
    assert "SIGTERM: stopped during the final test; every epoch is trained and checkpointed" in folder.log.read_text()
    monkeypatch.setattr(loop._Trainer, "_finish", real)
    resumed = train(resume=folder.directory)
    assert folder.weights.is_file() and [row["epoch"] for row in resumed.history] == [1]


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    folder = RunFolder(tmp_path)
    folder.lock_file.write_text("pid 999999999 host nowhere since 2026-01-01 00:00:00\n")
    with folder.lock():  # the OS released the dead process's flock; its record is only a note
        assert folder.lock_file.read_text().startswith(f"pid {os.getpid()} ")
        with pytest.raises(AlexNetError, match=rf"in use by another training process \(pid {os.getpid()}"):
            folder.lock()  # a second holder, even in the same process, is refused


@pytest.mark.slow
@needs_fashion
def test_resume_continues_extends_or_refuses_by_name(tmp_path):
    run = train(tiny(tmp_path, "r", epochs=1))
    folder = RunFolder(run.directory)
    with pytest.raises(AlexNetError, match=r"has finished: 1 epoch trained and tested.*--epochs"):
        train(resume=folder.directory)
    with pytest.raises(AlexNetError, match=r"cannot change batch_size when continuing.*trained with 64"):
        train(resume=folder.directory, overrides={"batch_size": 32, "lr": 0.5, "epochs": 2})
    edited = yaml.safe_load(folder.config.read_text()) | {"batch_size": 128}
    folder.config.write_text(yaml.safe_dump(edited))
    with pytest.raises(AlexNetError, match=r"batch_size: trained with 64, config\.yaml asks for 128"):
        train(resume=folder.directory)
    folder.config.write_text(yaml.safe_dump(edited | {"batch_size": 64, "epochs": 2}))  # extending is fine
    (folder.checkpoints / ".last.pt.abc.tmp").write_bytes(b"half a checkpoint")  # a write killed midway
    longer = train(resume=folder.directory)
    assert [row["epoch"] for row in longer.history] == [1, 2]
    assert "epochs 1 -> 2: the onecycle schedule now spans 2 epochs" in folder.log.read_text()
    # the longer curve has the same peak: the rate goes on from it, and ends where a 2-epoch run ends
    fresh = train(tiny(tmp_path, "two", epochs=2))
    assert longer.history[-1]["lr"] == pytest.approx(fresh.history[-1]["lr"], rel=1e-6)
    assert not list(folder.checkpoints.glob(".*.tmp"))
    assert json.loads(folder.evaluation.read_text())["epochs"] == 2


def test_a_folder_without_a_checkpoint_starts_over_instead_of_a_dead_end(tmp_path):
    folder = RunFolder(tmp_path / "r")
    folder.checkpoints.mkdir(parents=True)
    folder.config.write_text(tiny(tmp_path, "r").resolved().to_yaml())
    folder.metrics.write_text('{"epoch": 1}\n')  # killed between its metrics and its first checkpoint
    with pytest.raises(AlexNetError, match=r"start it over with --resume"):
        train(tiny(tmp_path, "r"))
    assert folder.metrics.exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
@needs_fashion
def test_a_full_disk_says_so_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        original = loop._Trainer._train_epoch

        def epoch_then_fill(self):
            original(self)
            if self.epoch == 1:  # after epoch 1's checkpoint: fill the disk to the last byte
                with open(disk / "filler", "wb") as filler:
                    try:
                        while True:
                            filler.write(b"\0" * (1 << 20))
                            filler.flush()
                    except OSError as error:
                        assert error.errno == errno.ENOSPC

        monkeypatch.setattr(loop._Trainer, "_train_epoch", epoch_then_fill)
        with pytest.raises(AlexNetError, match=r"no space left on device writing .*disk/r/.*--resume .*last good"):
            train(tiny(tmp_path, "r", out=str(disk)))
        assert torch.load(disk / "r" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
        (disk / "filler").unlink()
        monkeypatch.setattr(loop._Trainer, "_train_epoch", original)
        assert [row["epoch"] for row in train(resume=disk / "r").history] == [1, 2]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_atomic_write_turns_a_full_disk_into_one_message(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the good one")

    with pytest.raises(AlexNetError, match=rf"no space left on device writing {path}"):
        atomic_write(path, lambda file: torch.save({"x": torch.zeros(1)}, _Full(file)))
    assert path.read_bytes() == b"the good one" and not list(tmp_path.glob(".*.tmp"))


class _Full:
    """A file whose disk is full: what torch.save meets, and reports as 'unexpected pos'."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data)  # the recording wrapper sees the error below
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)


# -- log files (item 4) ---------------------------------------------------------------------------


@needs_fashion
@pytest.mark.slow
def test_output_to_a_file_has_one_line_per_epoch_not_a_redrawn_bar(tmp_path):
    log = tmp_path / "log"
    with open(log, "w") as out:
        subprocess.run([*CLI, "train", "--subset", "0.02", "--val-size", "500", "--epochs", "2", "--batch-size", "32",
                        "--no-report", "--no-flip-test", "--data-dir", fashion_small_test(), "--out", str(tmp_path),
                        "--name", "r"], stdout=out, stderr=subprocess.STDOUT, check=True,
                       env=cli_env(), timeout=300)
    text = log.read_text()
    assert "\r" not in text and text.count("epoch   1/2") == 1 and len(text) < 2000


# -- a folder dataset's run remembers its data (items 3, 18) ---------------------------------------


def _folder_dataset(root: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 24), ("val", 6)):
        for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                noise = torch.randint(-30, 30, (32, 32, 3), generator=generator)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{index}.png")
    (root / "val" / "class0" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_evaluate_of_a_folder_run_finds_its_data_and_skipped_images_are_counted(tmp_path, monkeypatch):
    data = _folder_dataset(tmp_path / "flowers")
    monkeypatch.chdir(tmp_path)
    run = train(TrainConfig(model="alexnet_small32", dataset="folder", data_dir="flowers", epochs=1, batch_size=8,
                            quiet=True, out=str(tmp_path / "runs"), name="r", precision="fp32"))
    assert run.config.data_dir == str(data)  # made absolute: found from any folder
    assert "1 unreadable validation images skipped" in (run.directory / "log.txt").read_text()
    monkeypatch.chdir("/")
    again = evaluate(run.directory)
    assert again.count == run.test_metrics.count == 12
    assert again.confusion_matrix == run.test_metrics.confusion_matrix


# -- configuration values (items 11, 17, 18) -------------------------------------------------------


@pytest.mark.parametrize("values,message", [
    ({"lr": float("inf")}, "lr must be a positive number, got inf"),
    ({"weight_decay": float("nan")}, "weight_decay must be 0 or a positive number"),
    ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\)"),
    ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
    ({"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*63\)"),
    ({"seed": -1}, r"seed must be an integer"),
    ({"name": "../../x"}, "name must be a plain folder name"),
    ({"name": "/abs"}, "name must be a plain folder name"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
])
def test_values_out_of_range_are_refused_before_any_work(values, message):
    with pytest.raises(AlexNetError, match=message):
        TrainConfig.from_dict(values).resolved()


def test_a_yaml_alias_bomb_gets_a_short_message_not_all_memory(tmp_path):
    # 546 bytes that stand for 9**9 strings: loading shares them; printing one writes them all out
    lines = ["model_options:", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  {name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines.append("epochs: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(AlexNetError) as caught:
        TrainConfig.from_yaml(bomb)
    assert len(str(caught.value)) < 300 and time.perf_counter() - start < 5
    assert "'epochs' should be int or null" in str(caught.value)


def test_cli_refuses_bad_files_and_outputs_in_one_line(tmp_path, capsys):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["train", "--config", str(binary)]) == 2
    assert "is not a text file" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["train", "--out", str(a_file), "--name", "r", "--epochs", "1"]) == 2
    assert f"cannot create the run folder {a_file / 'r'}" in capsys.readouterr().err
    # outputs are checked before the work, not after it: a folder made where it can be, else refused
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(a_file / "m.json")]) == 2
    assert f"--out {a_file / 'm.json'}: cannot create the folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(a_file / "x" / "r.html")]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "made" / "m.json")]) == 2
    assert "no weights file" in capsys.readouterr().err and (tmp_path / "made").is_dir()
    assert main(["evaluate", str(tmp_path), "--device", "tpu"]) == 2
    assert "device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["summary", "--input", "3x-5x10"])
    assert "must be a positive integer" in capsys.readouterr().err


def test_a_torch_file_that_is_not_a_checkpoint_is_named(tmp_path):
    folder = RunFolder(tmp_path / "r")
    folder.checkpoints.mkdir(parents=True)
    folder.config.write_text(TrainConfig().to_yaml())
    torch.save({"weights": torch.zeros(3)}, folder.last)
    with pytest.raises(AlexNetError, match=r"is a torch file but not a checkpoint of `alexnet train`"):
        train(resume=folder.directory)


# -- weights metadata and safetensors (item 17, fuzzing) ------------------------------------------


def _weights(tmp_path) -> Path:
    return save_weights(tmp_path / "w.safetensors", build_model("alexnet_small28"), WeightsMetadata(
        model="alexnet_small28", model_options={}, class_names=tuple(str(i) for i in range(10)), input_size=(1, 28, 28),
        mean=(0.286,), std=(0.353,), dataset="fashion-mnist"))


@pytest.mark.parametrize("key,value,message", [
    ("class_names", None, "no 'class_names'"),
    ("mean", "0.5", "'mean' is a str"),
    ("std", [0.0], "'std' should be positive"),
    ("num_classes", 3, "'class_names' should be 3 names"),
    ("input_size", [1, 28], "'input_size' should be three positive integers"),
    ("flip_test", "yes", "'flip_test' is a str"),
    ("model_options", {"wings": 2}, "model 'alexnet_small28' takes no option 'wings'"),
])
def test_weights_with_damaged_metadata_are_refused_by_key(tmp_path, key, value, message):
    from safetensors.torch import load_file, save_file

    path = _weights(tmp_path)
    metadata = read_metadata(path).to_dict()
    if value is None:
        del metadata[key]
    else:
        metadata[key] = value
    save_file(load_file(str(path)), str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
    with pytest.raises(AlexNetError, match=message):
        load_weights(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=400))
def test_fuzzed_safetensors_files_end_in_a_clear_error(tmp_path, data, cut):
    good = (tmp_path / "good.safetensors")
    if not good.exists():
        _weights(tmp_path).rename(good)
    path = tmp_path / "fuzzed.safetensors"
    # random bytes, and a real file's header cut or spliced with random bytes
    for blob in (data, good.read_bytes()[:cut] + data, len(data).to_bytes(8, "little") + data):
        path.write_bytes(blob)
        with pytest.raises(AlexNetError):
            load_weights(path)


@settings(max_examples=60, deadline=None)
@given(metadata=st.dictionaries(st.sampled_from(["format", "model", "model_options", "num_classes", "class_names",
                                                 "input_size", "mean", "std", "flip_test", "seed"]),
                                st.recursive(st.none() | st.booleans() | st.integers(-3, 12) | st.floats() | st.text(max_size=8),
                                             lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                                             max_leaves=8)))
@pytest.mark.slow
def test_fuzzed_weights_metadata_ends_in_a_clear_error_or_a_model(tmp_path_factory, metadata):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("fuzz") / "w.safetensors"
    metadata = {"format": "alexnet-weights/1", **metadata}
    save_file({"x": torch.zeros(1)}, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
    with pytest.raises(AlexNetError):  # valid or not, these tensors are no model's
        load_weights(path)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200) | st.builds(
    lambda key, value: f"{key}: {value}\n",
    st.sampled_from(["epochs", "lr", "seed", "model", "model_options", "name", "subset", "device", "batch_size"]),
    st.sampled_from(["1", "-1", "0", ".inf", ".nan", "1e400", "[1, 2]", "{a: 1}", "x", "null", "true", "''",
                     "99999999999999999999999", "&a [*a]", "!!binary aGk=", "!!python/object:os.system {}"])))
def test_fuzzed_yaml_configs_end_in_a_clear_error_or_a_valid_config(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(text)
    try:
        TrainConfig.from_yaml(path).resolved()
    except AlexNetError as error:
        assert len(str(error)) < 1500
