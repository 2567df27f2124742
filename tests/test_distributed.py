"""Data-parallel training: 2 processes over gloo on CPU against 1 process, a killed rank, restarts.

The comparison is exact in principle: the same seed builds the same weights on every rank (and DDP
broadcasts rank 0's anyway); each optimiser step sees the same 64 images, as 2 x 32 or 1 x 64,
and DDP averages the two halves' gradients into the whole batch's. What keeps it exact is the
model: no batch norm (its statistics would be those of each process's 32 images, not of the 64),
dropout 0 and augmentation "none" (each rank draws its own random masks and crops), and SGD
(Adam's first steps move every weight by +-lr whatever the gradient's size, so a rounding
difference in a gradient near zero flips a whole step). The paper recipe (SGD, momentum 0.9) at
lr 0.02 leaves chance within 3 epochs on this subset, so the validation metrics are not those of
a constant prediction. What differs is float rounding (a sum of two half-batch gradients is not
bit for bit the full batch's), and a ReLU at the edge of its kink amplifies it, so weights are
compared with a tolerance: each tensor's difference is under 5% of how far training moved it.
Measured: two single-process runs differing only in thread count (1 or 2) or memory format
(channels-last or not) already differ by up to 2.0%; 2 processes against 1, by 1.6%. A wrong
gradient scale or a wrong data shard would change the trajectory altogether (~100%).

Each run leaves out the HTML report (tests/torchrun_worker.py) and uses one thread per process:
two processes on two shared cores.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import alexnet.report
from alexnet import AlexNetError, perf
from alexnet.data.streaming import StreamingLoader
from alexnet.models import build_model
from alexnet.training import TrainConfig, train
from alexnet.training import distributed, loop
from fashion_small import TEST_IMAGES, fashion_small_test
from image_files import png_bytes  # tests/ is on the path (pytest's prepend import mode)

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
WORKER = Path(__file__).with_name("torchrun_worker.py")

# batch 32 in 2 accumulated micro-batches: an optimiser step of 64 images, 16 per process per
# micro-batch, so no_sync is exercised too. val_size 499 splits 250/249 over the two processes.
OPTIONS = dict(norm="none", dropout=0.0, init="default")
# The first 1,000 test images (tests/fashion_small.py): the final test is sharded as on the whole
# set, at a tenth of the cost in every run below.
SETTINGS = dict(subset=0.02, val_size=499, epochs=3, batch_size=32, accumulation_steps=2, recipe="paper", lr=0.02,
                augment="none", eval_batch_size=500, device="cpu", quiet=True, data_dir=fashion_small_test(),
                # fp32, whatever `auto` picks on this machine: the tolerances below are fp32's. In bf16
                # (what `auto` picks where bf16 measures faster: AMX, Zen 4) two processes and one
                # differed by 4 of 499 validation images, since bf16 rounds each half-batch's
                # activations where fp32 rounds only the sum.
                precision="fp32")
FLAGS = [f"--{key.replace('_', '-')}={value}" for key, value in {**SETTINGS, **OPTIONS}.items() if key != "quiet"]
FLAGS.append("--quiet")


def torchrun(out: Path, name: str, *extra: str, kill: str | None = None, timeout: float = 240,
             train_flags: list[str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    # TMPDIR: torchrun's own folders for the ranks' error files (never removed) go beside the test's
    scratch = out.with_name(f"{out.name}-tmp")
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALEXNET_DIST_TIMEOUT": "60", "TMPDIR": str(scratch)}
    env.pop("ALEXNET_TEST_KILL", None)
    if kill:
        env["ALEXNET_TEST_KILL"] = kill
    flags = FLAGS + ["--out", str(out), "--name", name] if train_flags is None else train_flags
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *extra,
               str(WORKER), "train", *flags]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - start


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(alexnet.report, "build_report", lambda directory, **_: Path(directory) / "not built")
        return train(TrainConfig(**SETTINGS, model_options=OPTIONS, out=str(out), name="run", threads=1)).directory


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    result, _ = torchrun(out, "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "run", result


@pytest.mark.slow
@needs_fashion
def test_two_processes_match_one_process(one_process, two_processes):
    two, result = two_processes
    assert [path.name for path in two.parent.iterdir()] == ["run"]  # one run folder, written once
    assert (two / "checkpoints" / "last.pt").is_file() and (two / "model.safetensors").is_file()
    log = (two / "log.txt").read_text()
    assert log.count("epoch   1/3") == 1 and "2 processes" in log  # rank 0 alone logs
    assert result.stdout.count("test: top-1") == 1

    one_rows, two_rows = rows(one_process), rows(two)
    assert [row["epoch"] for row in two_rows] == [1, 2, 3]
    for a, b in zip(one_rows, two_rows):
        # losses averaged over the whole set: equal up to float rounding
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        # an accuracy may differ by an image whose two best logits are within rounding of each other
        assert abs(b["val_top1"] - a["val_top1"]) <= 2 / 499 and abs(b["val_top5"] - a["val_top5"]) <= 2 / 499
    assert two_rows[-1]["val_top1"] > 0.12  # above chance (10%): the comparison is not of constant predictions

    one_test = json.loads((one_process / "evaluation.json").read_text())
    two_test = json.loads((two / "evaluation.json").read_text())
    assert one_test["count"] == two_test["count"] == TEST_IMAGES  # both halves of the test set, once each
    assert two_test["loss"] == pytest.approx(one_test["loss"], rel=1e-4)
    assert abs(two_test["top1"] - one_test["top1"]) <= 0.005  # five images in 1,000

    torch.manual_seed(0)
    initial = build_model("alexnet_small28", **OPTIONS).state_dict()
    one_weights, two_weights = load_file(str(one_process / "model.safetensors")), load_file(str(two / "model.safetensors"))
    for name, weight in one_weights.items():
        moved = (weight - initial[name]).norm()
        assert (two_weights[name] - weight).norm() < 0.05 * moved, name


@pytest.mark.slow
@needs_fashion
def test_killed_rank_stops_the_run_then_resume_continues(tmp_path, two_processes):
    # rank 1 dies by SIGKILL at step 3 of epoch 2, after epoch 1's checkpoint
    result, seconds = torchrun(tmp_path, "killed", kill="1:1:3")
    assert result.returncode != 0
    assert seconds < 120  # torchrun notices within its 0.1 s monitor interval; a hang would be 60 s + startup
    assert "SIGKILL" in result.stderr  # torchrun's report names the root cause
    run_dir = tmp_path / "killed"
    assert [row["epoch"] for row in rows(run_dir)] == [1]

    resumed, _ = torchrun(tmp_path, "killed", train_flags=["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing from epoch 2, step 0" in resumed.stdout
    reference, _ = two_processes
    strip = lambda table: [{k: v for k, v in row.items() if k not in ("images_per_second", "epoch_seconds")}  # noqa: E731
                           for row in table]
    assert strip(rows(run_dir)) == strip(rows(reference))  # as if nothing had happened
    expected = load_file(str(reference / "model.safetensors"))
    for name, tensor in load_file(str(run_dir / "model.safetensors")).items():
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.slow
@needs_fashion
def test_torchrun_max_restarts_continues_from_the_last_checkpoint(tmp_path, two_processes):
    # no --name: the restarted group finds its folder by torchrun's run id
    flags = FLAGS + ["--out", str(tmp_path)]
    # The restarted group meets in a fresh corner of torchrun's store (distributed._attempt_store):
    # reading the dead group's keys, gloo's connection was refused, then a second restart hung.
    result, _ = torchrun(tmp_path, "", "--max-restarts=1", kill="1:1:3", train_flags=flags)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    log = (run_dir / "log.txt").read_text()
    assert "continuing from epoch 2, step 0 (torchrun restart 1)" in log, log
    reference, _ = two_processes
    assert [row["val_loss"] for row in rows(run_dir)] == [row["val_loss"] for row in rows(reference)]
    expected = load_file(str(reference / "model.safetensors"))
    for name, tensor in load_file(str(run_dir / "model.safetensors")).items():
        assert torch.equal(tensor, expected[name]), name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _evaluate_in_group(rank: int, port: int, folder: str, results: str) -> None:
    """One of two gloo processes: sharded evaluation of fixed weights, and one bf16 all-reduce."""
    from alexnet.data import LoaderOptions, build_loaders
    from alexnet.evaluation import evaluate_model

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    group = distributed.init_process_group("cpu")
    try:
        torch.manual_seed(0)
        model = build_model("alexnet_small28", **OPTIONS)
        data = build_loaders("fashion-mnist", LoaderOptions(batch_size=64, eval_batch_size=100, val_size=499, seed=0,
                                                            rank=rank, world_size=2))
        val, _ = evaluate_model(model, data.val, data.classes)
        streamed = StreamingLoader(*_folder(folder), batch_size=2, train=False, mean=(0.5,), std=(0.5,),
                                   output_shape=(1, 28, 28), num_workers=0, rank=rank, world_size=2)
        files, _ = evaluate_model(model, streamed, data.classes)

        # --allreduce-dtype bf16 as the trainer sets it up: gradients averaged in bf16
        config = SimpleNamespace(allreduce_dtype="bf16", compile=False)
        wrapped = loop._Trainer._wrap(SimpleNamespace(group=group, device=torch.device("cpu"), config=config), model)
        images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(rank))
        wrapped(images).square().mean().backward()
        if rank == 0:
            torch.save({"val": val.to_dict(), "files": files.to_dict(), "grad": model.classifier[6].weight.grad},
                       results)
    finally:
        distributed.destroy_process_group()


def _folder(folder: str) -> tuple[list[tuple[str, int]], list[str]]:
    from alexnet.data.streaming import index_folder

    samples, _ = index_folder(Path(folder))
    return samples, [str(i) for i in range(10)]


@pytest.mark.slow
@needs_fashion
def test_sharded_metrics_cover_every_image_once_and_bf16_allreduce(tmp_path):
    import torch.multiprocessing as multiprocessing

    from alexnet.data import LoaderOptions, build_loaders, load_tensors
    from alexnet.evaluation import evaluate_model

    # 7 image files: DistributedSampler would pad the shares to 4 + 4 with a repeat
    data = build_loaders("fashion-mnist", LoaderOptions(batch_size=64, eval_batch_size=100, val_size=499, seed=0))
    test = load_tensors("fashion-mnist", "test")
    for index in range(7):
        image, label = test.images[index], int(test.labels[index])
        (tmp_path / "files" / str(label)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "files" / str(label) / f"{index}.png").write_bytes(png_bytes(image))
    results = tmp_path / "results.pt"
    multiprocessing.spawn(_evaluate_in_group, args=(_free_port(), str(tmp_path / "files"), str(results)), nprocs=2)
    shared = torch.load(results, weights_only=False)

    torch.manual_seed(0)
    model = build_model("alexnet_small28", **OPTIONS)
    val, _ = evaluate_model(model, data.val, data.classes)
    streamed = StreamingLoader(*_folder(str(tmp_path / "files")), batch_size=2, train=False, mean=(0.5,),
                               std=(0.5,), output_shape=(1, 28, 28), num_workers=0)
    files, _ = evaluate_model(model, streamed, data.classes)
    for whole, sharded in ((val, shared["val"]), (files, shared["files"])):
        assert sharded["count"] == whole.count  # 499 and 7: every image once, none twice
        assert sharded["confusion_matrix"] == whole.confusion_matrix
        assert sharded["loss"] == pytest.approx(whole.loss, rel=1e-5)

    gradients = []
    for rank in range(2):
        model.zero_grad()
        model(torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(rank))).square().mean().backward()
        gradients.append(model.classifier[6].weight.grad.clone())
    average = (gradients[0] + gradients[1]) / 2
    error = (shared["grad"] - average).norm() / average.norm()
    assert 0 < error < 1e-2  # bf16 keeps 8 bits of mantissa: ~0.4% per value, and not fp32's exactness


def test_batch_split_and_refusal():
    assert distributed.per_process_batch(256, 4) == 64
    with pytest.raises(AlexNetError, match="multiple of 3"):
        distributed.per_process_batch(256, 3)


def test_threads_are_shared_between_local_processes(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(perf, "physical_cores", lambda: 16)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert perf.set_threads() == 4
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
        assert perf.set_threads() == 1
        assert perf.set_threads(3) == 3  # an explicit count wins
    finally:
        torch.set_num_threads(before)


def test_streaming_evaluation_shards_cover_every_file_once():
    samples = [(f"{i}.png", i % 3) for i in range(7)]
    shards = [StreamingLoader(samples, ["a", "b", "c"], 2, train=False, mean=(0.5,), std=(0.5,), rank=rank,
                              world_size=2)._sampler() for rank in range(2)]
    assert sorted(list(shards[0]) + list(shards[1])) == list(range(7))


def test_restarted_run_folder(tmp_path, monkeypatch):
    named = tmp_path / "named"
    (named / "checkpoints").mkdir(parents=True)
    (named / "checkpoints" / "last.pt").write_bytes(b"")
    unnamed = tmp_path / "alexnet_small28-fashion-mnist-20260101-000000"
    (unnamed / "checkpoints").mkdir(parents=True)
    (unnamed / "checkpoints" / "last.pt").write_bytes(b"")
    (unnamed / distributed.ELASTIC_RUN_ID_FILE).write_text("job-1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert distributed.restarted_run_folder(tmp_path, "named") is None  # a first start never resumes
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert distributed.restarted_run_folder(tmp_path, "named") == named
    assert distributed.restarted_run_folder(tmp_path, None) == unnamed
    assert distributed.restarted_run_folder(tmp_path, "other") is None  # nothing to continue
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")
    assert distributed.restarted_run_folder(tmp_path, None) is None


def test_lost_peer_recognises_collective_failures():
    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error: Connection reset by peer.")
    assert distributed.lost_peer(gloo)
    assert not distributed.lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.slow
@needs_fashion
def test_torchrun_rank_0_takes_the_run_folder_lock(tmp_path):
    from alexnet.runs import RunFolder

    folder = RunFolder(tmp_path / "held")
    folder.directory.mkdir()
    with folder.lock():  # another process is training in this folder
        result, seconds = torchrun(tmp_path, "held", timeout=120)
    assert result.returncode != 0
    assert f"in use by another training process (pid {os.getpid()}" in result.stdout + result.stderr
    assert not folder.config.exists()  # nothing of the live run's was touched
